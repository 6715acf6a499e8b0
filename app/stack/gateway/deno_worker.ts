// Runs one edge function (supabase/functions/NAME/index.ts) for tokenmeter's API gateway.
//
// Usage: deno run <permissions> deno_worker.ts SOCKET_PATH ENTRY_URL PUBLIC_ORIGIN
// (arguments, not environment variables: the function may read its environment, never these).
//
// The worker listens on a Unix socket in the gateway's private folder, not on a loopback port:
// a port is open to every local process and to every other function (they have --allow-net),
// while connecting to a socket needs Deno read and write permission on its path, which no function
// has, and the folder is the gateway user's only (0700). So only the gateway reaches a worker,
// with no shared secret to hand over or compare.
//
// Listening on the socket needs read and write permission on its path. The worker listens first,
// revokes both, and only then imports the function, so the function's code never holds any write
// permission. Supabase functions start their server with `Deno.serve(handler)`: that call is
// replaced by one that hands the handler to the server already listening. Until it is called, the
// server answers 503; the gateway's readiness probe (`GET /`, a path no function request has, as
// those all start with `/NAME`) then gets 204.
//
// The function sees req.url on the API's public origin (PUBLIC_ORIGIN, http://127.0.0.1:<port>),
// not the socket's `http://localhost`, so URLs it builds from req.url (redirects, links) work for
// the caller. The path stays `/NAME/...`, as Supabase's edge runtime shows it (its routing guide
// matches `/NAME/...` paths), so functions that route on it behave the same here and there.

const [socketPath, entry, publicOrigin] = Deno.args;
if (!socketPath || !entry || !publicOrigin) {
  console.error("deno_worker: usage: deno_worker.ts SOCKET_PATH ENTRY_URL PUBLIC_ORIGIN");
  Deno.exit(2);
}

type Handler = (request: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>;
type ErrorHandler = (error: unknown) => Response | Promise<Response>;
type ServeOptions = {
  handler?: Handler;
  onError?: ErrorHandler;
  signal?: AbortSignal;
};

let handler: Handler | undefined;
let onError: ErrorHandler | undefined;

const server = Deno.serve({
  path: socketPath,
  onListen() {},
  onError(error: unknown) {
    if (onError) return onError(error);
    console.error(error);
    return new Response("Internal Server Error", { status: 500 });
  },
}, (request, info) => {
  if (!handler) return new Response(null, { status: 503 });
  const url = new URL(request.url);
  if (url.pathname === "/") return new Response(null, { status: 204 });
  return handler(onPublicOrigin(request, publicOrigin + url.pathname + url.search), info);
});

// The request the server made, its url (an own property, shadowing Request's getter) on the
// public origin: not a new Request built from it, which copies the headers and wraps the body's
// stream again (0.2–0.4 ms a request, measured, on a function's path of a few ms). Its clones
// get the same url; `new Request(request)` would still see the socket's.
function onPublicOrigin(request: Request, url: string): Request {
  const clone = request.clone;
  Object.defineProperty(request, "url", { value: url, enumerable: true });
  Object.defineProperty(request, "clone", { value: () => onPublicOrigin(clone.call(request), url) });
  return request;
}
Deno.permissions.revokeSync({ name: "write", path: socketPath });
Deno.permissions.revokeSync({ name: "read", path: socketPath });

function serve(...args: unknown[]): Deno.HttpServer {
  // The forms Supabase functions use: serve(handler), serve(options, handler),
  // serve({ handler, ... }). Where to listen is the worker's choice, so port/hostname/path are
  // ignored.
  let options: ServeOptions = {};
  let given: Handler | undefined;
  if (typeof args[0] === "function") {
    given = args[0] as Handler;
  } else {
    options = (args[0] ?? {}) as ServeOptions;
    given = typeof args[1] === "function" ? args[1] as Handler : options.handler;
  }
  if (!given) throw new TypeError("Deno.serve: a handler is required");
  if (handler) throw new Error("Deno.serve may be called only once per edge function");
  handler = given;
  onError = options.onError;
  options.signal?.addEventListener("abort", () => server.shutdown(), { once: true });
  return server;
}

Object.defineProperty(Deno, "serve", { value: serve, writable: true, configurable: true });

// The gateway stops its workers on shutdown; should it die without doing so (SIGKILL), the worker
// is re-parented and ends itself rather than lingering.
const parent = Deno.ppid;
const watchdog = setInterval(() => {
  if (Deno.ppid !== parent) Deno.exit(0);
}, 1000);
Deno.unrefTimer(watchdog);

await import(entry);
if (!handler) {
  // Nothing would ever answer; exiting lets the gateway report the boot failure at once.
  console.error("deno_worker: the function did not call Deno.serve");
  Deno.exit(1);
}
