-- 75-usage-partitions.sql — usage_records partitioned by month (issue 12 §2,
-- 20261129210000…210200): the layout, request ids unique across partitions (a duplicate a month
-- apart is a replay or a conflict, never a second row or charge), the default partition's
-- alert and its repair by ensure_usage_partitions(), who may call what.
-- now() is one instant in this transaction: rows "a month apart" are written with an explicit
-- created_at, as postgres (the charging functions always take now()).
BEGIN;
SELECT plan(48);

-- ── Layout ─────────────────────────────────────────────────────────────────────────────────
select is((select c.relkind::text from pg_class c where c.oid = 'public.usage_records'::regclass),
  'p', 'usage_records is a partitioned table');
select is((select pg_get_partkeydef('public.usage_records'::regclass)), 'RANGE (created_at)',
  'partitioned by RANGE (created_at)');
-- The stack made them for the month it started in (migrations, `stack start`): a run that
-- started before a month's end and reaches this file after it has that month + 0..3 (this
-- month + 0..2), and gets this month + 3 at the next ensure_usage_partitions (cron, stack start).
select ok(to_regclass(format('private.usage_records_%s',
            to_char(made.month + make_interval(months => i), 'YYYY_MM'))) is not null,
          format('a partition exists for the stack''s month + %s', i))
from (select case when to_regclass(format('private.usage_records_%s',
                         to_char(date_trunc('month', now() at time zone 'UTC')
                                 + interval '3 months', 'YYYY_MM'))) is not null
                  then date_trunc('month', now() at time zone 'UTC')
                  else least(date_trunc('month', now() at time zone 'UTC'),
                             date_trunc('month', pg_postmaster_start_time() at time zone 'UTC'))
             end as month) as made,
     generate_series(0, 3) as i;
select is((select pg_get_expr(c.relpartbound, c.oid) from pg_class c
           where c.oid = 'private.usage_records_default'::regclass), 'DEFAULT',
  'private.usage_records_default is the default partition');
select is((select count(*)::int from pg_inherits i join pg_class c on c.oid = i.inhrelid
           where i.inhparent = 'public.usage_records'::regclass
             and c.relnamespace <> 'private'::regnamespace), 0,
  'every partition lives in the private schema (not exposed to the API)');
select is((select bool_and(c.relrowsecurity) from pg_inherits i join pg_class c
           on c.oid = i.inhrelid where i.inhparent = 'public.usage_records'::regclass), true,
  'RLS is on in every partition');
select is((select count(*)::int from pg_inherits i join pg_class c on c.oid = i.inhrelid,
             aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
           where i.inhparent = 'public.usage_records'::regclass and a.grantee <> c.relowner), 0,
  'no role but the owner has a privilege on a partition');
select table_privs_are('private', 'usage_request_ids', r, array[]::text[],
  r || ' has no privilege on private.usage_request_ids')
from unnest(array['anon', 'authenticated', 'service_role']) as r;
select ok((select c.relrowsecurity from pg_class c
           where c.oid = 'private.usage_request_ids'::regclass),
  'RLS is on in private.usage_request_ids');
select function_privs_are('public', f, array[a], r,
  case when r = 'service_role' then array['EXECUTE'] else array[]::text[] end,
  r || case when r = 'service_role' then ' may' else ' may not' end || ' execute ' || f)
from (values ('ensure_usage_partitions', 'integer'), ('usage_partitions', 'boolean')) as x(f, a)
cross join unnest(array['anon', 'authenticated', 'service_role']) as r;
select trigger_is('public', 'usage_records', 'usage_records_claim_request_id', 'private',
  'claim_usage_request_id', 'each usage row claims its request id before it is inserted');
select is((select count(*)::int from private.usage_request_ids r
           where not exists (select 1 from public.usage_records u
                             where u.request_id = r.request_id)), 0,
  'every claimed request id belongs to a live usage row');

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('75757575-0000-4000-8000-00000000000a', 'partitions-a@example.test'),
  ('75757575-0000-4000-8000-00000000000b', 'partitions-b@example.test');
do $$
begin
  perform public.top_up('75757575-0000-4000-8000-00000000000a', 10, 'p75-fund-a');
  perform public.top_up('75757575-0000-4000-8000-00000000000b', 10, 'p75-fund-b');
  -- Last month's partition (a fresh database has this month and the next three).
  perform private.create_usage_partition((date_trunc('month', now() at time zone 'UTC')
    - interval '1 month')::date);
end
$$;
-- A usage row recorded last month, as record_usage would have stored it.
create temporary table last_month as
select (date_trunc('month', now() at time zone 'UTC') - interval '1 month' + interval '9 days')
  at time zone 'UTC' as at;
grant select on last_month to service_role;
insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
  output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token,
  price_per_request, cost, occurred_at, created_at)
select '75757575-0000-4000-8000-00000000000a', 'p75-dup', 'openai', 'gpt-4o-mini', 1000, 100,
  0.00000015, 0.0000006, 0.000000075, 0, 0.00021, l.at, l.at
from last_month l;
select is((select tableoid::regclass::text from public.usage_records where request_id = 'p75-dup'),
  'private.usage_records_' || to_char(now() at time zone 'UTC' - interval '1 month', 'YYYY_MM'),
  'last month''s row is in last month''s partition');

-- ── A duplicate request id a month apart ──────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select is(public.record_usage('75757575-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1000, 100,
    'p75-dup', occurred_at => (select at from last_month)) ->> 'replayed', 'true',
  'record_usage this month with last month''s request id replays last month''s row');
select throws_ok($$select public.record_usage('75757575-0000-4000-8000-00000000000a',
    'gpt-4o-mini', 5, 5, 'p75-dup')$$, 'PT409', 'idempotency_conflict',
  'the same request id with another payload a month later is a conflict');
