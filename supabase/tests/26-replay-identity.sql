-- 26-replay-identity.sql — money paths of issue 9 (1.):
--   1. a replay is the same request: record_usage, settle_usage and record_usage_batch refuse a
--      stored request_id whose call differs in ANY argument the stored row keeps (PT409, the
--      detail naming it), and replay an identical one (20251130000004_usage_and_charging.sql);
--   2. re-pricing never credits refunded usage: a refunded request's net charge stays what its
--      refund left, whatever order refund and re-prices come in (20251130000004).
-- One transaction, so now() is one instant here: an omitted occurred_at across transactions is
-- tested through the API in tests/test_money_identity.py.
BEGIN;
SELECT plan(107);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('26262626-0000-4000-8000-00000000000a', 'identity-a@example.test'),
  ('26262626-0000-4000-8000-00000000000b', 'identity-b@example.test'),
  ('26262626-0000-4000-8000-0000000000c1', 'reprice-1@example.test'),
  ('26262626-0000-4000-8000-0000000000c2', 'reprice-2@example.test'),
  ('26262626-0000-4000-8000-0000000000c3', 'reprice-3@example.test'),
  ('26262626-0000-4000-8000-0000000000c4', 'reprice-4@example.test');
-- idn-model: 1e-6 per input token, 2e-6 per output, 5e-7 cached, 0.01 per image; priced at
-- two providers (so new records name theirs) for a batch duplicate naming the other one.
insert into public.model_pricing (provider_id, model_id, price_per_input_token,
  price_per_output_token, price_per_cached_input_token, price_per_image)
values ('idn-co', 'idn-model', 0.000001, 0.000002, 0.0000005, 0.01),
       ('idn-co', 'idn-other', 0.000001, 0.000002, 0.0000005, 0.01),
       ('idn-co2', 'idn-model', 0.000001, 0.000002, 0.0000005, 0.01);
do $$
begin
  perform public.top_up('26262626-0000-4000-8000-00000000000a', 100, 'idn-fixture-a');
  perform public.top_up('26262626-0000-4000-8000-00000000000b', 100, 'idn-fixture-b');
  perform public.top_up(u, 1, 'idn-fixture-' || u)
  from unnest(array['26262626-0000-4000-8000-0000000000c1', '26262626-0000-4000-8000-0000000000c2',
    '26262626-0000-4000-8000-0000000000c3', '26262626-0000-4000-8000-0000000000c4']::uuid[]) u;
  -- Re-pricing: 0.0000035 per input token from day -30 (1000 tokens = 0.0035, the issue's case)
  perform public.set_model_price('idn-co', m, 0.0000035, 0, effective_from => now() - interval '30 days')
  from unnest(array['idn-rp-1', 'idn-rp-2', 'idn-rp-3', 'idn-rp-4']) m;
end
$$;

-- 'SQLSTATE message: detail' of what `call` raises, or 'no error'.
create function pg_temp.refusal(call text) returns text language plpgsql as $$
declare
  state text;
  detail text;
begin
  execute call;
  return 'no error';
exception when others then
  get stacked diagnostics state = returned_sqlstate, detail = pg_exception_detail;
  return state || ' ' || sqlerrm || ': ' || detail;
end
$$;
-- A request's net charge: what its user paid beyond the top-up of 1 (one request per user).
create function pg_temp.net_charge(user_id uuid) returns numeric language sql as $$
  select 1 - b.balance from public.user_balances b where b.user_id = net_charge.user_id
$$;
create temporary table ts as select now() - interval '1 hour' as t;
create temporary table r1_args (n int generated always as identity, arg text, how text, call text);
create temporary table s1_args (n int generated always as identity, arg text, call text);
create temporary table b1_args (i int, arg text, change jsonb);
create temporary table batches (n int, r jsonb);
grant select on ts, r1_args, s1_args, b1_args to service_role;
grant select, insert on batches to service_role;

set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';

-- ── 1a. The issue's repro: metadata.images is part of the request ─────────────────────────
select is(public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 0, 0, 'img-replay', provider => 'idn-co', metadata => '{"images": "1"}') ->> 'cost', '0.01', 'one image at 0.01');
select is(pg_temp.refusal($$select public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 0, 0, 'img-replay', metadata => '{"images": "500"}')$$),
  'PT409 idempotency_conflict: request_id img-replay was already recorded with another payload (metadata differs)', 'the same request_id with 500 images is a conflict, not a replay at the 1-image cost');
