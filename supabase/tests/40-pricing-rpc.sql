-- 40-pricing-rpc.sql — the pricing API: every new function × {anon, authenticated,
-- service_role}; price_for's precedence (exact → alias → provider prefix → date suffix) and
-- version selection by time; set_model_price / aliases / import errors and the no-op rule; the
-- cost formula against hand-computed examples (cached input, per request, per image,
-- long-context tier); reprice_usage with its exact ledger effects; the audit trail.
-- Timestamps are explicit: inside one test transaction now() never moves.
BEGIN;
SELECT plan(91);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('dddddddd-0000-4000-8000-00000000000a', 'pricing-a@example.test'),
  ('dddddddd-0000-4000-8000-00000000000b', 'pricing-b@example.test');
do $$
begin
  perform public.top_up('dddddddd-0000-4000-8000-00000000000a', 100, 'pricing-fixture-a');
  perform public.top_up('dddddddd-0000-4000-8000-00000000000b', 100, 'pricing-fixture-b');
  -- testco/tiered: every price component, long-context tier above 200k input tokens.
  perform public.set_model_price('testco', 'tiered', 0.000001, 0.000002,
    cached_input_per_token => 0.0000001, per_request => 0.001, per_image => 0.04,
    effective_from => '2020-01-01', long_context_threshold => 200000,
    input_per_token_above_threshold => 0.000002, output_per_token_above_threshold => 0.000004);
  -- testco/plain: no cache price, versions on day -10 and day -5.
  perform public.set_model_price('testco', 'plain', 0.000003, 0.000015,
    effective_from => now() - interval '10 days');
  perform public.set_model_price('testco', 'plain', 0.000004, 0.00002,
    effective_from => now() - interval '5 days');
  -- a model priced at two providers, for ambiguity
  perform public.set_model_price('otherco', 'plain', 0.000001, 0.000001,
    effective_from => '2020-01-01');
end
$$;

-- ── Function × role: anon ──────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select is((public.price_for('testco', 'tiered')).model_id, 'tiered', 'anon: price_for is allowed');
select isnt_empty($$select * from public.price_history('testco', 'plain')$$, 'anon: price_history is allowed');
select isnt_empty($$select 1 from public.models where provider_id = 'testco'$$, 'anon: reads the model catalog');
select isnt_empty($$select 1 from public.models_pricing_classified where provider_id = 'testco'$$, 'anon: reads the pricing views');
select throws_ok($$select 1 from public.price_audit$$, '42501', null, 'anon: price_audit is denied');
select throws_ok($$insert into public.models (provider_id, model_id) values ('x', 'y')$$, '42501', null, 'anon: insert models is denied');
select throws_ok($$insert into public.model_aliases (alias, target_model_id) values ('x', 'y')$$, '42501', null, 'anon: insert model_aliases is denied');
select throws_ok($$select public.set_model_price('testco', 'x', 0, 0)$$, '42501', null, 'anon: set_model_price is denied');
select throws_ok($$select public.set_model_alias('x', 'tiered')$$, '42501', null, 'anon: set_model_alias is denied');
select throws_ok($$select public.remove_model_alias('x')$$, '42501', null, 'anon: remove_model_alias is denied');
select throws_ok($$select public.import_model_prices('[]')$$, '42501', null, 'anon: import_model_prices is denied');
select throws_ok($$select public.reprice_usage(now() - interval '1 day', now())$$, '42501', null, 'anon: reprice_usage is denied');
select throws_ok($$select public.populate_model_pricing()$$, '42501', null, 'anon: populate_model_pricing is denied');
select throws_ok($$select public.pricing_consolidation_report()$$, '42501', null, 'anon: pricing_consolidation_report is denied');
reset role;

-- ── Function × role: authenticated ────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"dddddddd-0000-4000-8000-00000000000a"}';
select is((public.price_for('testco', 'tiered')).model_id, 'tiered', 'authenticated: price_for is allowed');
select isnt_empty($$select * from public.price_history('testco', 'plain')$$, 'authenticated: price_history is allowed');
select isnt_empty($$select 1 from public.model_aliases union all select 1 from public.models$$, 'authenticated: reads catalog and aliases');
select throws_ok($$select 1 from public.price_audit$$, '42501', null, 'authenticated: price_audit is denied');
select throws_ok($$update public.models set is_active = false$$, '42501', null, 'authenticated: update models is denied');
select throws_ok($$select public.set_model_price('testco', 'x', 0, 0)$$, '42501', null, 'authenticated: set_model_price is denied');
select throws_ok($$select public.reprice_usage(now() - interval '1 day', now())$$, '42501', null, 'authenticated: reprice_usage is denied');
select throws_ok($$select public.import_model_prices('[]')$$, '42501', null, 'authenticated: import_model_prices is denied');
select throws_ok($$select public.pricing_consolidation_report()$$, '42501', null, 'authenticated: pricing_consolidation_report is denied');
reset role;

