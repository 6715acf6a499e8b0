-- 82-usage-statistics-views.sql — the views over the rollups (20261129220002): a signed-in user
-- reads only their own rows in usage_statistics, user_daily_spend, usage_daily_totals and the
-- summary tables; anon reads nothing; service_role reads everyone. usage_report() over whole UTC
-- days reads the rollups (a record deleted from usage_records after its rollup, as an archived
-- month is, still counts there) and gives the raw path's numbers.
BEGIN;
SELECT plan(17);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('82828282-0000-4000-8000-00000000000a', 'stats-a@example.test'),
  ('82828282-0000-4000-8000-00000000000b', 'stats-b@example.test');
insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
  output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token,
  price_per_request, cost, occurred_at, latency_ms, status) values
  ('82828282-0000-4000-8000-00000000000a', 'st-a1', 'openai', 'gpt-4o', 100, 10, 0, 0, 0, 0,
   0.1, '2032-05-01 10:00Z', 100, 'success'),
  ('82828282-0000-4000-8000-00000000000a', 'st-a2', 'openai', 'gpt-4o', 200, 20, 0, 0, 0, 0,
   0.2, '2032-05-01 23:59:59Z', 300, 'error'),
  ('82828282-0000-4000-8000-00000000000a', 'st-a3', 'openai', 'gpt-4o-mini', 5, 1, 0, 0, 0, 0,
   0.000000000001, '2032-05-02 00:00Z', null, 'success'),
  ('82828282-0000-4000-8000-00000000000b', 'st-b1', 'openai', 'gpt-4o', 1000, 100, 0, 0, 0, 0,
   7.5, '2032-05-02 12:00Z', 50, 'success');
select public.rollup_usage();
-- One more for A after the rollup: the views must add it (the tail).
insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
  output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token,
  price_per_request, cost, occurred_at) values
  ('82828282-0000-4000-8000-00000000000a', 'st-a4', 'openai', 'gpt-4o', 1, 1, 0, 0, 0, 0,
   0.05, '2032-05-02 08:00Z');

-- ── authenticated: only their own ─────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"82828282-0000-4000-8000-00000000000a"}';
select results_eq($$select model_id, usage_date, request_count, total_tokens, avg_latency_ms, error_count
                    from public.usage_statistics order by usage_date, model_id$$,
  $$values ('gpt-4o'::text, '2032-05-01Z'::timestamptz, 2::bigint, 330::bigint, 200.000::numeric, 1::bigint),
           ('gpt-4o', '2032-05-02Z', 1, 2, null, 0),
           ('gpt-4o-mini', '2032-05-02Z', 1, 6, null, 0)$$,
  'usage_statistics: a user sees their own rows, seed 003''s columns, the not-rolled-up record too');
select results_eq($$select day, currency, requests, cost, refunded, net_cost from public.user_daily_spend order by day$$,
  $$values ('2032-05-01'::date, 'USD'::text, 2::bigint, 0.3::numeric, 0::numeric, 0.3::numeric),
           ('2032-05-02', 'USD', 2, 0.050000000001, 0, 0.050000000001)$$,
  'user_daily_spend: their own days, exact');
select is((select count(distinct user_id)::int from public.usage_summaries), 1,
  'usage_summaries: only their own rows');
select is((select count(distinct user_id)::int from public.usage_daily_totals), 1,
  'usage_daily_totals: only their own rows');
select is_empty($$select 1 from public.usage_statistics where user_id = '82828282-0000-4000-8000-00000000000b'$$,
  'naming another user shows nothing');
select throws_ok($$select public.rollup_usage()$$, '42501', null, 'a user cannot run the rollup');
reset role;

-- ── anon: nothing ─────────────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select throws_ok($$select * from public.usage_statistics$$, '42501', null,
  'anon may not read usage_statistics');
select throws_ok($$select * from public.user_daily_spend$$, '42501', null,
  'anon may not read user_daily_spend');
select throws_ok($$select * from public.usage_summaries$$, '42501', null,
  'anon may not read usage_summaries');
reset role;

-- ── service_role: everyone ────────────────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select results_eq($$select user_id, sum(net_cost) from public.user_daily_spend
                    where user_id in ('82828282-0000-4000-8000-00000000000a', '82828282-0000-4000-8000-00000000000b')
                    group by 1 order by 1$$,
  $$values ('82828282-0000-4000-8000-00000000000a'::uuid, 0.350000000001::numeric),
           ('82828282-0000-4000-8000-00000000000b'::uuid, 7.5::numeric)$$,
  'service_role sees every user');
reset role;

-- ── usage_report over whole days reads the rollups ───────────────────────────────────────
create temporary table raw_days as
select day, requests, input_tokens, cost
from public.usage_report('2032-05-01 00:00:00.000001Z', '2032-05-03Z', group_by => 'day');
select results_eq($$select day, requests, input_tokens, cost from public.usage_report('2032-05-01Z', '2032-05-03Z', group_by => 'day')$$,
  $$values ('2032-05-01'::date, 2::bigint, 300::bigint, 0.3::numeric),
           ('2032-05-02', 3, 1006, 7.550000000001)$$,
  'whole days: exact sums from the rollups (and the record after them)');
select results_eq($$select day, requests, input_tokens, cost from public.usage_report('2032-05-01Z', '2032-05-03Z', group_by => 'day')$$,
  $$select * from raw_days$$,
  'whole days (rollups) and a range a microsecond shorter (raw rows, none in that microsecond) agree');
select results_eq($$select model, requests, cost from public.usage_report('2032-05-01Z', '2032-05-03Z', for_user => '82828282-0000-4000-8000-00000000000a', group_by => 'model')$$,
  $$values ('gpt-4o'::text, 3::bigint, 0.35::numeric), ('gpt-4o-mini', 1, 0.000000000001)$$,
  'one user by model from the rollups');
-- An archived month: its records leave usage_records, its summaries stay.
delete from public.usage_records where request_id in ('st-a1', 'st-a2');
select results_eq($$select requests, cost from public.usage_report('2032-05-01Z', '2032-05-02Z')$$,
  $$values (2::bigint, 0.3::numeric)$$,
  'whole days are read from the summaries: records gone from usage_records still count');
select is_empty($$select * from public.usage_report('2032-05-01 00:00:01Z', '2032-05-02Z')$$,
  'a range that is not whole days reads the raw rows');
select results_eq($$select request_count from public.usage_statistics
                    where user_id = '82828282-0000-4000-8000-00000000000a' and usage_date = '2032-05-01Z'$$,
  $$values (2::bigint)$$, 'usage_statistics keeps archived days too');
select is((select c.relkind::text from pg_class c where c.oid = 'public.usage_statistics'::regclass),
  'v', 'usage_statistics is a view');

SELECT * FROM finish();
ROLLBACK;
