-- 81-usage-rollups.sql — rollup_usage() (20261129220001) without concurrency: the hourly, daily
-- and monthly summaries equal the sums over the raw usage records (and their refunds) after each
-- step; a replay, a refund replay and a second rollup add nothing; a refund and a re-price adjust
-- the periods of the record they concern, once, whether or not that record was rolled up
-- already; a failed metered request counts as a failure without cost; max_rows rolls up in
-- chunks; deleting a user deletes their summaries. Concurrent charging: tests/test_usage_rollups.py.
BEGIN;
SELECT plan(49);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('81818181-0000-4000-8000-00000000000a', 'rollup-a@example.test'),
  ('81818181-0000-4000-8000-00000000000b', 'rollup-b@example.test');
insert into public.model_pricing (provider_id, model_id, price_per_input_token,
  price_per_output_token, price_per_cached_input_token)
values ('rlp-co', 'rlp-model', 0.000001, 0.000002, 0.0000005);
insert into public.plans (id, name) values ('81818181-0000-4000-8000-0000000000f1', 'rollup-plan');
insert into public.subscriptions (id, user_id, plan_id, status) values
  ('81818181-0000-4000-8000-0000000000e1', '81818181-0000-4000-8000-00000000000a',
   '81818181-0000-4000-8000-0000000000f1', 'active');
insert into public.api_keys (id, user_id, plan_id, name, prefix) values
  ('81818181-0000-4000-8000-0000000000c1', '81818181-0000-4000-8000-00000000000a',
   '81818181-0000-4000-8000-0000000000f1', 'rollup key', 'tm_rollup01');
select public.top_up(u, 100, 'rlp-fixture-' || u)
from unnest(array['81818181-0000-4000-8000-00000000000a',
                  '81818181-0000-4000-8000-00000000000b']::uuid[]) u;
-- Two hours of one UTC day, 3 days ago (re-pricing needs a version in effect before them):
-- anchored at the day's start, so the two hours never fall on two days whatever the clock.
create temporary table t as
select date_trunc('day', now() - interval '3 days', 'UTC') + interval '10 minutes' as h1,
       date_trunc('day', now() - interval '3 days', 'UTC') + interval '70 minutes' as h2;

