-- 53-authorize.sql — authorize_request / complete_request (20251130000009) × {anon,
-- authenticated, service_role}: the happy path with exact money (hold = the most the call can
-- cost, charge = the real usage, the rest released), idempotency of both calls, an upstream
-- failure logged and free, every refusal with its code (401, 402, 403, 400, 404, 409, 429 with
-- the reset time, 503), quotas and spend limits, rollover on use, last_used_at throttled,
-- free models, RLS on what is logged, the ledger invariant.
BEGIN;
SELECT plan(78);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('53535353-0000-4000-8000-00000000000a', 'authz-a@example.test'),
  ('53535353-0000-4000-8000-00000000000b', 'authz-b@example.test');
insert into public.model_pricing (provider_id, model_id, price_per_input_token, price_per_output_token, pricing_type)
values ('authz', 'authz-free', 0, 0, 'free');
insert into public.upstreams (name, base_url, api_key_env) values ('authz-up', 'http://127.0.0.1:9/v1', 'AUTHZ_KEY');
insert into public.plans (name) values ('authz-plan'), ('authz-other');
insert into public.plan_routes (plan_id, upstream_id, model, weight)
select p.id, u.id, m, 1 from public.plans p, public.upstreams u,
  unnest(array['gpt-4o-mini', 'gpt-4o', 'authz-free']) m
where p.name = 'authz-plan' and u.name = 'authz-up';
insert into public.subscriptions (user_id, plan_id, status, quota_requests, quota_tokens)
select u, p.id, 'active', 3, 100000 from public.plans p,
  unnest(array['53535353-0000-4000-8000-00000000000a', '53535353-0000-4000-8000-00000000000b']::uuid[]) u
where p.name = 'authz-plan';
create temporary table k (name text primary key, secret text, id uuid);
create temporary table r (name text primary key, answer jsonb);
grant select, insert on k, r to anon, authenticated, service_role;
do $$
declare
  a constant uuid := '53535353-0000-4000-8000-00000000000a';
  made jsonb;
begin
  perform public.top_up(a, 10, 'authz-fixture-a');
  foreach made in array array[
    public.create_api_key('any', 'authz-plan', user_id => a) || '{"n": "ka"}',
    public.create_api_key('mini only', 'authz-plan', allowed_models => array['gpt-4o-mini'], user_id => a) || '{"n": "kr"}',
    public.create_api_key('capped', 'authz-plan', spend_limit => 0.0005, spend_limit_period => 'day', user_id => a) || '{"n": "ks"}',
    public.create_api_key('other plan', 'authz-other', user_id => a) || '{"n": "ko"}',
    public.create_api_key('revoked', 'authz-plan', user_id => a) || '{"n": "kx"}',
    public.create_api_key('expiring', 'authz-plan', now() + interval '1 day', user_id => a) || '{"n": "ke"}',
    public.create_api_key('b', 'authz-plan', user_id => '53535353-0000-4000-8000-00000000000b') || '{"n": "kb"}']
  loop
    insert into k values (made ->> 'n', made ->> 'key', (made ->> 'id')::uuid);
  end loop;
  perform public.revoke_api_key((select id::text from k where name = 'kx'));
  update public.api_keys set expires_at = now() - interval '1 second' where id = (select id from k where name = 'ke');
end
$$;

-- ── anon, authenticated ───────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-anon'), '42501', null, 'anon: authorize_request is denied');
select throws_ok($$select public.complete_request('authz-anon', '{}', 200)$$, '42501', null, 'anon: complete_request is denied');
select throws_ok(format('select public.list_key_models(%L)', (select secret from k where name = 'ka')), '42501', null, 'anon: list_key_models is denied');
reset role;
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"53535353-0000-4000-8000-00000000000a"}';
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-user'), '42501', null, 'authenticated: authorize_request is denied, even with their own key');
select throws_ok($$select public.complete_request('authz-user', '{}', 200)$$, '42501', null, 'authenticated: complete_request is denied');
select throws_ok(format('select public.list_key_models(%L)', (select secret from k where name = 'ka')), '42501', null, 'authenticated: list_key_models is denied');
select throws_ok($$insert into public.metered_requests (request_id) values ('forged')$$, '42501', null, 'authenticated cannot write metered_requests');
reset role;

-- ── service_role: authorize ───────────────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select is(public.list_key_models((select secret from k where name = 'ka')) -> 'models', '["authz-free", "gpt-4o", "gpt-4o-mini"]'::jsonb,
  'list_key_models: the plan''s models, for GET /v1/models');
