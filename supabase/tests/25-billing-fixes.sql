-- 25-billing-fixes.sql — regression checks for the fixes of 20251201000001_fix_replay_and_settle.sql
-- (before 0.1.0; now in 20251130000004 and 20251130000006):
--   1. a retry naming another model / provider is a conflict, never a replay (same_usage NULL)
--   2. settling a request whose usage is already recorded closes the hold
--   3. reserve_credit looks the hold up again after the balance-row lock (the race itself needs
--      two sessions: tests/test_billing_concurrency.py::test_reserve_retry_while_original_...)
--   4. record_usage_batch replays a stored request_id before pricing it
BEGIN;
SELECT plan(25);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('eeeeeeee-0000-4000-8000-00000000000a', 'fixes-a@example.test'),
  ('eeeeeeee-0000-4000-8000-00000000000b', 'fixes-b@example.test');
insert into public.model_pricing (provider_id, model_id, price_per_input_token, price_per_output_token)
values ('fixes-co', 'fixes-model', 0.000001, 0.000001);
do $$
begin
  perform public.top_up('eeeeeeee-0000-4000-8000-00000000000a', 10, 'fixes-fixture-a');
  perform public.top_up('eeeeeeee-0000-4000-8000-00000000000b', 1, 'fixes-fixture-b');
  perform public.set_model_alias('fixes-mini-alias', 'gpt-4o-mini', 'openai');
end
$$;

set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';

-- ── 1. Conflicting retries (model / provider) ────────────────────────────────────────────
-- gpt-4o-mini: 100 × 0.00000015 + 50 × 0.0000006 = 0.000045
select is(public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'gpt-4o-mini', 100, 50, 'fixes-r1') ->> 'cost', '0.000045', 'record_usage with the exact model name (requested_model stored NULL)');
select throws_ok($$select public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'gpt-4o', 100, 50, 'fixes-r1')$$, 'PT409', 'idempotency_conflict', 'a retry naming another model raises PT409, not a replay');
select throws_ok($$select public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'gpt-4o-mini', 100, 50, 'fixes-r1', provider => 'anthropic')$$, 'PT409', 'idempotency_conflict', 'a retry naming another provider raises PT409, not a replay');
select is(public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'gpt-4o-mini', 100, 50, 'fixes-r1', provider => 'openai') ->> 'replayed', 'true', 'a retry naming the priced provider explicitly is still a replay');
select is(public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'fixes-mini-alias', 100, 50, 'fixes-r2') ->> 'model', 'gpt-4o-mini', 'usage through an alias is priced as its target');
select results_eq($$select a ->> 'replayed', b ->> 'replayed' from public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'fixes-mini-alias', 100, 50, 'fixes-r2') a, public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'gpt-4o-mini', 100, 50, 'fixes-r2') b$$, $$values ('true', 'true')$$, 'an alias retry replays, by the alias or by the priced name');
select is(public.reserve_credit('eeeeeeee-0000-4000-8000-00000000000a', 'fixes-s1', 0.1, model => 'gpt-4o-mini', provider => 'openai') ->> 'status', 'held', 'hold for the settle retry check');
select is(public.settle_usage('fixes-s1', 100, 50) ->> 'replayed', 'false', 'settle records the usage with the reserved model');
select throws_ok($$select public.settle_usage('fixes-s1', 100, 50, model => 'gpt-4o')$$, 'PT409', 'idempotency_conflict', 'a settle retry naming another model raises PT409');
select is((select count(*)::int from public.balance_movements where reference in ('fixes-r1', 'fixes-r2', 'fixes-s1')), 3, 'conflicting retries charged nothing more');
reset role;
select is(private.usage_mismatch((select u from public.usage_records u where u.request_id = 'fixes-r1'), 'eeeeeeee-0000-4000-8000-00000000000a', null, 'gpt-4o', 100, 50, 0, '{}', now(), null, 'success'), 'model', 'the identity (usage_mismatch) names another model, never NULL');
select is(private.usage_mismatch((select u from public.usage_records u where u.request_id = 'fixes-r1'), 'eeeeeeee-0000-4000-8000-00000000000a', 'anthropic', 'gpt-4o-mini', 100, 50, 0, '{}', now(), null, 'success'), 'provider', 'the identity names another provider, never NULL');
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';

