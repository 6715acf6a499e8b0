-- 47-price-import.sql — import_model_prices, set-based (20251130000003): anon / authenticated
-- denied, service_role allowed; a dry run counts and writes nothing; the diff lists changed
-- fields only and new models once each; a real run writes versions and audit rows, keeps the
-- catalog key, sets the default provider of an unprefixed entry; a second run is unchanged;
-- two versions of one model compare in order; bad entries are refused naming their index.
BEGIN;
SELECT plan(24);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
do $$
begin
  -- imp-chat: priced at firstco first (its default), the import adds impco's unprefixed entry.
  perform public.set_model_price('firstco', 'imp-chat', 0.000001, 0.000002,
    effective_from => '2020-01-01');
  perform public.set_model_price('impco', 'imp-old', 0.000004, 0.00002,
    effective_from => '2020-01-01');
end
$$;
create temporary table import_batch (prices jsonb) on commit drop;
insert into import_batch values ('[
  {"provider":"impco","model":"imp-chat","input_per_token":"0.0000025","output_per_token":"0.00001",
   "litellm_key":"imp-chat","is_default":true},
  {"provider":"impco","model":"imp-old","input_per_token":"0.000005","output_per_token":"0.00002",
   "litellm_key":"impco/imp-old"},
  {"provider":"impco","model":"imp-new","input_per_token":"0.000001","output_per_token":"0",
   "cached_input_per_token":"0.0000001","litellm_key":"impco/imp-new"}
]');
grant select on import_batch to service_role;

-- ── Function × role ────────────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select throws_ok($$select public.import_model_prices('[{"provider":"impco","model":"x","input_per_token":0,"output_per_token":0}]')$$,
  '42501', null, 'anon: import_model_prices is denied');
reset role;
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"eeeeeeee-0000-4000-8000-00000000047a"}';
select throws_ok($$select public.import_model_prices('[{"provider":"impco","model":"x","input_per_token":0,"output_per_token":0}]')$$,
  '42501', null, 'authenticated: import_model_prices is denied');
select throws_ok($$select private.import_item('{}', 0, 'import')$$,
  '42501', null, 'authenticated: the private parser is not callable');
reset role;
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';

-- ── Dry run ────────────────────────────────────────────────────────────────────────────────
select is((select public.import_model_prices(prices, dry_run => true) - 'diff' - 'added_models'
                  - 'defaults_changed' from import_batch),
  '{"added": 2, "changed": 1, "unchanged": 0, "keys_changed": 3, "dry_run": true}'::jsonb,
  'dry run: counts of new, changed and unchanged entries and of new catalog keys');
select is((select public.import_model_prices(prices, dry_run => true) -> 'diff' from import_batch),
  '[{"new": "0.000005", "old": "0.000004", "field": "input_per_token", "model": "imp-old", "provider": "impco"}]'::jsonb,
  'dry run: the diff lists the changed field of the changed entry only (old → new)');
select is((select public.import_model_prices(prices, dry_run => true) -> 'added_models' from import_batch),
  '[{"model": "imp-chat", "provider": "impco"}, {"model": "imp-new", "provider": "impco"}]'::jsonb,
  'dry run: new models are listed once each');
select is((select public.import_model_prices(prices, dry_run => true) -> 'defaults_changed' from import_batch),
  '[{"model": "imp-chat", "old": "firstco", "new": "impco"}]'::jsonb,
  'dry run: the unprefixed entry''s provider would become the default');
select is_empty($$select 1 from public.model_pricing where provider_id = 'impco' and model_id <> 'imp-old'$$,
  'dry run: no price written');
select is((select provider_id from public.models where model_id = 'imp-chat' and is_default),
  'firstco', 'dry run: the default provider is unchanged');

-- ── Real run, then again ───────────────────────────────────────────────────────────────────
select is((select (public.import_model_prices(prices) ->> 'added')::int from import_batch), 2,
  'real run: the new models are added');
select is((select price_per_input_token from public.price_for('impco', 'imp-old')), 0.000005::numeric(20,12),
  'real run: the changed price is the version in effect');
select is((select count(*)::int from public.model_pricing where provider_id = 'impco' and model_id = 'imp-old'), 2,
  'real run: a change is a new version (the old one is kept)');
select is((select price_per_cached_input_token from public.price_for('impco', 'imp-new')), 0.0000001::numeric(20,12),
  'real run: every price of a new model is stored');
select is((select count(*)::int from public.price_audit where provider_id = 'impco' and action = 'insert'
             and new ->> 'pricing_source' = 'import'), 3,
  'real run: each new version has its audit row');
select is((select metadata ->> 'litellm_key' from public.models where provider_id = 'impco' and model_id = 'imp-old'),
  'impco/imp-old', 'real run: the catalog key is kept for export');
select is((public.price_for(null, 'imp-chat')).provider_id, 'impco',
  'real run: a bare name is charged at the unprefixed entry''s provider');
select is((select public.import_model_prices(prices) - 'diff' - 'added_models' - 'defaults_changed'
           from import_batch),
  '{"added": 0, "changed": 0, "unchanged": 3, "keys_changed": 0, "dry_run": false}'::jsonb,
  'again: everything unchanged');
select is((select count(*)::int from public.model_pricing where provider_id = 'impco'), 4,
  'again: no new version');

-- ── Versions in one call, refusals ─────────────────────────────────────────────────────────
select is(public.import_model_prices('[
  {"provider":"impco","model":"imp-v","input_per_token":"0.000001","output_per_token":"0","effective_from":"2020-01-01"},
  {"provider":"impco","model":"imp-v","input_per_token":"0.000001","output_per_token":"0","effective_from":"2021-01-01"},
  {"provider":"impco","model":"imp-v","input_per_token":"0.000002","output_per_token":"0","effective_from":"2022-01-01"}
]', dry_run => true) - 'diff' - 'added_models' - 'defaults_changed' - 'keys_changed',
  '{"added": 1, "changed": 1, "unchanged": 1, "dry_run": true}'::jsonb,
  'an earlier entry of the same model counts as applied: the 2021 entry is unchanged');
select throws_ok($$select public.import_model_prices('[
  {"provider":"impco","model":"imp-d","input_per_token":0,"output_per_token":0},
  {"provider":"impco","model":"imp-d","input_per_token":0.000001,"output_per_token":0}]')$$,
  '22023', 'invalid_argument', 'the same model and effective_from twice in one call is refused');
select throws_ok($$select public.import_model_prices('[
  {"provider":"impco","model":"ok","input_per_token":0,"output_per_token":0},
  {"provider":"impco","model":"bad","input_per_token":"abc","output_per_token":0}]')$$,
  '22023', 'invalid_argument', 'a price that is not a number is refused');
select throws_ok($$select public.import_model_prices('[
  {"provider":"impco","model":"ok","input_per_token":0,"output_per_token":0},
  {"provider":"impco","model":"bad","input_per_token":0.0000000000001,"output_per_token":0}]')$$,
  '22023', 'invalid_amount', 'more than 12 decimal places is refused (noise is rounded by the client)');
select throws_ok($$select public.import_model_prices('[
  {"provider":"a","model":"imp-two","input_per_token":0,"output_per_token":0,"is_default":true},
  {"provider":"b","model":"imp-two","input_per_token":0,"output_per_token":0,"is_default":true}]')$$,
  '22023', 'invalid_argument', 'two default providers for one name in one call are refused');
select is_empty($$select 1 from public.model_pricing where model_id in ('ok', 'bad', 'imp-d', 'imp-two')$$,
  'a refused call writes nothing');

SELECT * FROM finish();
ROLLBACK;
