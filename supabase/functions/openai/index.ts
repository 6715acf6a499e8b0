// The metered OpenAI-compatible endpoint (issue 11 §2; docs/metering.md, "The openai edge
// function"):
//   POST /functions/v1/openai/v1/chat/completions   (stream and not)
//   POST /functions/v1/openai/v1/embeddings
//   GET  /functions/v1/openai/v1/models              (the key's plan's models)
// Authorization: Bearer tm_… (config.toml: verify_jwt = false for this function). Each request:
// authorize_request (key, quotas, route, a credit hold) → the routed upstream, its API key from
// the function secret the upstream row names → complete_request with the upstream's usage (or,
// for a stream that ended without it, the tokens actually streamed, flagged usage_estimated).
import { type Authorization, type Completion, type Meter, MeterError, meterFromEnv, type Usage } from "../_shared/meter.ts";
import { json, meterErrorResponse, openaiError } from "../_shared/http.ts";
import { chunkText, counter, countPrompt } from "../_shared/tokens.ts";

const KEY_PATTERN = /^tm_[A-Za-z0-9_-]{43}$/;
// A client's x-request-id / Idempotency-Key: printable ASCII, short enough that the stored id
// (key prefix + ':' + it) stays within the 255 characters request ids may have.
const CLIENT_ID_PATTERN = /^[\x21-\x7e]{1,200}$/;
const MAX_TOKENS_LIMIT = 10_000_000;
const UTF8 = new TextDecoder("utf-8", { fatal: true });

function envNumber(name: string, fallback: number): number {
  const value = Number(Deno.env.get(name));
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

// Below the local gateway's own 1 MiB cap, so that a too-large body is answered here, in
// OpenAI's shape, whenever the gateway lets it through.
const MAX_BODY_BYTES = envNumber("OPENAI_MAX_BODY_BYTES", 1_000_000);
const DEFAULT_MAX_TOKENS = envNumber("OPENAI_DEFAULT_MAX_TOKENS", 4096);
const UPSTREAM_TIMEOUT_MS = envNumber("OPENAI_UPSTREAM_TIMEOUT_MS", 120_000);
const UPSTREAM_IDLE_MS = envNumber("OPENAI_UPSTREAM_IDLE_MS", 60_000);

let meter: Meter | undefined;
function getMeter(): Meter {
  meter ??= meterFromEnv();
  return meter;
}

class BadRequest extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

// deno-lint-ignore no-explicit-any
type Body = Record<string, any>;

interface Call {
  kind: "chat" | "embeddings";
  key: string;
  requestId: string; // what the client sees in x-request-id
  meteredId: string; // key prefix + ':' + requestId: the metered request's id
  body: Body;
  maxTokens: number; // what is authorized: the completion cap times n
  inputBound: number; // an upper bound of the prompt's tokens: the body's byte length
  stream: boolean;
  clientWantsUsage: boolean;
}

function bearer(req: Request): string {
  const header = req.headers.get("authorization");
  if (!header) {
    throw new BadRequest(
      401,
      "missing_api_key",
      "No API key provided: send Authorization: Bearer tm_… (a tokenmeter API key).",
    );
  }
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match || !KEY_PATTERN.test(match[1])) {
    throw new BadRequest(401, "invalid_api_key", "The API key is malformed: expected tm_ and 43 characters.");
  }
  return match[1];
}

function tooLarge(): BadRequest {
  return new BadRequest(413, "request_too_large", `The request body exceeds ${MAX_BODY_BYTES} bytes.`);
}

async function readBody(req: Request): Promise<Uint8Array> {
  const length = req.headers.get("content-length");
  if (length !== null) {
    // Declared: refused unread when too large; else read in one piece (the HTTP layer holds
    // the body to its declared length).
    if (Number(length) > MAX_BODY_BYTES) throw tooLarge();
    return new Uint8Array(await req.arrayBuffer());
  }
  if (!req.body) return new Uint8Array();
  // Chunked: read until the limit is passed, then stop reading.
  const parts: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_BODY_BYTES) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    parts.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    all.set(part, at);
    at += part.byteLength;
  }
  return all;
}

