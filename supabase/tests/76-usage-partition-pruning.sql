-- 76-usage-partition-pruning.sql — a charge reads and locks only the usage_records partition
-- it needs (20261130020000, 20261130020001): a new request the partition it is inserted into
-- (this month's), a stored request id the partition its claim names; not every month's.
-- Each call runs in pg_temp.partitions_touched(), inside a subtransaction that is rolled back
-- (its locks go with it), and reports the partitions it locked that the test had not locked
-- already. The stored request id lives in NEXT month's partition (created_at set by hand, as
-- postgres), so reading "this month's" or "all of them" both show.
BEGIN;
SELECT plan(19);

-- ── Helper ──────────────────────────────────────────────────────────────────────────────────
-- pg_temp.partitions_touched(call) → {result, partitions}: call's jsonb result and the names of
-- the usage_records partitions it took a lock on (in a mode the transaction did not hold),
-- then undoes it. Runs as the caller (service_role below).
create function pg_temp.partitions_touched(call text) returns jsonb
language plpgsql as $$
declare
  held text[];
  result jsonb;
  touched text[];
begin
  select coalesce(array_agg(l.relation::text || '/' || l.mode), '{}') into held
  from pg_catalog.pg_locks l
  where l.pid = pg_catalog.pg_backend_pid() and l.locktype = 'relation';
  begin
    execute call into result;
    select coalesce(array_agg(distinct c.relname::text order by c.relname::text), '{}')
    into touched
    from pg_catalog.pg_locks l
    join pg_catalog.pg_inherits i on i.inhrelid = l.relation
      and i.inhparent = 'public.usage_records'::regclass
    join pg_catalog.pg_class c on c.oid = l.relation
    where l.pid = pg_catalog.pg_backend_pid() and l.locktype = 'relation'
      and not (l.relation::text || '/' || l.mode) = any (held);
    raise exception using errcode = 'P0076', message = 'undo';
  exception when sqlstate 'P0076' then
    return jsonb_build_object('result', result, 'partitions', to_jsonb(touched));
  end;
end
$$;
grant execute on function pg_temp.partitions_touched(text) to service_role;

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('76767676-0000-4000-8000-00000000000a', 'pruning-a@example.test');
select public.top_up('76767676-0000-4000-8000-00000000000a', 10, 'p76-fund-a');
create temporary table parts as
select 'usage_records_' || to_char(now() at time zone 'UTC', 'YYYY_MM') as this_month,
  'usage_records_' || to_char(now() at time zone 'UTC' + interval '1 month', 'YYYY_MM')
    as next_month,
  (date_trunc('month', now() at time zone 'UTC') + interval '1 month 9 days') at time zone 'UTC'
    as stored_at,
  now() - interval '1 hour' as occurred_at;
grant select on parts to service_role;
select cmp_ok((select count(*)::int from pg_inherits
               where inhparent = 'public.usage_records'::regclass), '>=', 5,
  'usage_records has several partitions (this month, three ahead, the default)');
-- A usage row stored in next month's partition, as record_usage stores one (no charge: the
-- transaction is rolled back).
insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
  output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token,
  price_per_request, cost, currency, occurred_at, created_at)
select '76767676-0000-4000-8000-00000000000a', 'p76-stored', 'openai', 'gpt-4o-mini', 1000, 100,
  0.00000015, 0.0000006, 0.000000075, 0, 0.00021, 'USD', p.occurred_at, p.stored_at
from parts p;
-- (Not read through usage_records here: that would lock every partition before the checks.)
select is((select r.created_at from private.usage_request_ids r
           where r.request_id = 'p76-stored'), (select stored_at from parts),
  'its claim names next month''s partition');

-- ── Charges, as service_role ───────────────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';

select is(pg_temp.partitions_touched($$select public.record_usage(
    '76767676-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1000, 100, 'p76-stored',
    occurred_at => (select occurred_at from parts))$$) -> 'partitions',
  jsonb_build_array((select next_month from parts)),
  'record_usage replaying a stored request id locks only the partition its claim names');
select is(pg_temp.partitions_touched($$select public.record_usage(
    '76767676-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1000, 100, 'p76-stored',
    occurred_at => (select occurred_at from parts))$$) #>> '{result,replayed}', 'true',
  'and replays it');
