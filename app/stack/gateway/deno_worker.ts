// Runs one edge function (supabase/functions/NAME/index.ts) for tokenmeter's API gateway.
//
// Supabase functions start their server with `Deno.serve(handler)`. This wrapper replaces
// Deno.serve so that the function's handler listens on the loopback port the gateway chose
// (TOKENMETER_WORKER_PORT), then imports the function (TOKENMETER_FUNCTION_ENTRY, a file: URL).
// The gateway proxies every /functions/v1/NAME/... request here and treats a process that exits
// before the port answers as a boot failure.

const port = Number(Deno.env.get("TOKENMETER_WORKER_PORT"));
const entry = Deno.env.get("TOKENMETER_FUNCTION_ENTRY");
if (!Number.isInteger(port) || port <= 0 || !entry) {
  console.error("deno_worker: TOKENMETER_WORKER_PORT and TOKENMETER_FUNCTION_ENTRY are required");
  Deno.exit(2);
}

type Handler = (request: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>;
type ServeOptions = {
  handler?: Handler;
  onError?: (error: unknown) => Response | Promise<Response>;
  signal?: AbortSignal;
};

const realServe = Deno.serve.bind(Deno);
let serving = false;

function serve(...args: unknown[]): Deno.HttpServer {
  // The forms Supabase functions use: serve(handler), serve(options, handler),
  // serve({ handler, ... }).
  let options: ServeOptions = {};
  let handler: Handler | undefined;
  if (typeof args[0] === "function") {
    handler = args[0] as Handler;
  } else {
    options = (args[0] ?? {}) as ServeOptions;
    handler = typeof args[1] === "function" ? args[1] as Handler : options.handler;
  }
  if (!handler) throw new TypeError("Deno.serve: a handler is required");
  if (serving) throw new Error("Deno.serve may be called only once per edge function");
  serving = true;
  return realServe({
    hostname: "127.0.0.1",
    port,
    onListen() {},
    ...(options.onError ? { onError: options.onError } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  }, handler);
}

Object.defineProperty(Deno, "serve", { value: serve, writable: true, configurable: true });

// The gateway stops its workers on shutdown; should it die without doing so (SIGKILL), the worker
// is re-parented and ends itself rather than lingering on its port.
const parent = Deno.ppid;
const watchdog = setInterval(() => {
  if (Deno.ppid !== parent) Deno.exit(0);
}, 1000);
Deno.unrefTimer(watchdog);

await import(entry);
