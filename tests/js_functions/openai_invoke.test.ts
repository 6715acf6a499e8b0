// supabase-js functions.invoke against the metered `openai` function, run by
// tests/test_openai_endpoint.py: deno test --allow-all tests/js_functions/
// Env: SUPABASE_URL (the test's function gateway), SUPABASE_ANON_KEY, TM_KEY (a tokenmeter key).
import { createClient } from "npm:@supabase/supabase-js@2";

function required(name: string): string {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`${name} must be set`);
  return value;
}

Deno.test("functions.invoke: a chat completion through openai/v1 is answered with its cost", async () => {
  const supabase = createClient(required("SUPABASE_URL"), required("SUPABASE_ANON_KEY"), {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
  const { data, error, response } = await supabase.functions.invoke("openai/v1/chat/completions", {
    body: { model: "gpt-4o-mini", messages: [{ role: "user", content: "hello from js" }] },
    // The tokenmeter key replaces the anon JWT: the function has verify_jwt = false.
    headers: { Authorization: `Bearer ${required("TM_KEY")}`, "x-request-id": "js-invoke-1" },
  });
  if (error) throw new Error(`invoke failed: ${error.message} ${await response?.text()}`);
  if (data.choices?.[0]?.message?.content !== "word0 word1 word2 word3 word4") {
    throw new Error(`unexpected answer ${JSON.stringify(data)}`);
  }
  if (!/^0\.\d+$/.test(data.usage?.cost ?? "")) throw new Error(`no cost: ${JSON.stringify(data.usage)}`);
  if (response?.headers.get("x-request-id") !== "js-invoke-1") throw new Error("x-request-id lost");
});
