-- 54-metering-admin.sql — set_subscription_status (20251130000008): who may call it; suspend
-- and resume by state (operator suspension kept over a quota suspension, a used-up quota
-- blocks a resume, a past period's does not, pending activates unless another is live,
-- cancelled and expired refuse); bad input, named.
BEGIN;
SELECT plan(22);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('54545454-0000-4000-8000-00000000000a', 'admin-owner@example.test');
insert into public.plans (name) values ('admin-plan'), ('admin-plan-2'), ('admin-plan-3');
create temporary table ids (name text primary key, id uuid);
grant select, insert on ids to anon, authenticated, service_role;
with s as (
  insert into public.subscriptions (user_id, plan_id, status, quota_requests, quota_tokens)
  select '54545454-0000-4000-8000-00000000000a', p.id, 'active', 2, null
  from public.plans p where p.name = 'admin-plan' returning id)
insert into ids select 'live', id from s;
with s as (
  insert into public.subscriptions (user_id, plan_id, status)
  select '54545454-0000-4000-8000-00000000000a', p.id, 'cancelled'
  from public.plans p where p.name = 'admin-plan' returning id)
insert into ids select 'cancelled', id from s;
with s as (
  insert into public.subscriptions (user_id, plan_id, status)
  select '54545454-0000-4000-8000-00000000000a', p.id, 'pending'
  from public.plans p where p.name = 'admin-plan' returning id)
insert into ids select 'pending-blocked', id from s;
with s as (
  insert into public.subscriptions (user_id, plan_id, status)
  select '54545454-0000-4000-8000-00000000000a', p.id, 'pending'
  from public.plans p where p.name = 'admin-plan-2' returning id)
insert into ids select 'pending', id from s;
-- A subscription whose quota was used up in a period that has ended.
with s as (
  insert into public.subscriptions (user_id, plan_id, status, quota_requests, period, started_at)
  select '54545454-0000-4000-8000-00000000000a', p.id, 'active', 1, 'day', now() - interval '3 days'
  from public.plans p where p.name = 'admin-plan-3' returning id)
insert into ids select 'old-period', id from s;
update public.subscriptions set used_requests = 1 where id = (select id from ids where name = 'old-period');

-- ── anon and authenticated ─────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select throws_ok($$select public.set_subscription_status((select id from ids where name = 'live'), 'suspended')$$,
  '42501', null, 'anon: set_subscription_status is denied');
reset role;
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"54545454-0000-4000-8000-00000000000a"}';
select throws_ok($$select public.set_subscription_status((select id from ids where name = 'live'), 'suspended')$$,
  '42501', null, 'the owner may not suspend or resume their own subscription');
reset role;

-- ── service_role ───────────────────────────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select is((select r->>'status' || '/' || (r->>'suspension_reason') || '/' || (r->>'changed') || '/' || (r->>'plan')
           from public.set_subscription_status((select id from ids where name = 'live'), 'suspended') r),
  'suspended/operator/true/admin-plan', 'suspend: active → suspended by the operator, with the plan name');
select is((select (r->>'changed')::boolean from public.set_subscription_status((select id from ids where name = 'live'), 'suspended') r),
  false, 'suspend again: unchanged');
select is((select r->>'status' || '/' || coalesce(r->>'suspension_reason', '-') || '/' || (r->>'changed')
           from public.set_subscription_status((select id from ids where name = 'live'), 'active') r),
  'active/-/true', 'resume: suspended → active');
select is((select (r->>'changed')::boolean from public.set_subscription_status((select id from ids where name = 'live'), 'active') r),
  false, 'resume an active one: unchanged');
reset role;

-- The quota is used up: the trigger suspends it for its quota.
update public.subscriptions set used_requests = 2 where id = (select id from ids where name = 'live');
select is((select status || '/' || suspension_reason from public.subscriptions where id = (select id from ids where name = 'live')),
  'suspended/quota', 'fixture: quota used up → suspended for the quota');
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select throws_ok($$select public.set_subscription_status((select id from ids where name = 'live'), 'active')$$,
  'PT409', 'invalid_status_change', 'resume with the quota used up in this period is refused (409)');
select is((select r->>'status' || '/' || (r->>'suspension_reason') || '/' || (r->>'changed')
           from public.set_subscription_status((select id from ids where name = 'live'), 'suspended') r),
  'suspended/operator/true', 'suspend a quota suspension: now the operator''s (it will not lift at the reset)');
select throws_ok($$select public.set_subscription_status((select id from ids where name = 'live'), 'active')$$,
  'PT409', 'invalid_status_change', 'resume an operator suspension while the quota is used up: refused');
select is((select status || '/' || suspension_reason from public.subscriptions where id = (select id from ids where name = 'live')),
  'suspended/operator', 'the refused resume wrote nothing');

select is((select r->>'status' || '/' || (r->>'used_requests') || '/' || (r->>'changed')
           from public.set_subscription_status((select id from ids where name = 'old-period'), 'suspended') r),
  'suspended/0/true', 'a past period''s usage is rolled over first (used_requests 0 as of now)');
select is((select r->>'status' || '/' || (r->>'changed') from public.set_subscription_status((select id from ids where name = 'old-period'), 'active') r),
  'active/true', 'and a resume then succeeds: the used-up quota belonged to a past period');
select ok((select reset_at > now() from public.subscriptions where id = (select id from ids where name = 'old-period')),
  'the rollover is stored: reset_at is in the future');

select is((select r->>'status' from public.set_subscription_status((select id from ids where name = 'pending'), 'active') r),
  'active', 'resume a pending subscription: it becomes active');
select throws_ok($$select public.set_subscription_status((select id from ids where name = 'pending-blocked'), 'active')$$,
  'PT409', 'invalid_status_change', 'activating a pending one while another is live for the plan: 409');
select throws_ok($$select public.set_subscription_status((select id from ids where name = 'pending-blocked'), 'suspended')$$,
  'PT409', 'invalid_status_change', 'a pending subscription cannot be suspended');
select throws_ok($$select public.set_subscription_status((select id from ids where name = 'cancelled'), 'active')$$,
  'PT409', 'invalid_status_change', 'a cancelled subscription cannot be resumed');
select throws_ok($$select public.set_subscription_status((select id from ids where name = 'cancelled'), 'suspended')$$,
  'PT409', 'invalid_status_change', 'a cancelled subscription cannot be suspended');
select throws_ok($$select public.set_subscription_status('54545454-0000-4000-8000-0000000000ff', 'active')$$,
  'PT404', 'subscription_not_found', 'an unknown id is 404');
select throws_ok($$select public.set_subscription_status((select id from ids where name = 'live'), 'cancelled')$$,
  '22023', 'invalid_argument', 'status other than active/suspended is 400');
select throws_ok($$select public.set_subscription_status(null, 'active')$$,
  '22023', 'invalid_argument', 'a null id is 400');
reset role;

SELECT * FROM finish();
ROLLBACK;