function positiveInteger(body: Body, field: string, max: number): number | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > max) {
    throw new BadRequest(
      400,
      "invalid_value",
      `Invalid '${field}': expected an integer from 1 to ${max}, got ${JSON.stringify(value)}.`,
      field,
    );
  }
  return value;
}

async function parseCall(req: Request, kind: Call["kind"]): Promise<Call> {
  const key = bearer(req);
  const raw = await readBody(req);
  let body: unknown;
  try {
    body = JSON.parse(UTF8.decode(raw));
  } catch {
    throw new BadRequest(400, "invalid_json", "The request body is not valid JSON.");
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    throw new BadRequest(400, "invalid_json", "The request body must be a JSON object.");
  }
  const b = body as Body;
  if (typeof b.model !== "string" || b.model.trim() === "" || b.model.length > 255) {
    throw new BadRequest(400, "missing_model", "'model' is required: a non-empty string of at most 255 characters.", "model");
  }
  const given = req.headers.get("x-request-id") ?? req.headers.get("idempotency-key");
  if (given !== null && !CLIENT_ID_PATTERN.test(given)) {
    throw new BadRequest(400, "invalid_request_id", "x-request-id / Idempotency-Key must be 1 to 200 printable ASCII characters.");
  }
  const requestId = given ?? crypto.randomUUID();
  // Namespaced by the key's public prefix: two clients choosing the same id never collide.
  const meteredId = `${key.slice(0, 11)}:${requestId}`;
  let maxTokens = 1;
  let stream = false;
  if (kind === "chat") {
    if (!Array.isArray(b.messages) || b.messages.length === 0) {
      throw new BadRequest(400, "missing_messages", "'messages' is required: a non-empty array.", "messages");
    }
    const completion = positiveInteger(b, "max_completion_tokens", MAX_TOKENS_LIMIT) ??
      positiveInteger(b, "max_tokens", MAX_TOKENS_LIMIT) ?? DEFAULT_MAX_TOKENS;
    if (b.max_completion_tokens === undefined || b.max_completion_tokens === null) {
      b.max_tokens = completion; // the upstream gets exactly the cap that was authorized
    } else {
      b.max_completion_tokens = completion;
      if (b.max_tokens !== undefined && b.max_tokens !== null) b.max_tokens = completion;
    }
    const n = positiveInteger(b, "n", 128) ?? 1;
    maxTokens = completion * n;
    if (maxTokens > MAX_TOKENS_LIMIT) {
      throw new BadRequest(400, "invalid_value", `max_tokens × n may be at most ${MAX_TOKENS_LIMIT}.`, "n");
    }
    if (b.stream !== undefined && b.stream !== null && typeof b.stream !== "boolean") {
      throw new BadRequest(400, "invalid_value", "'stream' must be true or false.", "stream");
    }
    stream = b.stream === true;
  } else {
    const input = b.input;
    if (input === undefined || input === null || input === "" || (Array.isArray(input) && input.length === 0)) {
      throw new BadRequest(400, "missing_input", "'input' is required: a string or a non-empty array.", "input");
    }
  }
  const options = b.stream_options;
  const clientWantsUsage = stream && !!options && typeof options === "object" && options.include_usage === true;
  if (stream) b.stream_options = { ...(options && typeof options === "object" ? options : {}), include_usage: true };
  return {
    kind,
    key,
    requestId,
    meteredId,
    body: b,
    maxTokens,
    inputBound: Math.min(raw.byteLength, MAX_TOKENS_LIMIT),
    stream,
    clientWantsUsage,
  };
}

function headersFor(call: Call, auth: Authorization | null): Headers {
  const h = new Headers({ "x-request-id": call.requestId });
  if (auth) {
    h.set("x-tokenmeter-model", auth.model);
    h.set("x-tokenmeter-upstream", auth.upstream.name);
  }
  return h;
}

