-- 88-alerts-low-balance.sql — low-balance alerts (20261129230010/11): going below a user's
-- threshold (their own, else the default) alerts exactly once per descent, through every way a
-- balance goes down (record_usage, a batch, an adjustment): not again while it stays below (not
-- even after a top-up that leaves it below), again after it has been back at or above. Setting
-- a threshold re-arms only when the effective threshold changes; new users take the default;
-- the charging path reaches no function unless an alert is due (WHEN clause). Who may set
-- thresholds, exact payloads, audit entries, RLS.
BEGIN;
SELECT plan(36);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('88888888-0000-4000-8000-00000000000a', 'low-a@example.test'),
  ('88888888-0000-4000-8000-00000000000b', 'low-b@example.test'),
  ('88888888-0000-4000-8000-00000000000c', 'low-c@example.test');
-- 1 USD per 1,000 input tokens: charges are whole dollars.
insert into public.model_pricing (provider_id, model_id, price_per_input_token, price_per_output_token)
values ('alertco', 'alert-chat', 0.001, 0);
create temporary table n (i int primary key generated always as identity);
grant all on n to service_role;
-- charge(user, dollars): one record_usage as service_role would make it.
create function pg_temp.charge(who uuid, dollars int) returns numeric language plpgsql as $$
declare
  rid text := 'low-' || nextval(pg_get_serial_sequence('pg_temp.n', 'i'));
begin
  return (public.record_usage(who, 'alert-chat', dollars * 1000, 0, rid, provider => 'alertco')
          ->> 'balance')::numeric;
end $$;
create function pg_temp.alerts(who uuid) returns bigint language sql as $$
  select count(*) from public.alert_outbox where user_id = who and kind = 'low_balance' $$;
select public.top_up(u, 10, 'low-fixture-' || u)
from unnest(array['88888888-0000-4000-8000-00000000000a', '88888888-0000-4000-8000-00000000000b',
                  '88888888-0000-4000-8000-00000000000c']::uuid[]) u;

select ok((select pg_get_triggerdef(t.oid) ~ 'AFTER UPDATE OF balance .* WHEN .*low_balance_threshold'
           from pg_trigger t where t.tgname = 'user_balances_low_balance_alert'),
  'the charge reaches the alert function only when its WHEN clause (old and new balance row) says so');

-- ── No threshold: no alert ────────────────────────────────────────────────────────────────
select is(pg_temp.charge('88888888-0000-4000-8000-00000000000a', 9), 1::numeric, 'a: 10 -> 1');
select is(pg_temp.alerts('88888888-0000-4000-8000-00000000000a'), 0::bigint,
  'no threshold and no default: nothing is alerted');
select public.top_up('88888888-0000-4000-8000-00000000000a', 9, 'low-a-refill');

-- ── The user's own threshold: once per descent ────────────────────────────────────────────
set local role service_role;
select is(public.set_low_balance_threshold('88888888-0000-4000-8000-00000000000a', 5),
  '{"user_id": "88888888-0000-4000-8000-00000000000a", "threshold": "5", "default_threshold": null, "effective": "5"}'::jsonb,
  'service_role sets a user''s threshold');
reset role;
select is(pg_temp.charge('88888888-0000-4000-8000-00000000000a', 2), 8::numeric, '10 -> 8');
select is(pg_temp.charge('88888888-0000-4000-8000-00000000000a', 3), 5::numeric, '8 -> 5: at the threshold');
select is(pg_temp.alerts('88888888-0000-4000-8000-00000000000a'), 0::bigint,
  'reaching the threshold exactly is not going below it');
select is(pg_temp.charge('88888888-0000-4000-8000-00000000000a', 1), 4::numeric, '5 -> 4');
select results_eq($$select kind, payload, status, attempts, dedupe_key from public.alert_outbox
                    where user_id = '88888888-0000-4000-8000-00000000000a'$$,
  $$values ('low_balance', '{"user_id": "88888888-0000-4000-8000-00000000000a", "threshold": "5", "balance": "4", "previous_balance": "5", "currency": "USD"}'::jsonb,
            'pending', 0, null::text)$$,
  'going below alerts once: threshold, balance before and after, exact; pending delivery');
select is(pg_temp.charge('88888888-0000-4000-8000-00000000000a', 1), 3::numeric, '4 -> 3');
select is(pg_temp.charge('88888888-0000-4000-8000-00000000000a', 1), 2::numeric, '3 -> 2');
select public.adjust_balance('88888888-0000-4000-8000-00000000000a', -1, 'fee', 'low-a-fee');
select is(pg_temp.alerts('88888888-0000-4000-8000-00000000000a'), 1::bigint,
  'more charges and an adjustment below the threshold: still one alert');
select public.top_up('88888888-0000-4000-8000-00000000000a', 2, 'low-a-small');
select is(pg_temp.charge('88888888-0000-4000-8000-00000000000a', 1), 2::numeric, '1 +2 -1 = 2');
select is(pg_temp.alerts('88888888-0000-4000-8000-00000000000a'), 1::bigint,
  'a top-up that leaves the balance below does not re-arm the alert');
select public.top_up('88888888-0000-4000-8000-00000000000a', 3, 'low-a-back');
select is((select low_balance_alerted from public.user_balances
           where user_id = '88888888-0000-4000-8000-00000000000a'), false,
  'back at the threshold (5): re-armed');
