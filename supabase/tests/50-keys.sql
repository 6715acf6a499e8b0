-- 50-keys.sql — API keys (20251130000007): create_api_key / list_api_keys / revoke_api_key ×
-- {anon, owner, other user, service_role}; the secret's shape, shown once and stored only as
-- its SHA-256 where nobody can read it; RLS on api_keys; bad input, named.
BEGIN;
SELECT plan(44);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('50505050-0000-4000-8000-00000000000a', 'keys-owner@example.test'),
  ('50505050-0000-4000-8000-00000000000b', 'keys-other@example.test');
insert into public.upstreams (name, base_url) values ('keys-up', 'http://127.0.0.1:9/v1');
insert into public.plans (name, price) values ('keys-plan', '1/month');
insert into public.plans (name, is_active) values ('keys-retired-plan', false);
insert into public.plan_routes (plan_id, upstream_id, model, weight)
select p.id, u.id, m, 1 from public.plans p, public.upstreams u, unnest(array['gpt-4o-mini', 'gpt-4o']) m
where p.name = 'keys-plan' and u.name = 'keys-up';
create temporary table made (who text primary key, answer jsonb);
grant select, insert on made to anon, authenticated, service_role;

-- ── anon ───────────────────────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select throws_ok($$select public.create_api_key('x', 'keys-plan')$$, '42501', null, 'anon: create_api_key is denied');
select throws_ok($$select public.list_api_keys()$$, '42501', null, 'anon: list_api_keys is denied');
select throws_ok($$select public.revoke_api_key('tm_abcdefgh')$$, '42501', null, 'anon: revoke_api_key is denied');
select throws_ok($$select 1 from public.api_keys$$, '42501', null, 'anon: select api_keys is denied');
reset role;

-- ── The owner (authenticated as A) ─────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"50505050-0000-4000-8000-00000000000a"}';
insert into made values ('a1', public.create_api_key('laptop', 'keys-plan'));
insert into made values ('a2', public.create_api_key('ci', 'keys-plan', now() + interval '30 days', array['gpt-4o-mini'], 5, 'month'));
select matches((select answer ->> 'key' from made where who = 'a1'), '^tm_[A-Za-z0-9_-]{43}$',
  'the secret is tm_ + 43 URL-safe base64 characters (32 random bytes)');
select is((select answer ->> 'prefix' from made where who = 'a1'),
          (select left(answer ->> 'key', 11) from made where who = 'a1'),
  'the prefix is tm_ + the first 8 characters of the secret');
select isnt((select answer ->> 'key' from made where who = 'a1'), (select answer ->> 'key' from made where who = 'a2'),
  'two keys get two secrets');
select is((select answer ->> 'user_id' from made where who = 'a1'), '50505050-0000-4000-8000-00000000000a',
  'a signed-in user creates keys for themselves');
select is((select answer - 'id' - 'prefix' - 'created_at' - 'key' - 'plan_id' from made where who = 'a2'),
  jsonb_build_object('user_id', '50505050-0000-4000-8000-00000000000a', 'plan', 'keys-plan', 'name', 'ci',
    'allowed_models', array['gpt-4o-mini'], 'spend_limit', '5', 'spend_limit_period', 'month',
    'expires_at', (select answer -> 'expires_at' from made where who = 'a2'), 'revoked_at', null,
    'last_used_at', null, 'state', 'active'),
  'create_api_key returns the key as stored, with its plan name and state');
select is((select count(*)::int from public.list_api_keys()), 2, 'the owner lists their two keys');
select ok((select bool_and(not (k ? 'key') and not (k ? 'key_hash')) from public.list_api_keys() k),
  'a listed key carries neither its secret nor a hash');
select is((select count(*)::int from public.api_keys), 2, 'the owner reads their own keys in the table (RLS)');
select throws_ok($$select 1 from private.api_key_hashes$$, '42501', null, 'the owner cannot read the hashes');
select throws_ok($$update public.api_keys set revoked_at = null$$, '42501', null, 'the owner cannot update api_keys directly');
select throws_ok($$insert into public.api_keys (user_id, plan_id, name, prefix) select '50505050-0000-4000-8000-00000000000a', id, 'forged', 'tm_forged00' from public.plans limit 1$$, '42501', null, 'the owner cannot insert api_keys directly');
select throws_ok($$delete from public.api_keys$$, '42501', null, 'the owner cannot delete api_keys');
select throws_ok($$select public.create_api_key('x', 'keys-plan', user_id => '50505050-0000-4000-8000-00000000000b')$$,
  '42501', 'forbidden', 'a user cannot create a key for another user');