interface Outcome {
  completion: Completion | null;
  /** complete_request answered with a refusal (4xx): final, not worth retrying. */
  refused: MeterError | null;
}

// complete_request is retried at once for ~3 s (a pooler hiccup, a database restart), then in
// the background until shortly before the hold lapses; what never lands is settled at its hold
// by the database (docs/metering.md, "Requests never completed").
const QUICK_RETRIES_MS = [50, 100, 200, 400, 800, 1600];
const LATE_RETRY_MAX_MS = 5_000;
const LATE_RETRY_MARGIN_MS = 15_000;

/** complete_request now, retried on transport failures (a refusal is final). */
async function completeNow(
  call: Call,
  usage: Usage | null,
  status: number,
  latencyMs: number,
  error: string | null,
): Promise<Outcome> {
  for (let attempt = 0;; attempt++) {
    try {
      return { completion: await getMeter().complete(call.meteredId, usage, status, Math.round(latencyMs), error), refused: null };
    } catch (failure) {
      if (failure instanceof MeterError && failure.status < 500) {
        console.error("complete_request refused", call.meteredId, failure.code, failure.detail);
        return { completion: null, refused: failure };
      }
      if (attempt === QUICK_RETRIES_MS.length) {
        console.error("complete_request failed", call.meteredId, String(failure));
        return { completion: null, refused: null };
      }
      await new Promise((resolve) => setTimeout(resolve, QUICK_RETRIES_MS[attempt]));
    }
  }
}

/** The same call in the background, until LATE_RETRY_MARGIN_MS before the hold lapses: past
 * that the database settles the request at its hold, and a late call would meet a 409. */
function completeLater(
  call: Call,
  auth: Authorization,
  usage: Usage | null,
  status: number,
  latencyMs: number,
  error: string | null,
): void {
  const deadline = Date.parse(String(auth.expires_at)) - LATE_RETRY_MARGIN_MS;
  const task = (async () => {
    for (let wait = 1000; Date.now() + wait < deadline; wait = Math.min(wait * 2, LATE_RETRY_MAX_MS)) {
      await new Promise((resolve) => setTimeout(resolve, wait));
      try {
        await getMeter().complete(call.meteredId, usage, status, Math.round(latencyMs), error);
        console.error("complete_request landed late", call.meteredId);
        return;
      } catch (failure) {
        if (failure instanceof MeterError && failure.status < 500) {
          console.error("complete_request refused late", call.meteredId, failure.code, failure.detail);
          return;
        }
      }
    }
    console.error("complete_request never landed: settled at its hold once it lapses", call.meteredId, auth.expires_at);
  })();
  // deno-lint-ignore no-explicit-any
  (globalThis as any).EdgeRuntime?.waitUntil?.(task);
}

/** complete_request with the quick retries, then left to completeLater: the upstream has been
 * paid for (or failed), so the record must land if the database can take it at all. */
async function complete(
  call: Call,
  auth: Authorization,
  usage: Usage | null,
  status: number,
  latencyMs: number,
  error: string | null,
): Promise<Completion | null> {
  const outcome = await completeNow(call, usage, status, latencyMs, error);
  if (!outcome.completion && !outcome.refused) completeLater(call, auth, usage, status, latencyMs, error);
  return outcome.completion;
}

function replayAnswer(call: Call, auth: Authorization): Response {
  const h = headersFor(call, auth);
  if (auth.status === "authorized") {
    h.set("retry-after", "1");
    return openaiError(409, "request_in_progress", `Request ${call.requestId} is still being served; nothing more was charged.`, { headers: h });
  }
  const what = auth.status === "completed" ? `was already served and charged ${auth.cost} ${auth.currency}` : "already failed upstream (nothing was charged); send it again with a new x-request-id";
  return openaiError(409, `request_already_${auth.status}`, `Request ${call.requestId} ${what}.`, { headers: h });
}

