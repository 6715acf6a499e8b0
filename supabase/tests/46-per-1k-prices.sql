-- 46-per-1k-prices.sql — the per-1K price columns (20251018000001): always per-token × 1000
-- (CHECK), a per-1K write sets the per-token truth exactly or is refused, a per-1K UPDATE of the
-- version in effect becomes a new audited version (older and scheduled versions untouched),
-- service_role may do it through the API, anon and authenticated may not.
-- Timestamps are explicit: inside one test transaction now() never moves.
BEGIN;
SELECT plan(18);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
do $$
begin
  -- k1co/k1-chat: a version since 2020 and one scheduled for tomorrow.
  perform public.set_model_price('k1co', 'k1-chat', 0.000001, 0.000002,
    cached_input_per_token => 0.0000005, effective_from => '2020-01-01');
  perform public.set_model_price('k1co', 'k1-chat', 0.000009, 0.000009,
    effective_from => now() + interval '1 day');
end
$$;

-- ── The columns follow the per-token prices ────────────────────────────────────────────────
select is_empty($$select 1 from public.model_pricing
                  where input_price_per_1k_tokens is distinct from price_per_input_token * 1000
                     or output_price_per_1k_tokens is distinct from price_per_output_token * 1000$$,
  'every row''s per-1K prices are its per-token prices x 1000');
select results_eq($$select input_price_per_1k_tokens::text, output_price_per_1k_tokens::text
                    from public.model_pricing where provider_id = 'openai' and model_id = 'gpt-4o'$$,
  $$values ('0.0025', '0.01')$$, 'the per-1K form is shown without trailing zeros');
select throws_ok($$update public.model_pricing set input_price_per_1k_tokens = 5, price_per_input_token = 0.000001
                   where provider_id = 'k1co' and model_id = 'k1-chat'$$,
  '22023', 'invalid_amount', 'writing both forms so that they disagree is refused');
select throws_ok($$update public.model_pricing set input_price_per_1k_tokens = 0.0000000001
                   where provider_id = 'k1co' and model_id = 'k1-chat'$$,
  '22023', 'invalid_amount', 'a per-1K price needing more than 12 decimals per token is refused, never rounded');
select throws_ok($$insert into public.model_pricing (provider_id, model_id, price_per_input_token,
                     price_per_output_token, input_price_per_1k_tokens) values ('k1co', 'k1-x', 0.000001, 0.000001, 2)$$,
  '22023', 'invalid_amount', 'an insert whose two forms disagree is refused');
insert into public.model_pricing (provider_id, model_id, input_price_per_1k_tokens, output_price_per_1k_tokens)
values ('k1co', 'k1-insert', 0.0015, 0.002);
select results_eq($$select price_per_input_token, price_per_output_token from public.model_pricing
                    where provider_id = 'k1co' and model_id = 'k1-insert'$$,
  $$values (0.0000015::numeric, 0.000002::numeric)$$, 'an insert given only per-1K prices stores the per-token truth');
update public.model_pricing set price_per_output_token = 0.000003
where provider_id = 'k1co' and model_id = 'k1-insert';
update public.model_pricing set price_per_input_token = 0.000002, input_price_per_1k_tokens = 0.002
where provider_id = 'k1co' and model_id = 'k1-insert';
select results_eq($$select count(*)::int, min(price_per_input_token) from public.model_pricing
                    where provider_id = 'k1co' and model_id = 'k1-insert'$$,
  $$values (1, 0.000002::numeric)$$, 'writing both forms in agreement (a whole-row upsert) is an ordinary in-place UPDATE');
select is((select output_price_per_1k_tokens from public.model_pricing
           where provider_id = 'k1co' and model_id = 'k1-insert'), 0.003::numeric,
  'a per-token UPDATE (in place, as before) moves the per-1K column with it');

-- ── A per-1K UPDATE is a new version ──────────────────────────────────────────────────────
update public.model_pricing set input_price_per_1k_tokens = 0.004
where provider_id = 'k1co' and model_id = 'k1-chat';
select results_eq($$select effective_from = now(), price_per_input_token, price_per_output_token,
                           price_per_cached_input_token, pricing_source
                    from public.model_pricing where provider_id = 'k1co' and model_id = 'k1-chat'
                    order by effective_from$$,
  $$values (false, 0.000001::numeric, 0.000002::numeric, 0.0000005::numeric, 'manual'),
           (true, 0.000004, 0.000002, 0.0000005, 'manual'),
           (false, 0.000009, 0.000009, null, 'manual')$$,
  'the version in effect gets a successor from now (other prices kept); the old and the scheduled versions are untouched');
select is((public.price_for('k1co', 'k1-chat')).price_per_input_token, 0.000004::numeric,
  'the new version is the one charged now');
select is((public.price_for('k1co', 'k1-chat', '2021-01-01')).price_per_input_token, 0.000001::numeric,
  'usage in the past keeps the old price');
select is((select count(*)::int from public.price_audit where provider_id = 'k1co' and model_id = 'k1-chat'
           and action = 'insert' and changed_at = now() and (new ->> 'price_per_input_token')::numeric = 0.000004),
  1, 'the change is audited as the insert of a version');
update public.model_pricing set input_price_per_1k_tokens = 0.005
where provider_id = 'k1co' and model_id = 'k1-chat';
select is((select count(*)::int from public.model_pricing where provider_id = 'k1co' and model_id = 'k1-chat'),
  3, 'a second per-1K UPDATE in the same transaction updates the version that starts now in place');
select is((public.price_for('k1co', 'k1-chat')).price_per_input_token, 0.000005::numeric,
  'and that version holds the latest price');

-- ── Who may write ─────────────────────────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
update public.model_pricing set output_price_per_1k_tokens = 0.006
where provider_id = 'k1co' and model_id = 'k1-chat';
select is((public.price_for('k1co', 'k1-chat')).price_per_output_token, 0.000006::numeric,
  'service_role: a per-1K UPDATE is allowed');
reset role;
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated"}';
select throws_ok($$update public.model_pricing set input_price_per_1k_tokens = 1$$, '42501', null,
  'authenticated: a per-1K UPDATE is denied');
reset role;
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select throws_ok($$update public.model_pricing set input_price_per_1k_tokens = 1$$, '42501', null,
  'anon: a per-1K UPDATE is denied');
select isnt_empty($$select input_price_per_1k_tokens from public.model_pricing where model_id = 'gpt-4o'$$,
  'anon: reads the per-1K columns with the price list');
reset role;

SELECT * FROM finish();
ROLLBACK;