select is((select count(*)::int from public.balance_movements where reference = 'img-replay'), 1, 'charged once');

-- ── 1b. record_usage: every argument, one at a time ────────────────────────────────────────
select is(public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10,
  metadata => '{"images": "2", "tag": "x"}', occurred_at => (select t from ts), latency_ms => 120, status => 'success') ->> 'cost',
  '0.020195', 'the original: 90×1e-6 + 10×5e-7 + 50×2e-6 + 2×0.01');
select is(public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10,
  metadata => '{"tag":"x",  "images":"2"}', occurred_at => (select t from ts), latency_ms => 120, status => 'success') ->> 'replayed',
  'true', 'the same arguments replay (metadata compared as JSON: key order and spacing do not matter)');
select is(public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', cached_input_tokens => 10,
  metadata => '{"images": "2", "tag": "x"}', occurred_at => (select t from ts), latency_ms => 120) ->> 'replayed',
  'true', 'provider and status left out: the priced provider and the default status match');
reset role;
insert into r1_args (arg, how, call) values
  ('user_id', 'another user', $$'26262626-0000-4000-8000-00000000000b', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "2", "tag": "x"}', latency_ms => 120$$),
  ('model', 'another model', $$'26262626-0000-4000-8000-00000000000a', 'idn-other', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "2", "tag": "x"}', latency_ms => 120$$),
  ('provider', 'another provider', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co2', cached_input_tokens => 10, metadata => '{"images": "2", "tag": "x"}', latency_ms => 120$$),
  ('input_tokens', '101 instead of 100', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 101, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "2", "tag": "x"}', latency_ms => 120$$),
  ('output_tokens', '51 instead of 50', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 51, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "2", "tag": "x"}', latency_ms => 120$$),
  ('cached_input_tokens', '11 instead of 10', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 11, metadata => '{"images": "2", "tag": "x"}', latency_ms => 120$$),
  ('metadata', 'images 3 instead of 2', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "3", "tag": "x"}', latency_ms => 120$$),
  ('metadata', 'images the number 2 instead of the string "2"', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": 2, "tag": "x"}', latency_ms => 120$$),
  ('metadata', 'another value of another key', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "2", "tag": "y"}', latency_ms => 120$$),
  ('metadata', 'left out ({})', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, latency_ms => 120$$),
  ('occurred_at', 'one microsecond later', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "2", "tag": "x"}', occurred_at => (select t + interval '1 microsecond' from ts), latency_ms => 120$$),
  ('occurred_at', 'now()', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "2", "tag": "x"}', occurred_at => now(), latency_ms => 120$$),
  ('latency_ms', '121 instead of 120', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "2", "tag": "x"}', occurred_at => (select t from ts), latency_ms => 121$$),
  ('latency_ms', 'left out (null)', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "2", "tag": "x"}', occurred_at => (select t from ts)$$),
  ('status', 'error instead of success', $$'26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-r1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "2", "tag": "x"}', occurred_at => (select t from ts), latency_ms => 120, status => 'error'$$);
-- the rows above that do not test it send the original occurred_at
update r1_args set call = call || $$, occurred_at => (select t from ts)$$
where arg not in ('occurred_at', 'latency_ms', 'status');
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select is(pg_temp.refusal('select public.record_usage(' || a.call || ')'),
  format('PT409 idempotency_conflict: request_id idn-r1 was already recorded with another payload (%s differs)', a.arg),
  'record_usage: a retry with ' || a.arg || ' ' || a.how || ' is a conflict naming it')
from r1_args a order by a.n;
select is((select count(*)::int from public.usage_records where request_id = 'idn-r1'), 1, 'record_usage: no conflicting retry wrote a usage row');
select is((select count(*)::int from public.balance_movements where reference = 'idn-r1'), 1, 'record_usage: no conflicting retry charged');

-- occurred_at left out: "when recorded"; it matches an original that also left it out.
select is(public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 10, 0, 'idn-r2', provider => 'idn-co') ->> 'replayed', 'false', 'recorded without occurred_at');
select is(public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 10, 0, 'idn-r2', provider => 'idn-co') ->> 'replayed', 'true', 'retried without occurred_at: a replay');
select is(public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 10, 0, 'idn-r2', provider => 'idn-co', occurred_at => (select occurred_at from public.usage_records where request_id = 'idn-r2')) ->> 'replayed', 'true', 'retried with the stored occurred_at: a replay');
select is(pg_temp.refusal($$select public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 10, 0, 'idn-r2', provider => 'idn-co', occurred_at => (select t from ts))$$),
  'PT409 idempotency_conflict: request_id idn-r2 was already recorded with another payload (occurred_at differs)', 'retried naming another time: a conflict');

