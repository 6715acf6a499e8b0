-- 72-reprice-refund-lines.sql — re-pricing and refunds with the usage record as the charge's
-- line (20261129200001): the line keeps the first charge (original_cost), reprice_usage posts
-- the difference as one 'adjustment' entry per user and run, a refund is a 'refund' entry for
-- at most the current cost; a request's lines add up to −(what it finally costs), exactly, and
-- balance_movements lists each step.
BEGIN;
SELECT plan(18);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('72727272-0000-4000-8000-00000000000a', 'rp-a@example.test'),
  ('72727272-0000-4000-8000-00000000000b', 'rp-b@example.test');
do $$
begin
  perform public.top_up('72727272-0000-4000-8000-00000000000a', 1, 'rp-fixture-a');
  perform public.top_up('72727272-0000-4000-8000-00000000000b', 1, 'rp-fixture-b');
  -- 0.0000035 per input token from day -30: 1000 tokens = 0.0035
  perform public.set_model_price('rp-co', m, 0.0000035, 0, effective_from => now() - interval '30 days')
  from unnest(array['rp-model-a', 'rp-model-b']) m;
end
$$;
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
-- One transaction: every movement has the same created_at, so the lists order the usage line
-- first, then the ledger entries in id order.

select is(public.record_usage('72727272-0000-4000-8000-00000000000a', 'rp-model-a', 1000, 0, 'rp-a1', occurred_at => now() - interval '3 days') ->> 'cost', '0.0035', 'a: charged 0.0035');
select is(public.record_usage('72727272-0000-4000-8000-00000000000b', 'rp-model-b', 1000, 0, 'rp-b1', occurred_at => now() - interval '3 days') ->> 'cost', '0.0035', 'b: charged 0.0035');

-- ── Re-price twice ─────────────────────────────────────────────────────────────────────────
select isnt(public.set_model_price('rp-co', 'rp-model-a', 0.000002, 0, effective_from => now() - interval '4 days'), null, 'a back-dated lower price');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'rp-model-a') ->> 'total_delta', '-0.0015', 'the first re-price credits 0.0015');
select isnt(public.set_model_price('rp-co', 'rp-model-a', 0.000004, 0, effective_from => now() - interval '3 days 12 hours'), null, 'a back-dated higher price');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'rp-model-a') ->> 'total_delta', '0.002', 'the second re-price charges 0.002 more');
select results_eq($$select cost, original_cost from public.usage_records where request_id = 'rp-a1'$$,
  $$values (0.004::numeric, 0.0035::numeric)$$, 'the record costs 0.004 now and keeps its first charge, 0.0035');
select results_eq($$select source, kind, amount from public.balance_movements where user_id = '72727272-0000-4000-8000-00000000000a' and kind <> 'top_up' order by created_at, source desc, id$$,
  $$values ('usage'::text, 'usage'::text, -0.0035::numeric), ('ledger', 'adjustment', 0.0015), ('ledger', 'adjustment', -0.002)$$,
  'the movements: the usage line at its first charge, then one adjustment per re-price');
select is((select sum(amount) from public.balance_movements where user_id = '72727272-0000-4000-8000-00000000000a' and kind <> 'top_up'), -0.004::numeric,
  'the lines add up to −0.004, the cost the request has now');
select is((select balance from public.user_balances where user_id = '72727272-0000-4000-8000-00000000000a'), 0.996::numeric, 'a''s balance: 1 − 0.004');

-- ── Then a full refund: the current cost ────────────────────────────────────────────────
select is(public.refund_usage('rp-a1', 'provider error') ->> 'amount', '0.004', 'a full refund gives back the current cost, 0.004');
select is((select sum(amount) from public.balance_movements where user_id = '72727272-0000-4000-8000-00000000000a' and kind <> 'top_up'), 0::numeric,
  'refunded, the request''s lines add up to 0');
select isnt(public.set_model_price('rp-co', 'rp-model-a', 0.000001, 0, effective_from => now() - interval '3 days 6 hours'), null, 'another back-dated price');
select is(public.reprice_usage(now() - interval '5 days', now(), model => 'rp-model-a') ->> 'skipped', '1', 'a refunded request is not re-priced again');

-- ── A partial refund, then a re-price: skipped ──────────────────────────────────────────
select is(public.refund_usage('rp-b1', 'partial', 0.001) ->> 'amount', '0.001', 'b: a partial refund of 0.001');
select isnt(public.set_model_price('rp-co', 'rp-model-b', 0.0000001, 0, effective_from => now() - interval '4 days'), null, 'a back-dated price for b');
select results_eq($$select source, kind, amount from public.balance_movements where user_id = '72727272-0000-4000-8000-00000000000b' and kind <> 'top_up' order by created_at, source desc, id$$,
  $$values ('usage'::text, 'usage'::text, -0.0035::numeric), ('ledger', 'refund', 0.001)$$, 'b: the usage line and the refund');
select is_empty($$select * from public.balance_audit() where user_id::text like '72727272%'$$, 'balance_audit is empty after re-prices and refunds');

SELECT * FROM finish();
ROLLBACK;
