-- 89-alerts-quota-outbox.sql — quota alerts (20261129230010): reaching 80 % and 100 % of a
-- subscription's request or token quota alerts once per level and period (both levels when one
-- update crosses both), again in the next period, never for no quota; through complete_request
-- as well. The outbox (20261129230011): dedupe keys, the worker's lease (claim_alerts), outcomes
-- (record_alert_attempt: delivered, retry later, give up), requeue_alert; who may call what;
-- nobody writes the outbox directly.
BEGIN;
SELECT plan(53);

-- ── Structure ─────────────────────────────────────────────────────────────────────────────
select ok((select bool_and(c.relrowsecurity) from pg_class c
           where c.oid in ('public.alert_outbox'::regclass, 'public.alert_settings'::regclass,
                           'public.low_balance_thresholds'::regclass)),
  'RLS is enabled on alert_outbox, alert_settings and low_balance_thresholds');
select table_privs_are('public', t, 'service_role', array['SELECT'],
  'service_role may only read ' || t || ' (the functions write it)')
from unnest(array['alert_outbox', 'alert_settings', 'low_balance_thresholds']) as t;
select table_privs_are('public', t, 'authenticated', array['SELECT'],
  'authenticated may only read ' || t || ' (RLS: their own rows)')
from unnest(array['alert_outbox', 'low_balance_thresholds']) as t;
select table_privs_are('public', t, 'anon', array[]::text[], 'anon has no privilege on ' || t)
from unnest(array['alert_outbox', 'alert_settings', 'low_balance_thresholds']) as t;
select function_privs_are('public', f, args, r,
  case when r = 'service_role' then array['EXECUTE'] else array[]::text[] end,
  r || (case when r = 'service_role' then ' may' else ' may not' end) || ' execute ' || f)
from (values ('claim_alerts', array['integer', 'integer']),
             ('record_alert_attempt', array['uuid', 'boolean', 'text', 'numeric']),
             ('requeue_alert', array['uuid']),
             ('set_low_balance_threshold', array['uuid', 'numeric']),
             ('set_default_low_balance_threshold', array['numeric'])) as x(f, args)
cross join unnest(array['anon', 'authenticated', 'service_role']) as r;

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('89898989-0000-4000-8000-00000000000a', 'quota-a@example.test'),
  ('89898989-0000-4000-8000-00000000000b', 'quota-b@example.test');
insert into public.plans (name) values ('quota-plan');
insert into public.subscriptions (user_id, plan_id, status, quota_requests, quota_tokens, started_at)
select '89898989-0000-4000-8000-00000000000a', p.id, 'active', 10, 1000, now() - interval '1 day'
from public.plans p where p.name = 'quota-plan';
create temporary view sub_a as select s.* from public.subscriptions s
  where s.user_id = '89898989-0000-4000-8000-00000000000a';
create function pg_temp.levels(quota_name text) returns text language sql as $$
  select coalesce(string_agg((o.payload ->> 'level'), ',' order by (o.payload ->> 'level')::int, o.created_at), '')
  from public.alert_outbox o
  where o.user_id = '89898989-0000-4000-8000-00000000000a' and o.payload ->> 'quota' = quota_name $$;

-- ── Requests: 80 % once, 100 % once ───────────────────────────────────────────────────────
update public.subscriptions set used_requests = 7 where id = (select id from sub_a);
select is(pg_temp.levels('requests'), '', '7 of 10: nothing');
update public.subscriptions set used_requests = 8 where id = (select id from sub_a);
update public.subscriptions set used_requests = 9 where id = (select id from sub_a);
select is(pg_temp.levels('requests'), '80', '8 and 9 of 10: one alert at 80 %');
update public.subscriptions set used_requests = 10 where id = (select id from sub_a);
update public.subscriptions set used_requests = 11 where id = (select id from sub_a);
select is(pg_temp.levels('requests'), '80,100', '10 and 11 of 10: one alert at 100 %');
select results_eq($$select o.kind, o.payload - 'period_end' - 'subscription_id' - 'plan_id',
                           o.payload ->> 'subscription_id' = (select id::text from sub_a),
                           (o.payload ->> 'period_end')::timestamptz = (select reset_at from sub_a)
                    from public.alert_outbox o
                    where o.user_id = '89898989-0000-4000-8000-00000000000a'
                      and o.payload ->> 'level' = '100'$$,
  $$values ('quota', '{"user_id": "89898989-0000-4000-8000-00000000000a", "plan": "quota-plan", "quota": "requests", "level": 100, "used": 10, "limit": 10}'::jsonb, true, true)$$,
  'the payload: which subscription, plan, quota and level, used of limit, when the period ends');