select is(public.list_key_models((select secret from k where name = 'kr')) -> 'models', '["gpt-4o-mini"]'::jsonb,
  'list_key_models: only the allowed ones for a restricted key');
select throws_ok(format('select public.list_key_models(%L)', (select secret from k where name = 'kx')), 'PT401', 'revoked_api_key', 'list_key_models: a revoked key is 401');
insert into r select 'a1', public.authorize_request((select secret from k where name = 'ka'), 'gpt-4o-mini', 500, 'authz-1', 1000);
select is((select answer - 'user_id' - 'api_key_id' - 'subscription_id' - 'route_id' - 'expires_at' - 'reset_at' from r where name = 'a1'),
  jsonb_build_object('request_id', 'authz-1', 'status', 'authorized', 'replayed', false,
    'upstream', jsonb_build_object('name', 'authz-up', 'base_url', 'http://127.0.0.1:9/v1', 'wire_format', 'openai_chat', 'api_key_env', 'AUTHZ_KEY'),
    'model', 'gpt-4o-mini', 'requested_model', 'gpt-4o-mini', 'max_tokens', 500, 'max_input_tokens', 1000,
    'reserved', '0.00045', 'currency', 'USD', 'http_status', null, 'input_tokens', null, 'output_tokens', null,
    'cached_input_tokens', null, 'cost', null, 'usage_estimated', false, 'latency_ms', null, 'error', null,
    'remaining_requests', 2, 'remaining_tokens', 98500, 'subscription_status', 'active'),
  'authorize: the upstream to call, the model, the hold (1000 in x 0.15/M + 500 out x 0.60/M) and what is left');
select results_eq($$select status, amount, user_id from public.credit_reservations where request_id = 'authz-1'$$,
  $$values ('held', 0.00045::numeric(24,12), '53535353-0000-4000-8000-00000000000a'::uuid)$$, 'the most the call can cost is held');
select is((select last_used_at from public.api_keys where id = (select id from k where name = 'ka')), now(), 'the key''s last_used_at is set');
insert into r select 'a1-again', public.authorize_request((select secret from k where name = 'ka'), 'gpt-4o-mini', 500, 'authz-1', 1000);
select is((select answer ->> 'replayed' from r where name = 'a1-again'), 'true', 'the same request again is a replay');
select is((select answer ->> 'route_id' from r where name = 'a1-again'), (select answer ->> 'route_id' from r where name = 'a1'), 'a replay keeps its route');
select is((select count(*)::int from public.credit_reservations where request_id = 'authz-1'), 1, 'a replay holds nothing more');
select throws_ok(format('select public.authorize_request(%L, %L, 501, %L, 1000)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-1'),
  'PT409', 'idempotency_conflict', 'the same request_id with another max_tokens is a conflict');
select lives_ok($$select public.record_usage('53535353-0000-4000-8000-00000000000a', 'authz-free', 1, 1, 'authz-direct')$$, 'a request_id charged directly by record_usage...');
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-direct'),
  'PT409', 'idempotency_conflict', '...cannot be authorized as a metered request');

-- ── complete: success ─────────────────────────────────────────────────────────────────────
insert into r select 'c1', public.complete_request('authz-1', '{"prompt_tokens": 800, "completion_tokens": 200, "total_tokens": 1000}', 200, 120);
select results_eq($$select answer ->> 'status', answer ->> 'cost', answer ->> 'balance', (answer ->> 'http_status')::int, answer ->> 'replayed' from r where name = 'c1'$$,
  $$values ('completed', '0.00024', '9.99976', 200, 'false')$$, 'complete: the real usage is charged (800 x 0.15/M + 200 x 0.60/M), exactly');
select is((select status from public.credit_reservations where request_id = 'authz-1'), 'settled', 'the hold is settled: the rest is released');
select results_eq($$select cost, status, user_id from public.usage_records where request_id = 'authz-1'$$,
  $$values (0.00024::numeric(24,12), 'success', '53535353-0000-4000-8000-00000000000a'::uuid)$$, 'the usage record is written by the settle_usage path');
select results_eq($$select used_requests, used_tokens from public.subscriptions s join public.api_keys k on k.plan_id = s.plan_id and k.user_id = s.user_id where k.id = (select id from k where name = 'ka')$$,
  $$values (1::bigint, 1000::bigint)$$, 'the request and its tokens count on the subscription');