select throws_ok($$select public.record_usage('75757575-0000-4000-8000-00000000000b',
    'gpt-4o-mini', 1000, 100, 'p75-dup')$$, 'PT409', 'idempotency_conflict',
  'another user cannot reuse the request id a month later either');
select is((public.record_usage_batch(jsonb_build_array(jsonb_build_object(
    'user_id', '75757575-0000-4000-8000-00000000000a', 'model', 'gpt-4o-mini',
    'input_tokens', 1000, 'output_tokens', 100, 'request_id', 'p75-dup',
    'occurred_at', (select at from last_month))))) ->> 'replayed', '1',
  'record_usage_batch this month replays last month''s row');
select is(public.reserve_credit('75757575-0000-4000-8000-00000000000a', 'p75-dup-hold', 1)
  ->> 'status', 'held', 'a hold this month');
reset role;
select is((select count(*)::int from public.usage_records where request_id = 'p75-dup'), 1,
  'still one usage row for the request id');
select is((select balance from public.user_balances
           where user_id = '75757575-0000-4000-8000-00000000000a'), 10.000000000000::numeric(24,12),
  'and nothing charged this month (the row of last month was inserted without its charge)');
-- A direct insert (as postgres: no API role may insert) of the id in this month is skipped,
-- as the writers' ON CONFLICT DO NOTHING would skip it.
insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
  output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token,
  price_per_request, cost)
values ('75757575-0000-4000-8000-00000000000b', 'p75-dup', 'openai', 'gpt-4o-mini', 1, 1, 0, 0,
  0, 0, 0);
select is((select count(*)::int from public.usage_records where request_id = 'p75-dup'), 1,
  'an insert of a claimed request id in another partition writes nothing');
select is((select created_at from private.usage_request_ids where request_id = 'p75-dup'),
  (select at from last_month), 'the claim names the partition of the row holding the id');

-- ── Deleting frees the id ─────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values ('75757575-0000-4000-8000-00000000000c',
  'partitions-c@example.test');
set local role service_role;
select is(public.record_usage('75757575-0000-4000-8000-00000000000c', 'gpt-4o-mini', 0, 0,
  'p75-freed') ->> 'replayed', 'false', 'a usage row of a user to be deleted');
reset role;
delete from auth.users where id = '75757575-0000-4000-8000-00000000000c';
select is((select count(*)::int from private.usage_request_ids where request_id = 'p75-freed'),
  0, 'deleting the user deletes their usage rows and frees their request ids');

-- ── The default partition alerts, and ensure_usage_partitions moves its rows ───────────────
-- The hook, replaced in this transaction by one that records its calls (as the alerts outbox
-- would enqueue them).
create temporary table hook_calls (created_at timestamptz, request_id text);
create or replace function private.usage_outside_partitions(created_at timestamptz,
  request_id text) returns void language sql set search_path = '' as $$
  insert into pg_temp.hook_calls values ($1, $2)
$$;
insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
  output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token,
  price_per_request, cost, created_at)
values ('75757575-0000-4000-8000-00000000000b', 'p75-far-1', 'openai', 'gpt-4o-mini', 1, 1, 0,
  0, 0, 0, 0.5, '2041-05-03 10:00Z'),
       ('75757575-0000-4000-8000-00000000000b', 'p75-far-2', 'openai', 'gpt-4o-mini', 1, 1, 0,
  0, 0, 0, 0.25, '2041-05-20 10:00Z');
select is((select count(*)::int from private.usage_records_default), 2,
  'rows of a month without a partition are kept, in the default partition');
select is((select count(*)::int from hook_calls), 1,
  'they call the alert hook once per transaction');
select is((select request_id from hook_calls), 'p75-far-1', 'naming the first row');
select is((select records from public.usage_partitions() where is_default), 2::bigint,
  'usage_partitions() counts the default partition''s rows exactly');
set local role service_role;
select results_eq($$select partition, created, moved from public.ensure_usage_partitions(0)
    where month = '2041-05-01'$$,
  $$values ('usage_records_2041_05'::text, true, 2::bigint)$$,
  'ensure_usage_partitions creates the month''s partition and moves its 2 rows in');
reset role;
select is((select count(*)::int from private.usage_records_default), 0,
  'the default partition is empty again');
select is((select sum(cost) from private.usage_records_2041_05), 0.75::numeric,
  'the rows are in their month''s partition');
set local role service_role;
select is((select count(*)::int from public.ensure_usage_partitions(2) where created), 0,
  'ensure_usage_partitions is idempotent');
select throws_ok($$select * from public.ensure_usage_partitions(61)$$, '22023', 'invalid_argument',
  'months_ahead above 60 is refused');
select throws_ok($$select * from public.ensure_usage_partitions(null)$$, '22023',
  'invalid_argument', 'a null months_ahead is refused');
reset role;

-- ── Denied callers ────────────────────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"75757575-0000-4000-8000-00000000000a"}';
select throws_ok($$select * from public.ensure_usage_partitions()$$, '42501', null,
  'authenticated: ensure_usage_partitions is denied');
select throws_ok($$select * from public.usage_partitions()$$, '42501', null,
  'authenticated: usage_partitions is denied');
select is((select count(*)::int from public.usage_records where request_id = 'p75-dup'), 1,
  'authenticated: reads their own row of last month through usage_records (RLS)');
reset role;
set local role anon;
select throws_ok($$select * from public.ensure_usage_partitions()$$, '42501', null,
  'anon: ensure_usage_partitions is denied');
reset role;

SELECT * FROM finish();
ROLLBACK;
