-- 60-usage-report.sql — usage_report (20251130000010): totals per day, model, user and key are
-- exact sums of usage_records in [since, until); the key comes from metered_requests; RLS decides
-- what a signed-in user sees (only their own, even when naming another user or key); anon may
-- not call it; bad group_by, inverted ranges, unknown users and keys are named errors.
BEGIN;
SELECT plan(22);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('60606060-0000-4000-8000-00000000000a', 'report-a@example.test'),
  ('60606060-0000-4000-8000-00000000000b', 'report-b@example.test');
insert into public.plans (id, name) values ('60606060-0000-4000-8000-0000000000f1', 'report-plan');
insert into public.subscriptions (id, user_id, plan_id, status) values
  ('60606060-0000-4000-8000-0000000000e1', '60606060-0000-4000-8000-00000000000a',
   '60606060-0000-4000-8000-0000000000f1', 'active');
insert into public.api_keys (id, user_id, plan_id, name, prefix) values
  ('60606060-0000-4000-8000-0000000000c1', '60606060-0000-4000-8000-00000000000a',
   '60606060-0000-4000-8000-0000000000f1', 'report key', 'tm_report01');
-- A: two days, two models, one request through the key. B: one day. Costs chosen so that a float
-- sum would show (0.1 + 0.2) and scale-12 digits survive.
insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
  output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token,
  price_per_request, cost, occurred_at) values
  ('60606060-0000-4000-8000-00000000000a', 'rep-a1', 'openai', 'gpt-4o', 100, 10, 0, 0, 0, 0,
   0.1, '2031-03-01 10:00Z'),
  ('60606060-0000-4000-8000-00000000000a', 'rep-a2', 'openai', 'gpt-4o', 200, 20, 0, 0, 0, 0,
   0.2, '2031-03-01 23:59:59Z'),
  ('60606060-0000-4000-8000-00000000000a', 'rep-a3', 'openai', 'gpt-4o-mini', 5, 1, 0, 0, 0, 0,
   0.000000000001, '2031-03-02 00:00Z'),
  ('60606060-0000-4000-8000-00000000000b', 'rep-b1', 'openai', 'gpt-4o', 1000, 100, 0, 0, 0, 0,
   7.5, '2031-03-02 12:00Z'),
  ('60606060-0000-4000-8000-00000000000b', 'rep-b2', 'openai', 'gpt-4o', 1, 1, 0, 0, 0, 0,
   99, '2031-04-01 00:00Z');
insert into public.metered_requests (request_id, user_id, api_key_id, subscription_id, upstream,
  requested_model, model, max_tokens, max_input_tokens, reserved, currency, expires_at) values
  ('rep-a2', '60606060-0000-4000-8000-00000000000a', '60606060-0000-4000-8000-0000000000c1',
   '60606060-0000-4000-8000-0000000000e1', 'openai', 'gpt-4o', 'gpt-4o', 10, 10, 1, 'USD',
   '2031-03-02 00:00Z');

create temporary table seen (who text, by text, day date, model text, user_id uuid,
  api_key_id uuid, api_key_name text, requests bigint, input_tokens bigint, cost numeric);
grant select, insert on seen to anon, authenticated, service_role;

-- ── service_role: everyone ─────────────────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
insert into seen select 'svc', g, r.day, r.model, r.user_id, r.api_key_id, r.api_key_name,
  r.requests, r.input_tokens, r.cost
from unnest(array['day', 'model', 'user', 'key', 'day_model']) g,
  public.usage_report('2031-03-01Z', '2031-03-03Z', null, null, g) r;
select throws_ok($$select * from public.usage_report(group_by => 'week')$$, '22023',
  'invalid_argument', 'an unknown group_by is refused');
select throws_ok($$select * from public.usage_report('2031-03-02Z', '2031-03-01Z')$$, '22023',
  'invalid_argument', 'until before since is refused');
select throws_ok($$select * from public.usage_report(for_user => '60606060-0000-4000-8000-0000000000ff')$$,
  'PT404', 'user_not_found', 'an unknown user is named');
select throws_ok($$select * from public.usage_report(for_key => 'tm_nokey000')$$,
  'PT404', 'api_key_not_found', 'an unknown key prefix is named');
select is_empty($$select * from public.usage_report('2001-01-01Z', '2001-02-01Z')$$,
  'an empty range gives no rows (the CLI turns that into a message)');