-- ── 2. Settling an already-recorded request closes the hold ──────────────────────────────
select is(public.reserve_credit('eeeeeeee-0000-4000-8000-00000000000a', 'fixes-s2', 0.5, model => 'gpt-4o') ->> 'status', 'held', 'hold for the already-recorded settle');
select is(public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'gpt-4o', 10, 10, 'fixes-s2') ->> 'cost', '0.000125', 'the usage is recorded before the settle');
select results_eq($$select r ->> 'replayed', r ->> 'reservation_status', r ->> 'cost' from public.settle_usage('fixes-s2', 10, 10) r$$, $$values ('true', 'settled', '0.000125')$$, 'settle of a recorded request replays the usage and settles the hold');
select results_eq($$select status, closed_at is not null from public.credit_reservations where request_id = 'fixes-s2'$$, $$values ('settled'::text, true)$$, 'the hold row is closed');
select is(public.check_balance('eeeeeeee-0000-4000-8000-00000000000a') ->> 'held', '0', 'no hold counts after settle_usage returned');
select is((select count(*)::int from public.balance_movements where reference = 'fixes-s2'), 1, 'charged once');
select is(public.settle_usage('fixes-s2', 10, 10) ->> 'reservation_status', 'settled', 'settling again is idempotent');
select is(public.reserve_credit('eeeeeeee-0000-4000-8000-00000000000a', 'fixes-s3', 0.5) ->> 'status', 'held', 'hold to release');
select is((public.release_reservation('fixes-s3') ->> 'released')::boolean and public.settle_usage('fixes-s3', 10, 10, model => 'gpt-4o') ->> 'reservation_status' = 'released', true, 'a released hold stays released when its usage is settled (the usage is still recorded)');

-- ── 3. reserve_credit: the hold is looked up again after the lock ───────────────────────────
select is(public.reserve_credit('eeeeeeee-0000-4000-8000-00000000000b', 'fixes-h1', 1) ->> 'available', '0', 'a hold of the whole balance');
reset role;
select matches(pg_get_functiondef('public.reserve_credit(uuid, text, numeric, integer, text, text)'::regprocedure), 'for update;.*from public\.credit_reservations r\s+where r\.request_id = reserve_credit\.request_id;\s+if not found then.*insufficient_balance', 'reserve_credit looks the hold up again after taking the balance-row lock, before the availability check');
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';

-- ── 4. record_usage_batch replays before pricing ─────────────────────────────────────────
create temporary table fixes_batch (n int, r jsonb);
insert into fixes_batch select 1, public.record_usage_batch('[{"user_id":"eeeeeeee-0000-4000-8000-00000000000a","provider":"fixes-co","model":"fixes-model","input_tokens":10,"output_tokens":10,"request_id":"fixes-b1"}]');
reset role;
update public.model_pricing set pricing_type = 'missing', price_per_input_token = null, price_per_output_token = null
where provider_id = 'fixes-co' and model_id = 'fixes-model';
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
insert into fixes_batch select 2, public.record_usage_batch('[{"user_id":"eeeeeeee-0000-4000-8000-00000000000a","provider":"fixes-co","model":"fixes-model","input_tokens":10,"output_tokens":10,"request_id":"fixes-b1"},{"user_id":"eeeeeeee-0000-4000-8000-00000000000a","provider":"fixes-co","model":"fixes-model","input_tokens":11,"output_tokens":10,"request_id":"fixes-b1"}]');
select results_eq($$select n, (r ->> 'recorded')::int, (r ->> 'replayed')::int, (r ->> 'failed')::int, r -> 'results' -> 0 ->> 'cost', r -> 'results' -> 1 -> 'error' ->> 'message' from fixes_batch order by n$$,
  $$values (1, 1, 0, 0, '0.00002', null::text), (2, 0, 1, 1, '0.00002', 'idempotency_conflict')$$,
  'a batch retry after the price went missing replays the stored record; another payload is PT409');
select is_empty($$select * from public.balance_audit()$$, 'balance = sum(ledger) after every fix');

SELECT * FROM finish();
ROLLBACK;
