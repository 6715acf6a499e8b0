// Operator endpoint (issue 11 §2, seed 002's create-key call), service_role only:
//   POST /functions/v1/admin/keys {"name", "sub_name", "expires_in", "user_id"?, "email"?}
//     → 201 {"id", "prefix", "key", "name", "user_id", "plan", "expires_at", "subscription_id"}:
//     the secret is in this answer only.
//   DELETE /functions/v1/admin/keys/<id or prefix> → the revoked key.
// name: the key's name (seed 002: the user's name); sub_name: the plan; expires_in: days, -1 or
// absent for never (seed 000). The key's user: user_id, or the user with that email (created,
// confirmed, when there is none), or — seed 002's call names no user — a new user named `name`.
// A user without a live subscription to the plan gets an active one (default quotas), in the same
// transaction as the key. config.toml keeps verify_jwt = true, so the platform has checked the
// JWT's signature; this function then requires its role to be service_role.
import postgres from "npm:postgres@3.4.9";
import { createClient } from "npm:@supabase/supabase-js@2";
import { statusOfSqlState } from "../_shared/meter.ts";
import { json, openaiError } from "../_shared/http.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EMAIL = /^[^\s@]{1,64}@[^\s@]{1,255}$/;
const MAX_BODY_BYTES = 64 * 1024;

let sql: postgres.Sql | undefined;
function db(): postgres.Sql {
  sql ??= postgres(Deno.env.get("SUPABASE_DB_URL")!, {
    prepare: false,
    max: 2,
    idle_timeout: 30,
    fetch_types: false,
    onnotice: () => {},
    connection: { application_name: "tokenmeter-admin" },
  });
  return sql;
}

class Refusal extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

function role(req: Request): string | null {
  const token = /^Bearer\s+([\w-]+\.([\w-]+)\.[\w-]+)$/.exec(req.headers.get("authorization") ?? "");
  if (!token) return null;
  try {
    const payload = token[2].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload.padEnd(payload.length + (4 - payload.length % 4) % 4, "=")))?.role ?? null;
  } catch {
    return null;
  }
}

async function readJson(req: Request): Promise<Record<string, unknown>> {
  const text = await req.text();
  if (new TextEncoder().encode(text).byteLength > MAX_BODY_BYTES) {
    throw new Refusal(413, "request_too_large", `The body exceeds ${MAX_BODY_BYTES} bytes.`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Refusal(400, "invalid_json", "The request body is not valid JSON.");
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    throw new Refusal(400, "invalid_json", "The request body must be a JSON object.");
  }
  return body as Record<string, unknown>;
}

function expiresAt(value: unknown): string | null {
  if (value === undefined || value === null || value === -1) return null;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 36500) {
    throw new Refusal(400, "invalid_value", "expires_in must be a number of days from 1 to 36500, or -1 for never.");
  }
  return new Date(Date.now() + value * 86_400_000).toISOString();
}

function sqlRefusal(error: unknown): Refusal | null {
  if (error instanceof postgres.PostgresError) {
    const status = statusOfSqlState(error.code);
    if (error.code === "23505") return new Refusal(409, "conflict", "A concurrent request created the same subscription; try again.");
    if (status < 500) return new Refusal(status, error.message, error.detail || error.message);
  }
  return null;
}