-- ── 1c. settle_usage: every argument it takes ─────────────────────────────────────────────
select is(public.reserve_credit('26262626-0000-4000-8000-00000000000a', 'idn-s1', 1, model => 'idn-model', provider => 'idn-co') ->> 'status', 'held', 'a hold to settle');
select is(public.settle_usage('idn-s1', 100, 50, cached_input_tokens => 10, metadata => '{"images": "1"}', occurred_at => (select t from ts), latency_ms => 120) ->> 'cost',
  '0.010195', 'the original settle');
select is(public.settle_usage('idn-s1', 100, 50, cached_input_tokens => 10, model => 'idn-model', provider => 'idn-co', metadata => '{"images": "1"}', occurred_at => (select t from ts), latency_ms => 120, status => 'success') ->> 'replayed',
  'true', 'settle again with the same arguments (model and provider named): a replay');
reset role;
insert into s1_args (arg, call) values
  ('model', $$'idn-s1', 100, 50, cached_input_tokens => 10, model => 'idn-other', metadata => '{"images": "1"}', occurred_at => (select t from ts), latency_ms => 120$$),
  ('provider', $$'idn-s1', 100, 50, cached_input_tokens => 10, provider => 'idn-co2', metadata => '{"images": "1"}', occurred_at => (select t from ts), latency_ms => 120$$),
  ('input_tokens', $$'idn-s1', 101, 50, cached_input_tokens => 10, metadata => '{"images": "1"}', occurred_at => (select t from ts), latency_ms => 120$$),
  ('output_tokens', $$'idn-s1', 100, 51, cached_input_tokens => 10, metadata => '{"images": "1"}', occurred_at => (select t from ts), latency_ms => 120$$),
  ('cached_input_tokens', $$'idn-s1', 100, 50, cached_input_tokens => 9, metadata => '{"images": "1"}', occurred_at => (select t from ts), latency_ms => 120$$),
  ('metadata', $$'idn-s1', 100, 50, cached_input_tokens => 10, metadata => '{"images": "500"}', occurred_at => (select t from ts), latency_ms => 120$$),
  ('occurred_at', $$'idn-s1', 100, 50, cached_input_tokens => 10, metadata => '{"images": "1"}', latency_ms => 120$$),
  ('latency_ms', $$'idn-s1', 100, 50, cached_input_tokens => 10, metadata => '{"images": "1"}', occurred_at => (select t from ts), latency_ms => 1$$),
  ('status', $$'idn-s1', 100, 50, cached_input_tokens => 10, metadata => '{"images": "1"}', occurred_at => (select t from ts), latency_ms => 120, status => 'timeout'$$);
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select is(pg_temp.refusal('select public.settle_usage(' || a.call || ')'),
  format('PT409 idempotency_conflict: request_id idn-s1 was already recorded with another payload (%s differs)', a.arg),
  'settle_usage: a retry with another ' || a.arg || ' is a conflict naming it')
from s1_args a order by a.n;
select is((select count(*)::int from public.balance_movements where reference = 'idn-s1'), 1, 'settle_usage: charged once');
-- record_usage recorded it, settle retries it under another user's hold: user_id differs.
select is(public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 1, 1, 'idn-s2', provider => 'idn-co') ->> 'replayed', 'false', 'usage recorded by record_usage');
select is(public.reserve_credit('26262626-0000-4000-8000-00000000000b', 'idn-s2', 1) ->> 'status', 'held', 'a hold of another user on the same request_id');
select is(pg_temp.refusal($$select public.settle_usage('idn-s2', 1, 1, model => 'idn-model', provider => 'idn-co')$$),
  'PT409 idempotency_conflict: request_id idn-s2 was already recorded with another payload (user_id differs)', 'settle_usage: another user is a conflict');

