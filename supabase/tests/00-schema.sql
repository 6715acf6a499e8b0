-- 00-schema.sql — structure of the billing core: the tables exist with RLS on, privileges are
-- exactly as intended for every table × role and every function × role, nothing is executable
-- by PUBLIC, every SECURITY DEFINER function pins search_path, the signup trigger is in place.
BEGIN;
SELECT plan(188);

-- ── Tables and RLS ─────────────────────────────────────────────────────────────────────────
select tables_are('public', array['model_pricing', 'billing_settings', 'user_balances',
  'ledger_entries', 'usage_records', 'credit_reservations', 'signup_errors',
  'models', 'model_aliases', 'audit_logs', 'api_keys', 'upstreams', 'plans', 'plan_routes',
  'subscriptions', 'metered_requests', 'api_key_spend',
  'alert_outbox', 'alert_settings', 'low_balance_thresholds',
  'usage_summaries', 'usage_summary_adjustments', 'usage_model_summaries'],
  'public holds exactly the billing, pricing and metering tables (pricing: see 40-pricing-schema.sql)');
select ok((select c.relrowsecurity from pg_class c where c.oid = ('public.' || t)::regclass),
          'RLS is enabled on public.' || t)
from unnest(array['model_pricing', 'billing_settings', 'user_balances', 'ledger_entries',
  'usage_records', 'credit_reservations', 'signup_errors']) as t;
select is_empty($$select 1 from pg_default_acl$$,
  'no default privileges exist: every grant is explicit');

-- ── Money columns are exact ───────────────────────────────────────────────────────────────
select col_type_is('public', 'model_pricing', 'price_per_input_token', 'numeric(20,12)',
  'prices per token are numeric(20,12)');
select col_type_is('public', 'user_balances', 'balance', 'numeric(24,12)',
  'balances are numeric(24,12)');
select col_type_is('public', 'ledger_entries', 'amount', 'numeric(24,12)',
  'ledger amounts are numeric(24,12)');
select col_type_is('public', 'usage_records', 'cost', 'numeric(24,12)',
  'usage costs are numeric(24,12)');
select col_is_pk('private', 'usage_request_ids', array['request_id'],
  'usage_records.request_id is unique across partitions (idempotency key; 75-usage-partitions.sql)');
select col_is_unique('public', 'ledger_entries', array['kind', 'reference'],
  'ledger_entries (kind, reference) is unique (idempotency key)');
select fk_ok('public', 'user_balances', 'user_id', 'auth', 'users', 'id',
  'user_balances.user_id references auth.users');

-- ── Table privileges: table × role ─────────────────────────────────────────────────────────
select table_privs_are('public', 'model_pricing', 'anon', array['SELECT'],
  'anon may only read model_pricing');
select table_privs_are('public', 'model_pricing', 'authenticated', array['SELECT'],
  'authenticated may only read model_pricing');
select table_privs_are('public', 'model_pricing', 'service_role',
  array['SELECT', 'INSERT', 'UPDATE', 'DELETE'], 'service_role maintains model_pricing');
select table_privs_are('public', 'billing_settings', 'anon', array[]::text[],
  'anon has no privilege on billing_settings');
select table_privs_are('public', 'billing_settings', 'authenticated', array[]::text[],
  'authenticated has no privilege on billing_settings');
select table_privs_are('public', 'billing_settings', 'service_role', array['SELECT', 'UPDATE'],
  'service_role reads and updates billing_settings');
select table_privs_are('public', t, 'anon', array[]::text[], 'anon has no privilege on ' || t)
from unnest(array['user_balances', 'ledger_entries', 'usage_records', 'credit_reservations',
  'signup_errors']) as t;
select table_privs_are('public', t, 'authenticated', array['SELECT'],
  'authenticated may only read ' || t || ' (RLS: their own rows)')
from unnest(array['user_balances', 'ledger_entries', 'usage_records', 'credit_reservations'])
  as t;
select table_privs_are('public', 'signup_errors', 'authenticated', array[]::text[],
  'authenticated has no privilege on signup_errors');
select table_privs_are('public', t, 'service_role', array['SELECT'],
  'service_role may only read ' || t || ' (the money functions write it)')
from unnest(array['user_balances', 'ledger_entries', 'usage_records', 'credit_reservations'])
  as t;
