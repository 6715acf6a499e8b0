-- 80-usage-rollups-schema.sql — structure of the rollups (20261129220001, 20261129220002): RLS on
-- the summary tables with one read-own policy each, privileges exact per role (nobody but the
-- rollup writes), the views run as their reader (security_invoker), the functions' callers, and
-- the adjustment triggers in place (none on the charge's own insert).
BEGIN;
SELECT plan(39);

-- ── Tables, RLS, policies ─────────────────────────────────────────────────────────────────
select ok((select c.relrowsecurity from pg_class c where c.oid = ('public.' || t)::regclass),
          'RLS is enabled on public.' || t)
from unnest(array['usage_summaries', 'usage_summary_adjustments']) as t;
select ok((select c.relrowsecurity from pg_class c where c.oid = 'private.usage_rollup_state'::regclass),
  'RLS is enabled on private.usage_rollup_state');
select policies_are('public', 'usage_summaries', array['Users read their own usage summaries']);
select policies_are('public', 'usage_summary_adjustments',
  array['Users read their own usage summary adjustments']);
select policy_roles_are('public', 'usage_summaries', 'Users read their own usage summaries',
  array['authenticated']);
select policy_cmd_is('public', 'usage_summaries', 'Users read their own usage summaries', 'select',
  'the summaries policy is for SELECT only');
select col_type_is('public', 'usage_summaries', 'cost', 'numeric(24,12)',
  'summary costs are exact numeric(24,12)');
select col_type_is('public', 'usage_summaries', 'refunded', 'numeric(24,12)',
  'summary refunds are exact numeric(24,12)');
select col_is_unique('public', 'usage_summaries', array['user_id', 'period', 'period_start',
  'model_id', 'provider_id', 'api_key_id', 'subscription_id', 'currency'],
  'one summary row per user, period, model, key, subscription and currency');

-- ── Privileges: table × role ──────────────────────────────────────────────────────────────
select table_privs_are('public', t, 'anon', array[]::text[], 'anon has no privilege on ' || t)
from unnest(array['usage_summaries', 'usage_summary_adjustments', 'usage_daily_totals',
  'usage_statistics', 'user_daily_spend']) as t;
select table_privs_are('public', t, r, array['SELECT'], r || ' may only read ' || t)
from unnest(array['usage_summaries', 'usage_summary_adjustments', 'usage_daily_totals',
  'usage_statistics', 'user_daily_spend']) as t,
  unnest(array['authenticated', 'service_role']) as r;

-- ── Views run as their reader ─────────────────────────────────────────────────────────────
select ok((select c.reloptions @> array['security_invoker=true'] from pg_class c
           where c.oid = ('public.' || v)::regclass),
          v || ' is security_invoker (the reader''s RLS applies)')
from unnest(array['usage_daily_totals', 'usage_statistics', 'user_daily_spend']) as v;

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
select function_privs_are('public', 'rollup_usage', array['integer'], r,
  case when r = 'service_role' then array['EXECUTE'] else array[]::text[] end,
  r || case when r = 'service_role' then ' may' else ' may not' end || ' run rollup_usage')
from unnest(array['anon', 'authenticated', 'service_role']) as r;
select function_privs_are('public', 'usage_rolled_up_to', array[]::text[], r,
  case when r = 'anon' then array[]::text[] else array['EXECUTE'] end,
  r || case when r = 'anon' then ' may not' else ' may' end || ' read the rollup position')
from unnest(array['anon', 'authenticated', 'service_role']) as r;

-- ── Triggers: adjustments only, never on the charge's insert ──────────────────────────────
select trigger_is('public', 'usage_records', 'usage_records_rollup_reprice', 'private',
  'queue_reprice_adjustment', 'a re-priced record queues its difference');
select trigger_is('public', 'ledger_entries', 'ledger_entries_rollup_refund', 'private',
  'queue_refund_adjustment', 'a refund queues its amount');
select trigger_is('public', 'metered_requests', 'metered_requests_rollup_failed', 'private',
  'queue_failed_request', 'a failed metered request is queued');
select trigger_is('auth', 'users', 'on_auth_user_deleted_summaries', 'private',
  'delete_user_summaries', 'deleting a user deletes their summaries');
select is_empty($$
  select t.tgname from pg_trigger t
  where t.tgrelid = 'public.usage_records'::regclass and not t.tgisinternal
    and (t.tgtype::int & 4) <> 0 and t.tgname like '%rollup%'
$$, 'no rollup trigger fires on the insert of a usage record (the charge)');

SELECT * FROM finish();
ROLLBACK;