-- ── Function × role: service_role ─────────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role","sub":"dddddddd-0000-4000-8000-00000000000b"}';
select is(public.set_model_price('testco', 'svc', 0.000001, 0.000002, effective_from => '2020-01-01') ->> 'created', 'true', 'service_role: set_model_price is allowed');
select is(public.set_model_alias('svc-alias', 'svc', 'testco') ->> 'target_model', 'svc', 'service_role: set_model_alias is allowed');
select is((public.remove_model_alias('svc-alias') ->> 'removed')::boolean, true, 'service_role: remove_model_alias is allowed');
select is((public.import_model_prices('[{"provider":"testco","model":"svc","input_per_token":0.000001,"output_per_token":0.000002,"effective_from":"2020-01-01"}]') ->> 'unchanged')::int, 1, 'service_role: import_model_prices is allowed');
select is(public.reprice_usage(now() - interval '1 minute', now(), dry_run => true) ->> 'dry_run', 'true', 'service_role: reprice_usage is allowed');
select ok(public.pricing_consolidation_report() ? 'checks', 'service_role: pricing_consolidation_report is allowed');
select is(public.populate_model_pricing(), 0, 'service_role: populate_model_pricing is allowed');
select isnt_empty($$select 1 from public.price_audit where model_id = 'svc' and actor_role = 'service_role'
  and actor_user_id = 'dddddddd-0000-4000-8000-00000000000b'$$,
  'service_role: reads price_audit; changes record the role and the user id');
reset role;

-- ── Lookup precedence ──────────────────────────────────────────────────────────────────────
do $$
begin
  perform public.set_model_price('openai', 'gpt-4o-2024-08-06', 0.0000025, 0.00001,
    effective_from => '2020-01-01');                      -- an exact dated price
  perform public.set_model_alias('gpt-4o-latest', 'gpt-4o', 'openai');
  perform public.set_model_alias('house-model', 'gpt-4o-mini', 'openai');             -- any provider
  perform public.set_model_alias('house-model', 'tiered', 'testco', 'testco');        -- testco's own
  perform public.set_model_alias('chain-1', 'gpt-4o-latest');                          -- alias → alias
end
$$;
select is((public.price_for('openai', 'gpt-4o')).model_id, 'gpt-4o', 'exact name');
select is((public.price_for('openai', 'gpt-4o-2024-08-06')).model_id, 'gpt-4o-2024-08-06', 'an exact dated price beats the date-suffix pattern');
select is((public.price_for('openai', 'gpt-4o-2024-11-20')).model_id, 'gpt-4o', 'date suffix -YYYY-MM-DD is stripped');
select is((public.price_for('anthropic', 'claude-sonnet-4-5-20250929')).model_id, 'claude-sonnet-4-5', 'date suffix -YYYYMMDD is stripped');
select is((public.price_for(null, 'openai/gpt-4o-mini')).provider_id, 'openai', 'provider/ prefix names the provider');
select is((public.price_for(null, 'openai/gpt-4o-2024-05-13')).model_id, 'gpt-4o', 'prefix and date suffix together');
select is((public.price_for(null, 'gpt-4o-latest')).model_id, 'gpt-4o', 'explicit alias');
select is((public.price_for(null, 'chain-1')).model_id, 'gpt-4o', 'aliases chain');
select is((public.price_for('testco', 'house-model')).model_id, 'tiered', 'a provider''s own alias beats the provider-agnostic one');
select is((public.price_for('openai', 'house-model')).model_id, 'gpt-4o-mini', 'the provider-agnostic alias applies elsewhere');
select throws_ok($$select public.price_for('anthropic', 'openai/gpt-4o')$$, 'PT422', 'unknown_model', 'a prefix naming another provider is not stripped');
select is((public.price_for(null, 'plain')).provider_id, 'testco', 'a name priced at two providers resolves to its default (its first provider)');
select throws_ok($$select public.price_for('openai', 'no-such-model-2024-01-01')$$, 'PT422', 'unknown_model', 'unknown names still raise unknown_model');
select is(public.record_usage('dddddddd-0000-4000-8000-00000000000a', 'gpt-4o-latest', 1000, 0, 'pricing-alias-1') ->> 'model', 'gpt-4o', 'record_usage charges an alias at its target''s price');
select is(public.record_usage('dddddddd-0000-4000-8000-00000000000a', 'gpt-4o-latest', 1000, 0, 'pricing-alias-1') ->> 'replayed', 'true', 'a retry naming the alias is a replay, not a conflict');

