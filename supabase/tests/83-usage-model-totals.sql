-- 83-usage-model-totals.sql — usage_model_summaries and usage_model_daily_totals
-- (20261130010001): per UTC day, provider, model and currency over all users. After charges,
-- errors, replays, a refund, re-prices (of a record rolled up already and of one not yet, up and
-- down), a failed metered request and a user's deletion: the view equals the raw usage records
-- (and their refunds) at once, the table equals them after each rollup, and the table equals the
-- per-user daily summaries summed over users. Only service_role and postgres read them.
BEGIN;
SELECT plan(39);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('83838383-0000-4000-8000-00000000000a', 'model-totals-a@example.test'),
  ('83838383-0000-4000-8000-00000000000b', 'model-totals-b@example.test');
insert into public.model_pricing (provider_id, model_id, price_per_input_token,
  price_per_output_token, price_per_cached_input_token, effective_from)
values ('mtt-co', 'mtt-model', 0.000001, 0.000002, 0.0000005, now() - interval '60 days'),
       ('mtt-co', 'mtt-other', 0.000003, 0.000004, 0.000001, now() - interval '60 days');
insert into public.plans (id, name) values ('83838383-0000-4000-8000-0000000000f1', 'mtt-plan');
insert into public.subscriptions (id, user_id, plan_id, status) values
  ('83838383-0000-4000-8000-0000000000e1', '83838383-0000-4000-8000-00000000000a',
   '83838383-0000-4000-8000-0000000000f1', 'active');
insert into public.api_keys (id, user_id, plan_id, name, prefix) values
  ('83838383-0000-4000-8000-0000000000c1', '83838383-0000-4000-8000-00000000000a',
   '83838383-0000-4000-8000-0000000000f1', 'mtt key', 'tm_mttotal1');
select public.top_up(u, 100, 'mtt-fixture-' || u)
from unnest(array['83838383-0000-4000-8000-00000000000a',
                  '83838383-0000-4000-8000-00000000000b']::uuid[]) u;
-- Two UTC days, 4 and 3 days ago, anchored at their start: the fixture never moves to another
-- day whatever the time of day the test runs at.
create temporary table t as
select date_trunc('day', now() - interval '4 days', 'UTC') + interval '10 minutes' as d1,
       date_trunc('day', now() - interval '3 days', 'UTC') + interval '10 minutes' as d2a,
       date_trunc('day', now() - interval '3 days', 'UTC') + interval '23 hours' as d2b;

-- Everything earlier (other files, the suite's API tests) is rolled up first.
select public.rollup_usage();

-- The truth from the raw rows of this file's models, per (day, provider, model, currency).
create function pg_temp.raw() returns table (usage_date timestamptz, provider_id text,
  model_id text, currency text, requests bigint, error_requests bigint, input_tokens bigint,
  cached_input_tokens bigint, output_tokens bigint, cost numeric, refunded numeric,
  latency_ms_sum bigint, latency_count bigint)
language sql as $$
  select date_trunc('day', u.occurred_at, 'UTC'), u.provider_id, u.model_id, u.currency,
         count(*), count(*) filter (where u.status <> 'success'), sum(u.input_tokens)::bigint,
         sum(u.cached_input_tokens)::bigint, sum(u.output_tokens)::bigint, sum(u.cost),
         coalesce(sum(l.amount), 0), coalesce(sum(u.latency_ms), 0)::bigint,
         count(u.latency_ms)
  from public.usage_records u
  left join public.ledger_entries l on l.kind = 'refund' and l.reference = u.request_id
  where u.model_id like 'mtt-%'
  group by 1, 2, 3, 4
$$;
-- The same columns from the table, the view, or the users' day summaries summed (rows that
-- count failed requests alone have no provider and no request: left out here).
create function pg_temp.read(source text) returns table (usage_date timestamptz,
  provider_id text, model_id text, currency text, requests bigint, error_requests bigint,
  input_tokens bigint, cached_input_tokens bigint, output_tokens bigint, cost numeric,
  refunded numeric, latency_ms_sum bigint, latency_count bigint)