-- ── 1d. record_usage_batch: a row stored before the batch (step 2) ───────────────────────
insert into batches select 1, public.record_usage_batch(jsonb_build_array(jsonb_build_object(
  'user_id', '26262626-0000-4000-8000-00000000000a', 'provider', 'idn-co', 'model', 'idn-model',
  'input_tokens', 100, 'output_tokens', 50, 'cached_input_tokens', 10, 'request_id', 'idn-b1',
  'metadata', '{"images": "1"}'::jsonb, 'occurred_at', (select t from ts), 'latency_ms', 120, 'status', 'success')));
select is((select r -> 'results' -> 0 ->> 'cost' from batches where n = 1), '0.010195', 'batch: the original');
-- The original's record, then one field changed per record (the same request_id each time).
reset role;
insert into b1_args values
  (0, null, '{}'), (1, 'user_id', '{"user_id": "26262626-0000-4000-8000-00000000000b"}'),
  (2, 'model', '{"model": "idn-other"}'), (3, 'provider', '{"provider": "idn-co2"}'),
  (4, 'input_tokens', '{"input_tokens": 101}'), (5, 'output_tokens', '{"output_tokens": 49}'),
  (6, 'cached_input_tokens', '{"cached_input_tokens": 0}'), (7, 'metadata', '{"metadata": {"images": "500"}}'),
  (8, 'occurred_at', '{"occurred_at": null}'), (9, 'latency_ms', '{"latency_ms": null}'),
  (10, 'status', '{"status": "cancelled"}');
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
insert into batches select 2, public.record_usage_batch((select jsonb_agg(jsonb_build_object(
  'user_id', '26262626-0000-4000-8000-00000000000a', 'provider', 'idn-co', 'model', 'idn-model',
  'input_tokens', 100, 'output_tokens', 50, 'cached_input_tokens', 10, 'request_id', 'idn-b1',
  'metadata', '{"images": "1"}'::jsonb, 'occurred_at', (select t from ts), 'latency_ms', 120, 'status', 'success') || a.change order by a.i)
  from b1_args a));
select results_eq($$select (r ->> 'recorded')::int, (r ->> 'replayed')::int, (r ->> 'failed')::int from batches where n = 2$$,
  $$values (0, 1, 10)$$, 'batch retry: the identical record replays, every changed one fails');
select is(b.r -> 'results' -> a.i -> 'error' ->> 'detail',
  format('request_id idn-b1 was already recorded with another payload (%s differs)', a.arg),
  'batch, stored before: another ' || a.arg || ' is a conflict naming it')
from batches b, b1_args a where b.n = 2 and a.i > 0 order by a.i;
-- record_usage retrying a batch record, and the batch retrying a record_usage one: one rule.
select is(pg_temp.refusal($$select public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 100, 50, 'idn-b1', provider => 'idn-co', cached_input_tokens => 10, metadata => '{"images": "500"}', occurred_at => (select t from ts), latency_ms => 120)$$),
  'PT409 idempotency_conflict: request_id idn-b1 was already recorded with another payload (metadata differs)', 'record_usage refuses a changed retry of a batch record');
select is(public.record_usage_batch('[{"user_id": "26262626-0000-4000-8000-00000000000a", "model": "idn-model", "input_tokens": 0, "output_tokens": 0, "request_id": "img-replay", "metadata": {"images": "500"}}]') -> 'results' -> 0 -> 'error' ->> 'detail',
  'request_id img-replay was already recorded with another payload (metadata differs)', 'the batch refuses a changed retry of a record_usage record (the issue''s repro)');