select is((select status from sub_a), 'suspended', 'and the subscription is suspended, as before');

-- ── Tokens: one update crossing both levels ───────────────────────────────────────────────
update public.subscriptions set used_tokens = 1200 where id = (select id from sub_a);
select is(pg_temp.levels('tokens'), '80,100', 'one jump from 0 to 120 % alerts 80 % and 100 %');
update public.subscriptions set quota_requests = 20, quota_tokens = 2000 where id = (select id from sub_a);
update public.subscriptions set used_requests = 17, used_tokens = 1700 where id = (select id from sub_a);
select is(pg_temp.levels('requests') || ' / ' || pg_temp.levels('tokens'), '80,100 / 80,100',
  'a raised quota reached again in the same period: no second alert (once per period)');

-- ── A new period ──────────────────────────────────────────────────────────────────────────
update public.subscriptions set used_requests = 16, used_tokens = 0,
  reset_at = reset_at + interval '1 month' where id = (select id from sub_a);
select is(pg_temp.levels('requests'), '80,80,100', 'the next period: 16 of 20 alerts 80 % again');
select is((select count(distinct dedupe_key)::int from public.alert_outbox
           where user_id = '89898989-0000-4000-8000-00000000000a'), 5,
  'each alert has its own key (subscription, period, quota, level)');
update public.subscriptions set used_requests = 19 where id = (select id from sub_a);
select is(pg_temp.levels('requests'), '80,80,100', '19 of 20: nothing more');

-- ── No quota, zero quota ──────────────────────────────────────────────────────────────────
insert into public.subscriptions (user_id, plan_id, status, quota_requests, quota_tokens)
select '89898989-0000-4000-8000-00000000000b', p.id, 'active', null, 0
from public.plans p where p.name = 'quota-plan';
update public.subscriptions set used_requests = 1000000, used_tokens = 5
where user_id = '89898989-0000-4000-8000-00000000000b';
select is((select count(*)::int from public.alert_outbox
           where user_id = '89898989-0000-4000-8000-00000000000b'), 0,
  'no quota (null) and a zero quota never alert');

-- ── Through complete_request ──────────────────────────────────────────────────────────────
insert into public.upstreams (name, base_url, api_key_env) values ('quota-up', 'http://127.0.0.1:9/v1', 'QUOTA_KEY');
insert into public.plans (name) values ('quota-plan-2');
insert into public.plan_routes (plan_id, upstream_id, model, weight)
select p.id, u.id, 'gpt-4o-mini', 1 from public.plans p, public.upstreams u
where p.name = 'quota-plan-2' and u.name = 'quota-up';
insert into public.subscriptions (user_id, plan_id, status, quota_requests, quota_tokens)
select '89898989-0000-4000-8000-00000000000b', p.id, 'active', 5, 1000000
from public.plans p where p.name = 'quota-plan-2';
select public.top_up('89898989-0000-4000-8000-00000000000b', 10, 'quota-b-fixture');
create temporary table key_b as
  select public.create_api_key('q', 'quota-plan-2', user_id => '89898989-0000-4000-8000-00000000000b') ->> 'key' as secret;