-- bad input, each naming what is wrong; nothing is written
select throws_ok($$select public.create_api_key('  ', 'keys-plan')$$, '22023', 'invalid_argument', 'a blank name is refused');
select throws_ok($$select public.create_api_key('x', 'no-such-plan')$$, 'PT404', 'plan_not_found', 'an unknown plan is refused');
select throws_ok($$select public.create_api_key('x', 'keys-retired-plan')$$, 'PT404', 'plan_not_found', 'an inactive plan is refused');
select throws_ok($$select public.create_api_key('x', 'keys-plan', now() - interval '1 second')$$, '22023', 'invalid_argument', 'an expiry in the past is refused');
select throws_ok($$select public.create_api_key('x', 'keys-plan', allowed_models => array['claude-opus-4-6'])$$, '22023', 'invalid_argument', 'allowed_models outside the plan are refused');
select throws_ok($$select public.create_api_key('x', 'keys-plan', allowed_models => array[]::text[])$$, '22023', 'invalid_argument', 'an empty allowed_models is refused (null means all)');
select throws_ok($$select public.create_api_key('x', 'keys-plan', spend_limit => 5)$$, '22023', 'invalid_argument', 'a spend limit needs its period');
select throws_ok($$select public.create_api_key('x', 'keys-plan', spend_limit => 0, spend_limit_period => 'day')$$, '22023', 'invalid_amount', 'a spend limit must be positive');
select is((select count(*)::int from public.api_keys), 2, 'refused creations wrote nothing');
set local "request.jwt.claims" to '{"role":"authenticated"}';
select throws_ok($$select public.create_api_key('x', 'keys-plan')$$, 'PT401', 'not_authenticated', 'a token without a user cannot create keys');
reset role;

-- ── Another user (authenticated as B) ─────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"50505050-0000-4000-8000-00000000000b"}';
select is((select count(*)::int from public.api_keys), 0, 'another user sees none of the owner''s keys');
select is((select count(*)::int from public.list_api_keys()), 0, 'another user lists none of the owner''s keys');
select throws_ok(format('select public.revoke_api_key(%L)', (select answer ->> 'prefix' from made where who = 'a1')),
  'PT404', 'api_key_not_found', 'another user cannot revoke the owner''s key (and learns nothing of it)');
select throws_ok($$select public.list_api_keys('50505050-0000-4000-8000-00000000000a')$$, '42501', 'forbidden', 'another user cannot list the owner''s keys');
reset role;

-- ── The owner revokes ─────────────────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"50505050-0000-4000-8000-00000000000a"}';
select is(public.revoke_api_key((select answer ->> 'prefix' from made where who = 'a1')) ->> 'revoked', 'true',
  'the owner revokes their key by its prefix');
select is(public.revoke_api_key((select answer ->> 'id' from made where who = 'a1')) ->> 'state', 'revoked',
  'revoking again (by id) is idempotent and reports the revoked state');
select is((select count(*)::int from public.list_api_keys() k where k ->> 'state' = 'revoked'), 1, 'the list shows the key as revoked');
reset role;

-- ── service_role ───────────────────────────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
insert into made values ('b1', public.create_api_key('server', 'keys-plan', user_id => '50505050-0000-4000-8000-00000000000b'));
select is((select answer ->> 'user_id' from made where who = 'b1'), '50505050-0000-4000-8000-00000000000b', 'service_role creates a key for a named user');
select throws_ok($$select public.create_api_key('x', 'keys-plan')$$, '22023', 'invalid_argument', 'service_role must name the user');
select throws_ok($$select public.create_api_key('x', 'keys-plan', user_id => '50505050-0000-4000-8000-0000000000ff')$$, 'PT404', 'user_not_found', 'service_role cannot create a key for an unknown user');
select is((select count(*)::int from public.list_api_keys('50505050-0000-4000-8000-00000000000b')), 1, 'service_role lists a user''s keys');
select is(public.revoke_api_key((select answer ->> 'id' from made where who = 'b1')) ->> 'revoked', 'true', 'service_role revokes any key by id');
select throws_ok($$select public.revoke_api_key('tm_nosuchkk')$$, 'PT404', 'api_key_not_found', 'revoking an unknown prefix is 404');
select throws_ok($$select 1 from private.api_key_hashes$$, '42501', null, 'service_role cannot read the hashes either');
reset role;

-- ── Storage: only the hash, and only in private.api_key_hashes ───────────────────────────
select is((select encode(h.key_hash, 'hex') from private.api_key_hashes h join made m on (m.answer ->> 'id')::uuid = h.api_key_id where m.who = 'a1'),
          (select encode(sha256(convert_to(answer ->> 'key', 'UTF8')), 'hex') from made where who = 'a1'),
  'the stored hash is the SHA-256 of the secret');
select is((select count(*)::int from public.api_keys k, made m where to_jsonb(k)::text like '%' || substr(m.answer ->> 'key', 12) || '%'), 0,
  'no column of api_keys holds the secret (beyond its display prefix)');
select is((select count(*)::int from private.api_key_hashes), (select count(*)::int from public.api_keys),
  'every key has exactly one hash');

SELECT * FROM finish();
ROLLBACK;
