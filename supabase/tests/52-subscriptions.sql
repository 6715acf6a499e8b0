-- 52-subscriptions.sql — subscriptions (20251130000008): one live subscription per user and
-- plan; suspension when a quota is exhausted, compared with the quota itself (seed 003 compared
-- the new usage with the OLD quota, and only beyond it); operator suspensions; the period rolls
-- over by itself (month ends kept, no drift, the view agrees with the functions for any age);
-- active_subscriptions under RLS; who may write what.
BEGIN;
SELECT plan(32);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('52525252-0000-4000-8000-00000000000a', 'subs-owner@example.test'),
  ('52525252-0000-4000-8000-00000000000b', 'subs-other@example.test');
insert into public.plans (name) values ('subs-plan'), ('subs-plan-2');
create temporary table ids (name text primary key, id uuid);
grant select, insert on ids to anon, authenticated, service_role;

-- ── service_role creates and manages ──────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
with s as (
  insert into public.subscriptions (user_id, plan_id, status, quota_requests, quota_tokens, started_at)
  select '52525252-0000-4000-8000-00000000000a', p.id, 'active', 10, 1000, '2026-01-31 12:00+00'
  from public.plans p where p.name = 'subs-plan' returning id)
insert into ids select 'a', id from s;
select is((select reset_at from public.subscriptions where id = (select id from ids where name = 'a')),
  '2026-02-28 12:00+00'::timestamptz, 'reset_at is filled: started_at + 1 month (Jan 31 → Feb 28)');
select throws_ok($$insert into public.subscriptions (user_id, plan_id, status) select '52525252-0000-4000-8000-00000000000a', p.id, 'active' from public.plans p where p.name = 'subs-plan'$$,
  '23505', null, 'a second active subscription to the same plan is refused');
select lives_ok($$insert into public.subscriptions (user_id, plan_id, status) select '52525252-0000-4000-8000-00000000000a', p.id, 'cancelled' from public.plans p where p.name = 'subs-plan'$$,
  'a cancelled one beside it is fine');
select lives_ok($$insert into public.subscriptions (user_id, plan_id, status) select '52525252-0000-4000-8000-00000000000a', p.id, 'active' from public.plans p where p.name = 'subs-plan-2'$$,
  'an active subscription to another plan is fine');
select throws_ok($$update public.subscriptions set used_requests = 0$$, '42501', null, 'service_role cannot set used_requests (the metering functions count)');
select throws_ok($$update public.subscriptions set reset_at = now()$$, '42501', null, 'service_role cannot move reset_at');
select throws_ok($$delete from public.subscriptions$$, '42501', null, 'service_role cannot delete subscriptions (cancel them)');
select throws_ok($$insert into public.subscriptions (user_id, plan_id, status) select '52525252-0000-4000-8000-00000000000b', p.id, 'paused' from public.plans p where p.name = 'subs-plan'$$,
  '23514', null, 'status is one of pending, active, suspended, cancelled, expired');
reset role;

-- ── Suspension: used >= quota of the same row ─────────────────────────────────────────────
update public.subscriptions set used_requests = 9 where id = (select id from ids where name = 'a');
select is((select status from public.subscriptions where id = (select id from ids where name = 'a')), 'active', '9 of 10 requests: active');
update public.subscriptions set used_requests = 10 where id = (select id from ids where name = 'a');
select results_eq($$select status, suspension_reason from public.subscriptions where id = (select id from ids where name = 'a')$$,
  $$values ('suspended', 'quota')$$, '10 of 10 requests: suspended for its quota (seed 003 waited for 11)');
set local role service_role;
update public.subscriptions set quota_requests = 20 where id = (select id from ids where name = 'a');
reset role;
select results_eq($$select status, suspension_reason from public.subscriptions where id = (select id from ids where name = 'a')$$,
  $$values ('active', null)$$, 'raising the quota lifts a quota suspension');
set local role service_role;
update public.subscriptions set quota_requests = 5 where id = (select id from ids where name = 'a');
reset role;
select is((select status from public.subscriptions where id = (select id from ids where name = 'a')), 'suspended',
  'lowering the quota below what is used suspends (seed 003 compared with the OLD quota and kept it active)');
set local role service_role;
update public.subscriptions set status = 'active' where id = (select id from ids where name = 'a');
reset role;
select results_eq($$select status, suspension_reason from public.subscriptions where id = (select id from ids where name = 'a')$$,
  $$values ('suspended', 'quota')$$, 'an operator cannot resume a subscription whose quota is exhausted');
set local role service_role;
update public.subscriptions set quota_requests = null where id = (select id from ids where name = 'a');
reset role;
select is((select status from public.subscriptions where id = (select id from ids where name = 'a')), 'active', 'a null quota is unlimited');
update public.subscriptions set used_tokens = 1000 where id = (select id from ids where name = 'a');
select is((select suspension_reason from public.subscriptions where id = (select id from ids where name = 'a')), 'quota', 'the token quota suspends too');
update public.subscriptions set used_tokens = 0 where id = (select id from ids where name = 'a');
set local role service_role;
update public.subscriptions set status = 'suspended' where id = (select id from ids where name = 'a');
reset role;
select results_eq($$select status, suspension_reason from public.subscriptions where id = (select id from ids where name = 'a')$$,
  $$values ('suspended', 'operator')$$, 'an operator''s suspension is marked as such');