-- ── Versions ───────────────────────────────────────────────────────────────────────────────
select is((public.price_for('testco', 'plain', now() - interval '7 days')).price_per_input_token, 0.000003::numeric, 'usage at T gets the version in effect at T');
select is((public.price_for('testco', 'plain')).price_per_input_token, 0.000004::numeric, 'now gets the newest version');
select throws_ok($$select public.price_for('testco', 'plain', now() - interval '11 days')$$, 'PT422', 'unknown_model', 'before the first version there is no price');
select is(public.record_usage('dddddddd-0000-4000-8000-00000000000a', 'plain', 1000, 100, 'pricing-v-1', provider => 'testco', occurred_at => now() - interval '7 days') ->> 'cost', '0.0045', 'record_usage at day -7 is charged the day -10 version (1000×0.000003 + 100×0.000015)');
select is((select count(*)::int from public.price_history('testco', 'plain') h where h ->> 'effective_until' is not null), 1, 'price_history closes every version but the last');
select is(public.set_model_price('testco', 'plain', 0.000004, 0.00002, effective_from => now() - interval '1 day') ->> 'created', 'false', 'the same price again is a no-op');
select is((select count(*)::int from public.model_pricing where provider_id = 'testco' and model_id = 'plain'), 2, 'the no-op created no version');
select throws_ok($$select public.set_model_price('testco', 'x', -0.1, 0)$$, '22023', 'invalid_amount', 'a negative price raises invalid_amount');
select throws_ok($$select public.set_model_price('testco', 'x', 0, 0, currency => 'XYZ')$$, '22023', 'invalid_currency', 'an unknown currency raises invalid_currency');
select throws_ok($$select public.set_model_price('testco', 'x', 0.1, 0, long_context_threshold => 100)$$, '22023', 'invalid_argument', 'a tier needs its threshold and both prices');
select throws_ok($$select public.set_model_alias('x-alias', 'no-such-model')$$, 'PT422', 'unknown_model', 'an alias to an unknown model raises unknown_model');
select throws_ok($$select public.set_model_alias('gpt-4o-latest', 'chain-1')$$, '22023', 'alias_loop', 'an alias loop raises alias_loop');
select throws_ok($$select public.import_model_prices('[{"provider":"testco","model":"ok","input_per_token":0,"output_per_token":0},{"provider":"testco","model":"bad","input_per_token":-1,"output_per_token":0}]')$$, '22023', 'invalid_amount', 'import: one bad entry aborts the chunk');
select throws_ok($$select public.import_model_prices('[{"provider":"testco","model":"dry","input_per_token":0.000001,"output_per_token":0,"currency":"XYZ"}]', dry_run => true)$$, '22023', 'invalid_currency', 'import dry run validates each entry like the real run');
select is((public.import_model_prices('[{"provider":"testco","model":"dry","input_per_token":0.000001,"output_per_token":0}]', dry_run => true) ->> 'added')::int, 1, 'import dry run counts an added model');
select is_empty($$select 1 from public.model_pricing where model_id = 'dry'$$, 'import dry run writes nothing');
select is(public.import_model_prices('[{"provider":"testco","model":"plain","input_per_token":0.000005,"output_per_token":0.00002}]', dry_run => true) -> 'diff',
  '[{"new": "0.000005", "old": "0.000004", "field": "input_per_token", "model": "plain", "provider": "testco"}]'::jsonb,
  'import dry run: the diff names the field, old → new');