async function userFor(body: Record<string, unknown>, name: string): Promise<string> {
  if (body.user_id !== undefined && body.user_id !== null) {
    if (typeof body.user_id !== "string" || !UUID.test(body.user_id)) {
      throw new Refusal(400, "invalid_value", "user_id must be a UUID.");
    }
    const found = await db()`select id from auth.users where id = ${body.user_id}::uuid`;
    if (found.length === 0) throw new Refusal(404, "user_not_found", `No user ${body.user_id}.`);
    return body.user_id;
  }
  let email: string;
  if (body.email !== undefined && body.email !== null) {
    if (typeof body.email !== "string" || !EMAIL.test(body.email)) {
      throw new Refusal(400, "invalid_value", "email must be an email address.");
    }
    email = body.email;
    const found = await db()`select id::text from auth.users where lower(email) = lower(${email})`;
    if (found.length > 0) return found[0].id;
  } else {
    // Seed 002's call creates the user it names; .invalid (RFC 2606) never receives mail.
    email = `key-${crypto.randomUUID()}@users.tokenmeter.invalid`;
  }
  const auth = createClient(Deno.env.get("SUPABASE_URL")!, Deno.env.get("SUPABASE_SERVICE_ROLE_KEY")!, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
  const { data, error } = await auth.auth.admin.createUser({
    email,
    email_confirm: true,
    user_metadata: { name },
  });
  if (error || !data.user) throw new Error(`creating the user failed: ${error?.message}`);
  return data.user.id;
}

async function createKey(req: Request): Promise<Response> {
  const body = await readJson(req);
  const name = body.name;
  if (typeof name !== "string" || name.trim() === "" || name.length > 100) {
    throw new Refusal(400, "invalid_value", "name must be a non-empty string of at most 100 characters.");
  }
  const plan = body.sub_name;
  if (typeof plan !== "string" || plan.trim() === "" || plan.length > 255) {
    throw new Refusal(400, "invalid_value", "sub_name must name a plan.");
  }
  const expires = expiresAt(body.expires_in);
  const plans = await db()`select id::text from public.plans where name = ${plan} and is_active`;
  if (plans.length === 0) throw new Refusal(404, "plan_not_found", `No active plan ${plan}.`);
  const userId = await userFor(body, name);
  try {
    const created = await db().begin(async (tx) => {
      const live = await tx`
        select id::text from public.subscriptions
        where user_id = ${userId}::uuid and plan_id = ${plans[0].id}::uuid
          and status in ('active', 'suspended')`;
      const subscriptionId = live.length > 0 ? live[0].id : (await tx`
        insert into public.subscriptions (user_id, plan_id, status)
        values (${userId}::uuid, ${plans[0].id}::uuid, 'active') returning id::text`)[0].id;
      const [row] = await tx`
        select public.create_api_key(${name}, ${plan}, ${expires}::timestamptz,
                                     user_id => ${userId}::uuid) as r`;
      return { ...row.r, subscription_id: subscriptionId };
    });
    return json({
      id: created.id,
      prefix: created.prefix,
      key: created.key,
      name: created.name,
      user_id: created.user_id,
      plan: created.plan,
      expires_at: created.expires_at,
      subscription_id: created.subscription_id,
    }, 201, { "cache-control": "no-store" });
  } catch (error) {
    throw sqlRefusal(error) ?? error;
  }
}

async function revokeKey(which: string): Promise<Response> {
  try {
    const [row] = await db()`select public.revoke_api_key(${which}) as r`;
    return json(row.r);
  } catch (error) {
    throw sqlRefusal(error) ?? error;
  }
}

Deno.serve(async (req: Request) => {
  if (role(req) !== "service_role") {
    return openaiError(403, "forbidden", "The admin function requires the service_role key.");
  }
  const path = new URL(req.url).pathname.replace(/^\/admin/, "").replace(/\/+$/, "");
  try {
    if (path === "/keys") {
      if (req.method !== "POST") return openaiError(405, "method_not_allowed", "Use POST to create a key.");
      return await createKey(req);
    }
    const revoke = /^\/keys\/([A-Za-z0-9_-]{1,64})$/.exec(path);
    if (revoke) {
      if (req.method !== "DELETE") return openaiError(405, "method_not_allowed", "Use DELETE to revoke a key.");
      return await revokeKey(revoke[1]);
    }
    return openaiError(404, "unknown_url", `Unknown path ${path || "/"}: POST /keys, DELETE /keys/<id or prefix>.`);
  } catch (error) {
    if (error instanceof Refusal) return openaiError(error.status, error.code, error.message);
    console.error("admin function failed", error);
    return openaiError(500, "internal_error", "The admin function failed.");
  }
});