-- Everything earlier (other files, the suite's API tests) is rolled up first.
select public.rollup_usage();

-- The hourly / daily / monthly truth from the raw rows: records, errors, tokens, cost, refunds,
-- latency per (period, start, model, key) of one user.
create function pg_temp.raw(who uuid, per text) returns table (period_start timestamptz,
  model_id text, api_key_id uuid, requests bigint, error_requests bigint, input_tokens bigint,
  output_tokens bigint, cost numeric, refunded numeric, latency_ms_sum bigint,
  latency_count bigint)
language sql as $$
  select date_trunc(per, u.occurred_at, 'UTC'), u.model_id, m.api_key_id, count(*),
         count(*) filter (where u.status <> 'success'), sum(u.input_tokens)::bigint,
         sum(u.output_tokens)::bigint, sum(u.cost), coalesce(sum(l.amount), 0),
         coalesce(sum(u.latency_ms), 0)::bigint, count(u.latency_ms)
  from public.usage_records u
  left join public.metered_requests m on m.request_id = u.request_id
  left join public.ledger_entries l on l.kind = 'refund' and l.reference = u.request_id
  where u.user_id = who
  group by 1, 2, 3
$$;
create function pg_temp.rolled(who uuid, per text) returns table (period_start timestamptz,
  model_id text, api_key_id uuid, requests bigint, error_requests bigint, input_tokens bigint,
  output_tokens bigint, cost numeric, refunded numeric, latency_ms_sum bigint,
  latency_count bigint)
language sql as $$
  select s.period_start, s.model_id, s.api_key_id, sum(s.requests)::bigint,
         sum(s.error_requests)::bigint, sum(s.input_tokens)::bigint,
         sum(s.output_tokens)::bigint, sum(s.cost), sum(s.refunded),
         sum(s.latency_ms_sum)::bigint, sum(s.latency_count)::bigint
  from public.usage_summaries s
  where s.user_id = who and s.period = per and s.requests > 0
  group by 1, 2, 3
$$;
-- Summaries of every period = the raw truth, for user A.
create function pg_temp.matches(label text) returns setof text language plpgsql as $$
declare
  per text;
begin
  foreach per in array array['hour', 'day', 'month'] loop
    return next set_eq(
      format($q$select * from pg_temp.rolled('81818181-0000-4000-8000-00000000000a', %L)$q$, per),
      format($q$select * from pg_temp.raw('81818181-0000-4000-8000-00000000000a', %L)$q$, per),
      label || ': ' || per || ' summaries = the raw rows');
  end loop;
end
$$;

-- ── Charges ────────────────────────────────────────────────────────────────────────────────
select public.record_usage('81818181-0000-4000-8000-00000000000a', 'rlp-model', 1000, 100,
  'rlp-1', provider => 'rlp-co', occurred_at => (select h1 from t), latency_ms => 100);
select public.record_usage('81818181-0000-4000-8000-00000000000a', 'rlp-model', 2000, 0,
  'rlp-2', provider => 'rlp-co', occurred_at => (select h1 from t), latency_ms => 300,
  status => 'error');
select public.record_usage('81818181-0000-4000-8000-00000000000a', 'rlp-model', 10, 10,
  'rlp-3', provider => 'rlp-co', occurred_at => (select h2 from t));
select public.record_usage('81818181-0000-4000-8000-00000000000b', 'rlp-model', 7, 7,
  'rlp-b1', provider => 'rlp-co', occurred_at => (select h1 from t));

select is_empty($$select 1 from public.usage_summaries where user_id = '81818181-0000-4000-8000-00000000000a'$$,
  'before a rollup the summaries do not hold the new records');
select is((select sum(cost) from public.usage_daily_totals where user_id = '81818181-0000-4000-8000-00000000000a'),
  0.00323::numeric, 'usage_daily_totals reads the records not rolled up yet: exact at once');
select is((public.rollup_usage() ->> 'rows')::int, 4, 'the rollup counts the 4 new records');
select * from pg_temp.matches('after the first rollup');
select results_eq($$select period, requests, error_requests, cost, latency_ms_sum, latency_count
                    from public.usage_summaries where user_id = '81818181-0000-4000-8000-00000000000a' and period <> 'hour'
                    order by period$$,
  $$values ('day'::text, 3::bigint, 1::bigint, 0.00323::numeric, 400::bigint, 2::bigint),
           ('month', 3, 1, 0.00323, 400, 2)$$,
  'day and month: 3 requests, 1 error, exact cost, latency 400 ms over 2 reports');
select results_eq($$select requests, cost from public.usage_summaries
                    where user_id = '81818181-0000-4000-8000-00000000000a' and period = 'hour' order by period_start$$,
  $$values (2::bigint, 0.0032::numeric), (1::bigint, 0.00003::numeric)$$,
  'hours: each record in the hour it occurred');
select is((select sum(requests) from public.usage_summaries where user_id = '81818181-0000-4000-8000-00000000000b' and period = 'day'),
  1::numeric, 'the other user has their own row');

-- ── Replays and a second rollup add nothing ──────────────────────────────────────────────
create temporary table before_replay as select * from public.usage_summaries
where user_id = '81818181-0000-4000-8000-00000000000a';
select is(public.record_usage('81818181-0000-4000-8000-00000000000a', 'rlp-model', 1000, 100,
  'rlp-1', provider => 'rlp-co', occurred_at => (select h1 from t), latency_ms => 100) ->> 'replayed',
  'true', 'a retried charge is a replay');
select is((public.rollup_usage() ->> 'rows')::int, 0, 'a rollup after a replay counts nothing');
select set_eq($$select period, period_start, requests, cost from public.usage_summaries where user_id = '81818181-0000-4000-8000-00000000000a'$$,
  $$select period, period_start, requests, cost from before_replay$$,
  'replay + rollup: the summaries are unchanged');
select is((public.rollup_usage() ->> 'summaries')::int, 0, 'a rollup with nothing new writes no summary row');

-- ── A refund ──────────────────────────────────────────────────────────────────────────────
select is(public.refund_usage('rlp-1', 'bad answer', 0.0005) ->> 'amount', '0.0005', 'a partial refund');
select is((select refunded from public.user_daily_spend where user_id = '81818181-0000-4000-8000-00000000000a'),
  0.0005::numeric, 'user_daily_spend shows the refund before the next rollup');
select is(public.refund_usage('rlp-1', 'bad answer', 0.0005) ->> 'replayed', 'true', 'the refund retried: a replay');
select is((select count(*)::int from public.usage_summary_adjustments where user_id = '81818181-0000-4000-8000-00000000000a'),
  1, 'one refund, one adjustment');
select is((public.rollup_usage() ->> 'adjustments')::int, 1, 'the rollup folds the refund in');
select * from pg_temp.matches('after a refund');
select results_eq($$select period, refunded from public.usage_summaries where user_id = '81818181-0000-4000-8000-00000000000a' and refunded > 0 order by period$$,
  $$values ('day'::text, 0.0005::numeric), ('hour', 0.0005), ('month', 0.0005)$$,
  'the refund is in the periods of the record it refunds');

-- ── Re-pricing: a record rolled up already, and one not yet ─────────────────────────────
select public.set_model_price('rlp-co', 're-old', 0.000001, 0, effective_from => now() - interval '30 days');
select public.record_usage('81818181-0000-4000-8000-00000000000a', 're-old', 1000, 0, 'rlp-re-1',
  provider => 'rlp-co', occurred_at => (select h1 from t));
select public.rollup_usage();
select public.record_usage('81818181-0000-4000-8000-00000000000a', 're-old', 3000, 0, 'rlp-re-2',
  provider => 'rlp-co', occurred_at => (select h2 from t));
select ok((select id from public.usage_records where request_id = 'rlp-re-2') > public.usage_rolled_up_to(),
  'the second record is not rolled up yet');
select public.set_model_price('rlp-co', 're-old', 0.000004, 0, effective_from => now() - interval '10 days');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 're-old') ->> 'total_delta',
  '0.012', 're-priced: 1000 and 3000 tokens at +0.000003');