-- ── Cost formula, hand-computed ────────────────────────────────────────────────────────────
-- tiered: in 0.000001, cached 0.0000001, out 0.000002, request 0.001, image 0.04;
-- above 200000 input tokens: in 0.000002, out 0.000004 for the whole request.
select is(public.record_usage('dddddddd-0000-4000-8000-00000000000b', 'tiered', 1000, 500, 'pricing-cost-1', cached_input_tokens => 200) ->> 'cost',
  '0.00282', 'standard: 800×0.000001 + 200×0.0000001 + 500×0.000002 + 0.001 = 0.00282');
select is(public.record_usage('dddddddd-0000-4000-8000-00000000000b', 'tiered', 250000, 1000, 'pricing-cost-2', cached_input_tokens => 50000, metadata => '{"images": 2}') ->> 'cost',
  '0.49', 'long context + images: 200000×0.000002 + 50000×0.0000001 + 1000×0.000004 + 0.001 + 2×0.04 = 0.49');
select is(public.record_usage('dddddddd-0000-4000-8000-00000000000b', 'tiered', 200000, 0, 'pricing-cost-3') ->> 'cost',
  '0.201', 'exactly at the threshold the base prices apply: 200000×0.000001 + 0.001 = 0.201');
select is(public.record_usage('dddddddd-0000-4000-8000-00000000000b', 'plain', 1000, 10, 'pricing-cost-4', provider => 'testco', cached_input_tokens => 500) ->> 'cost',
  '0.0042', 'no cache price: cached input costs the input price, 1000×0.000004 + 10×0.00002 = 0.0042');
select is((select row(u.long_context, u.price_per_input_token, u.price_per_output_token, u.price_per_image, u.images)::text
           from public.usage_records u where u.request_id = 'pricing-cost-2'),
  '(t,0.000002000000,0.000004000000,0.040000000000,2)', 'the usage record snapshots the prices actually used');
select is(public.estimate_cost('tiered', 250000, 1000, 'testco') ->> 'cost', '0.505',
  'estimate_cost uses the same formula: 250000×0.000002 + 1000×0.000004 + 0.001 = 0.505');
select throws_ok($$select public.record_usage('dddddddd-0000-4000-8000-00000000000b', 'tiered', 1, 1, 'pricing-cost-bad', metadata => '{"images": -1}')$$, '22023', 'invalid_usage', 'metadata.images must be a non-negative integer');

-- ── Reprice ────────────────────────────────────────────────────────────────────────────────
-- Day -3: A and B use testco/repriced at 0.00001 in / 0 out. Then a correction effective from
-- day -4 at 0.000012. Re-costing days -4..-2: A 1000 tokens (+0.002), B 2000 + 500 (+0.005).
do $$
begin
  perform public.set_model_price('testco', 'repriced', 0.00001, 0, effective_from => now() - interval '30 days');
  perform public.record_usage('dddddddd-0000-4000-8000-00000000000a', 'repriced', 1000, 0, 'pricing-rp-a1', provider => 'testco', occurred_at => now() - interval '3 days');
  perform public.record_usage('dddddddd-0000-4000-8000-00000000000b', 'repriced', 2000, 0, 'pricing-rp-b1', provider => 'testco', occurred_at => now() - interval '3 days');
  perform public.record_usage('dddddddd-0000-4000-8000-00000000000b', 'repriced', 500, 0, 'pricing-rp-b2', provider => 'testco', occurred_at => now() - interval '3 days');
  perform public.record_usage('dddddddd-0000-4000-8000-00000000000b', 'repriced', 500, 0, 'pricing-rp-out', provider => 'testco', occurred_at => now() - interval '1 day');
  perform public.set_model_price('testco', 'repriced', 0.000012, 0, effective_from => now() - interval '4 days');
end
$$;
create temporary table balances_before as select user_id, balance from public.user_balances;
select is(public.reprice_usage(now() - interval '4 days', now() - interval '2 days', model => 'repriced', dry_run => true) - 'audit_id',
  '{"changed": 3, "dry_run": true, "records": 3, "skipped": 0, "adjustments": [{"delta": "0.002", "user_id": "dddddddd-0000-4000-8000-00000000000a"}, {"delta": "0.005", "user_id": "dddddddd-0000-4000-8000-00000000000b"}], "total_delta": "0.007"}'::jsonb,
  'dry run: per-user deltas and the total');