select is(pg_temp.charge('88888888-0000-4000-8000-00000000000a', 2), 3::numeric, '5 -> 3');
select is(pg_temp.alerts('88888888-0000-4000-8000-00000000000a'), 2::bigint,
  'after recovering, the next descent alerts again');

-- ── A batch crossing the threshold: one alert ─────────────────────────────────────────────
set local role service_role;
select public.set_low_balance_threshold('88888888-0000-4000-8000-00000000000c', 6);
select is((public.record_usage_batch('[
  {"user_id":"88888888-0000-4000-8000-00000000000c","model":"alert-chat","provider":"alertco","input_tokens":2000,"output_tokens":0,"request_id":"low-c-1"},
  {"user_id":"88888888-0000-4000-8000-00000000000c","model":"alert-chat","provider":"alertco","input_tokens":2000,"output_tokens":0,"request_id":"low-c-2"},
  {"user_id":"88888888-0000-4000-8000-00000000000c","model":"alert-chat","provider":"alertco","input_tokens":2000,"output_tokens":0,"request_id":"low-c-3"}]') ->> 'recorded')::int,
  3, 'a batch of three 2-dollar charges: 10 -> 4');
reset role;
select is(pg_temp.alerts('88888888-0000-4000-8000-00000000000c'), 1::bigint,
  'a batch that goes below the threshold alerts once');

-- ── The default, and thresholds changing ──────────────────────────────────────────────────
set local role service_role;
select is(public.set_default_low_balance_threshold(3),
  '{"default_threshold": "3", "users": 1}'::jsonb,
  'the default reaches the one user with neither a threshold of their own nor it already');
reset role;
select results_eq($$select user_id, low_balance_threshold from public.user_balances
                    where user_id::text like '88888888-%' order by user_id$$,
  $$values ('88888888-0000-4000-8000-00000000000a'::uuid, 5::numeric),
           ('88888888-0000-4000-8000-00000000000b'::uuid, 3::numeric),
           ('88888888-0000-4000-8000-00000000000c'::uuid, 6::numeric)$$,
  'an own threshold wins over the default');
select is(pg_temp.charge('88888888-0000-4000-8000-00000000000b', 8), 2::numeric, 'b: 10 -> 2');
select is((select payload ->> 'threshold' from public.alert_outbox
           where user_id = '88888888-0000-4000-8000-00000000000b'), '3',
  'b is alerted at the default');
insert into auth.users (id, email) values ('88888888-0000-4000-8000-00000000000d', 'low-d@example.test');
select is((select low_balance_threshold from public.user_balances
           where user_id = '88888888-0000-4000-8000-00000000000d'), 3::numeric,
  'a new user''s balance row takes the default');
set local role service_role;
select is(public.set_low_balance_threshold('88888888-0000-4000-8000-00000000000a', null) ->> 'effective',
  '3', 'removing a''s own threshold: the default applies');
select public.set_low_balance_threshold('88888888-0000-4000-8000-00000000000c', 6);
reset role;
select is(pg_temp.charge('88888888-0000-4000-8000-00000000000c', 1), 3::numeric, 'c: 4 -> 3');
select is(pg_temp.alerts('88888888-0000-4000-8000-00000000000c'), 1::bigint,
  'setting the same threshold again does not re-arm (no second alert)');
set local role service_role;
select public.set_low_balance_threshold('88888888-0000-4000-8000-00000000000c', 7);
reset role;
select is(pg_temp.charge('88888888-0000-4000-8000-00000000000c', 1), 2::numeric, 'c: 3 -> 2');
select is(pg_temp.alerts('88888888-0000-4000-8000-00000000000c'), 2::bigint,
  'a new threshold above the balance re-arms: the next charge alerts, once');

-- ── Audit, callers, bad input ─────────────────────────────────────────────────────────────
select results_eq($$select action, before ->> 'threshold', after ->> 'threshold' from public.audit_logs
                    where resource_type = 'low_balance_thresholds'
                      and user_id = '88888888-0000-4000-8000-00000000000c' order by id$$,
  $$values ('set_low_balance_threshold', null, '6'), ('set_low_balance_threshold', '6', '7')$$,
  'threshold changes are audit entries (setting the same value is none)');
set local role service_role;
select throws_ok($$select public.set_low_balance_threshold('88888888-0000-4000-8000-00000000000a', 'NaN')$$,
  '22023', 'invalid_argument', 'NaN is refused');
select throws_ok($$select public.set_default_low_balance_threshold(1e12)$$,
  '22023', 'invalid_argument', 'an amount out of range is refused');
select throws_ok($$select public.set_low_balance_threshold('88888888-0000-4000-8000-0000000000ff', 1)$$,
  'PT404', 'user_not_found', 'an unknown user is refused');
reset role;
set local role authenticated;
set local "request.jwt.claims" to '{"sub":"88888888-0000-4000-8000-00000000000a","role":"authenticated"}';
select throws_ok($$select public.set_low_balance_threshold('88888888-0000-4000-8000-00000000000a', 100)$$,
  '42501', null, 'authenticated may not set thresholds (not even their own)');
select results_eq($$select user_id, kind from public.alert_outbox$$,
  $$values ('88888888-0000-4000-8000-00000000000a'::uuid, 'low_balance'),
           ('88888888-0000-4000-8000-00000000000a'::uuid, 'low_balance')$$,
  'a user reads their own alerts only');
reset role;
set local role anon;
select throws_ok($$select public.set_default_low_balance_threshold(1)$$, '42501', null,
  'anon may not set the default');
reset role;

SELECT * FROM finish();
ROLLBACK;