language plpgsql as $$
begin
  return query execute format($q$
    select s.%1$s, s.provider_id, s.model_id, s.currency, sum(s.requests)::bigint,
           sum(s.error_requests)::bigint, sum(s.input_tokens)::bigint,
           sum(s.cached_input_tokens)::bigint, sum(s.output_tokens)::bigint, sum(s.cost),
           sum(s.refunded), sum(s.latency_ms_sum)::bigint, sum(s.latency_count)::bigint
    from %2$s s
    where s.model_id like 'mtt-%%' and s.provider_id is not null %3$s
    group by 1, 2, 3, 4 having sum(s.requests) > 0$q$,
    case when source = 'public.usage_summaries' then 'period_start' else 'usage_date' end,
    source,
    case when source = 'public.usage_summaries' then $c$and s.period = 'day'$c$ else '' end);
end
$$;
create function pg_temp.view_matches(label text) returns text language sql as $$
  select set_eq($q$select * from pg_temp.read('public.usage_model_daily_totals')$q$,
                $q$select * from pg_temp.raw()$q$,
                label || ': usage_model_daily_totals = the raw records')
$$;
-- After a rollup: the table alone = the raw records = the users' day summaries summed.
create function pg_temp.table_matches(label text) returns setof text language sql as $$
  select set_eq($q$select * from pg_temp.read('public.usage_model_summaries')$q$,
                $q$select * from pg_temp.raw()$q$,
                label || ': usage_model_summaries = the raw records')
  union all
  select set_eq($q$select * from pg_temp.read('public.usage_model_summaries')$q$,
                $q$select * from pg_temp.read('public.usage_summaries')$q$,
                label || ': usage_model_summaries = the day summaries summed over users')
$$;

-- ── Charges: two users, two models, two days, an error, latencies ─────────────────────────
select public.record_usage('83838383-0000-4000-8000-00000000000a', 'mtt-model', 1000, 100,
  'mtt-1', provider => 'mtt-co', occurred_at => (select d1 from t), latency_ms => 100);
select public.record_usage('83838383-0000-4000-8000-00000000000b', 'mtt-model', 2000, 20,
  'mtt-2', provider => 'mtt-co', occurred_at => (select d1 from t), latency_ms => 300,
  status => 'error');
select public.record_usage('83838383-0000-4000-8000-00000000000a', 'mtt-other', 10, 10,
  'mtt-3', provider => 'mtt-co', occurred_at => (select d2a from t), cached_input_tokens => 5);
select public.record_usage('83838383-0000-4000-8000-00000000000b', 'mtt-model', 7, 7,
  'mtt-4', provider => 'mtt-co', occurred_at => (select d2b from t));

select is_empty($$select 1 from public.usage_model_summaries where model_id like 'mtt-%'$$,
  'before a rollup the model totals do not hold the new records');
select pg_temp.view_matches('before the first rollup');
select results_eq($$select requests, error_requests, cost from public.usage_model_daily_totals
                    where model_id = 'mtt-model' and usage_date = date_trunc('day', (select d1 from t), 'UTC')$$,
  $$values (2::bigint, 1::bigint, 0.00324::numeric)$$,
  'the view sums the two users of a day: 2 requests, 1 error, exact cost');
select is((public.rollup_usage() ->> 'rows')::int, 4, 'the rollup counts the 4 new records');
select * from pg_temp.table_matches('after the first rollup');
select pg_temp.view_matches('after the first rollup');
select is((select count(*)::int from public.usage_model_summaries where model_id like 'mtt-%'),
  3, 'one row per (day, provider, model, currency), not per user: 3');

-- ── Replays and a second rollup add nothing ──────────────────────────────────────────────
create temporary table before_replay as
select * from public.usage_model_summaries where model_id like 'mtt-%';
select is(public.record_usage('83838383-0000-4000-8000-00000000000a', 'mtt-model', 1000, 100,
  'mtt-1', provider => 'mtt-co', occurred_at => (select d1 from t), latency_ms => 100) ->> 'replayed',
  'true', 'a retried charge is a replay');
select public.rollup_usage();
select set_eq($$select usage_date, model_id, requests, cost from public.usage_model_summaries where model_id like 'mtt-%'$$,
  $$select usage_date, model_id, requests, cost from before_replay$$,
  'replay + rollup: the model totals are unchanged');

-- ── A refund ──────────────────────────────────────────────────────────────────────────────
select is(public.refund_usage('mtt-1', 'bad answer', 0.0004) ->> 'amount', '0.0004', 'a partial refund');
select is(public.refund_usage('mtt-1', 'bad answer', 0.0004) ->> 'replayed', 'true',
  'the refund retried: a replay');
select pg_temp.view_matches('after a refund, before the rollup');
select is((select refunded from public.usage_model_daily_totals
           where model_id = 'mtt-model' and usage_date = date_trunc('day', (select d1 from t), 'UTC')),
  0.0004::numeric, 'the view shows the refund at once, on the day of the record it refunds');
