-- 56-async-hold.sql — authorize_request(..., answer_after_charge) (20261130030000): the hold of
-- a request whose answer waits for its charge commits asynchronously (synchronous_commit off
-- for that transaction only); every other call stays durable; the same hold either way; one
-- function (the six-argument one is gone), callable by name as supabase-js does, service_role
-- only. The crash behind it is tests/test_crash_durability.py's.
BEGIN;
SELECT plan(10);

insert into auth.users (id, email) values ('56565656-0000-4000-8000-00000000000a', 'async-hold@example.test');
insert into public.upstreams (name, base_url) values ('async-up', 'http://127.0.0.1:9/v1');
insert into public.plans (name) values ('async-plan');
insert into public.plan_routes (plan_id, upstream_id, model, weight)
select p.id, u.id, 'gpt-4o-mini', 1 from public.plans p, public.upstreams u
where p.name = 'async-plan' and u.name = 'async-up';
insert into public.subscriptions (user_id, plan_id, status)
select '56565656-0000-4000-8000-00000000000a', p.id, 'active' from public.plans p where p.name = 'async-plan';
select public.top_up('56565656-0000-4000-8000-00000000000a', 10, 'async-hold-fixture');
create temporary table k as
select public.create_api_key('async', 'async-plan', user_id => '56565656-0000-4000-8000-00000000000a') ->> 'key' as secret;
create temporary table r (name text primary key, answer jsonb);
grant select, insert on k, r to anon, authenticated, service_role;

select is((select count(*)::int from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = 'public' and p.proname = 'authorize_request'), 1,
  'one authorize_request: the six-argument function was dropped, not overloaded');

-- The session's own setting, whatever the test stack runs with (TOKENMETER_SYNCHRONOUS_COMMIT).
set local synchronous_commit = on;
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';

insert into r select 'durable', public.authorize_request((select secret from k), 'gpt-4o-mini', 100, 'async-1', 50);
select is(current_setting('synchronous_commit'), 'on', 'default (a stream, any other caller): the hold commits durably');
insert into r select 'durable-false', public.authorize_request((select secret from k), 'gpt-4o-mini', 100, 'async-2', 50, answer_after_charge => false);
select is(current_setting('synchronous_commit'), 'on', 'answer_after_charge false: durable');

insert into r select 'async', public.authorize_request(key => (select secret from k), model => 'gpt-4o-mini',
  max_tokens => 100, request_id => 'async-3', input_tokens => 50, answer_after_charge => true);
select is(current_setting('synchronous_commit'), 'off',
  'answer_after_charge true (by name, as supabase-js calls it): the transaction commits without waiting for its flush');
select is((select answer ->> 'status' from r where name = 'async'), 'authorized', 'the asynchronous hold is authorized');
select is((select answer ->> 'reserved' from r where name = 'async'), (select answer ->> 'reserved' from r where name = 'durable'),
  'and holds the same amount as a durable one');
select is((select count(*)::int from public.metered_requests where request_id in ('async-1', 'async-2', 'async-3') and status = 'authorized'), 3,
  'all three requests are in flight');
select is((public.complete_request('async-3', '{"prompt_tokens": 10, "completion_tokens": 20}', 200) ->> 'replayed')::boolean, false,
  'an asynchronous hold is completed like any other');
reset role;

set local role service_role;
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L, answer_after_charge => null)', (select secret from k), 'gpt-4o-mini', 'async-x'),
  '22023', 'invalid_argument', 'answer_after_charge null is 400');
reset role;
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"56565656-0000-4000-8000-00000000000a"}';
select throws_ok(format('select public.authorize_request(%L, %L, 10, %L, answer_after_charge => true)', (select secret from k), 'gpt-4o-mini', 'async-y'),
  '42501', null, 'authenticated: denied, with the flag as without');
reset role;

SELECT * FROM finish();
ROLLBACK;
