-- 40-pricing-consolidation.sql — the consolidation workflow of docs/pricing.md, end to end,
-- on the migrated database (the legacy state is planted again inside this test's transaction):
--   fresh database: the report passes, populate copies nothing, the drop migration
--   (20251130000012_drop_legacy_pricing_storage.sql, run again here with \ir) is a no-op;
--   legacy state (tests/fixtures/legacy_pricing_state.sql): the report fails naming each planted
--   problem, populate_model_pricing() fixes them (idempotently), the report passes, the drop
--   migration drops the legacy storage, the report passes again;
--   the abort path: a legacy price that cannot be copied makes private.assert_consolidation_safe()
--   (what the drop migration's DO block calls before dropping) raise a message naming the model,
--   and nothing is dropped. tests/test_verify_pricing_migration.py runs the same workflow through
--   the migration files themselves, on scratch databases, including the DO block's abort.
BEGIN;
SELECT plan(33);
set local client_min_messages = warning;

create temporary table report_of (step text primary key, r jsonb);
create function pg_temp.check_of(step text, name text) returns jsonb
language sql as $$
  select c from report_of, jsonb_array_elements(r -> 'checks') c
  where report_of.step = check_of.step and c ->> 'name' = check_of.name
$$;

-- ── Fresh database ─────────────────────────────────────────────────────────────────────────
insert into report_of values ('fresh', public.pricing_consolidation_report());
select is((select (r ->> 'passed')::boolean from report_of where step = 'fresh'), true,
  'fresh database: the report passes');
select is((select (r ->> 'legacy_columns_present')::boolean from report_of where step = 'fresh'),
  false, 'fresh database: the report sees no legacy columns');
select is((select jsonb_agg(c ->> 'name' order by c ->> 'name') from report_of,
             jsonb_array_elements(r -> 'checks') c where step = 'fresh'),
  '["active_model_without_price", "legacy_price_differs", "legacy_price_not_in_model_pricing", "paid_model_priced_zero", "pricing_tiers_not_empty", "usage_without_price"]'::jsonb,
  'the report runs the six checks');
select is(pg_temp.check_of('fresh', 'active_model_without_price') -> 'items',
  '[{"model": "gpt-image-1", "provider": "openai", "pricing_type": "missing"}]'::jsonb,
  'fresh database: the seed''s gpt-image-1 is named as active without a price (a warning)');
select is(public.populate_model_pricing(), 0, 'fresh database: populate copies nothing');
create temporary table schema_before as
  select table_name::text, column_name::text from information_schema.columns
  where table_schema = 'public';
\ir ../migrations/20251130000012_drop_legacy_pricing_storage.sql
select set_eq($$select table_name::text, column_name::text from information_schema.columns
                where table_schema = 'public'$$,
  $$select * from schema_before$$,
  'fresh database: the drop migration is a no-op on the schema');

-- ── Legacy state ───────────────────────────────────────────────────────────────────────────
\ir ../../tests/fixtures/legacy_pricing_state.sql
insert into report_of values ('legacy', public.pricing_consolidation_report());
select is((select (r ->> 'passed')::boolean from report_of where step = 'legacy'), false,
  'legacy state: the report fails');
select is((select (r ->> 'legacy_columns_present')::boolean from report_of where step = 'legacy'),
  true, 'legacy state: the report sees the legacy columns');
select is(pg_temp.check_of('legacy', 'legacy_price_not_in_model_pricing') -> 'items',
  '[{"model": "legacy-chat-1", "legacy": {"pricing_image": "0", "pricing_prompt": "0.000001", "pricing_request": "0", "pricing_completion": "0.000002"}, "provider": "legacyco"},
    {"model": "legacy-vision-1", "legacy": {"pricing_image": "0.01", "pricing_prompt": "0.000003", "pricing_request": "0.001", "pricing_completion": "0.000006"}, "provider": "legacyco"}]'::jsonb,
  'legacy_price_not_in_model_pricing names both unpriced models with their legacy prices');
select is(pg_temp.check_of('legacy', 'legacy_price_differs') -> 'items',
  '[{"new": "0.000001", "old": "0.0000012", "field": "price_per_input_token", "model": "legacy-drift-1", "provider": "legacyco"},
    {"new": "0", "old": "0.0000005", "field": "price_per_input_token", "model": "legacy-zero-1", "provider": "legacyco"},
    {"new": "0", "old": "0.0000015", "field": "price_per_output_token", "model": "legacy-zero-1", "provider": "legacyco"}]'::jsonb,
  'legacy_price_differs names each differing field, old (legacy) vs new (model_pricing)');
select is(pg_temp.check_of('legacy', 'paid_model_priced_zero') -> 'items' -> 0 ->> 'model',
  'legacy-zero-1', 'paid_model_priced_zero names the paid model priced 0');
