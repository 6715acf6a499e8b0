-- 85-audit-schema.sql — structure of the audit trail (20261129230001): audit_logs with RLS on,
-- readable by authenticated (own rows) and service_role, writable by nobody; the append-only
-- triggers fire always (even with session_replication_role = replica); price_audit is a
-- security_invoker view of it for service_role only; every audited table carries its trigger,
-- and the frequent writes of the charging path (usage counters, last_used_at) are filtered out
-- by WHEN clauses, not in a function call.
BEGIN;
SELECT plan(34);

-- ── Table, RLS, view ───────────────────────────────────────────────────────────────────────
select has_table('public', 'audit_logs', 'public.audit_logs exists');
select ok((select c.relrowsecurity from pg_class c where c.oid = 'public.audit_logs'::regclass),
  'RLS is enabled on public.audit_logs');
select has_view('public', 'price_audit', 'price_audit is now a view');
select ok((select c.reloptions @> array['security_invoker=true'] from pg_class c
           where c.oid = 'public.price_audit'::regclass),
  'price_audit runs with the caller''s privileges (security_invoker)');
select columns_are('public', 'price_audit', array['id', 'changed_at', 'actor_role',
  'actor_user_id', 'provider_id', 'model_id', 'action', 'old', 'new'],
  'price_audit keeps the columns of the former table');
select columns_are('public', 'audit_logs', array['id', 'created_at', 'actor_role',
  'actor_user_id', 'actor_api_key_id', 'action', 'resource_type', 'resource_id', 'user_id',
  'before', 'after', 'ip_address', 'user_agent', 'metadata'],
  'audit_logs: who, what, before/after, from where, when');
select col_type_is('public', 'audit_logs', 'ip_address', 'inet', 'ip_address is inet');
select hasnt_fk('public', 'audit_logs', 'audit_logs has no foreign key (entries outlive users)');

-- ── Privileges: nobody writes, users and service_role read ────────────────────────────────
select table_privs_are('public', 'audit_logs', 'anon', array[]::text[],
  'anon has no privilege on audit_logs');
select table_privs_are('public', 'audit_logs', 'authenticated', array['SELECT'],
  'authenticated may only read audit_logs (RLS: their own entries)');
select table_privs_are('public', 'audit_logs', 'service_role', array['SELECT'],
  'service_role may only read audit_logs');
select table_privs_are('public', 'price_audit', r, array[]::text[],
  r || ' has no privilege on price_audit')
from unnest(array['anon', 'authenticated']) as r;
select table_privs_are('public', 'price_audit', 'service_role', array['SELECT'],
  'service_role may only read price_audit');
select policies_are('public', 'audit_logs', array['Users read their own audit entries']);
select policy_roles_are('public', 'audit_logs', 'Users read their own audit entries',
  array['authenticated']);
select policy_cmd_is('public', 'audit_logs', 'Users read their own audit entries', 'select',
  'the only policy is for SELECT');

-- ── Append-only triggers ──────────────────────────────────────────────────────────────────
select trigger_is('public', 'audit_logs', 'audit_logs_append_only', 'private',
  'refuse_audit_change', 'UPDATE and DELETE are refused by trigger');
select trigger_is('public', 'audit_logs', 'audit_logs_no_truncate', 'private',
  'refuse_audit_change', 'TRUNCATE is refused by trigger');
select is((select array_agg(t.tgenabled::text order by t.tgname) from pg_trigger t
           where t.tgrelid = 'public.audit_logs'::regclass and not t.tgisinternal),
  array['A', 'A'], 'both fire ALWAYS: session_replication_role = replica does not skip them');

-- ── Every audited table has its trigger ───────────────────────────────────────────────────
select trigger_is('public', t, tr, 'private', f, t || ' changes are audited (' || tr || ')')
from (values ('model_pricing', 'model_pricing_audit', 'audit_price_change'),
             ('model_aliases', 'model_aliases_audit', 'audit_price_change'),
             ('models', 'models_default_audit', 'audit_price_change'),
             ('ledger_entries', 'ledger_entries_audit', 'audit_balance_movement'),
             ('api_keys', 'api_keys_audit', 'audit_row_change'),
             ('api_keys', 'api_keys_audit_update', 'audit_row_change'),
             ('plans', 'plans_audit', 'audit_row_change'),
             ('plan_routes', 'plan_routes_audit', 'audit_row_change'),
             ('upstreams', 'upstreams_audit', 'audit_row_change'),
             ('subscriptions', 'subscriptions_audit', 'audit_row_change'),
             ('subscriptions', 'subscriptions_audit_update', 'audit_row_change'))
  as x(t, tr, f);
select ok((select pg_get_triggerdef(t.oid) ~ 'WHEN .*top_up.*adjustment.*refund'
           from pg_trigger t where t.tgname = 'ledger_entries_audit'),
  'ledger_entries: only admin movements reach the audit function (WHEN clause)');
select ok((select pg_get_triggerdef(t.oid) !~ 'used_requests'
           from pg_trigger t where t.tgname = 'subscriptions_audit_update'),
  'subscriptions: the usage counters are not among the columns the WHEN clause compares');

-- ── The writers are not callable ──────────────────────────────────────────────────────────
select is_empty($$
  select p.oid::regprocedure::text
  from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
  where p.oid in ('private.write_audit(text,text,text,uuid,jsonb,jsonb,jsonb)'::regprocedure,
                  'private.audit_row_change()'::regprocedure,
                  'private.audit_balance_movement()'::regprocedure,
                  'private.refuse_audit_change()'::regprocedure,
                  'private.insert_price_audit()'::regprocedure)
    and a.grantee <> p.proowner
$$, 'no role but the owner may execute the audit writers');

SELECT * FROM finish();
ROLLBACK;
