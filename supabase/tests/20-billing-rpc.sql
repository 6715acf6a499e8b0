-- 20-billing-rpc.sql — the billing API functions: every function × {anon, authenticated,
-- service_role} actually called, then each function's happy path, idempotency and errors
-- (SQLSTATE + message code), exact money, the ledger invariant.
BEGIN;
SELECT plan(118);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('bbbbbbbb-0000-4000-8000-00000000000a', 'rpc-a@example.test'),
  ('bbbbbbbb-0000-4000-8000-00000000000b', 'rpc-b@example.test'),
  ('bbbbbbbb-0000-4000-8000-00000000000c', 'rpc-reserve@example.test');
do $$
begin
  perform public.top_up('bbbbbbbb-0000-4000-8000-00000000000a', 10, 'rpc-fixture-a');
  perform public.top_up('bbbbbbbb-0000-4000-8000-00000000000c', 10, 'rpc-fixture-c');
  perform public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000a', 'rpc-matrix-hold', 1);
end
$$;

-- ── Function × role: anon ──────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select is((public.price_for('openai', 'gpt-4o')).model_id, 'gpt-4o', 'anon: price_for is allowed');
select throws_ok($$select public.my_balance()$$, '42501', null, 'anon: my_balance is denied');
select throws_ok($$select public.check_balance('bbbbbbbb-0000-4000-8000-00000000000a')$$, '42501', null, 'anon: check_balance is denied');
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-00000000000a', 1, 'x')$$, '42501', null, 'anon: top_up is denied');
select throws_ok($$select public.adjust_balance('bbbbbbbb-0000-4000-8000-00000000000a', 1, 'r', 'x')$$, '42501', null, 'anon: adjust_balance is denied');
select throws_ok($$select * from public.balance_audit()$$, '42501', null, 'anon: balance_audit is denied');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o', 1, 1, 'x')$$, '42501', null, 'anon: record_usage is denied');
select throws_ok($$select public.record_usage_batch('[]')$$, '42501', null, 'anon: record_usage_batch is denied');
select throws_ok($$select public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000a', 'x', 1)$$, '42501', null, 'anon: reserve_credit is denied');
select throws_ok($$select public.settle_usage('x', 1, 1)$$, '42501', null, 'anon: settle_usage is denied');
select throws_ok($$select public.release_reservation('x')$$, '42501', null, 'anon: release_reservation is denied');
select throws_ok($$select public.repair_missing_balances()$$, '42501', null, 'anon: repair_missing_balances is denied');
select throws_ok($$select public.refund_usage('x', 'r')$$, '42501', null, 'anon: refund_usage is denied');
reset role;

-- ── Function × role: authenticated (user A) ───────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"bbbbbbbb-0000-4000-8000-00000000000a"}';
select is((public.price_for('openai', 'gpt-4o')).model_id, 'gpt-4o', 'authenticated: price_for is allowed');
select is(public.my_balance() ->> 'balance', '10', 'authenticated: my_balance is allowed and returns their own balance');
select throws_ok($$select public.check_balance('bbbbbbbb-0000-4000-8000-00000000000a')$$, '42501', null, 'authenticated: check_balance is denied');
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-00000000000a', 1, 'x')$$, '42501', null, 'authenticated: top_up is denied');
select throws_ok($$select public.adjust_balance('bbbbbbbb-0000-4000-8000-00000000000a', 1, 'r', 'x')$$, '42501', null, 'authenticated: adjust_balance is denied');
select throws_ok($$select * from public.balance_audit()$$, '42501', null, 'authenticated: balance_audit is denied');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o', 1, 1, 'x')$$, '42501', null, 'authenticated: record_usage is denied');
select throws_ok($$select public.record_usage_batch('[]')$$, '42501', null, 'authenticated: record_usage_batch is denied');
select throws_ok($$select public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000a', 'x', 1)$$, '42501', null, 'authenticated: reserve_credit is denied');
select throws_ok($$select public.settle_usage('x', 1, 1)$$, '42501', null, 'authenticated: settle_usage is denied');
select throws_ok($$select public.release_reservation('x')$$, '42501', null, 'authenticated: release_reservation is denied');
select throws_ok($$select public.repair_missing_balances()$$, '42501', null, 'authenticated: repair_missing_balances is denied');
select throws_ok($$select public.refund_usage('x', 'r')$$, '42501', null, 'authenticated: refund_usage is denied');
-- my_balance without a user id in the token
set local "request.jwt.claims" to '{"role":"authenticated"}';
select throws_ok($$select public.my_balance()$$, 'PT401', 'not_authenticated', 'my_balance without a signed-in user raises PT401 not_authenticated');
reset role;

-- Defense in depth: even with EXECUTE granted by mistake, the caller check refuses.
grant execute on function public.top_up(uuid, numeric, text) to authenticated;
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"bbbbbbbb-0000-4000-8000-00000000000a"}';
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-00000000000a', 1000, 'forged')$$, '42501', 'forbidden', 'a mistaken EXECUTE grant is still stopped by the caller check');
reset role;