-- ── 1e. record_usage_batch: the same request_id twice in one batch (step 4) ─────────────────
insert into batches select 3, public.record_usage_batch((select jsonb_agg(jsonb_build_object(
  'user_id', '26262626-0000-4000-8000-00000000000a', 'provider', 'idn-co', 'model', 'idn-model',
  'input_tokens', 100, 'output_tokens', 50, 'cached_input_tokens', 10, 'request_id', 'idn-b2',
  'metadata', '{"images": "1"}'::jsonb, 'occurred_at', (select t from ts), 'latency_ms', 120, 'status', 'success') || a.change order by a.i)
  from (select 0 as i, '{}'::jsonb as change union all select i + 1, change from b1_args) a));
select results_eq($$select (r ->> 'recorded')::int, (r ->> 'replayed')::int, (r ->> 'failed')::int from batches where n = 3$$,
  $$values (1, 1, 10)$$, 'batch duplicates: the first is recorded, its identical copy replayed, every changed one fails');
select is(b.r -> 'results' -> (a.i + 1) -> 'error' ->> 'detail',
  format('request_id idn-b2 was already recorded with another payload (%s differs)', a.arg),
  'batch, earlier in the batch: another ' || a.arg || ' is a conflict naming it')
from batches b, b1_args a where b.n = 3 and a.i > 0 order by a.i;
select is((select count(*)::int from public.balance_movements where reference in ('idn-b1', 'idn-b2')), 2, 'batch: each request charged once');
-- occurred_at left out in the batch too ("when recorded").
insert into batches select 4, public.record_usage_batch('[{"user_id": "26262626-0000-4000-8000-00000000000a", "provider": "idn-co", "model": "idn-model", "input_tokens": 1, "output_tokens": 0, "request_id": "idn-b3"}, {"user_id": "26262626-0000-4000-8000-00000000000a", "provider": "idn-co", "model": "idn-model", "input_tokens": 1, "output_tokens": 0, "request_id": "idn-b3"}]');
select results_eq($$select (r ->> 'recorded')::int, (r ->> 'replayed')::int from batches where n = 4$$, $$values (1, 1)$$, 'batch: occurred_at left out twice is the same request');
select is(public.record_usage('26262626-0000-4000-8000-00000000000a', 'idn-model', 1, 0, 'idn-b3', provider => 'idn-co') ->> 'replayed', 'true', 'record_usage without occurred_at replays it');

-- ── 2. Re-pricing and refunds ───────────────────────────────────────────────────────────
-- Each scenario has its own user (topped up with 1), model and one request of 1000 input
-- tokens 3 days ago at 0.0000035 = 0.0035; corrections are back-dated to day -4.
select is(public.record_usage(('26262626-0000-4000-8000-0000000000c' || n)::uuid, 'idn-rp-' || n, 1000, 0, 'idn-rp-' || n, occurred_at => now() - interval '3 days') ->> 'cost',
  '0.0035', 'scenario ' || n || ': charged 0.0035')
from generate_series(1, 4) n;

-- refund → reprice (the issue's case), then reprice twice
select is(public.refund_usage('idn-rp-1', 'provider error') ->> 'amount', '0.0035', 'refund → reprice: the full cost refunded');
select isnt(public.set_model_price('idn-co', 'idn-rp-1', 0.00000175, 0, effective_from => now() - interval '4 days'), null, 'a back-dated price version');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'idn-rp-1', dry_run => true) - 'audit_id',
  '{"changed": 0, "dry_run": true, "records": 1, "skipped": 1, "adjustments": [], "total_delta": "0"}'::jsonb, 'refund → reprice: a dry run skips the refunded request');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'idn-rp-1') - 'audit_id',
  '{"changed": 0, "dry_run": false, "records": 1, "skipped": 1, "adjustments": [], "total_delta": "0"}'::jsonb, 'refund → reprice: the refunded request is skipped, nothing adjusted');
select is(pg_temp.net_charge('26262626-0000-4000-8000-0000000000c1'), 0::numeric, 'refund → reprice: net charge 0 (it was −0.00175)');
select isnt(public.set_model_price('idn-co', 'idn-rp-1', 0.00001, 0, effective_from => now() - interval '3 days 12 hours'), null, 'a back-dated price version');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'idn-rp-1') ->> 'skipped', '1', 'refund → reprice → reprice at a higher price: skipped again');
select is(pg_temp.net_charge('26262626-0000-4000-8000-0000000000c1'), 0::numeric, 'refund → reprice twice: net charge 0');
select is((select row(cost, original_cost)::text from public.usage_records where request_id = 'idn-rp-1'), '(0.003500000000,)', 'the refunded record keeps the cost its refund was computed from');