select table_privs_are('public', 'signup_errors', 'service_role', array['SELECT', 'UPDATE'],
  'service_role reads signup_errors and marks them resolved');
select column_privs_are('public', 'user_balances', 'user_id', 'authenticated',
  array['INSERT', 'SELECT'], 'authenticated may set only user_balances.user_id on insert');
select column_privs_are('public', 'user_balances', 'balance', 'authenticated', array['SELECT'],
  'authenticated can never set user_balances.balance');

-- ── Policies ───────────────────────────────────────────────────────────────────────────────
select policies_are('public', 'model_pricing',
  array['Visitors read the price list', 'Users read the price list']);
select policies_are('public', 'user_balances',
  array['Users read their own balance', 'Users create their own zero balance']);
select policies_are('public', 'ledger_entries', array['Users read their own ledger entries']);
select policies_are('public', 'usage_records', array['Users read their own usage records']);
select policies_are('public', 'credit_reservations',
  array['Users read their own credit reservations']);
select policies_are('public', 'billing_settings', array[]::name[]);
select policies_are('public', 'signup_errors', array[]::name[]);
select policy_roles_are('public', 'user_balances', 'Users create their own zero balance',
  array['authenticated']);
select policy_cmd_is('public', 'user_balances', 'Users create their own zero balance', 'insert',
  'the zero-balance policy is for INSERT only');
select policy_roles_are('public', 'model_pricing', 'Visitors read the price list',
  array['anon']);

-- ── Functions: exactly these in public, each executable by exactly the intended roles ──────
select functions_are('public', array['price_for', 'check_balance', 'my_balance', 'top_up',
  'adjust_balance', 'balance_audit', 'record_usage', 'record_usage_batch', 'reserve_credit',
  'settle_usage', 'release_reservation', 'refund_usage', 'repair_missing_balances',
  'estimate_cost', 'user_id_for_email', 'set_model_price', 'set_model_alias',
  'remove_model_alias', 'price_history', 'reprice_usage', 'import_model_prices',
  'populate_model_pricing', 'pricing_consolidation_report', 'set_default_provider',
  'create_api_key', 'list_api_keys', 'revoke_api_key', 'authorize_request', 'complete_request',
  'list_key_models', 'set_subscription_status', 'usage_report', 'settle_lapsed_requests',
  'set_low_balance_threshold', 'set_default_low_balance_threshold', 'claim_alerts',
  'record_alert_attempt', 'requeue_alert',
  'ensure_usage_partitions', 'usage_partitions', 'rollup_usage', 'usage_rolled_up_to'],
  'public exposes exactly the billing and pricing API functions');

create temporary table expected_function_privs (fn text, args text[], roles text[]);
insert into expected_function_privs values
  ('price_for', array['text', 'text', 'timestamp with time zone'],
   array['anon', 'authenticated', 'service_role']),
  ('check_balance', array['uuid', 'numeric'], array['service_role']),
  ('my_balance', array[]::text[], array['authenticated']),
  ('top_up', array['uuid', 'numeric', 'text'], array['service_role']),
  ('adjust_balance', array['uuid', 'numeric', 'text', 'text'], array['service_role']),
  ('balance_audit', array[]::text[], array['service_role']),
  ('record_usage', array['uuid', 'text', 'bigint', 'bigint', 'text', 'text', 'bigint', 'jsonb',
   'timestamp with time zone', 'integer', 'text'], array['service_role']),
  ('record_usage_batch', array['jsonb'], array['service_role']),
  ('reserve_credit', array['uuid', 'text', 'numeric', 'integer', 'text', 'text'],
   array['service_role']),
  ('settle_usage', array['text', 'bigint', 'bigint', 'bigint', 'text', 'text', 'jsonb',
   'timestamp with time zone', 'integer', 'text'], array['service_role']),
  ('release_reservation', array['text'], array['service_role']),
  ('refund_usage', array['text', 'text', 'numeric'], array['service_role']),
  ('repair_missing_balances', array[]::text[], array['service_role']),
  ('estimate_cost', array['text', 'bigint', 'bigint', 'text', 'bigint'],
   array['anon', 'authenticated', 'service_role']),
  ('user_id_for_email', array['text'], array['service_role']),
  ('create_api_key', array['text', 'text', 'timestamp with time zone', 'text[]', 'numeric', 'text',
   'uuid'], array['authenticated', 'service_role']),
  ('list_api_keys', array['uuid'], array['authenticated', 'service_role']),
  ('revoke_api_key', array['text'], array['authenticated', 'service_role']),
  ('authorize_request', array['text', 'text', 'bigint', 'text', 'bigint', 'integer', 'boolean'],
   array['service_role']),
  ('complete_request', array['text', 'jsonb', 'integer', 'integer', 'text'], array['service_role']),
  ('list_key_models', array['text'], array['service_role']),
  ('set_subscription_status', array['uuid', 'text'], array['service_role']),
  ('settle_lapsed_requests', array['integer'], array['service_role']),
  ('usage_report', array['timestamp with time zone', 'timestamp with time zone', 'uuid', 'text',
   'text'], array['authenticated', 'service_role']);