select is(public.complete_request('authz-1', '{"prompt_tokens": 800, "completion_tokens": 200}', 200, 120) ->> 'replayed', 'true', 'completing again is a replay');
select throws_ok($$select public.complete_request('authz-1', '{"prompt_tokens": 801, "completion_tokens": 200}', 200, 120)$$, 'PT409', 'idempotency_conflict', 'completing again with other usage is a conflict');
select throws_ok($$select public.complete_request('authz-1', '{"prompt_tokens": 800, "completion_tokens": 200}', 200, 121)$$, 'PT409', 'idempotency_conflict', 'completing again with another latency is a conflict (every stored argument is the identity)');
select is((select balance from public.user_balances where user_id = '53535353-0000-4000-8000-00000000000a'), 9.99976::numeric(24,12), 'charged once');

-- ── complete: upstream failure ────────────────────────────────────────────────────────────
select lives_ok(format('select public.authorize_request(%L, %L, 500, %L, 1000)', (select secret from k where name = 'ka'), 'gpt-4o', 'authz-2'), 'a second request is authorized');
insert into r select 'c2', public.complete_request('authz-2', null, 502, 30, 'upstream exploded');
select results_eq($$select answer ->> 'status', answer ->> 'cost', (answer ->> 'http_status')::int, answer ->> 'error' from r where name = 'c2'$$,
  $$values ('failed', '0', 502, 'upstream exploded')$$, 'an upstream failure is logged with its status and error and costs nothing');
select is((select status from public.credit_reservations where request_id = 'authz-2'), 'released', 'its hold is released');
select is_empty($$select 1 from public.usage_records where request_id = 'authz-2'$$, 'no usage is recorded for it');
select results_eq($$select used_requests, used_tokens from public.subscriptions s join public.api_keys k on k.plan_id = s.plan_id and k.user_id = s.user_id where k.id = (select id from k where name = 'ka')$$,
  $$values (1::bigint, 1000::bigint)$$, 'nor does it count on the quota');
select throws_ok($$select public.complete_request('authz-2', null, 500, 30, 'upstream exploded')$$, 'PT409', 'idempotency_conflict', 'completing a failure again with another status is a conflict');
select results_eq($$select upstream, http_status, usage_id is not null, error from public.usage_logs where request_id in ('authz-1', 'authz-2') order by request_id$$,
  $$values ('authz-up', 200, true, null::text), ('authz-up', 502, false, 'upstream exploded')$$, 'usage_logs: each request with its upstream, status, usage record and error');

-- ── Refusals ──────────────────────────────────────────────────────────────────────────────
select throws_ok($$select public.authorize_request('sk-not-ours', 'gpt-4o-mini', 10, 'authz-x1')$$, 'PT401', 'invalid_api_key', 'a malformed key is 401');
select throws_ok($$select public.authorize_request(null, 'gpt-4o-mini', 10, 'authz-x1')$$, 'PT401', 'invalid_api_key', 'no key is 401');
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', 'tm_' || repeat('A', 43), 'gpt-4o-mini', 'authz-x1'), 'PT401', 'invalid_api_key', 'an unknown key is 401');
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'kx'), 'gpt-4o-mini', 'authz-x1'), 'PT401', 'revoked_api_key', 'a revoked key is 401');
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ke'), 'gpt-4o-mini', 'authz-x1'), 'PT401', 'expired_api_key', 'an expired key is 401');
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'kr'), 'gpt-4o', 'authz-x1'), 'PT403', 'model_not_allowed', 'a model the key may not use is 403');
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ko'), 'gpt-4o-mini', 'authz-x1'), 'PT403', 'subscription_inactive', 'a key whose plan the user has no subscription to is 403');
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'kb'), 'gpt-4o-mini', 'authz-x1'), 'PT402', 'insufficient_balance', 'a balance that cannot cover the hold is 402');
select throws_ok(format('select public.authorize_request(%L, %L, 0, %L)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-x1'), '22023', 'invalid_argument', 'max_tokens 0 is 400');
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L, -1)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-x1'), '22023', 'invalid_argument', 'negative input_tokens is 400');
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ka'), 'gpt-4o-mini', ' '), '22023', 'invalid_argument', 'a blank request_id is 400');
select throws_ok($$select public.complete_request('authz-nope', '{"prompt_tokens": 1, "completion_tokens": 1}', 200)$$, 'PT404', 'request_not_found', 'completing an unknown request is 404');
select throws_ok($$select public.complete_request('authz-2', null, 99)$$, '22023', 'invalid_argument', 'an HTTP status outside 100-599 is 400');
select throws_ok($$select public.complete_request('authz-2', null, 200)$$, '22023', 'invalid_argument', 'a success without usage is 400');
select throws_ok($$select public.complete_request('authz-2', '{"prompt_tokens": -1, "completion_tokens": 1}', 200)$$, '22023', 'invalid_argument', 'negative tokens are 400');
select throws_ok($$select public.complete_request('authz-2', '{"prompt_tokens": 1.5, "completion_tokens": 1}', 200)$$, '22023', 'invalid_argument', 'fractional tokens are 400');
select throws_ok($$select public.complete_request('authz-2', '{"prompt_tokens": 1, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 2}}', 200)$$, '22023', 'invalid_argument', 'more cached than prompt tokens is 400');
select is((select count(*)::int from public.metered_requests where request_id like 'authz-x%'), 0, 'no refused request left a row');

