// The two metering calls around every upstream request (docs/metering.md), over one of two
// transports, chosen by OPENAI_DB_ACCESS:
//   "sql" (default): SQL over SUPABASE_DB_URL with npm:postgres in transaction-pool-safe mode —
//         prepare: false (no named statements kept between calls) and one autocommit statement
//         per call (no session state), as Supabase asks of edge functions behind the pooler.
//   "rpc": supabase-js rpc with the service_role key (through the REST API).
// Both raise MeterError with the HTTP status of the SQL error code (PTnnn → nnn, 22023 → 400),
// so callers never see which transport answered. docs/benchmarks.md has the measured difference.
import postgres from "npm:postgres@3.4.9";
import { createClient } from "npm:@supabase/supabase-js@2";

export type Json = Record<string, unknown>;

export interface Upstream {
  name: string;
  base_url: string | null;
  wire_format: string;
  api_key_env: string | null;
}

export interface Authorization extends Json {
  request_id: string;
  status: "authorized" | "completed" | "failed";
  replayed: boolean;
  upstream: Upstream;
  model: string;
  requested_model: string;
  reserved: string;
  cost: string | null;
}

export interface Completion extends Json {
  cost: string | null;
  balance: string | null;
  replayed: boolean;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  prompt_tokens_details?: { cached_tokens?: number };
  estimated?: boolean;
}

/** A refusal or failure of a metering call: HTTP status, the SQL message as code, its detail and
 * hint (the retry time of a 429). */
export class MeterError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    readonly hint: string | null = null,
  ) {
    super(detail || code);
  }
}

export function statusOfSqlState(sqlstate: string | undefined): number {
  if (sqlstate && /^PT[1-5][0-9][0-9]$/.test(sqlstate)) return Number(sqlstate.slice(2));
  if (sqlstate === "22023" || sqlstate === "22P02") return 400;
  if (sqlstate === "42501") return 403;
  return 500;
}

export interface Meter {
  readonly transport: "sql" | "rpc";
  authorize(
    key: string,
    model: string,
    maxTokens: number,
    requestId: string,
    inputTokens: number,
    /** The answer is handed out only after complete_request succeeded (not a stream): the hold
     * may commit without waiting for its flush (20261130030000). */
    answerAfterCharge?: boolean,
  ): Promise<Authorization>;
  complete(
    requestId: string,
    usage: Usage | null,
    status: number,
    latencyMs: number,
    error: string | null,
  ): Promise<Completion>;
  listModels(key: string): Promise<{ plan: string; models: string[] }>;
}

/** A text value as an SQL literal. E'' escapes both the quote and the backslash, so the literal
 * is the value whatever standard_conforming_strings says; a NUL (which no text value can hold,
 * and which would end the statement's string on the wire) is refused. */