set local role service_role;
update public.subscriptions set status = 'active' where id = (select id from ids where name = 'a');
reset role;

-- ── Periods ───────────────────────────────────────────────────────────────────────────────
select results_eq($$select private.period_end('2026-01-31 12:00+00', 'month', t)
                    from unnest(array['2026-01-31 12:00+00', '2026-02-28 11:59+00', '2026-02-28 12:00+00',
                                      '2026-03-30 00:00+00', '2027-01-31 12:00+00']::timestamptz[]) t$$,
  $$values ('2026-02-28 12:00+00'::timestamptz), ('2026-02-28 12:00+00'), ('2026-03-31 12:00+00'),
           ('2026-03-31 12:00+00'), ('2027-02-28 12:00+00')$$,
  'monthly periods end on the anchor''s day, clipped to short months, without drifting');
select results_eq($$select private.period_end('2024-02-29 00:00+00', p, '2025-03-01 00:00+00')
                    from unnest(array['day', 'week', 'year']) p$$,
  $$values ('2025-03-02 00:00+00'::timestamptz), ('2025-03-06 00:00+00'), ('2026-02-28 00:00+00')$$,
  'day, week and year periods');
-- Rollover by reading: a subscription whose period ended long ago, quota exhausted.
update public.subscriptions
set started_at = now() - interval '2 months 3 days', reset_at = now() - interval '1 month 3 days',
    quota_requests = 10, used_requests = 10, used_tokens = 700
where id = (select id from ids where name = 'a');
select is((select status from public.subscriptions where id = (select id from ids where name = 'a')), 'suspended', 'exhausted in its old period');
select results_eq($$select used_requests, used_tokens, remaining_requests, remaining_tokens, reset_at
                    from public.active_subscriptions where id = (select id from ids where name = 'a')$$,
  $$select 0::bigint, 0::bigint, 10::bigint, 1000::bigint,
           (private.subscription_now(s)).reset_at from public.subscriptions s where s.id = (select id from ids where name = 'a')$$,
  'once its period has ended it reads as active with full quotas and the next reset, no cron');
select ok((select reset_at > now() and reset_at <= now() + interval '1 month' from public.active_subscriptions where id = (select id from ids where name = 'a')),
  'the next reset is within the coming month');
create temporary table view_mismatches (period text, age interval);
do $$
declare
  sid uuid := (select id from ids where name = 'a');
  p text;
  age interval;
begin
  foreach p in array array['day', 'week', 'month', 'year'] loop
    for i in 0 .. 60 loop
      age := make_interval(days => i * 97 + i % 7, hours => i % 24, mins => i * 7 % 60);
      update public.subscriptions set period = p, started_at = now() - age,
        reset_at = now() - age + interval '1 second', used_requests = 0, used_tokens = 0
      where id = sid;
      if not coalesce((select v.reset_at from public.active_subscriptions v where v.id = sid)
                      = (select (private.subscription_now(s)).reset_at from public.subscriptions s where s.id = sid),
                      false) then
        insert into view_mismatches values (p, age);
      end if;
    end loop;
  end loop;
end
$$;
select is_empty($$select * from view_mismatches$$,
  'the view''s rollover equals private.subscription_now for every period and 61 ages up to 16 years');
update public.subscriptions set period = 'month', started_at = now(), reset_at = now() + interval '1 month', expires_at = now() - interval '1 second'
where id = (select id from ids where name = 'a');
select is_empty($$select 1 from public.active_subscriptions where id = (select id from ids where name = 'a')$$,
  'an expired subscription is not in active_subscriptions');
update public.subscriptions set expires_at = null where id = (select id from ids where name = 'a');

-- ── The owner ─────────────────────────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"52525252-0000-4000-8000-00000000000a"}';
select is((select count(*)::int from public.subscriptions), 3, 'the owner reads their own subscriptions');
select is((select count(*)::int from public.active_subscriptions), 2, 'the owner reads their active subscriptions through the view');
select throws_ok($$update public.subscriptions set quota_requests = 1000000$$, '42501', null, 'the owner cannot raise their own quota');
select throws_ok($$insert into public.subscriptions (user_id, plan_id, status) select '52525252-0000-4000-8000-00000000000a', id, 'active' from public.plans where name = 'cursor-pro-opus'$$,
  '42501', null, 'the owner cannot subscribe themselves');
reset role;

-- ── Another user, anon ────────────────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"52525252-0000-4000-8000-00000000000b"}';
select is((select count(*)::int from public.subscriptions), 0, 'another user sees none of them');
select is((select count(*)::int from public.active_subscriptions), 0, 'nor through the view');
reset role;
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select throws_ok($$select 1 from public.subscriptions$$, '42501', null, 'anon cannot read subscriptions');
select throws_ok($$select 1 from public.active_subscriptions$$, '42501', null, 'anon cannot read active_subscriptions');
reset role;

-- ── Deleting the user deletes their subscriptions ─────────────────────────────────────────
delete from auth.users where id = '52525252-0000-4000-8000-00000000000a';
select is((select count(*)::int from public.subscriptions where user_id = '52525252-0000-4000-8000-00000000000a'), 0,
  'a deleted user''s subscriptions go with them');

SELECT * FROM finish();
ROLLBACK;