select function_privs_are('public', e.fn, e.args, r.role,
  case when r.role = any (e.roles) then array['EXECUTE'] else array[]::text[] end,
  r.role || (case when r.role = any (e.roles) then ' may' else ' may not' end)
    || ' execute ' || e.fn)
from expected_function_privs e
cross join unnest(array['anon', 'authenticated', 'service_role']) as r(role)
order by e.fn, r.role;

select is_empty($$
  select p.oid::regprocedure::text
  from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
  where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)
    and a.grantee = 0 and a.privilege_type = 'EXECUTE'
$$, 'no billing function is executable by PUBLIC');

select schema_privs_are('private', r, array[]::text[], r || ' cannot use the private schema')
from unnest(array['anon', 'authenticated', 'service_role']) as r;

-- ── SECURITY DEFINER: only where needed, always with an empty search_path ──────────────────
select is(
  (select array_agg(p.proname::text order by p.proname) from pg_proc p
   where p.prosecdef
     and p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)),
  array['adjust_balance', 'audit_balance_movement', 'audit_price_change', 'audit_row_change',
        'authorize_request', 'check_balance', 'claim_alerts',
        'complete_request', 'create_api_key', 'delete_user_summaries', 'delete_user_usage',
        'ensure_usage_partitions',
        'estimate_cost', 'fill_low_balance_threshold',
        'handle_new_user', 'import_model_prices', 'list_api_keys', 'list_key_models',
        'low_balance_alert', 'populate_model_pricing',
        'price_history', 'pricing_consolidation_report', 'quota_alert', 'record_alert_attempt',
        'record_usage', 'record_usage_batch',
        'refund_usage', 'release_reservation', 'remove_model_alias', 'repair_missing_balances',
        'reprice_usage', 'requeue_alert', 'reserve_credit', 'revoke_api_key', 'rollup_usage',
        'set_default_low_balance_threshold', 'set_default_provider', 'set_low_balance_threshold',
        'set_model_alias', 'set_model_price', 'set_subscription_status', 'settle_lapsed_requests',
        'settle_usage', 'top_up',
        'usage_partitions', 'usage_rolled_up_to', 'user_id_for_email'],
  'SECURITY DEFINER is used by exactly the writers, the readers of private data and triggers');
select is_empty($$
  select p.oid::regprocedure::text from pg_proc p
  where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)
    and not coalesce(p.proconfig, '{}') @> array['search_path=""']