grant select on key_b to service_role;
set local role service_role;
select public.authorize_request((select secret from key_b), 'gpt-4o-mini', 10, 'quota-req-' || i)
from generate_series(1, 4) i;
select public.complete_request('quota-req-' || i, '{"prompt_tokens": 5, "completion_tokens": 5}', 200)
from generate_series(1, 4) i;
reset role;
select results_eq($$select payload ->> 'quota', payload ->> 'level', payload ->> 'used'
                    from public.alert_outbox where user_id = '89898989-0000-4000-8000-00000000000b'$$,
  $$values ('requests', '80', '4')$$,
  'complete_request counting the 4th of 5 requests alerts at 80 %, once');

-- ── The outbox: dedupe, lease, outcomes ───────────────────────────────────────────────────
select isnt(private.enqueue_alert('test', null, '{"n": 1}', 'outbox-test-key'), null,
  'enqueue_alert returns the new alert''s id');
select is(private.enqueue_alert('test', null, '{"n": 2}', 'outbox-test-key'), null,
  'the same dedupe_key again writes nothing');
set local role service_role;
create temporary table claimed as select * from public.claim_alerts(1000, 60);
select ok((select bool_and(attempts = 1 and next_attempt_at = now() + interval '60 seconds')
           from claimed where dedupe_key = 'outbox-test-key' or user_id::text like '89898989-%'),
  'claim_alerts leases the due alerts: attempts counted, due again only after the lease');
select is((select count(*)::int from claimed where user_id::text like '89898989-%'), 6,
  'every due alert of these users was claimed');
select is((select count(*)::int from public.claim_alerts(1000, 60)
           where user_id::text like '89898989-%' or dedupe_key = 'outbox-test-key'), 0,
  'a leased alert is not claimed twice');
select results_eq($$select status, delivered_at is not null from public.record_alert_attempt(
                      (select id from claimed where dedupe_key = 'outbox-test-key'), true)$$,
  $$values ('delivered', true)$$, 'a delivery is recorded');
select results_eq($$select status, attempts from public.record_alert_attempt(
                      (select id from claimed where dedupe_key = 'outbox-test-key'), false, 'late', 5)$$,
  $$values ('delivered', 1)$$, 'an outcome reported after delivery changes nothing');
create temporary table one as select id from claimed where user_id = '89898989-0000-4000-8000-00000000000b';
select results_eq($$select status, last_error, next_attempt_at = now() + interval '30 seconds'
                    from public.record_alert_attempt((select id from one), false, 'HTTP 503', 30)$$,
  $$values ('pending', 'HTTP 503', true)$$, 'a failed attempt: the error kept, due again later');
select results_eq($$select status, last_error from public.record_alert_attempt((select id from one), false, 'HTTP 410', null)$$,
  $$values ('failed', 'HTTP 410')$$, 'no retry: failed for good');
select results_eq($$select status, attempts, next_attempt_at = now() from public.requeue_alert((select id from one))$$,
  $$values ('pending', 1, true)$$, 'requeue_alert: pending and due now, attempts kept');
select throws_ok($$select public.record_alert_attempt('00000000-0000-4000-8000-000000000000', true)$$,
  'PT404', 'alert_not_found', 'an unknown alert is 404');
select throws_ok($$select public.claim_alerts(0)$$, '22023', 'invalid_argument', 'max_count 0 is refused');
select throws_ok($$select public.record_alert_attempt((select id from one), false, 'x', -1)$$,
  '22023', 'invalid_argument', 'a negative retry delay is refused');
select throws_ok($$update public.alert_outbox set status = 'delivered'$$, '42501', null,
  'service_role cannot write the outbox directly');
select throws_ok($$insert into public.alert_outbox (kind) values ('forged')$$, '42501', null,
  'service_role cannot add an alert directly');
reset role;
set local role authenticated;
set local "request.jwt.claims" to '{"sub":"89898989-0000-4000-8000-00000000000b","role":"authenticated"}';
select throws_ok($$select public.claim_alerts()$$, '42501', null, 'authenticated may not claim alerts');
select is((select count(*)::int from public.alert_outbox), 1, 'a user reads their own alerts');
reset role;

SELECT * FROM finish();
ROLLBACK;