-- ── Quotas: 3 requests; 1 completed, 0 in flight ──────────────────────────────────────────
insert into r select 'q1', public.authorize_request((select secret from k where name = 'kr'), 'auto', 100, 'authz-q1', 100);
select is((select answer ->> 'model' from r where name = 'q1'), 'gpt-4o-mini', 'auto with allowed_models picks an allowed model');
select lives_ok(format('select public.authorize_request(%L, %L, 100, %L, 100)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-q2'), 'the third request of 3 is admitted (1 done, 1 in flight)');
create temporary table refusal (state text, message text, hint text);
grant select, insert on refusal to service_role;
do $$
declare
  s text; m text; h text;
begin
  perform public.authorize_request((select secret from k where name = 'ka'), 'gpt-4o-mini', 100, 'authz-q3', 100);
exception when others then
  get stacked diagnostics s = returned_sqlstate, m = message_text, h = pg_exception_hint;
  insert into refusal values (s, m, h);
end
$$;
reset role;
select results_eq($$select state, message, hint from refusal$$,
  $$values ('PT429', 'quota_exceeded', private.utc_iso(now() + interval '600 seconds'))$$,
  'the fourth is 429; two requests in flight fill the quota, so the hint (Retry-After) is when the first of them lapses');
update public.subscriptions set quota_requests = null, quota_tokens = 1000 + 200 + 200 + 399
where user_id = '53535353-0000-4000-8000-00000000000a';
set local role service_role;
select throws_ok(format('select public.authorize_request(%L, %L, 300, %L, 100)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-q4'),
  'PT429', 'quota_exceeded', 'a request whose input_tokens + max_tokens do not fit in the tokens left is 429');
select lives_ok(format('select public.authorize_request(%L, %L, 299, %L, 100)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-q5'),
  'one that fits exactly is admitted');
reset role;
update public.subscriptions set quota_tokens = null where user_id = '53535353-0000-4000-8000-00000000000a';
set local role service_role;

-- ── Spend limit: 0.0005 per day ───────────────────────────────────────────────────────────
select lives_ok(format('select public.authorize_request(%L, %L, 500, %L, 1000)', (select secret from k where name = 'ks'), 'gpt-4o-mini', 'authz-s1'), 'a capped key: the first hold (0.00045) fits');
select throws_ok(format('select public.authorize_request(%L, %L, 500, %L, 1000)', (select secret from k where name = 'ks'), 'gpt-4o-mini', 'authz-s2'),
  'PT429', 'spend_limit_exceeded', 'a second hold would pass the limit while the first is in flight: 429');
select lives_ok($$select public.complete_request('authz-s1', '{"prompt_tokens": 800, "completion_tokens": 200}', 200)$$, 'the first completes at 0.00024');
select is((select spent from public.api_key_spend where api_key_id = (select id from k where name = 'ks')), 0.00024::numeric(24,12), 'the key''s spend this period is counted');
create temporary table spend_refusal (message text, hint text);
grant select, insert on spend_refusal to service_role;
do $$
declare
  m text; h text;
begin
  perform public.authorize_request((select secret from k where name = 'ks'), 'gpt-4o-mini', 500, 'authz-s3', 1000);
exception when others then
  get stacked diagnostics m = message_text, h = pg_exception_hint;
  insert into spend_refusal values (m, h);
end
$$;
reset role;
select results_eq($$select message, hint from spend_refusal$$,
  $$values ('spend_limit_exceeded', private.utc_iso(date_trunc('day', now(), 'UTC') + interval '1 day'))$$,
  'spent 0.00024 + a 0.00045 hold > 0.0005: 429, retry when the day (UTC) ends');