$$, 'every billing function sets search_path = ''''');

-- ── Signup trigger ─────────────────────────────────────────────────────────────────────────
select has_trigger('auth', 'users', 'on_auth_user_created', 'auth.users has the signup trigger');
select trigger_is('auth', 'users', 'on_auth_user_created', 'private', 'handle_new_user',
  'the signup trigger calls private.handle_new_user()');

-- ── Users of usage records and ledger entries (20251018000003) ────────────────────────────
-- Checked per statement, not by foreign keys; deleted with their user by a trigger that must
-- fire after the foreign keys' cascades (row triggers fire in name order).
select hasnt_fk('public', 'usage_records', 'usage_records has no per-row foreign key');
select hasnt_fk('public', 'ledger_entries', 'ledger_entries has no per-row foreign key');
select trigger_is('public', 'usage_records', 'usage_records_user_exists', 'private',
  'assert_rows_have_users', 'usage_records checks its users once per insert statement');
select trigger_is('public', 'ledger_entries', 'ledger_entries_user_exists', 'private',
  'assert_rows_have_users', 'ledger_entries checks its users once per insert statement');
select trigger_is('auth', 'users', 'on_auth_user_deleted', 'private', 'delete_user_usage',
  'deleting a user deletes their usage and ledger rows');
select ok((select bool_and(t.tgname::text collate "C" < 'on_auth_user_deleted')
           from pg_trigger t
           where t.tgrelid = 'auth.users'::regclass and t.tgname like 'RI_ConstraintTrigger_a_%'),
  'the cleanup trigger fires after every foreign-key cascade of auth.users');
select is((select c.reloptions from pg_class c where c.oid = 'public.user_balances'::regclass),
  array['fillfactor=50', 'autovacuum_vacuum_threshold=1000',
        'autovacuum_vacuum_scale_factor=0.05'],
  'user_balances leaves room for in-place balance updates');

-- ── Metered endpoint (20251130000007…09) ──────────────────────────────────────────────────
select ok((select c.relrowsecurity from pg_class c where c.oid = t::regclass),
          'RLS is enabled on ' || t)
from unnest(array['public.api_keys', 'public.upstreams', 'public.plans', 'public.plan_routes',
  'public.subscriptions', 'public.metered_requests', 'public.api_key_spend',
  'private.api_key_hashes']) as t;
create temporary table expected_metering_privs (tbl text, anon text[], authn text[], service text[]);
insert into expected_metering_privs values
  ('api_keys', '{}', '{SELECT}', '{SELECT}'),
  ('upstreams', '{}', '{}', '{SELECT,INSERT,UPDATE,DELETE}'),
  ('plans', '{SELECT}', '{SELECT}', '{SELECT,INSERT,UPDATE,DELETE}'),
  ('plan_routes', '{SELECT}', '{SELECT}', '{SELECT,INSERT,UPDATE,DELETE}'),
  ('subscriptions', '{}', '{SELECT}', '{SELECT}'),
  ('metered_requests', '{}', '{SELECT}', '{SELECT}'),
  ('api_key_spend', '{}', '{}', '{SELECT}'),
  ('active_subscriptions', '{}', '{SELECT}', '{SELECT}'),
  ('usage_logs', '{}', '{SELECT}', '{SELECT}');
select table_privs_are('public', e.tbl, r.role,
  case r.role when 'anon' then e.anon when 'authenticated' then e.authn else e.service end,
  r.role || ' has exactly the intended privileges on ' || e.tbl)
from expected_metering_privs e
cross join unnest(array['anon', 'authenticated', 'service_role']) as r(role)
order by e.tbl, r.role;
select table_privs_are('private', 'api_key_hashes', r, array[]::text[],
  r || ' cannot touch the key hashes, not even its own')
from unnest(array['anon', 'authenticated', 'service_role']) as r;
select column_privs_are('public', 'subscriptions', c, 'service_role', array['SELECT'],
  'service_role cannot set subscriptions.' || c || ' (the metering functions do)')
from unnest(array['used_requests', 'reset_at', 'suspension_reason']) as c;
select column_privs_are('public', 'subscriptions', 'status', 'service_role',
  array['INSERT', 'SELECT', 'UPDATE'], 'service_role sets subscriptions.status');
select policies_are('public', 'api_keys', array['Users read their own API keys']);
select policies_are('public', 'upstreams', array[]::name[]);
select policies_are('public', 'plans', array['Visitors read the plans', 'Users read the plans']);
select policies_are('public', 'plan_routes',
  array['Visitors read the plan routes', 'Users read the plan routes']);
select policies_are('public', 'subscriptions', array['Users read their own subscriptions']);
select policies_are('public', 'metered_requests', array['Users read their own metered requests']);
select policies_are('public', 'api_key_spend', array[]::name[]);
select ok((select c.reloptions @> array['security_invoker=true'] from pg_class c
           where c.oid = ('public.' || v)::regclass),
          v || ' is security_invoker, so RLS applies to its readers')
from unnest(array['active_subscriptions', 'usage_logs']) as v;

SELECT * FROM finish();
ROLLBACK;