-- ── Function × role: service_role ─────────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select is((public.price_for('openai', 'gpt-4o')).model_id, 'gpt-4o', 'service_role: price_for is allowed');
select throws_ok($$select public.my_balance()$$, '42501', null, 'service_role: my_balance is denied (it is for signed-in users)');
select is(public.check_balance('bbbbbbbb-0000-4000-8000-00000000000a') ->> 'held', '1', 'service_role: check_balance is allowed');
select is(public.top_up('bbbbbbbb-0000-4000-8000-00000000000b', 5, 'rpc-matrix-topup') ->> 'balance', '5', 'service_role: top_up is allowed');
select is(public.adjust_balance('bbbbbbbb-0000-4000-8000-00000000000b', -5, 'matrix', 'rpc-matrix-adjust') ->> 'balance', '0', 'service_role: adjust_balance is allowed');
select is_empty($$select * from public.balance_audit()$$, 'service_role: balance_audit is allowed (and empty)');
select is(public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1000, 100, 'rpc-matrix-usage') ->> 'cost', '0.00021', 'service_role: record_usage is allowed');
select is((public.record_usage_batch('[{"user_id":"bbbbbbbb-0000-4000-8000-00000000000a","model":"gpt-4o-mini","input_tokens":1000,"output_tokens":100,"request_id":"rpc-matrix-batch"}]') ->> 'recorded')::int, 1, 'service_role: record_usage_batch is allowed');
select is(public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000a', 'rpc-matrix-hold-2', 1) ->> 'status', 'held', 'service_role: reserve_credit is allowed');
select is(public.settle_usage('rpc-matrix-hold', 100, 10, model => 'gpt-4o-mini') ->> 'reservation_status', 'settled', 'service_role: settle_usage is allowed');
select is((public.release_reservation('rpc-matrix-hold-2') ->> 'released')::boolean, true, 'service_role: release_reservation is allowed');
select is(public.repair_missing_balances(), 0, 'service_role: repair_missing_balances is allowed');
select is(public.refund_usage('rpc-matrix-usage', 'matrix') ->> 'amount', '0.00021', 'service_role: refund_usage is allowed');

-- ── price_for ─────────────────────────────────────────────────────────────────────────────
select is((public.price_for('openai', 'gpt-4o')).price_per_input_token, 0.0000025::numeric, 'price_for returns the exact per-token price');
select is((public.price_for(null, 'claude-sonnet-4')).provider_id, 'anthropic', 'price_for without provider finds a model unique across providers');
select throws_ok($$select public.price_for('openai', 'no-such-model')$$, 'PT422', 'unknown_model', 'price_for: unknown model raises PT422 unknown_model');
select throws_ok($$select public.price_for('openai', '')$$, '22023', 'invalid_usage', 'price_for: an empty model raises 22023 invalid_usage');
reset role;
insert into public.model_pricing (provider_id, model_id, price_per_input_token, price_per_output_token)
values ('openrouter', 'gpt-4o', 0.0000025, 0.00001);
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select is((public.price_for(null, 'gpt-4o')).provider_id, 'openai', 'price_for: a model at several providers resolves to its default provider');
reset role;
update public.models set is_default = false where model_id = 'gpt-4o';
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select throws_ok($$select public.price_for(null, 'gpt-4o')$$, 'PT422', 'ambiguous_model', 'price_for: a model at several providers without a default needs the provider (ambiguous_model)');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o', 1, 1, 'rpc-ambiguous')$$, 'PT422', 'ambiguous_model', 'record_usage: an ambiguous model is refused');

-- ── record_usage ──────────────────────────────────────────────────────────────────────────
-- gpt-4o: 800 uncached × 0.0000025 + 200 cached × 0.00000125 + 500 × 0.00001 = 0.00725
select is(public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o', 1000, 500, 'rpc-u1', provider => 'openai', cached_input_tokens => 200, metadata => '{"route":"chat"}') ->> 'cost', '0.00725', 'record_usage charges the exact cost (cached tokens at the cached price)');
select is((select u.price_per_cached_input_token from public.usage_records u where u.request_id = 'rpc-u1'), 0.00000125::numeric, 'the usage row keeps a snapshot of the unit prices');
select is((select l.amount from public.balance_movements l where l.kind = 'usage' and l.reference = 'rpc-u1'), -0.00725::numeric, 'the charge is a usage line (the usage record, 20261129200001) referenced by request_id');
select results_eq($$select r ->> 'replayed', r ->> 'cost' from public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o', 1000, 500, 'rpc-u1', provider => 'openai', cached_input_tokens => 200, metadata => '{"route":"chat"}') r$$, $$values ('true', '0.00725')$$, 'the same request_id again returns the original record (replayed)');
select is((select count(*)::int from public.balance_movements l where l.reference = 'rpc-u1'), 1, 'a replay does not charge twice');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o', 1000, 501, 'rpc-u1', provider => 'openai', cached_input_tokens => 200)$$, 'PT409', 'idempotency_conflict', 'the same request_id with other token counts raises PT409');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000b', 'gpt-4o', 1000, 500, 'rpc-u1', provider => 'openai', cached_input_tokens => 200)$$, 'PT409', 'idempotency_conflict', 'the same request_id for another user raises PT409');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'no-such-model', 1, 1, 'rpc-bad-1')$$, 'PT422', 'unknown_model', 'an unknown model raises PT422 unknown_model, never a $0 charge');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-image-1', 1, 1, 'rpc-bad-2')$$, 'PT422', 'price_missing', 'a model with a missing price raises PT422 price_missing');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o-mini', -1, 1, 'rpc-bad-3')$$, '22023', 'invalid_usage', 'negative input_tokens raise 22023 invalid_usage');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1, 10000001, 'rpc-bad-4')$$, '22023', 'invalid_usage', 'an absurd output_tokens count raises 22023 invalid_usage');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1, 1, '')$$, '22023', 'invalid_usage', 'an empty request_id raises 22023 invalid_usage');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o-mini', 10, 1, 'rpc-bad-5', cached_input_tokens => 11)$$, '22023', 'invalid_usage', 'cached_input_tokens above input_tokens raise 22023 invalid_usage');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1, 1, 'rpc-bad-6', metadata => '[1]')$$, '22023', 'invalid_usage', 'non-object metadata raises 22023 invalid_usage');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1, 1, 'rpc-bad-7', status => 'weird')$$, '22023', 'invalid_usage', 'an unknown status raises 22023 invalid_usage');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1, 1, 'rpc-bad-8', occurred_at => 'infinity')$$, '22023', 'invalid_usage', 'an infinite occurred_at raises 22023 invalid_usage');
select throws_ok($$select public.record_usage('bbbbbbbb-0000-4000-8000-0000000000ff', 'gpt-4o-mini', 1, 1, 'rpc-bad-9')$$, 'PT404', 'user_not_found', 'an unknown user raises PT404 user_not_found');
select is_empty($$select 1 from public.usage_records where request_id like 'rpc-bad-%'$$, 'failed calls wrote nothing');
select results_eq($$select r ->> 'cost', (select count(*)::int from public.balance_movements l where l.reference = 'rpc-free') from public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'meta-llama/llama-3.3-70b-instruct:free', 5000, 5000, 'rpc-free') r$$, $$values ('0', 0)$$, 'a free model costs exactly 0 and moves no money');
select ok((public.record_usage('bbbbbbbb-0000-4000-8000-00000000000a', 'gpt-4.5-preview', 1000, 0, 'rpc-deprecated') ->> 'cost')::numeric = 0.075, 'a deprecated model is still charged at its price');
select results_eq($$select r ->> 'balance', (r ->> 'negative_balance')::boolean from public.record_usage('bbbbbbbb-0000-4000-8000-00000000000b', 'claude-opus-4', 0, 100000, 'rpc-negative') r$$, $$values ('-7.5', true)$$, 'usage is never dropped: the balance goes negative and the result says so');