select is((select count(*)::int from public.ledger_entries where reference like 'reprice:%' and user_id::text like 'dddddddd%'), 0, 'dry run writes nothing');
create temporary table rp as select public.reprice_usage(now() - interval '4 days', now() - interval '2 days', model => 'repriced') as r;
select is((select r ->> 'total_delta' from rp), '0.007', 'reprice: total delta');
select is((select array_agg(l.amount order by l.user_id) from public.ledger_entries l where l.kind = 'adjustment' and l.reference like 'reprice:%' and l.user_id::text like 'dddddddd%'),
  array[-0.002, -0.005]::numeric[], 'one ledger adjustment per user, for the sum of their differences');
select is((select l.reference from public.ledger_entries l where l.user_id = 'dddddddd-0000-4000-8000-00000000000a' and l.reference like 'reprice:%'),
  format('reprice:%s:dddddddd-0000-4000-8000-00000000000a', (select r ->> 'audit_id' from rp)), 'the adjustment reference names the run and the user');
select is((select array_agg(b.balance - o.balance order by b.user_id) from public.user_balances b join balances_before o using (user_id) where b.user_id::text like 'dddddddd%'),
  array[-0.002, -0.005]::numeric[], 'balances move by exactly the adjustments');
select is_empty($$select * from public.balance_audit()$$, 'balance = sum(ledger) still holds');
select is((select row(u.cost, u.original_cost, u.price_per_input_token)::text from public.usage_records u where u.request_id = 'pricing-rp-b1'),
  '(0.024000000000,0.020000000000,0.000012000000)', 'the usage record carries the new cost, the first charge and the new price');
select is((select u.cost from public.usage_records u where u.request_id = 'pricing-rp-out'), 0.005::numeric, 'usage outside the window is untouched');
select is((select a.action || ' ' || (a.new ->> 'changed') from public.price_audit a where a.id = (select (r ->> 'audit_id')::bigint from rp)), 'reprice 3', 'the run is in the audit table');
select is(public.reprice_usage(now() - interval '4 days', now() - interval '2 days', model => 'repriced') ->> 'changed', '0', 'repricing again changes nothing');
select throws_ok($$update public.usage_records set cost = 0 where request_id = 'pricing-rp-b1'$$, '55000', 'immutable_row', 'usage records stay immutable outside a reprice');
select throws_ok($$select public.reprice_usage(now(), now() - interval '1 day')$$, '22023', 'invalid_argument', 'since must be before until');

-- ── Catalog bookkeeping kept by the database ───────────────────────────────────────────────
select throws_ok($$select public.set_model_alias('gpt-4o', 'gpt-4o-mini', 'openai', 'openai')$$, '22023', 'invalid_argument', 'an alias named like a priced model is refused (exact names win)');
select is((public.remove_model_alias('never-set') ->> 'removed')::boolean, false, 'removing a missing alias is a no-op');
insert into public.model_pricing (provider_id, model_id, price_per_input_token, price_per_output_token, pricing_source)
values ('testco', 'direct', 0.000001, 0.000001, 'https://example.test/pricing');
select is((select row(p.pricing_source, p.source_detail)::text from public.model_pricing p where p.model_id = 'direct'),
  '(provider,https://example.test/pricing)', 'a URL given as pricing_source becomes source provider + source_detail');
select ok(exists (select 1 from public.models m where m.provider_id = 'testco' and m.model_id = 'direct'), 'a price for an unknown model creates its catalog row');
update public.model_pricing set last_updated = '2000-01-01' where model_id = 'direct';
update public.model_pricing set price_per_input_token = 0.000002 where model_id = 'direct';
select is((select p.last_updated from public.model_pricing p where p.model_id = 'direct'), now(), 'a price change moves last_updated');
select is((select pricing_classification from public.models_pricing_classified where provider_id = 'openai' and model_id = 'gpt-image-1'), 'missing', 'classification: missing');
select is((select pricing_classification from public.models_pricing_classified where model_id = 'gpt-4.5-preview'), 'deprecated', 'classification: deprecated');

-- ── Audit of direct SQL ────────────────────────────────────────────────────────────────────
update public.model_pricing set price_per_output_token = 0.000003 where provider_id = 'testco' and model_id = 'svc';
select is((select row(a.action, a.old ->> 'price_per_output_token', a.new ->> 'price_per_output_token')::text from public.price_audit a where a.model_id = 'svc' order by a.id desc limit 1),
  '(update,0.000002000000,0.000003000000)', 'a direct UPDATE is audited old → new');

SELECT * FROM finish();
ROLLBACK;