select is((select jsonb_agg(i ->> 'model' order by i ->> 'model')
           from jsonb_array_elements(pg_temp.check_of('legacy', 'active_model_without_price')
                                     -> 'items') i),
  '["gpt-image-1", "legacy-chat-1", "legacy-vision-1"]'::jsonb,
  'active_model_without_price names the active models without a price (not the retired one)');
select is((pg_temp.check_of('legacy', 'pricing_tiers_not_empty') -> 'items' -> 0) - 'id',
  '{"model": "legacy-chat-1", "provider": "legacyco", "min_input_tokens": 128000, "price_per_input_token": "0.000002", "price_per_output_token": "0.000004"}'::jsonb,
  'pricing_tiers_not_empty names the tier row');
select is(pg_temp.check_of('legacy', 'usage_without_price') -> 'items',
  '[{"model": "legacy-chat-1", "records": 1, "provider": "legacyco"}]'::jsonb,
  'usage_without_price names the model and how many records');

-- populate fixes everything it can, once
select is(public.populate_model_pricing(), 4,
  'populate_model_pricing writes 4 rows (2 new models, 2 new versions; tier merged)');
select is(public.populate_model_pricing(), 0, 'populate_model_pricing is idempotent');
insert into report_of values ('populated', public.pricing_consolidation_report());
select is((select (r ->> 'passed')::boolean from report_of where step = 'populated'), true,
  'after populate the report passes');
select is((public.price_for('legacyco', 'legacy-chat-1', now() - interval '1 day'))
            .price_per_input_token, 0.000001::numeric,
  'a model without a price gets a version since 1970, so its past usage is priced');
select is((select row(p.long_context_threshold, p.price_per_input_token_above_threshold,
                      p.price_per_output_token_above_threshold)::text
           from public.model_pricing p where p.model_id = 'legacy-chat-1'),
  '(128000,0.000002000000,0.000004000000)', 'the tier row became the long-context tier');
select is((select count(*)::int from public.model_pricing where model_id = 'legacy-drift-1'), 2,
  'a differing price becomes a new version; the old one stays for past usage');
select is((public.price_for('legacyco', 'legacy-zero-1')).price_per_output_token,
  0.0000015::numeric, 'the paid model priced 0 now has its legacy price');
select is((select row(p.price_per_image, p.price_per_request, p.pricing_source)::text
           from public.model_pricing p where p.model_id = 'legacy-vision-1'),
  '(0.010000000000,0.001000000000,import)', 'image and request prices are copied, source import');
select ok(exists (select 1 from public.price_audit a where a.model_id = 'legacy-zero-1'
                  and a.action = 'insert' and a.actor_role = 'postgres'),
  'populate''s changes are audited');

-- the drop migration drops the legacy storage; the report still passes
\ir ../migrations/20251130000012_drop_legacy_pricing_storage.sql
select hasnt_column('public', 'models', 'pricing_prompt', 'the drop migration drops the legacy columns');
select hasnt_table('public', 'pricing_tiers', 'the drop migration drops pricing_tiers');
insert into report_of values ('dropped', public.pricing_consolidation_report());
select is((select (r ->> 'passed')::boolean from report_of where step = 'dropped'), true,
  'after the drop migration the report passes again');
select is((select (r ->> 'legacy_columns_present')::boolean from report_of where step = 'dropped'),
  false, 'the report runs without the legacy columns');
select is((select pricing_prompt from public.models_legacy_pricing
           where model_id = 'legacy-vision-1'), 0.000003::numeric,
  'models_legacy_pricing serves the legacy column names from model_pricing');

-- ── The abort path ─────────────────────────────────────────────────────────────────────────
\ir ../../tests/fixtures/legacy_pricing_state.sql
insert into public.models (provider_id, model_id, pricing_prompt, pricing_completion)
values ('legacyco', 'legacy-broken-1', -0.000001, 0.000002);
select lives_ok('select public.populate_model_pricing()', 'populate skips a legacy price it cannot copy');
select throws_ok($t$ do $d$ begin perform private.assert_consolidation_safe(); end $d$ $t$,
  'P0001', 'consolidation_would_lose_prices',
  'the drop migration''s guard aborts when a legacy price could not be copied');
select throws_like($t$ do $d$ begin perform private.assert_consolidation_safe(); end $d$ $t$,
  '%consolidation_would_lose_prices%',
  'the abort raises consolidation_would_lose_prices');
create function pg_temp.abort_detail() returns text language plpgsql as $$
declare d text;
begin
  perform private.assert_consolidation_safe();
  return null;
exception when others then
  get stacked diagnostics d = pg_exception_detail;
  return d;
end $$;
select matches(pg_temp.abort_detail(), 'legacyco/legacy-broken-1',
  'the abort message names the model that would lose its price');
select has_column('public', 'models', 'pricing_prompt',
  'nothing was dropped while a price would be lost');

SELECT * FROM finish();
ROLLBACK;
