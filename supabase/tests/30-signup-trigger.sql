-- 30-signup-trigger.sql — the signup trigger on auth.users: every new user gets a balance (0 or
-- the configured signup grant, recorded in the ledger); a failure never blocks the signup, is
-- logged in signup_errors, and repair_missing_balances() fixes it; the self-service fallback.
BEGIN;
SELECT plan(24);

-- ── A normal signup ───────────────────────────────────────────────────────────────────────
select lives_ok($$insert into auth.users (id, email) values ('cccccccc-0000-4000-8000-000000000001', 'signup-1@example.test')$$, 'a signup succeeds');
select results_eq($$select balance, currency from public.user_balances where user_id = 'cccccccc-0000-4000-8000-000000000001'$$, $$values (0::numeric, 'USD'::text)$$, 'the new user has a zero USD balance');
select is_empty($$select 1 from public.ledger_entries where user_id = 'cccccccc-0000-4000-8000-000000000001'$$, 'a zero signup grant writes no ledger entry');

-- ── A configured signup grant ─────────────────────────────────────────────────────────────
set local role service_role;
select lives_ok($$update public.billing_settings set signup_grant = 2.5$$, 'service_role configures the signup grant');
reset role;
insert into auth.users (id, email) values ('cccccccc-0000-4000-8000-000000000002', 'signup-2@example.test');
select is((select balance from public.user_balances where user_id = 'cccccccc-0000-4000-8000-000000000002'), 2.5::numeric, 'the new user receives the signup grant');
select results_eq($$select kind, amount, reference from public.ledger_entries where user_id = 'cccccccc-0000-4000-8000-000000000002'$$, $$values ('signup_grant'::text, 2.5::numeric, 'signup:cccccccc-0000-4000-8000-000000000002'::text)$$, 'the grant is recorded in the ledger');
select is_empty($$select * from public.balance_audit()$$, 'balances still equal their ledgers');

-- ── Balance creation fails: the signup still succeeds ─────────────────────────────────────
-- Provoke a failure inside the trigger: a constraint no new balance row can satisfy.
alter table public.user_balances add constraint user_balances_test_reject check (user_id is null) not valid;
select lives_ok($$insert into auth.users (id, email) values ('cccccccc-0000-4000-8000-000000000003', 'signup-3@example.test')$$, 'the signup succeeds although its balance cannot be created');
select isnt_empty($$select 1 from auth.users where id = 'cccccccc-0000-4000-8000-000000000003'$$, 'the user row exists');
select is_empty($$select 1 from public.user_balances where user_id = 'cccccccc-0000-4000-8000-000000000003'$$, 'no balance row was created');
select is_empty($$select 1 from public.ledger_entries where user_id = 'cccccccc-0000-4000-8000-000000000003'$$, 'nor half of one: the grant''s ledger entry was rolled back too');
select results_eq($$select sqlstate, resolved_at is null from public.signup_errors where user_id = 'cccccccc-0000-4000-8000-000000000003'$$, $$values ('23514'::text, true)$$, 'the error is recorded in signup_errors for an operator');
insert into auth.users (id, email) values ('cccccccc-0000-4000-8000-000000000004', 'signup-4@example.test');

-- Even when the error log itself cannot be written, the signup goes through.
alter table public.signup_errors add constraint signup_errors_test_reject check (id is null) not valid;
select lives_ok($$insert into auth.users (id, email) values ('cccccccc-0000-4000-8000-000000000005', 'signup-5@example.test')$$, 'the signup succeeds even when the error log fails');
alter table public.signup_errors drop constraint signup_errors_test_reject;
alter table public.user_balances drop constraint user_balances_test_reject;

-- ── Fallback 1: the user creates their own zero balance (safe insert policy) ──────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"cccccccc-0000-4000-8000-000000000004"}';
select throws_ok($$insert into public.user_balances (user_id, balance) values ('cccccccc-0000-4000-8000-000000000004', 100)$$, '42501', null, 'the user cannot create their balance with money in it');
select throws_ok($$insert into public.user_balances (user_id) values ('cccccccc-0000-4000-8000-000000000003')$$, '42501', null, 'the user cannot create someone else''s balance');
select lives_ok($$insert into public.user_balances (user_id) values ('cccccccc-0000-4000-8000-000000000004')$$, 'the user can create their own zero balance');
reset role;

-- ── Fallback 2: the operator repairs what is missing ──────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select is(public.repair_missing_balances(), 2, 'repair_missing_balances creates the missing balances and counts them');
select is((select balance from public.user_balances where user_id = 'cccccccc-0000-4000-8000-000000000003'), 2.5::numeric, 'a repaired balance gets the signup grant');
select is_empty($$select 1 from public.signup_errors where user_id = 'cccccccc-0000-4000-8000-000000000003' and resolved_at is null$$, 'the repaired user''s signup error is marked resolved');
select is(public.repair_missing_balances(), 0, 'repair is idempotent');
select is_empty($$select * from public.balance_audit()$$, 'after repair every balance still equals its ledger');
reset role;

-- ── The trigger function itself ───────────────────────────────────────────────────────────
select throws_ok($$select private.handle_new_user()$$, '0A000', null, 'handle_new_user cannot be called outside a trigger');
select is((select prosecdef from pg_proc where oid = 'private.handle_new_user()'::regprocedure), true, 'handle_new_user is SECURITY DEFINER (the Auth server''s role cannot write balances)');

-- ── Deleting a user deletes their balance ─────────────────────────────────────────────────
delete from auth.users where id = 'cccccccc-0000-4000-8000-000000000002';
select is_empty($$select 1 from public.user_balances where user_id = 'cccccccc-0000-4000-8000-000000000002'$$, 'the balance row is deleted with its user (cascade)');

SELECT * FROM finish();
ROLLBACK;