-- ── record_usage_batch ────────────────────────────────────────────────────────────────────
create temporary table batch_result as
select public.record_usage_batch($$[
  {"user_id":"bbbbbbbb-0000-4000-8000-00000000000b","model":"gpt-4o-mini","input_tokens":1000,"output_tokens":0,"request_id":"rpc-b-2"},
  {"user_id":"bbbbbbbb-0000-4000-8000-00000000000a","model":"gpt-4o-mini","input_tokens":1000,"output_tokens":0,"request_id":"rpc-b-1"},
  {"user_id":"bbbbbbbb-0000-4000-8000-00000000000a","model":"gpt-4o-mini","input_tokens":-5,"output_tokens":0,"request_id":"rpc-b-3"},
  {"user_id":"bbbbbbbb-0000-4000-8000-00000000000a","model":"gpt-4o","input_tokens":1000,"output_tokens":500,"cached_input_tokens":200,"provider":"openai","metadata":{"route":"chat"},"request_id":"rpc-u1"},
  {"user_id":"bbbbbbbb-0000-4000-8000-00000000000a","model":"gpt-4o-mini","input_tokens":1000,"output_tokens":0,"request_id":"rpc-b-1"},
  {"user_id":"bbbbbbbb-0000-4000-8000-00000000000a","model":"gpt-4o-mini","input_tokens":2,"output_tokens":0,"request_id":"rpc-b-1"},
  {"user_id":"bbbbbbbb-0000-4000-8000-00000000000a","model":"gpt-4o-mini","input_tokens":"1.5","output_tokens":0,"request_id":"rpc-b-4"}
]$$::jsonb) as r;
select results_eq($$select (r ->> 'recorded')::int, (r ->> 'replayed')::int, (r ->> 'failed')::int from batch_result$$, $$values (2, 2, 3)$$, 'record_usage_batch counts recorded, replayed and failed records');
select results_eq($$select e ->> 'index', e ->> 'ok', coalesce(e -> 'error' ->> 'code', e ->> 'replayed') from batch_result, jsonb_array_elements(r -> 'results') e$$,
  $$values ('0', 'true', 'false'), ('1', 'true', 'false'), ('2', 'false', '22023'), ('3', 'true', 'true'), ('4', 'true', 'true'), ('5', 'false', 'PT409'), ('6', 'false', '22023')$$,
  'record_usage_batch returns one result per record, in order, with per-record errors');