async function upstreamError(call: Call, auth: Authorization, res: Response, started: number): Promise<Response> {
  const text = (await res.text().catch(() => "")).slice(0, 2000);
  await complete(call, auth, null, res.status, performance.now() - started, text || res.statusText);
  const h = headersFor(call, auth);
  const after = res.headers.get("retry-after");
  if (after) h.set("retry-after", after);
  let message = text;
  try {
    message = JSON.parse(text)?.error?.message ?? text;
  } catch { /* not JSON: the text itself */ }
  // What the client's request caused stays the client's (a bad parameter, too long, rate
  // limited); anything else — the upstream refusing our secret (401/403), not knowing the routed
  // model (404), failing — is the operator's, a bad gateway.
  const status = [400, 413, 422, 429].includes(res.status) ? res.status : 502;
  return openaiError(status, "upstream_error", `Upstream ${auth.upstream.name} answered ${res.status}: ${message || res.statusText}. Nothing was charged.`, { headers: h });
}

async function callUpstream(call: Call, auth: Authorization, path: string, signal: AbortSignal): Promise<Response> {
  const upstream = auth.upstream;
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (call.stream) headers.accept = "text/event-stream";
  if (upstream.api_key_env) {
    const secret = Deno.env.get(upstream.api_key_env);
    if (!secret) throw new Error(`the function secret ${upstream.api_key_env} is not set`);
    headers.authorization = `Bearer ${secret}`;
  }
  if (!upstream.base_url) throw new Error("the upstream has no base URL");
  const body = { ...call.body, model: auth.model };
  return await fetch(upstream.base_url.replace(/\/+$/, "") + path, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
    signal,
  });
}

function withCost(usage: Usage & Record<string, unknown>, completion: Completion | null): Record<string, unknown> {
  return completion?.cost != null ? { ...usage, cost: completion.cost } : { ...usage };
}

async function estimatedUsage(call: Call, auth: Authorization, answer: string): Promise<Usage> {
  const count = await counter(auth.model);
  const prompt = call.kind === "chat"
    ? await countPrompt(auth.model, call.body.messages, call.body.tools)
    : count(typeof call.body.input === "string" ? call.body.input : JSON.stringify(call.body.input));
  // Within what was authorized: an estimate never charges more than the hold covers.
  return {
    prompt_tokens: Math.min(prompt, call.inputBound),
    completion_tokens: Math.min(count(answer), call.maxTokens),
    estimated: true,
  };
}