export function sqlText(value: string | null): string {
  if (value === null) return "null";
  if (value.includes("\0")) throw new MeterError(400, "invalid_argument", "text values must not contain NUL characters");
  return `E'${value.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
}

function sqlInteger(value: number): string {
  if (!Number.isSafeInteger(value)) throw new MeterError(400, "invalid_argument", `not an integer: ${value}`);
  return String(value);
}

class SqlMeter implements Meter {
  readonly transport = "sql" as const;
  private sql: postgres.Sql;

  constructor(url: string, poolSize: number) {
    this.sql = postgres(url, {
      prepare: false,
      max: poolSize,
      idle_timeout: 30,
      connect_timeout: 10,
      // No catalog query at connect: json/jsonb, text and numbers are all these calls use.
      fetch_types: false,
      onnotice: () => {},
      connection: { application_name: "tokenmeter-openai" },
    });
  }

  // complete_request is one statement with its values as literals, not parameters: postgres.js
  // sends a statement with parameters and prepare: false as Parse/Describe, waits for the
  // parameter types, then Bind/Execute — two round trips; without parameters it is
  // Parse/Bind/Execute in one write and one round trip (~0.3–0.8 ms less per call measured;
  // docs/benchmarks.md). The API key is the exception: it is always a bound parameter, never
  // statement text, because PostgreSQL logs the text of a statement that fails
  // (log_min_error_statement, `error` by default) and authorize_request fails for every refused
  // key, balance or quota — a literal would put live secrets in the database's log.
  private async one<T>(statement: string, secret?: string): Promise<T> {
    try {
      const rows = await (secret === undefined ? this.sql.unsafe(statement) : this.sql.unsafe(statement, [secret]));
      const value = rows[0]?.r;
      return (typeof value === "string" ? JSON.parse(value) : value) as T;
    } catch (error) {
      if (error instanceof postgres.PostgresError) {
        throw new MeterError(
          statusOfSqlState(error.code),
          error.message,
          error.detail ?? "",
          error.hint ?? null,
        );
      }
      throw error;
    }
  }

  authorize(
    key: string,
    model: string,
    maxTokens: number,
    requestId: string,
    inputTokens: number,
    answerAfterCharge = false,
  ) {
    return this.one<Authorization>(
      `select public.authorize_request($1::text, ${sqlText(model)}, ${sqlInteger(maxTokens)}, ` +
        `${sqlText(requestId)}, ${sqlInteger(inputTokens)}, answer_after_charge => ${answerAfterCharge}) as r`,
      key,
    );
  }

  complete(
    requestId: string,
    usage: Usage | null,
    status: number,
    latencyMs: number,
    error: string | null,
  ) {
    // The error is the upstream's text: a NUL in it is replaced, not a reason to lose the record.
    return this.one<Completion>(
      `select public.complete_request(${sqlText(requestId)}, ` +
        `${sqlText(usage === null ? null : JSON.stringify(usage))}::jsonb, ${sqlInteger(status)}, ` +
        `${sqlInteger(latencyMs)}, ${sqlText(error === null ? null : error.replaceAll("\0", "\uFFFD"))}) as r`,
    );
  }

  listModels(key: string) {
    return this.one<{ plan: string; models: string[] }>(
      `select public.list_key_models($1::text) as r`,
      key,
    );
  }
}

class RpcMeter implements Meter {
  readonly transport = "rpc" as const;
  private client;

  constructor(url: string, serviceKey: string) {
    this.client = createClient(url, serviceKey, {
      auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    });
  }

  private async call<T>(fn: string, args: Json): Promise<T> {
    const { data, error, status } = await this.client.rpc(fn, args);
    if (error) {
      const code = error.code ?? "";
      const byState = statusOfSqlState(code);
      throw new MeterError(
        byState === 500 && status >= 400 ? status : byState,
        error.message,
        error.details ?? "",
        error.hint ?? null,
      );
    }
    return data as T;
  }

  authorize(
    key: string,
    model: string,
    maxTokens: number,
    requestId: string,
    inputTokens: number,
    answerAfterCharge = false,
  ) {
    return this.call<Authorization>("authorize_request", {
      key,
      model,
      max_tokens: maxTokens,
      request_id: requestId,
      input_tokens: inputTokens,
      answer_after_charge: answerAfterCharge,
    });
  }

  complete(
    requestId: string,
    usage: Usage | null,
    status: number,
    latencyMs: number,
    error: string | null,
  ) {
    return this.call<Completion>("complete_request", {
      request_id: requestId,
      usage,
      status,
      latency_ms: latencyMs,
      error,
    });
  }

  listModels(key: string) {
    return this.call<{ plan: string; models: string[] }>("list_key_models", { key });
  }
}

/** The meter this function's environment asks for (OPENAI_DB_ACCESS, OPENAI_DB_POOL_SIZE). */
export function meterFromEnv(): Meter {
  const access = (Deno.env.get("OPENAI_DB_ACCESS") ?? "sql").toLowerCase();
  if (access === "rpc") {
    const url = Deno.env.get("SUPABASE_URL");
    const key = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY");
    if (!url || !key) throw new Error("SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY must be set");
    return new RpcMeter(url, key);
  }
  if (access !== "sql") throw new Error(`OPENAI_DB_ACCESS must be sql or rpc, not ${access}`);
  const dbUrl = Deno.env.get("SUPABASE_DB_URL");
  if (!dbUrl) throw new Error("SUPABASE_DB_URL must be set");
  return new SqlMeter(dbUrl, Number(Deno.env.get("OPENAI_DB_POOL_SIZE") ?? 10));
}