select is((select count(*)::int from public.usage_records where request_id in ('rpc-b-1', 'rpc-b-2', 'rpc-b-3', 'rpc-b-4')), 2, 'the batch wrote only its valid new records');
select is((select r -> 'results' -> 1 ->> 'balance' from batch_result), (select trim_scale(balance)::text from public.user_balances where user_id = 'bbbbbbbb-0000-4000-8000-00000000000a'), 'batch results carry the balance after the batch');
select throws_ok($$select public.record_usage_batch('{"not":"an array"}')$$, '22023', 'invalid_argument', 'a batch that is not an array raises 22023 invalid_argument');
select throws_ok($$select public.record_usage_batch('[]')$$, '22023', 'invalid_argument', 'an empty batch raises 22023 invalid_argument');

-- ── top_up and adjust_balance ─────────────────────────────────────────────────────────────
select results_eq($$select r ->> 'kind', r ->> 'amount', (r ->> 'replayed')::boolean from public.top_up('bbbbbbbb-0000-4000-8000-00000000000b', 20.5, 'rpc-pay-1') r$$, $$values ('top_up', '20.5', false)$$, 'top_up credits the amount');
select results_eq($$select r ->> 'balance', (r ->> 'replayed')::boolean from public.top_up('bbbbbbbb-0000-4000-8000-00000000000b', 20.50, 'rpc-pay-1') r$$, $$values ('12.99985', true)$$, 'the same top_up reference again is a replay, credited once');
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-00000000000b', 21, 'rpc-pay-1')$$, 'PT409', 'idempotency_conflict', 'a top_up reference reused with another amount raises PT409');
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-00000000000b', 'NaN', 'rpc-pay-2')$$, '22023', 'invalid_amount', 'a NaN amount raises 22023 invalid_amount');
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-00000000000b', 'Infinity', 'rpc-pay-2')$$, '22023', 'invalid_amount', 'an infinite amount raises 22023 invalid_amount');
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-00000000000b', 0, 'rpc-pay-2')$$, '22023', 'invalid_amount', 'a zero top_up raises 22023 invalid_amount');
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-00000000000b', -1, 'rpc-pay-2')$$, '22023', 'invalid_amount', 'a negative top_up raises 22023 invalid_amount');
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-00000000000b', 0.0000000000001, 'rpc-pay-2')$$, '22023', 'invalid_amount', 'an amount with more than 12 decimals raises 22023 invalid_amount');
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-00000000000b', 1e9, 'rpc-pay-2')$$, '22023', 'invalid_amount', 'an absurd amount raises 22023 invalid_amount');
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-00000000000b', 1, ' ')$$, '22023', 'invalid_argument', 'a blank reference raises 22023 invalid_argument');
select throws_ok($$select public.top_up('bbbbbbbb-0000-4000-8000-0000000000ff', 1, 'rpc-pay-3')$$, 'PT404', 'user_not_found', 'top_up for an unknown user raises PT404');
select results_eq($$select r ->> 'amount', r ->> 'description' from public.adjust_balance('bbbbbbbb-0000-4000-8000-00000000000b', -3, 'goodwill reversal', 'rpc-adj-1') r$$, $$values ('-3', 'goodwill reversal')$$, 'adjust_balance moves money either way, with its reason');
select throws_ok($$select public.adjust_balance('bbbbbbbb-0000-4000-8000-00000000000b', 1, '', 'rpc-adj-2')$$, '22023', 'invalid_argument', 'adjust_balance without a reason raises 22023 invalid_argument');