async function serveCall(req: Request, kind: Call["kind"]): Promise<Response> {
  let call: Call;
  try {
    call = await parseCall(req, kind);
  } catch (error) {
    if (error instanceof BadRequest) return openaiError(error.status, error.code, error.message, { param: error.param });
    throw error;
  }
  let auth: Authorization;
  const authorizing = performance.now();
  try {
    // A non-streamed answer is handed out only after complete_request has committed (below),
    // so its hold may commit without waiting for its WAL flush: a crash can lose only a hold
    // whose answer is then withheld (docs/metering.md, "Durability of the two calls"). A
    // stream's content goes out before its charge: its hold stays durable.
    auth = await getMeter().authorize(call.key, call.body.model, call.maxTokens, call.meteredId, call.inputBound, !call.stream);
  } catch (error) {
    if (error instanceof MeterError) return meterErrorResponse(error, headersFor(call, null));
    throw error;
  }
  if (auth.replayed) return replayAnswer(call, auth);

  const started = performance.now();
  // Server-Timing (ms): where the time of a request goes, for docs/benchmarks.md.
  const timing = [`authorize;dur=${(started - authorizing).toFixed(1)}`];
  const abort = new AbortController();
  const onClientGone = () => abort.abort(new Error("the client went away"));
  req.signal.addEventListener("abort", onClientGone, { once: true });
  const headersTimer = setTimeout(() => abort.abort(new Error("upstream timeout")), UPSTREAM_TIMEOUT_MS);
  let res: Response;
  try {
    res = await callUpstream(call, auth, kind === "chat" ? "/chat/completions" : "/embeddings", abort.signal);
  } catch (error) {
    clearTimeout(headersTimer);
    const gone = req.signal.aborted;
    const detail = String(error instanceof Error ? error.message : error);
    // 499: nginx's "client closed request", for the log; the client is not there to read it.
    const status = gone ? 499 : abort.signal.aborted ? 504 : 502;
    await complete(call, auth, null, status, performance.now() - started, gone ? "the client went away" : detail);
    // The detail (a missing secret's name, a host) stays in the log, not in the answer.
    if (!gone) console.error("upstream unreachable", auth.upstream.name, detail);
    const what = status === 504 ? "did not answer in time" : "could not be reached";
    return openaiError(status === 499 ? 502 : status, "upstream_unavailable", `Upstream ${auth.upstream.name} ${what}. Nothing was charged.`, { headers: headersFor(call, auth) });
  }
  clearTimeout(headersTimer);
  timing.push(`upstream;dur=${(performance.now() - started).toFixed(1)}`);
  // From here a client that goes away is seen by the body: the stream's cancel, or the answer
  // read to its end and charged anyway (the upstream has done the work).
  req.signal.removeEventListener("abort", onClientGone);
  if (!res.ok) return await upstreamError(call, auth, res, started);
  if (call.stream) {
    const streamed = streamThrough(call, auth, res, abort, started);
    streamed.headers.set("server-timing", timing.join(", "));
    return streamed;
  }

  let text: string;
  try {
    text = await res.text();
  } catch (error) {
    await complete(call, auth, null, 502, performance.now() - started, `answer cut: ${String(error)}`);
    return openaiError(502, "upstream_error", `Upstream ${auth.upstream.name} cut its answer. Nothing was charged.`, { headers: headersFor(call, auth) });
  }
  let answer: Body;
  try {
    answer = JSON.parse(text);
    if (!answer || typeof answer !== "object") throw new Error("not an object");
  } catch {
    await complete(call, auth, null, 502, performance.now() - started, `not JSON: ${text.slice(0, 500)}`);
    return openaiError(502, "upstream_error", `Upstream ${auth.upstream.name} answered with something that is not JSON. Nothing was charged.`, { headers: headersFor(call, auth) });
  }
  let usage = answer.usage as Usage | undefined;
  if (!usage || typeof usage !== "object") {
    const said = kind === "chat"
      ? (answer.choices ?? []).map((c: Body) => (c?.message?.content ?? "") + JSON.stringify(c?.message?.tool_calls ?? "")).join("")
      : "";
    usage = await estimatedUsage(call, auth, said);
  } else if (kind === "embeddings") {
    usage = { ...usage, completion_tokens: usage.completion_tokens ?? 0 };
  }
  const completing = performance.now();
  const outcome = await completeNow(call, usage, res.status, completing - started, null);
  const completion = outcome.completion;
  if (!completion) {
    // Not billed, so not handed out: the request is recorded as failed (free) instead, now if
    // the database refused the usage, in the background if it could not be reached.
    const latency = performance.now() - started;
    const h = headersFor(call, auth);
    if (outcome.refused?.code === "request_not_found") {
      // The hold was lost whole (a database crash before its asynchronous commit reached the
      // disk): nothing is held, charged or recorded, so the answer cannot be handed out.
      console.error("answer withheld: its hold was lost in a database restart", call.meteredId);
      h.set("retry-after", "1");
      return openaiError(503, "billing_unavailable", "The answer could not be billed (the metering database restarted and lost this request's authorization), so it was withheld; nothing was charged. Retry it.", { headers: h });
    }
    if (outcome.refused) {
      await complete(call, auth, null, 502, latency, `answer withheld: its usage was refused (${outcome.refused.code}: ${outcome.refused.detail})`.slice(0, 2000));
      return openaiError(502, "upstream_error", `Upstream ${auth.upstream.name} reported usage that could not be charged; the answer was withheld and nothing was charged.`, { headers: h });
    }
    completeLater(call, auth, null, 503, latency, "answer withheld: complete_request could not reach the database");
    h.set("retry-after", "1");
    return openaiError(503, "billing_unavailable", "The answer could not be billed (the metering database is unreachable), so it was withheld; nothing was charged. Retry with a new x-request-id.", { headers: h });
  }
  timing.push(`complete;dur=${(performance.now() - completing).toFixed(1)}`);
  answer.usage = withCost(usage as Usage & Record<string, unknown>, completion);
  const h = headersFor(call, auth);
  h.set("server-timing", timing.join(", "));
  return json(answer, res.status, h);
}

