// supabase-js against the local Auth API's email flows and signing keys (issue 14 §2), run by
// tests/test_auth_supabase_js.py: `deno test --allow-all tests/js_auth/`.
// Env: SUPABASE_URL and SUPABASE_ANON_KEY (the test stack), MAIL_URL (its mail catcher's
// Mailpit API), ES256_URL (a second gateway signing with an ES256 key).
import { createClient, type SupabaseClient } from "npm:@supabase/supabase-js@2";

const url = required("SUPABASE_URL");
const anonKey = required("SUPABASE_ANON_KEY");
const mailUrl = required("MAIL_URL");
const es256Url = required("ES256_URL");

function required(name: string): string {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`${name} must be set`);
  return value;
}

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

function newClient(base = url): SupabaseClient {
  return createClient(base, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

function randomEmail(): string {
  return `js-${crypto.randomUUID().slice(0, 12)}@example.com`;
}

// The newest mail to `email`, read through Mailpit's API as a developer's test would.
async function mailTo(email: string): Promise<{ Text: string; Subject: string }> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const search = await fetch(`${mailUrl}/api/v1/search?query=${encodeURIComponent(`to:${email}`)}`);
    const found = await search.json();
    if (found.messages.length > 0) {
      const message = await fetch(`${mailUrl}/api/v1/message/${found.messages[0].ID}`);
      return await message.json();
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no mail to ${email}`);
}

Deno.test("email OTP: the code from the mail catcher verifies and signs in", async () => {
  const supabase = newClient();
  const email = randomEmail();
  const sent = await supabase.auth.signInWithOtp({ email });
  assert(!sent.error, `signInWithOtp failed: ${sent.error?.message}`);
  const mail = await mailTo(email);
  const code = /code: (\d{6})/.exec(mail.Text)?.[1];
  assert(code, `no code in ${mail.Text}`);
  const { data, error } = await supabase.auth.verifyOtp({ email, token: code, type: "email" });
  assert(!error, `verifyOtp failed: ${error?.message}`);
  assert(data.session?.user.email === email, "verifyOtp returned no session for the email");
  const again = await supabase.auth.verifyOtp({ email, token: code, type: "email" });
  assert(again.error?.code === "otp_expired", `a used code: ${again.error?.code}`);
});

Deno.test("magic link: the link redirects with the session in the fragment", async () => {
  const supabase = newClient();
  const email = randomEmail();
  await supabase.auth.signInWithOtp({ email, options: { emailRedirectTo: "http://127.0.0.1:3000/cb" } });
  const mail = await mailTo(email);
  const link = /\((http[^)\s]+\/verify\?[^)\s]+)\)/.exec(mail.Text)?.[1];
  assert(link, `no link in ${mail.Text}`);
  const followed = await fetch(link, { redirect: "manual" });
  await followed.body?.cancel();
  const location = followed.headers.get("location") ?? "";
  assert(followed.status === 303 && location.startsWith("http://127.0.0.1:3000/cb#"), location);
  const fragment = new URLSearchParams(location.split("#")[1]);
  const { data, error } = await supabase.auth.setSession({
    access_token: fragment.get("access_token")!,
    refresh_token: fragment.get("refresh_token")!,
  });
  assert(!error && data.user?.email === email, `setSession failed: ${error?.message}`);
});

Deno.test("signing keys: getClaims verifies an ES256 access token with the JWKS", async () => {
  const supabase = newClient(es256Url);
  const signed = await supabase.auth.signUp({ email: randomEmail(), password: "correct-horse-9" });
  assert(!signed.error && signed.data.session, `signUp failed: ${signed.error?.message}`);
  const { data, error } = await supabase.auth.getClaims();
  assert(!error, `getClaims failed: ${error?.message}`);
  assert(data?.header.alg === "ES256" && data.header.kid, `header ${JSON.stringify(data?.header)}`);
  assert(data.claims.sub === signed.data.user?.id, "claims of another user");
});
