-- 40-pricing-schema.sql — structure of the pricing catalog (migrations 20251101*): the new
-- tables have RLS on, privileges exactly as intended per table × role and function × role,
-- views are security_invoker, every new function pins search_path, the legacy storage is gone,
-- and every price table carries the audit trigger. The RLS behaviour per actor is checked
-- by actually querying as anon / authenticated / service_role.
BEGIN;
SELECT plan(67);

-- ── Tables, RLS, legacy storage gone ───────────────────────────────────────────────────────
-- price_audit is a view of audit_logs since 20261129230001 (85-audit-schema.sql checks it).
select has_table('public', t, 'public.' || t || ' exists')
from unnest(array['models', 'model_aliases', 'audit_logs']) as t;
select ok((select c.relrowsecurity from pg_class c where c.oid = ('public.' || t)::regclass),
          'RLS is enabled on public.' || t)
from unnest(array['models', 'model_aliases', 'audit_logs']) as t;
select hasnt_table('public', 'pricing_tiers', 'pricing_tiers is dropped');
select hasnt_column('public', 'models', c, 'models.' || c || ' is dropped')
from unnest(array['pricing_prompt', 'pricing_completion', 'pricing_image', 'pricing_request'])
  as c;
select col_is_unique('public', 'models', array['provider_id', 'model_id'],
  'models (provider_id, model_id) is unique');
select col_is_unique('public', 'model_pricing', array['provider_id', 'model_id', 'effective_from'],
  'one price version per (provider, model, effective_from)');
select fk_ok('public', 'model_pricing', array['provider_id', 'model_id'],
  'public', 'models', array['provider_id', 'model_id'], 'model_pricing rows reference models');
select col_type_is('public', 'model_pricing', c, 'numeric(20,12)', c || ' is numeric(20,12)')
from unnest(array['price_per_input_token_above_threshold',
  'price_per_output_token_above_threshold']) as c;
select trigger_is('public', t, tr, 'private', 'audit_price_change',
  t || ' changes are audited by trigger')
from (values ('model_pricing', 'model_pricing_audit'), ('model_aliases', 'model_aliases_audit'))
  as x(t, tr);

-- ── Table privileges: table × role ─────────────────────────────────────────────────────────
select table_privs_are('public', t, r, array['SELECT'], r || ' may only read ' || t)
from unnest(array['models', 'model_aliases']) as t
cross join unnest(array['anon', 'authenticated']) as r;
select table_privs_are('public', t, 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
  'service_role maintains ' || t)
from unnest(array['models', 'model_aliases']) as t;
select table_privs_are('public', 'price_audit', r, array[]::text[],
  r || ' has no privilege on price_audit')
from unnest(array['anon', 'authenticated']) as r;
select table_privs_are('public', 'price_audit', 'service_role', array['SELECT'],
  'service_role may only read price_audit (the trigger writes it)');
select table_privs_are('public', v, r, array['SELECT'], r || ' may only read ' || v)
from unnest(array['models_with_pricing', 'models_pricing_classified', 'models_pricing_status',
  'models_legacy_pricing']) as v
cross join unnest(array['anon', 'authenticated', 'service_role']) as r;
select is(
  (select count(*)::int from pg_class c
   where c.oid in ('public.models_with_pricing'::regclass,
     'public.models_pricing_classified'::regclass, 'public.models_pricing_status'::regclass,
     'public.models_legacy_pricing'::regclass)
     and c.reloptions @> array['security_invoker=true']),
  4, 'every pricing view runs with the caller''s privileges (security_invoker)');

-- ── Policies ───────────────────────────────────────────────────────────────────────────────
select policies_are('public', 'models',
  array['Visitors read the model catalog', 'Users read the model catalog']);
select policies_are('public', 'model_aliases',
  array['Visitors read the model aliases', 'Users read the model aliases']);
select policies_are('public', 'price_audit', array[]::name[]);

-- ── Function × role ────────────────────────────────────────────────────────────────────────
create temporary table expected_pricing_privs (fn text, args text[], roles text[]);
insert into expected_pricing_privs values
  ('set_model_price', array['text', 'text', 'numeric', 'numeric', 'numeric', 'numeric',
   'numeric', 'text', 'timestamp with time zone', 'text', 'text', 'bigint', 'numeric',
   'numeric'], array['service_role']),
  ('set_model_alias', array['text', 'text', 'text', 'text'], array['service_role']),
  ('remove_model_alias', array['text', 'text'], array['service_role']),
  ('price_history', array['text', 'text'], array['anon', 'authenticated', 'service_role']),
  ('reprice_usage', array['timestamp with time zone', 'timestamp with time zone', 'text',
   'text', 'boolean'], array['service_role']),
  ('import_model_prices', array['jsonb', 'text', 'boolean'], array['service_role']),
  ('populate_model_pricing', array[]::text[], array['service_role']),
  ('pricing_consolidation_report', array[]::text[], array['service_role']);
select function_privs_are('public', e.fn, e.args, r.role,
  case when r.role = any (e.roles) then array['EXECUTE'] else array[]::text[] end,
  r.role || (case when r.role = any (e.roles) then ' may' else ' may not' end)
    || ' execute ' || e.fn)
from expected_pricing_privs e
cross join unnest(array['anon', 'authenticated', 'service_role']) as r(role)
order by e.fn, r.role;

SELECT * FROM finish();
ROLLBACK;