const encoder = new TextEncoder();
const EVENT_END = /\r\n\r\n|\n\n|\r\r/g;

/** The upstream's SSE, passed on event by event as it arrives. The event carrying `usage` is held
 * back until the request is charged, then sent with `usage.cost` (or dropped when the client did
 * not ask for usage: OpenAI sends none then), followed by `[DONE]`. A stream that ends without
 * usage — the upstream cut it, or the client went away — is charged from the tokens streamed. */
function streamThrough(call: Call, auth: Authorization, res: Response, abort: AbortController, started: number): Response {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  let answer = "";
  let usage: (Usage & Record<string, unknown>) | null = null;
  let usageEvent: Body | null = null;
  let settled: Promise<Completion | null> | null = null;

  const settle = (how: string | null): Promise<Completion | null> => {
    settled ??= (async () => {
      const charged = usage ?? await estimatedUsage(call, auth, answer);
      return await complete(call, auth, charged, res.status, performance.now() - started, how);
    })();
    return settled;
  };
  // The client did not ask for usage: nothing more it receives depends on the charge, so the
  // stream ends without waiting for complete_request. Its hold is durable (streams never pass
  // answer_after_charge) and covers the request meanwhile; a charge that never lands is settled
  // at the hold (docs/metering.md, "Requests never completed").
  const settleAfter = (how: string | null): void => {
    // Not inside the ?. call below (that would skip it where EdgeRuntime does not exist), and
    // never an unhandled rejection (it would end the worker): what fails here is settled at
    // the hold once it lapses.
    const charging = settle(how).catch((error) => {
      console.error("charging a finished stream failed", call.meteredId, String(error));
      return null;
    });
    // deno-lint-ignore no-explicit-any
    (globalThis as any).EdgeRuntime?.waitUntil?.(charging);
  };
  const usageBytes = async (): Promise<Uint8Array | null> => {
    if (!call.clientWantsUsage) {
      settleAfter(null);
      return null;
    }
    const completion = await settle(null);
    if (!usageEvent || !usage) return null;
    usageEvent.usage = withCost(usage, completion);
    const bytes = encoder.encode(`data: ${JSON.stringify(usageEvent)}\n\n`);
    usageEvent = null; // sent once: before [DONE], not again when the upstream's body ends
    return bytes;
  };
  const readWithIdleTimeout = async () => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        reader.read(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("upstream idle timeout")), UPSTREAM_IDLE_MS);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  };

  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (true) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await readWithIdleTimeout();
        } catch (error) {
          abort.abort(error);
          reader.cancel().catch(() => {});
          if (usage) {
            const last = await usageBytes();
            if (last) controller.enqueue(last);
            controller.close();
          } else {
            await settle(`stream cut: ${String(error instanceof Error ? error.message : error)}`);
            controller.error(new Error("upstream stream cut"));
          }
          return;
        }
        if (chunk.done) {
          pending += decoder.decode();
          if (pending.trim()) controller.enqueue(encoder.encode(pending));
          pending = "";
          const last = await usageBytes();
          if (last) controller.enqueue(last);
          if (!usage) settleAfter("stream ended without usage");
          controller.close();
          return;
        }
        pending += decoder.decode(chunk.value, { stream: true });
        let forwarded = "";
        let start = 0;
        EVENT_END.lastIndex = 0;
        for (let m = EVENT_END.exec(pending); m; m = EVENT_END.exec(pending)) {
          const end = m.index + m[0].length;
          const event = pending.slice(start, end);
          start = end;
          const data = event.split(/\r\n|\n|\r/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
          if (data === "[DONE]") {
            if (forwarded) controller.enqueue(encoder.encode(forwarded));
            forwarded = "";
            const last = await usageBytes();
            if (last) controller.enqueue(last);
            forwarded += event;
            continue;
          }
          let parsed: Body | null = null;
          if (data) {
            try {
              parsed = JSON.parse(data);
            } catch { /* not JSON: passed on untouched */ }
          }
          if (parsed && parsed.usage && typeof parsed.usage === "object") {
            usage = parsed.usage;
            answer += chunkText(parsed);
            const hasChoices = Array.isArray(parsed.choices) && parsed.choices.length > 0;
            if (hasChoices && !call.clientWantsUsage) {
              delete parsed.usage; // the client did not ask for usage; the choices still go
              forwarded += `data: ${JSON.stringify(parsed)}\n\n`;
            } else {
              usageEvent = parsed;
            }
            continue;
          }
          if (parsed) answer += chunkText(parsed);
          forwarded += event;
        }
        pending = pending.slice(start);
        if (forwarded) {
          controller.enqueue(encoder.encode(forwarded));
          return;
        }
      }
    },
    async cancel() {
      // The client went away: stop the upstream and charge what was streamed to it.
      abort.abort(new Error("the client went away"));
      reader.cancel().catch(() => {});
      const charging = settle(usage ? null : "the client went away");
      // deno-lint-ignore no-explicit-any
      (globalThis as any).EdgeRuntime?.waitUntil?.(charging);
      await charging;
    },
  }, { highWaterMark: 0 });
  const h = headersFor(call, auth);
  h.set("content-type", res.headers.get("content-type") ?? "text/event-stream; charset=utf-8");
  h.set("cache-control", "no-cache");
  return new Response(body, { status: res.status, headers: h });
}

