// Health check of the deployed stack: answers {"status":"ok"} when the function runtime can reach
// the Auth API (listing one user reads auth.users) and the database through the REST API
// (counting the price list, which tokenmeter's migrations create), with the service key.
// It reports which Supabase environment variables are set (never their values).
import { createClient } from "npm:@supabase/supabase-js@2";

const ENV_NAMES = ["SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_DB_URL"];

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

Deno.serve(async (req: Request) => {
  if (req.method !== "GET" && req.method !== "POST") {
    return json({ error: "method_not_allowed" }, 405);
  }
  const env = Object.fromEntries(ENV_NAMES.map((name) => [name, Boolean(Deno.env.get(name))]));
  const url = Deno.env.get("SUPABASE_URL");
  const serviceKey = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY");
  if (!url || !serviceKey) {
    return json({ status: "error", error: "missing_environment", env }, 503);
  }
  const supabase = createClient(url, serviceKey, {
    auth: { persistSession: false, autoRefreshToken: false },
  });
  const started = performance.now();
  const { error } = await supabase.auth.admin.listUsers({ page: 1, perPage: 1 });
  if (error) {
    return json({ status: "error", error: "auth_unreachable", detail: error.message, env }, 503);
  }
  const prices = await supabase.from("model_pricing").select("id", { count: "exact", head: true });
  if (prices.error) {
    return json({ status: "error", error: "database_unreachable", detail: prices.error.message, env }, 503);
  }
  return json({
    status: "ok",
    checks: { auth: "ok", database: "ok" },
    price_rows: prices.count,
    latency_ms: Math.round(performance.now() - started),
    env,
  });
});