set local role service_role;
select lives_ok(format('select public.authorize_request(%L, %L, 100, %L, 100)', (select secret from k where name = 'ks'), 'gpt-4o-mini', 'authz-s4'), 'a smaller call still fits');
reset role;

-- ── Subscription and route states ─────────────────────────────────────────────────────────
update public.upstreams set base_url = null where name = 'authz-up';
set local role service_role;
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-r1'), 'PT503', 'no_route', 'no configured upstream: 503 no_route');
reset role;
update public.upstreams set base_url = 'http://127.0.0.1:9/v1' where name = 'authz-up';
update public.subscriptions set status = 'suspended' where user_id = '53535353-0000-4000-8000-00000000000a';
set local role service_role;
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-r2'), 'PT403', 'subscription_inactive', 'an operator-suspended subscription: 403');
reset role;
update public.subscriptions set status = 'active', expires_at = now() - interval '1 second' where user_id = '53535353-0000-4000-8000-00000000000a';
set local role service_role;
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-r3'), 'PT403', 'subscription_inactive', 'an expired subscription: 403');
reset role;
-- Rollover on use: the period ended while the quota was exhausted.
update public.subscriptions set expires_at = null, quota_requests = 10, started_at = now() - interval '1 month 1 day',
  reset_at = now() - interval '1 day', used_requests = 10, used_tokens = 50
where user_id = '53535353-0000-4000-8000-00000000000a';
update public.metered_requests set status = 'completed', completed_at = now(), http_status = 200 where status = 'authorized';
set local role service_role;
select lives_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-r4'), 'a new period admits again, no cron needed');
reset role;
select results_eq($$select status, used_requests, used_tokens, reset_at > now() from public.subscriptions where user_id = '53535353-0000-4000-8000-00000000000a'$$,
  $$values ('active', 0::bigint, 0::bigint, true)$$, 'authorize stored the rollover: counters at 0, next reset ahead, active again');

-- ── last_used_at: at most once a minute ───────────────────────────────────────────────────
update public.api_keys set last_used_at = now() - interval '30 seconds' where id = (select id from k where name = 'ka');
set local role service_role;
select lives_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-l1'), 'a request 30 s after the last');
reset role;
select is((select last_used_at from public.api_keys where id = (select id from k where name = 'ka')), now() - interval '30 seconds', '...leaves last_used_at alone');
update public.api_keys set last_used_at = now() - interval '61 seconds' where id = (select id from k where name = 'ka');
set local role service_role;
select lives_ok(format('select public.authorize_request(%L, %L, 10, %L)', (select secret from k where name = 'ka'), 'gpt-4o-mini', 'authz-l2'), 'a request 61 s after the last');
reset role;
select is((select last_used_at from public.api_keys where id = (select id from k where name = 'ka')), now(), '...updates it');

-- ── A free model, estimated usage ─────────────────────────────────────────────────────────
set local role service_role;
insert into r select 'f1', public.authorize_request((select secret from k where name = 'ka'), 'authz-free', 100, 'authz-f1', 10);
select is((select answer ->> 'reserved' from r where name = 'f1'), '0', 'a free model holds nothing');
select is(public.complete_request('authz-f1', '{"prompt_tokens": 7, "completion_tokens": 9, "estimated": true}', 200) ->> 'cost', '0',
  'and is recorded at 0 through record_usage');
reset role;
select results_eq($$select m.usage_estimated, u.metadata from public.metered_requests m join public.usage_records u using (request_id) where request_id = 'authz-f1'$$,
  $$values (true, '{"usage_estimated": true}'::jsonb)$$, 'usage the caller counted itself is flagged, on the request and its usage record');

-- ── RLS on what is logged; the ledger ─────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"53535353-0000-4000-8000-00000000000a"}';
select ok((select count(*) from public.usage_logs) >= 5 and (select bool_and(user_id = '53535353-0000-4000-8000-00000000000a') from public.metered_requests),
  'the owner reads their own metered requests and usage logs');
set local "request.jwt.claims" to '{"role":"authenticated","sub":"53535353-0000-4000-8000-00000000000b"}';
select is((select count(*)::int from public.usage_logs), 0, 'another user reads none of them');
reset role;
select is_empty($$select * from public.balance_audit()$$, 'balance = sum(ledger) for every user');

SELECT * FROM finish();
ROLLBACK;