async function models(req: Request): Promise<Response> {
  let key: string;
  try {
    key = bearer(req);
  } catch (error) {
    if (error instanceof BadRequest) return openaiError(error.status, error.code, error.message);
    throw error;
  }
  try {
    const found = await getMeter().listModels(key);
    return json({
      object: "list",
      data: found.models.map((id) => ({ id, object: "model", created: 0, owned_by: found.plan })),
    });
  } catch (error) {
    if (error instanceof MeterError) return meterErrorResponse(error);
    throw error;
  }
}

Deno.serve(async (req: Request) => {
  const path = new URL(req.url).pathname.replace(/^\/openai/, "").replace(/\/+$/, "");
  try {
    if (path === "/v1/chat/completions" || path === "/chat/completions") {
      if (req.method !== "POST") return openaiError(405, "method_not_allowed", "Use POST.");
      return await serveCall(req, "chat");
    }
    if (path === "/v1/embeddings" || path === "/embeddings") {
      if (req.method !== "POST") return openaiError(405, "method_not_allowed", "Use POST.");
      return await serveCall(req, "embeddings");
    }
    if (path === "/v1/models" || path === "/models") {
      if (req.method !== "GET") return openaiError(405, "method_not_allowed", "Use GET.");
      return await models(req);
    }
    return openaiError(404, "unknown_url", `Unknown path ${path || "/"}: this endpoint serves /v1/chat/completions, /v1/embeddings and /v1/models.`);
  } catch (error) {
    console.error("openai function failed", error);
    return openaiError(500, "internal_error", "The endpoint failed; nothing was charged.");
  }
});