select is((select sum(cost) from public.usage_daily_totals where user_id = '81818181-0000-4000-8000-00000000000a' and model_id = 're-old'),
  0.016::numeric, 'usage_daily_totals has the new cost before the rollup (adjustment + the tail)');
select is((select count(*)::int from public.usage_summary_adjustments where kind = 'reprice' and user_id = '81818181-0000-4000-8000-00000000000a'),
  2, 'each re-priced record queued its difference');
select is((public.rollup_usage() ->> 'adjustments')::int, 2,
  'the rollup takes both: folds the rolled-up record''s, drops the other (its new cost is read)');
select * from pg_temp.matches('after a re-price');
select is((select cost from public.usage_summaries where user_id = '81818181-0000-4000-8000-00000000000a' and model_id = 're-old' and period = 'month'),
  0.016::numeric, 're-priced cost counted once: 0.004 + 0.012, not 0.028');
-- A lower price: the run folds only negative differences into rows that exist.
select public.set_model_price('rlp-co', 're-old', 0.000002, 0, effective_from => now() - interval '8 days');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 're-old') ->> 'total_delta',
  '-0.008', 're-priced lower: 1000 and 3000 tokens at -0.000002');
select is((public.rollup_usage() ->> 'adjustments')::int, 2, 'the rollup folds both lower differences');
select * from pg_temp.matches('after a lower re-price');

-- ── A failed metered request ─────────────────────────────────────────────────────────────
insert into public.metered_requests (request_id, user_id, api_key_id, subscription_id, upstream,
  requested_model, model, max_tokens, max_input_tokens, reserved, currency, expires_at)
values ('rlp-failed', '81818181-0000-4000-8000-00000000000a', '81818181-0000-4000-8000-0000000000c1',
  '81818181-0000-4000-8000-0000000000e1', 'rlp-co', 'rlp-model', 'rlp-model', 10, 10, 0, 'USD',
  now() + interval '1 hour');
select is(public.complete_request('rlp-failed', null, 502, 250, 'upstream down') ->> 'status',
  'failed', 'the upstream failed: nothing charged');
select public.rollup_usage();
select results_eq($$select requests, failed_requests, cost, latency_ms_sum, api_key_id from public.usage_summaries
                    where user_id = '81818181-0000-4000-8000-00000000000a' and failed_requests > 0 and period = 'day'$$,
  $$values (0::bigint, 1::bigint, 0::numeric, 250::bigint, '81818181-0000-4000-8000-0000000000c1'::uuid)$$,
  'a failed request: counted as a failure of its key, no request charged, its latency kept');
select is((select error_count from public.usage_statistics where user_id = '81818181-0000-4000-8000-00000000000a'
             and model_id = 'rlp-model' and usage_date = date_trunc('day', now(), 'UTC')),
  1::bigint, 'usage_statistics counts it as an error');

-- ── Chunks ────────────────────────────────────────────────────────────────────────────────
select public.record_usage('81818181-0000-4000-8000-00000000000a', 'rlp-model', 1, 1,
  'rlp-chunk-' || n, provider => 'rlp-co', occurred_at => (select h2 from t))
from generate_series(1, 3) n;
select is(public.rollup_usage(max_rows => 1) - 'rolled_up_to' - 'settled_to' - 'pending_to',
  '{"rows": 1, "behind": 2, "summaries": 3, "adjustments": 0}'::jsonb,
  'max_rows => 1: one record, two left behind');
select is((public.rollup_usage(max_rows => 5) ->> 'behind')::int, 0, 'the next run catches up');
select * from pg_temp.matches('after chunks');
select throws_ok($$select public.rollup_usage(max_rows => 0)$$, '22023', 'invalid_argument',
  'max_rows below 1 is refused');

-- ── A cached id sequence is refused ──────────────────────────────────────────────────────
-- With CACHE > 1 a backend could later use an id at most the sequence's last value in a
-- transaction the rollup never saw as a writer.
do $$ begin
  execute format('alter sequence %s cache 20', pg_get_serial_sequence('public.usage_records', 'id'));
end $$;
select throws_ok($$select public.rollup_usage()$$, '55000', 'sequence_cached',
  'a cached usage id sequence is refused (ids could be used out of the rollup''s sight)');
do $$ begin
  execute format('alter sequence %s cache 1', pg_get_serial_sequence('public.usage_records', 'id'));
end $$;

-- ── Callers ───────────────────────────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"81818181-0000-4000-8000-00000000000a"}';
select throws_ok($$select public.rollup_usage()$$, '42501', null, 'a user may not run the rollup');
reset role;
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select lives_ok($$select public.rollup_usage()$$, 'service_role runs the rollup');
reset role;

-- ── User deletion ─────────────────────────────────────────────────────────────────────────
delete from auth.users where id = '81818181-0000-4000-8000-00000000000b';
select is_empty($$select 1 from public.usage_summaries where user_id = '81818181-0000-4000-8000-00000000000b'$$,
  'a deleted user''s summaries go with their usage');

SELECT * FROM finish();
ROLLBACK;