select is(pg_temp.partitions_touched($$select public.record_usage(
    '76767676-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1000, 100, 'p76-new')$$)
    -> 'partitions',
  jsonb_build_array((select this_month from parts)),
  'record_usage of a new request locks only this month''s partition, where it inserts');
select throws_ok($$select public.record_usage('76767676-0000-4000-8000-00000000000a',
    'gpt-4o-mini', 5, 5, 'p76-stored')$$, 'PT409', 'idempotency_conflict',
  'the stored request id with another payload is still a conflict');

-- Many calls in one session: PL/pgSQL switches a statement to a cached generic plan after a
-- few, and a generic plan locks every partition before pruning. Forced here.
set local plan_cache_mode = force_generic_plan;
select is(pg_temp.partitions_touched($$select jsonb_agg(public.record_usage(
    '76767676-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1000, 100, 'p76-stored',
    occurred_at => (select occurred_at from parts))) from generate_series(1, 8)$$) -> 'partitions',
  jsonb_build_array((select next_month from parts)),
  'with generic plans, 8 replays still lock only the claimed partition');
reset plan_cache_mode;

select is(pg_temp.partitions_touched($$select public.record_usage_batch(jsonb_build_array(
    jsonb_build_object('user_id', '76767676-0000-4000-8000-00000000000a',
      'model', 'gpt-4o-mini', 'input_tokens', 1000, 'output_tokens', 100,
      'request_id', 'p76-batch-1'),
    jsonb_build_object('user_id', '76767676-0000-4000-8000-00000000000a',
      'model', 'gpt-4o-mini', 'input_tokens', 10, 'output_tokens', 10,
      'request_id', 'p76-batch-2')))$$) -> 'partitions',
  jsonb_build_array((select this_month from parts)),
  'record_usage_batch of new requests locks only this month''s partition');
select is(jsonb_build_object('partitions', t -> 'partitions',
            'replayed', t #>> '{result,replayed}'),
          jsonb_build_object('partitions', jsonb_build_array((select next_month from parts)),
            'replayed', '1'),
  'record_usage_batch replaying a stored request id locks only its claimed partition')
from pg_temp.partitions_touched($$select public.record_usage_batch(jsonb_build_array(
    jsonb_build_object('user_id', '76767676-0000-4000-8000-00000000000a',
      'model', 'gpt-4o-mini', 'input_tokens', 1000, 'output_tokens', 100,
      'request_id', 'p76-stored', 'occurred_at', (select occurred_at from parts))))$$) as t;
select is(jsonb_build_object('partitions', t -> 'partitions',
            'recorded', t #>> '{result,recorded}', 'replayed', t #>> '{result,replayed}'),
          jsonb_build_object('partitions', jsonb_build_array((select this_month from parts)),
            'recorded', '1', 'replayed', '1'),
  'record_usage_batch repeating a new request id reads it back from this month''s partition only')
from pg_temp.partitions_touched($$select public.record_usage_batch(jsonb_build_array(
    jsonb_build_object('user_id', '76767676-0000-4000-8000-00000000000a',
      'model', 'gpt-4o-mini', 'input_tokens', 1000, 'output_tokens', 100,
      'request_id', 'p76-batch-3'),
    jsonb_build_object('user_id', '76767676-0000-4000-8000-00000000000a',
      'model', 'gpt-4o-mini', 'input_tokens', 1000, 'output_tokens', 100,
      'request_id', 'p76-batch-3')))$$) as t;

select is(jsonb_build_object('partitions', t -> 'partitions',
            'usage_cost', t #>> '{result,usage_cost}'),
          jsonb_build_object('partitions', jsonb_build_array((select next_month from parts)),
            'usage_cost', '0.00021'),
  'refund_usage (and its rollup adjustment) locks only the refunded row''s partition')
from pg_temp.partitions_touched($$select public.refund_usage('p76-stored', 'test')$$) as t;
select throws_ok($$select public.refund_usage('p76-missing', 'test')$$, 'PT404',
  'usage_not_found', 'refund_usage of an unknown request id is still usage_not_found');

-- settle_usage (complete_request's path) records through record_one.
select is(public.reserve_credit('76767676-0000-4000-8000-00000000000a', 'p76-hold', 1,
    model => 'gpt-4o-mini') ->> 'status', 'held', 'a hold');
select is(jsonb_build_object('partitions', t -> 'partitions',
            'reservation_status', t #>> '{result,reservation_status}'),
          jsonb_build_object('partitions', jsonb_build_array((select this_month from parts)),
            'reservation_status', 'settled'),
  'settle_usage locks only this month''s partition, where it inserts')
from pg_temp.partitions_touched($$select public.settle_usage('p76-hold', 1000, 100)$$) as t;

-- (Last: these read usage_records as a whole, which locks every partition.)
-- record_usage_batch claims its request ids in one statement, its rows skipping the row
-- trigger while tokenmeter.usage_claims = 'batch' (20261130020001): every row it inserts is
-- claimed with its own created_at, and the setting is cleared after the insert.
select is(public.record_usage_batch(jsonb_build_array(
    jsonb_build_object('user_id', '76767676-0000-4000-8000-00000000000a',
      'model', 'gpt-4o-mini', 'input_tokens', 1000, 'output_tokens', 100,
      'request_id', 'p76-batch-4'),
    jsonb_build_object('user_id', '76767676-0000-4000-8000-00000000000a',
      'model', 'gpt-4o-mini', 'input_tokens', 10, 'output_tokens', 10,
      'request_id', 'p76-batch-5'))) ->> 'recorded', '2', 'a batch of two new requests');
select is(coalesce(current_setting('tokenmeter.usage_claims', true), ''), '',
  'the batch clears tokenmeter.usage_claims after its insert');
reset role;
select is((select count(*)::int from public.usage_records u
           join private.usage_request_ids r
             on r.request_id = u.request_id and r.created_at = u.created_at
           where u.request_id in ('p76-batch-4', 'p76-batch-5')), 2,
  'each row the batch inserted is claimed, with its created_at');
set local role service_role;
-- A session that sets it itself does not carry it into record_usage: the row is claimed.
set local tokenmeter.usage_claims = 'batch';
select is(public.record_usage('76767676-0000-4000-8000-00000000000a', 'gpt-4o-mini', 10, 10,
  'p76-forged') ->> 'replayed', 'false', 'record_usage with tokenmeter.usage_claims = batch');
reset role;
select is((select count(*)::int from private.usage_request_ids r
           where r.request_id = 'p76-forged'), 1,
  'its row is claimed all the same (a later duplicate in another month is refused)');
set local role service_role;
reset tokenmeter.usage_claims;

reset role;

SELECT * FROM finish();
ROLLBACK;
