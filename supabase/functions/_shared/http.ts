// OpenAI-shaped answers: {"error": {"message", "type", "param", "code"}}, which every OpenAI
// client library parses, and the error types used for each HTTP status.
import { MeterError } from "./meter.ts";

const TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  402: "insufficient_quota",
  403: "permission_error",
  404: "not_found_error",
  405: "invalid_request_error",
  409: "idempotency_error",
  413: "invalid_request_error",
  422: "invalid_request_error",
  429: "rate_limit_error",
};

export function json(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/json");
  return new Response(JSON.stringify(body), { status, headers: h });
}

export function openaiError(
  status: number,
  code: string,
  message: string,
  extra: { param?: string | null; headers?: HeadersInit } = {},
): Response {
  const type = TYPES[status] ?? (status >= 500 ? "api_error" : "invalid_request_error");
  return json(
    { error: { message, type, param: extra.param ?? null, code } },
    status,
    extra.headers,
  );
}

/** Seconds until an ISO time (the 429 hint), at least 1. */
export function retryAfter(iso: string | null): string | null {
  if (!iso) return null;
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return null;
  return String(Math.max(1, Math.ceil((at - Date.now()) / 1000)));
}

export function meterErrorResponse(error: MeterError, headers: HeadersInit = {}): Response {
  const h = new Headers(headers);
  if (error.status === 429) {
    const after = retryAfter(error.hint);
    if (after) h.set("retry-after", after);
  }
  if (error.status >= 500) {
    // The detail of an internal failure stays in the function's log.
    console.error("metering failed", error.code, error.detail);
    const message = error.status === 503 && error.code === "no_route"
      ? error.detail
      : "The metering service failed; nothing was charged.";
    return openaiError(error.status, error.code, message, { headers: h });
  }
  return openaiError(error.status, error.code, error.detail || error.code, { headers: h });
}