-- reprice → refund, then reprice again
select isnt(public.set_model_price('idn-co', 'idn-rp-2', 0.00000175, 0, effective_from => now() - interval '4 days'), null, 'a back-dated price version');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'idn-rp-2') ->> 'total_delta', '-0.00175', 'reprice → refund: the lower price credits 0.00175');
select is(pg_temp.net_charge('26262626-0000-4000-8000-0000000000c2'), 0.00175::numeric, 'reprice → refund: net charge is the new cost');
select is(public.refund_usage('idn-rp-2', 'provider error') ->> 'amount', '0.00175', 'reprice → refund: the full refund is the re-priced cost');
select is(pg_temp.net_charge('26262626-0000-4000-8000-0000000000c2'), 0::numeric, 'reprice → refund: net charge 0');
select isnt(public.set_model_price('idn-co', 'idn-rp-2', 0.00001, 0, effective_from => now() - interval '3 days 12 hours'), null, 'a back-dated price version');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'idn-rp-2') - 'audit_id',
  '{"changed": 0, "dry_run": false, "records": 1, "skipped": 1, "adjustments": [], "total_delta": "0"}'::jsonb, 'reprice → refund → reprice: skipped, not charged again');
select is(pg_temp.net_charge('26262626-0000-4000-8000-0000000000c2'), 0::numeric, 'reprice → refund → reprice: net charge 0');

-- reprice twice, then refund, then reprice
select isnt(public.set_model_price('idn-co', 'idn-rp-3', 0.000002, 0, effective_from => now() - interval '4 days'), null, 'a back-dated price version');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'idn-rp-3') ->> 'total_delta', '-0.0015', 'reprice twice: the first credits 0.0015');
select isnt(public.set_model_price('idn-co', 'idn-rp-3', 0.000001, 0, effective_from => now() - interval '3 days 12 hours'), null, 'a back-dated price version');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'idn-rp-3') ->> 'total_delta', '-0.001', 'reprice twice: the second credits 0.001 more');
select is(pg_temp.net_charge('26262626-0000-4000-8000-0000000000c3'), 0.001::numeric, 'reprice twice: net charge is the latest cost');
select is(public.refund_usage('idn-rp-3', 'goodwill') ->> 'amount', '0.001', 'reprice twice → refund: refunds the latest cost');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'idn-rp-3') ->> 'skipped', '1', 'reprice twice → refund → reprice: skipped');
select is(pg_temp.net_charge('26262626-0000-4000-8000-0000000000c3'), 0::numeric, 'reprice twice → refund → reprice: net charge 0');

-- a partial refund: the request keeps what the refund left
select is(public.refund_usage('idn-rp-4', 'partial', 0.001) ->> 'amount', '0.001', 'partial refund of 0.001');
select isnt(public.set_model_price('idn-co', 'idn-rp-4', 0.0000001, 0, effective_from => now() - interval '4 days'), null, 'a back-dated price version');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'idn-rp-4') ->> 'skipped', '1', 'partial refund → reprice: skipped');
select is(pg_temp.net_charge('26262626-0000-4000-8000-0000000000c4'), 0.0025::numeric, 'partial refund → reprice: net charge stays 0.0035 − 0.001');

select is((select count(*)::int from public.ledger_entries where kind = 'adjustment' and user_id in ('26262626-0000-4000-8000-0000000000c1', '26262626-0000-4000-8000-0000000000c4')),
  0, 'no adjustment was ever written for a refunded request');
select is_empty($$select * from public.balance_audit()$$, 'balance = sum(ledger) after every replay, refund and reprice');

reset role;
select matches(pg_get_functiondef('public.refund_usage(text, text, numeric)'::regprocedure),
  'from public\.usage_records u where u\.request_id = \$1 ''\s+''and u\.created_at = \$2 for share''',
  'refund_usage locks the usage row before reading its cost (serialises with reprice_usage; the race itself: tests/test_money_identity.py)');

SELECT * FROM finish();
ROLLBACK;