-- ── check_balance and my_balance ──────────────────────────────────────────────────────────
select results_eq($$select r ->> 'balance', r ->> 'held', r ->> 'available', (r ->> 'allowed')::boolean from public.check_balance('bbbbbbbb-0000-4000-8000-00000000000c', 10) r$$, $$values ('10', '0', '10', true)$$, 'check_balance: balance, held, available, allowed');
select is((public.check_balance('bbbbbbbb-0000-4000-8000-00000000000c', 10.000000000001) ->> 'allowed')::boolean, false, 'check_balance: not allowed above the available amount');
select throws_ok($$select public.check_balance('bbbbbbbb-0000-4000-8000-00000000000c', 'NaN')$$, '22023', 'invalid_amount', 'check_balance: a NaN estimate raises 22023');
select throws_ok($$select public.check_balance('bbbbbbbb-0000-4000-8000-0000000000ff')$$, 'PT404', 'user_not_found', 'check_balance: an unknown user raises PT404');

-- ── Reservations ──────────────────────────────────────────────────────────────────────────
select is(public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000c', 'rpc-r1', 4) ->> 'available', '6', 'reserve_credit holds the amount');
select is(public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000c', 'rpc-r2', 4, model => 'gpt-4o-mini') ->> 'available', '2', 'a second hold counts too');
select throws_ok($$select public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000c', 'rpc-r3', 4)$$, 'PT402', 'insufficient_balance', 'a hold above the available amount raises PT402 insufficient_balance');
select is((public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000c', 'rpc-r1', 4) ->> 'replayed')::boolean, true, 'the same reservation again is a replay, even when nothing is available');
select throws_ok($$select public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000c', 'rpc-r1', 3)$$, 'PT409', 'idempotency_conflict', 'a reservation request_id reused with another amount raises PT409');
select throws_ok($$select public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000c', 'rpc-r4', 1, 0)$$, '22023', 'invalid_argument', 'a zero ttl raises 22023 invalid_argument');
select throws_ok($$select public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000c', 'rpc-r4', 1, model => 'gpt-image-1')$$, 'PT422', 'price_missing', 'a hold for a model that cannot be charged raises PT422');
select throws_ok($$select public.reserve_credit('bbbbbbbb-0000-4000-8000-00000000000c', 'rpc-r4', 0)$$, '22023', 'invalid_amount', 'a zero reservation raises 22023 invalid_amount');
reset role;
update public.credit_reservations set expires_at = now() - interval '1 second' where request_id = 'rpc-r1';
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select is(public.check_balance('bbbbbbbb-0000-4000-8000-00000000000c') ->> 'held', '4', 'an expired hold stops counting, without any job');
select is(public.release_reservation('rpc-r1') ->> 'status', 'released', 'an expired hold can still be released');
-- settle: 10000 in × 0.00000015 + 1000 out × 0.0000006 = 0.0021, model taken from the hold
select results_eq($$select r ->> 'cost', r ->> 'balance', r ->> 'reservation_status', r ->> 'model' from public.settle_usage('rpc-r2', 10000, 1000) r$$, $$values ('0.0021', '9.9979', 'settled', 'gpt-4o-mini')$$, 'settle_usage charges the real cost and settles the hold');
select is(public.check_balance('bbbbbbbb-0000-4000-8000-00000000000c') ->> 'held', '0', 'a settled hold no longer counts');
select is((public.settle_usage('rpc-r2', 10000, 1000) ->> 'replayed')::boolean, true, 'settle_usage again is a replay');
select throws_ok($$select public.settle_usage('rpc-nope', 1, 1, model => 'gpt-4o-mini')$$, 'PT404', 'reservation_not_found', 'settling an unknown reservation raises PT404');
select is((public.release_reservation('rpc-r2') ->> 'released')::boolean, false, 'releasing a settled hold changes nothing');
select throws_ok($$select public.release_reservation('rpc-nope')$$, 'PT404', 'reservation_not_found', 'releasing an unknown reservation raises PT404');

-- ── refund_usage ──────────────────────────────────────────────────────────────────────────
-- rpc-u1 cost 0.00725 (user A)
select results_eq($$select r ->> 'kind', r ->> 'amount', r ->> 'usage_cost', (r ->> 'replayed')::boolean from public.refund_usage('rpc-u1', 'provider error', 0.005) r$$, $$values ('refund', '0.005', '0.00725', false)$$, 'refund_usage credits part of a usage cost');
select is((public.refund_usage('rpc-u1', 'provider error', 0.005) ->> 'replayed')::boolean, true, 'the same refund again is a replay, credited once');
select throws_ok($$select public.refund_usage('rpc-u1', 'provider error', 0.006)$$, 'PT409', 'idempotency_conflict', 'a second, different refund of the same request raises PT409');
select throws_ok($$select public.refund_usage('rpc-deprecated', 'too much', 1)$$, '22023', 'invalid_amount', 'a refund above the usage cost raises 22023 invalid_amount');
select throws_ok($$select public.refund_usage('rpc-free', 'nothing to refund')$$, '22023', 'invalid_amount', 'a free usage has nothing to refund');
select throws_ok($$select public.refund_usage('rpc-nope', 'x')$$, 'PT404', 'usage_not_found', 'refunding an unknown request raises PT404 usage_not_found');
select is((public.refund_usage('rpc-deprecated', 'full refund') ->> 'amount'), '0.075', 'without an amount the full cost is refunded');

-- ── The ledger invariant ──────────────────────────────────────────────────────────────────
select is_empty($$select * from public.balance_audit()$$, 'balance_audit is empty: every balance equals the sum of its ledger');
reset role;
select throws_ok($$update public.ledger_entries set amount = 1 where reference = 'rpc-deprecated'$$, '55000', 'immutable_row', 'ledger entries are never updated, not even by the owner');
update public.user_balances set balance = balance + 1 where user_id = 'bbbbbbbb-0000-4000-8000-00000000000a';
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select results_eq($$select user_id, difference from public.balance_audit()$$, $$values ('bbbbbbbb-0000-4000-8000-00000000000a'::uuid, 1::numeric)$$, 'balance_audit reports a balance that does not match its ledger');
reset role;

SELECT * FROM finish();
ROLLBACK;
