// supabase-js smoke test against the local stack, run by tests/test_supabase_js.py:
//   deno test --allow-all tests/js/
// Env: SUPABASE_URL, SUPABASE_ANON_KEY, and the names of the test-only table and function the
// pytest wrapper created with explicit grants (SMOKE_TABLE, SMOKE_RPC).
import { createClient, type SupabaseClient } from "npm:@supabase/supabase-js@2";

const url = required("SUPABASE_URL");
const anonKey = required("SUPABASE_ANON_KEY");
const table = required("SMOKE_TABLE");
const rpc = required("SMOKE_RPC");
const password = "correct-horse-9";

function required(name: string): string {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`${name} must be set`);
  return value;
}

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

function newClient(): SupabaseClient {
  return createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

function randomEmail(): string {
  return `js-${crypto.randomUUID().slice(0, 12)}@example.com`;
}

Deno.test("auth: sign up returns a session for a confirmed user", async () => {
  const supabase = newClient();
  const email = randomEmail();
  const { data, error } = await supabase.auth.signUp({
    email, password, options: { data: { plan: "free" } },
  });
  assert(!error, `signUp failed: ${error?.message}`);
  assert(data.session?.access_token, "signUp returned no session");
  assert(data.user?.email === email, "signUp returned another user");
  assert(data.user?.user_metadata.plan === "free", "user_metadata lost");
  const { data: current } = await supabase.auth.getUser();
  assert(current.user?.id === data.user?.id, "getUser does not see the new user");
});

Deno.test("auth: sign in, refresh, sign out", async () => {
  const email = randomEmail();
  const first = await newClient().auth.signUp({ email, password });
  assert(!first.error, `signUp failed: ${first.error?.message}`);

  const supabase = newClient();
  const wrong = await supabase.auth.signInWithPassword({ email, password: "wrong-password" });
  assert(wrong.error?.code === "invalid_credentials", `wrong password: ${wrong.error?.code}`);

  const { data, error } = await supabase.auth.signInWithPassword({ email, password });
  assert(!error && data.session, `signIn failed: ${error?.message}`);
  const refreshed = await supabase.auth.refreshSession();
  assert(!refreshed.error, `refresh failed: ${refreshed.error?.message}`);
  assert(refreshed.data.session?.refresh_token !== data.session.refresh_token, "no rotation");

  const out = await supabase.auth.signOut();
  assert(!out.error, `signOut failed: ${out.error?.message}`);
  const gone = await newClient().auth.getUser(data.session.access_token);
  assert(gone.error, "the access token still works after a global sign-out");
});

Deno.test("rest: a signed-in user inserts and selects only their own rows", async () => {
  const alice = newClient();
  const bob = newClient();
  for (const client of [alice, bob]) {
    const { error } = await client.auth.signUp({ email: randomEmail(), password });
    assert(!error, `signUp failed: ${error?.message}`);
  }
  const inserted = await alice.from(table).insert({ body: "alice's note" }).select();
  assert(!inserted.error, `insert failed: ${inserted.error?.message}`);
  assert(inserted.data?.length === 1, "insert returned no row");

  const mine = await alice.from(table).select("body");
  assert(!mine.error, `select failed: ${mine.error?.message}`);
  assert(JSON.stringify(mine.data) === JSON.stringify([{ body: "alice's note" }]),
    `alice sees ${JSON.stringify(mine.data)}`);
  const theirs = await bob.from(table).select("body");
  assert(!theirs.error && theirs.data?.length === 0, `bob sees ${JSON.stringify(theirs.data)}`);
});

Deno.test("rest: rpc calls a granted function", async () => {
  const { data, error } = await newClient().rpc(rpc, { a: 2, b: 40 });
  assert(!error, `rpc failed: ${error?.message}`);
  assert(data === 42, `rpc returned ${JSON.stringify(data)}`);
});

Deno.test("functions: health answers ok", async () => {
  const { data, error } = await newClient().functions.invoke("health");
  assert(!error, `invoke failed: ${error?.message}`);
  assert(data?.status === "ok", `health answered ${JSON.stringify(data)}`);
});