reset role;

select results_eq($$select day, requests, input_tokens, cost from seen where who = 'svc' and by = 'day' order by day$$,
  $$values ('2031-03-01'::date, 2::bigint, 300::bigint, 0.3::numeric),
           ('2031-03-02'::date, 2::bigint, 1005::bigint, 7.500000000001::numeric)$$,
  'per UTC day: exact sums, the range end excluded (B''s April row is out)');
select results_eq($$select model, requests, cost from seen where who = 'svc' and by = 'model' order by model$$,
  $$values ('gpt-4o', 3::bigint, 7.8::numeric), ('gpt-4o-mini', 1::bigint, 0.000000000001::numeric)$$,
  'per model');
select results_eq($$select user_id, cost from seen where who = 'svc' and by = 'user' order by user_id$$,
  $$values ('60606060-0000-4000-8000-00000000000a'::uuid, 0.300000000001::numeric),
           ('60606060-0000-4000-8000-00000000000b'::uuid, 7.5::numeric)$$,
  'per user');
select results_eq($$select api_key_id, api_key_name, requests, cost from seen where who = 'svc' and by = 'key' order by api_key_id nulls last$$,
  $$values ('60606060-0000-4000-8000-0000000000c1'::uuid, 'report key', 1::bigint, 0.2::numeric),
           (null::uuid, null::text, 3::bigint, 7.600000000001::numeric)$$,
  'per key: the metered request''s key, NULL for usage recorded directly');
select is((select count(*)::int from seen where who = 'svc' and by = 'day_model'), 3,
  'day × model: one row per (day, model) with usage');
select is((select sum(cost) from seen where who = 'svc' and by = 'day_model'),
  (select sum(cost) from public.usage_records where occurred_at >= '2031-03-01Z' and occurred_at < '2031-03-03Z'),
  'every grouping sums to the table''s total');

set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select results_eq($$select requests, cost from public.usage_report(null, null, null, 'tm_report01', 'day')$$,
  $$values (1::bigint, 0.2::numeric)$$, 'a key by its prefix');
select results_eq($$select requests, cost from public.usage_report(null, null, null, '60606060-0000-4000-8000-0000000000c1', 'model')$$,
  $$values (1::bigint, 0.2::numeric)$$, 'a key by its id');
select results_eq($$select sum(cost) from public.usage_report(for_user => '60606060-0000-4000-8000-00000000000b', group_by => 'day')$$,
  $$values (106.5::numeric)$$, 'one user, no range: all their usage');
reset role;

-- ── authenticated: only their own ──────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"60606060-0000-4000-8000-00000000000a"}';
select results_eq($$select user_id, cost from public.usage_report(group_by => 'user')$$,
  $$values ('60606060-0000-4000-8000-00000000000a'::uuid, 0.300000000001::numeric)$$,
  'a user sees only their own usage (RLS)');
select results_eq($$select api_key_name, cost from public.usage_report(group_by => 'key') order by 1 nulls last$$,
  $$values ('report key'::text, 0.2::numeric), (null, 0.100000000001::numeric)$$,
  'a user sees their key''s name');
select throws_ok($$select * from public.usage_report(for_user => '60606060-0000-4000-8000-00000000000b')$$,
  'PT404', 'user_not_found', 'naming another user: not found, nothing of theirs shown');
reset role;
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"60606060-0000-4000-8000-00000000000b"}';
select throws_ok($$select * from public.usage_report(for_key => 'tm_report01')$$,
  'PT404', 'api_key_not_found', 'another user''s key: not found');
select results_eq($$select requests, cost from public.usage_report(group_by => 'model')$$,
  $$values (2::bigint, 106.5::numeric)$$, 'the other user sees only theirs');
reset role;

-- ── anon: denied ──────────────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select throws_ok($$select * from public.usage_report()$$, '42501', null,
  'anon may not call usage_report');
reset role;

select is((select p.prosecdef from pg_proc p where p.oid = 'public.usage_report(timestamptz, timestamptz, uuid, text, text)'::regprocedure),
  false, 'usage_report is SECURITY INVOKER, so RLS applies');
select is((select count(*)::int from seen where who = 'svc' and by = 'day' and model is not null), 0,
  'dimensions not asked for are NULL');

SELECT * FROM finish();
ROLLBACK;
