-- 87-audit-append-only.sql — audit_logs cannot be changed or emptied by anyone: UPDATE, DELETE
-- and TRUNCATE are refused for postgres (the owner) by trigger, and for every API role by
-- privileges as well; nobody but the trigger functions can add an entry. Reading: a user sees
-- the entries about them or made by them, not another user's; anon nothing; service_role all.
BEGIN;
SELECT plan(20);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('87878787-0000-4000-8000-00000000000a', 'append-a@example.test'),
  ('87878787-0000-4000-8000-00000000000b', 'append-b@example.test');
set local role service_role;
select public.top_up('87878787-0000-4000-8000-00000000000a', 5, 'append-pay-a');
select public.top_up('87878787-0000-4000-8000-00000000000b', 5, 'append-pay-b');
insert into public.plans (name) values ('append-plan');
reset role;
create temporary table target as
  select id from public.audit_logs where metadata ->> 'reference' = 'append-pay-a';
grant select on target to anon, authenticated, service_role;

-- ── The owner: refused by the trigger ─────────────────────────────────────────────────────
select throws_ok($$update public.audit_logs set action = 'forged' where id = (select id from target)$$,
  '55000', 'append_only', 'postgres (owner): UPDATE is refused');
select throws_ok($$delete from public.audit_logs where id = (select id from target)$$,
  '55000', 'append_only', 'postgres (owner): DELETE is refused');
select throws_ok($$truncate public.audit_logs$$,
  '55000', 'append_only', 'postgres (owner): TRUNCATE is refused');
select lives_ok($$update public.audit_logs set action = 'forged' where false$$,
  'an UPDATE matching no row changes nothing (row triggers see rows)');
select is((select action from public.audit_logs where id = (select id from target)), 'top_up',
  'the entry is unchanged');

-- ── API roles: no privilege at all to write ───────────────────────────────────────────────
set local role service_role;
select throws_ok($$update public.audit_logs set action = 'forged'$$, '42501', null,
  'service_role: UPDATE is denied');
select throws_ok($$delete from public.audit_logs$$, '42501', null, 'service_role: DELETE is denied');
select throws_ok($$truncate public.audit_logs$$, '42501', null, 'service_role: TRUNCATE is denied');
select throws_ok($$insert into public.audit_logs (actor_role, action, resource_type) values ('x', 'forged', 'x')$$,
  '42501', null, 'service_role: INSERT is denied (entries come from the triggers)');
select is((select count(*)::int from public.audit_logs
           where user_id in ('87878787-0000-4000-8000-00000000000a', '87878787-0000-4000-8000-00000000000b')),
  2, 'service_role reads every user''s entries');
select isnt_empty($$select 1 from public.audit_logs where resource_type = 'plans'
                    and after ->> 'name' = 'append-plan'$$,
  'service_role reads catalog entries (about no user)');
reset role;

set local role authenticated;
set local "request.jwt.claims" to '{"sub":"87878787-0000-4000-8000-00000000000a","role":"authenticated"}';
select results_eq($$select user_id, metadata ->> 'reference' from public.audit_logs$$,
  $$values ('87878787-0000-4000-8000-00000000000a'::uuid, 'append-pay-a')$$,
  'a user reads only the entries about them (not another user''s, not the catalog''s)');
select throws_ok($$update public.audit_logs set action = 'forged'$$, '42501', null,
  'authenticated: UPDATE is denied');
select throws_ok($$delete from public.audit_logs$$, '42501', null, 'authenticated: DELETE is denied');
select throws_ok($$truncate public.audit_logs$$, '42501', null, 'authenticated: TRUNCATE is denied');
select throws_ok($$insert into public.audit_logs (actor_role, action, resource_type) values ('x', 'forged', 'x')$$,
  '42501', null, 'authenticated: INSERT is denied');
reset role;

set local role authenticated;
set local "request.jwt.claims" to '{"sub":"87878787-0000-4000-8000-00000000000b","role":"authenticated"}';
select results_eq($$select user_id, metadata ->> 'reference' from public.audit_logs$$,
  $$values ('87878787-0000-4000-8000-00000000000b'::uuid, 'append-pay-b')$$,
  'user b reads only theirs');
reset role;

set local role anon;
select throws_ok($$select 1 from public.audit_logs$$, '42501', null, 'anon: audit_logs is denied');
select throws_ok($$update public.audit_logs set action = 'forged'$$, '42501', null,
  'anon: UPDATE is denied');
reset role;

select is((select count(*)::int from public.audit_logs where action = 'forged'), 0,
  'nothing was forged');

SELECT * FROM finish();
ROLLBACK;