select public.rollup_usage();
select * from pg_temp.table_matches('after a refund');

-- ── Re-pricing: a record rolled up already, and one not yet; up, then down ──────────────
select public.record_usage('83838383-0000-4000-8000-00000000000b', 'mtt-other', 3000, 0,
  'mtt-5', provider => 'mtt-co', occurred_at => (select d2a from t));
select ok((select id from public.usage_records where request_id = 'mtt-5') > public.usage_rolled_up_to(),
  'the new record is not rolled up yet');
select public.set_model_price('mtt-co', 'mtt-other', 0.000005, 0.000004,
  effective_from => now() - interval '10 days');
select ok((public.reprice_usage(now() - interval '5 days', now(), model => 'mtt-other') ->> 'total_delta')::numeric > 0,
  're-priced higher (both records)');
select pg_temp.view_matches('after a re-price, before the rollup');
select public.rollup_usage();
select * from pg_temp.table_matches('after a re-price');
select public.set_model_price('mtt-co', 'mtt-other', 0.000002, 0.000004,
  effective_from => now() - interval '8 days');
select ok((public.reprice_usage(now() - interval '5 days', now(), model => 'mtt-other') ->> 'total_delta')::numeric < 0,
  're-priced lower (both records)');
select pg_temp.view_matches('after a lower re-price, before the rollup');
select public.rollup_usage();
select * from pg_temp.table_matches('after a lower re-price');

-- ── A failed metered request: a failure, no request, no cost ─────────────────────────────
insert into public.metered_requests (request_id, user_id, api_key_id, subscription_id, upstream,
  requested_model, model, max_tokens, max_input_tokens, reserved, currency, expires_at)
values ('mtt-failed', '83838383-0000-4000-8000-00000000000a', '83838383-0000-4000-8000-0000000000c1',
  '83838383-0000-4000-8000-0000000000e1', 'mtt-co', 'mtt-model', 'mtt-model', 10, 10, 0, 'USD', now() + interval '1 hour');
select is(public.complete_request('mtt-failed', null, 502, 250, 'upstream down') ->> 'status',
  'failed', 'the upstream failed: nothing charged');
select is((select sum(failed_requests)::int from public.usage_model_daily_totals
           where model_id = 'mtt-model' and usage_date = date_trunc('day', now(), 'UTC')),
  1, 'the view counts the failure at once');
select public.rollup_usage();
select results_eq($$select requests, failed_requests, cost, latency_ms_sum from public.usage_model_summaries
                    where model_id = 'mtt-model' and usage_date = date_trunc('day', now(), 'UTC')$$,
  $$values (0::bigint, 1::bigint, 0::numeric, 250::bigint)$$,
  'after the rollup: one failed request, no request charged, its latency kept');

-- ── A user's deletion takes their usage out of the totals ───────────────────────────────
delete from auth.users where id = '83838383-0000-4000-8000-00000000000b';
select is_empty($$select 1 from public.usage_records where user_id = '83838383-0000-4000-8000-00000000000b'$$,
  'the deleted user''s usage records are gone');
select * from pg_temp.table_matches('after a user''s deletion');
select pg_temp.view_matches('after a user''s deletion');

-- ── Who reads the global totals: service_role and postgres only ─────────────────────────
select ok((select c.relrowsecurity from pg_class c where c.oid = 'public.usage_model_summaries'::regclass),
  'RLS is enabled on usage_model_summaries');
select table_privs_are('public', 'usage_model_summaries', 'service_role', array['SELECT'],
  'service_role may only read usage_model_summaries');
select table_privs_are('public', 'usage_model_summaries', 'authenticated', array[]::text[],
  'authenticated has no privilege on usage_model_summaries');
select table_privs_are('public', 'usage_model_summaries', 'anon', array[]::text[],
  'anon has no privilege on usage_model_summaries');
select table_privs_are('public', 'usage_model_daily_totals', 'authenticated', array[]::text[],
  'authenticated has no privilege on usage_model_daily_totals');
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"83838383-0000-4000-8000-00000000000a"}';
select throws_ok($$select 1 from public.usage_model_daily_totals$$, '42501', null,
  'a user may not read the global totals, not even their own share');
reset role;
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select isnt_empty($$select 1 from public.usage_model_daily_totals where model_id like 'mtt-%'$$,
  'service_role reads the global totals');
reset role;

SELECT * FROM finish();
ROLLBACK;
