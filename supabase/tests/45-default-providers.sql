-- 45-default-providers.sql — a default provider per model name (20251018000001, 20251130000001…2): the first
-- provider of a name is its default; set_default_provider × {anon, authenticated, service_role}
-- and its errors; price_for / record_usage / estimate_cost by bare name when several providers
-- price it (exact, date suffix, alias target), the usage record keeping the resolved provider;
-- ambiguous_model only without a usable default, naming the candidates; the audit trail; the
-- lookup stays index-backed.
BEGIN;
SELECT plan(27);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('eeeeeeee-0000-4000-8000-00000000000a', 'defaults-a@example.test');
do $$
begin
  perform public.top_up('eeeeeeee-0000-4000-8000-00000000000a', 100, 'defaults-fixture-a');
  -- dfl-chat: first priced at firstco, then at secondco and thirdco (the catalog's duplicates).
  perform public.set_model_price('firstco', 'dfl-chat', 0.000001, 0.000002,
    effective_from => '2020-01-01');
  perform public.set_model_price('secondco', 'dfl-chat', 0.000003, 0.000004,
    effective_from => '2020-01-01');
  perform public.set_model_price('thirdco', 'dfl-chat', 0.000005, 0.000006,
    effective_from => '2020-01-01');
  perform public.set_model_alias('dfl-alias', 'dfl-chat');
end
$$;

-- ── The first provider is the default ─────────────────────────────────────────────────────
select results_eq($$select provider_id, is_default from public.models
                    where model_id = 'dfl-chat' order by provider_id$$,
  $$values ('firstco', true), ('secondco', false), ('thirdco', false)$$,
  'the first provider of a name becomes its default; later ones do not');
select throws_ok($$update public.models set is_default = true
                   where model_id = 'dfl-chat' and provider_id = 'secondco'$$,
  '23505', null, 'a name has at most one default provider (partial unique index)');

-- ── Function × role ────────────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select is((public.price_for(null, 'dfl-chat')).provider_id, 'firstco', 'anon: price_for resolves a bare name to its default');
select throws_ok($$select public.set_default_provider('dfl-chat', 'secondco')$$, '42501', null, 'anon: set_default_provider is denied');
select throws_ok($$update public.models set is_default = false$$, '42501', null, 'anon: update models is denied');
reset role;
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"eeeeeeee-0000-4000-8000-00000000000a"}';
select is((public.price_for(null, 'dfl-chat')).provider_id, 'firstco', 'authenticated: price_for resolves a bare name to its default');
select throws_ok($$select public.set_default_provider('dfl-chat', 'secondco')$$, '42501', null, 'authenticated: set_default_provider is denied');
reset role;
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';

-- ── Resolution by bare name ───────────────────────────────────────────────────────────────
select is(public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'dfl-chat', 1000, 1000, 'dfl-1') ->> 'provider',
  'firstco', 'record_usage by bare name charges the default provider');
select is((select provider_id || ' ' || trim_scale(cost)::text || ' ' || coalesce(requested_provider, '-')
           from public.usage_records where request_id = 'dfl-1'),
  'firstco 0.003 -', 'the usage record keeps the resolved provider and its price');
select is(public.set_default_provider('dfl-chat', 'secondco'),
  '{"model": "dfl-chat", "provider": "secondco", "previous_provider": "firstco", "changed": true}'::jsonb,
  'service_role: set_default_provider moves the default and reports the previous one');
select is(public.set_default_provider('dfl-chat', 'secondco') ->> 'changed', 'false',
  'setting the same default again changes nothing');
select is((public.price_for(null, 'dfl-chat')).provider_id, 'secondco', 'price_for follows the new default');
select is(public.estimate_cost('dfl-chat', 1000, 1000) ->> 'cost', '0.007',
  'estimate_cost by bare name uses the default provider''s price');
select is(public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'dfl-chat', 1000, 1000, 'dfl-2') ->> 'cost',
  '0.007', 'record_usage by bare name follows the new default');
select is((public.price_for(null, 'dfl-chat-2025-01-31')).provider_id, 'secondco', 'a dated name resolves to the default of its base name');
select is((public.price_for(null, 'dfl-alias')).provider_id, 'secondco', 'an alias without a target provider resolves to the default');
select is((public.price_for('thirdco', 'dfl-chat')).provider_id, 'thirdco', 'an explicit provider still wins over the default');
select is(public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'dfl-chat', 1000, 1000, 'dfl-2') ->> 'replayed',
  'true', 'a retry by bare name is a replay');

-- ── Errors ────────────────────────────────────────────────────────────────────────────────
select throws_ok($$select public.set_default_provider('dfl-chat', 'nosuchco')$$, 'PT422', 'unknown_model', 'set_default_provider refuses a provider without a price for the name');
select throws_ok($$select public.set_default_provider('', 'firstco')$$, '22023', 'invalid_argument', 'set_default_provider refuses a blank model');
reset role;

-- ── Without a default: ambiguous, naming the candidates ────────────────────────────────────
create function pg_temp.error_of(statement text) returns text
language plpgsql as $$
declare
  msg text;
  detail text;
begin
  execute statement;
  return null;
exception when others then
  get stacked diagnostics msg = message_text, detail = pg_exception_detail;
  return msg || ': ' || detail;
end
$$;
update public.models set is_default = false where model_id = 'dfl-chat';
select matches(pg_temp.error_of($$select public.price_for(null, 'dfl-chat')$$),
  '^ambiguous_model: model dfl-chat is priced at several providers \(firstco, secondco, thirdco\)',
  'without a default, a bare name is ambiguous and the detail lists the candidates');
select matches(pg_temp.error_of($$select public.price_for(null, 'dfl-chat-20250131')$$),
  '^ambiguous_model: .*\(firstco, secondco, thirdco\)',
  'the same for a dated name');
select throws_ok($$select public.record_usage('eeeeeeee-0000-4000-8000-00000000000a', 'dfl-chat', 1, 1, 'dfl-3')$$,
  'PT422', 'ambiguous_model', 'record_usage refuses an ambiguous bare name');

-- ── Audit, backfill, index ────────────────────────────────────────────────────────────────
select results_eq($$select provider_id, old ->> 'is_default', new ->> 'is_default' from public.price_audit
                    where model_id = 'dfl-chat' and action = 'update' order by id$$,
  $$values ('firstco', 'true', 'false'), ('secondco', 'false', 'true'), ('secondco', 'true', 'false')$$,
  'every change of a default is audited (old -> new)');
select is_empty($$select model_id from public.models group by model_id
                  having count(*) = 1 and not bool_or(is_default)$$,
  'every name priced at one provider has it as its default (backfill and trigger)');
select has_index('public', 'models', 'models_model_id_default_key', array['model_id'],
  'the default of a name is one probe of a unique index');
select has_index('public', 'models', 'models_model_id_idx', array['model_id'],
  'the first-provider check is an index probe');

SELECT * FROM finish();
ROLLBACK;
