-- 73-balance-movements-rls.sql — public.balance_movements (20261129200001) × {anon,
-- authenticated owner, authenticated other user, service_role}: users see their own ledger
-- entries and usage charges in one list, as they saw them in ledger_entries, and nobody
-- else's; nobody writes through the view; it runs with the reader's privileges.
BEGIN;
SELECT plan(16);

-- ── Structure ─────────────────────────────────────────────────────────────────────────────
select has_view('public', 'balance_movements', 'public.balance_movements exists');
select ok((select c.reloptions @> array['security_invoker=true'] from pg_class c
           where c.oid = 'public.balance_movements'::regclass),
  'balance_movements is security_invoker, so the RLS of ledger_entries and usage_records applies');
select table_privs_are('public', 'balance_movements', 'anon', array[]::text[], 'anon has no privilege on balance_movements');
select table_privs_are('public', 'balance_movements', 'authenticated', array['SELECT'], 'authenticated may only read balance_movements');
select table_privs_are('public', 'balance_movements', 'service_role', array['SELECT'], 'service_role may only read balance_movements');
select columns_are('public', 'balance_movements',
  array['source', 'id', 'user_id', 'kind', 'amount', 'currency', 'reference', 'description', 'created_at',
        'occurred_at'],
  'balance_movements has the ledger''s columns, the source of each line and when it occurred (20261130040002)');

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('73737373-0000-4000-8000-00000000000a', 'mv-owner@example.test'),
  ('73737373-0000-4000-8000-00000000000b', 'mv-other@example.test');
do $$
begin
  perform public.top_up('73737373-0000-4000-8000-00000000000a', 10, 'mv-topup-a');
  perform public.top_up('73737373-0000-4000-8000-00000000000b', 10, 'mv-topup-b');
  perform public.record_usage('73737373-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1000, 200, 'mv-usage-a');
  perform public.record_usage('73737373-0000-4000-8000-00000000000b', 'gpt-4o-mini', 1000, 200, 'mv-usage-b');
end
$$;

-- ── anon ──────────────────────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select throws_ok($$select 1 from public.balance_movements$$, '42501', null, 'anon: select balance_movements is denied');
reset role;

-- ── The owner ─────────────────────────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"73737373-0000-4000-8000-00000000000a"}';
select results_eq($$select kind, reference from public.balance_movements order by source, id$$,
  $$values ('top_up'::text, 'mv-topup-a'::text), ('usage', 'mv-usage-a')$$, 'owner: their top-up and their usage charge, nothing else');
select is((select sum(amount) from public.balance_movements), (select balance from public.user_balances),
  'owner: their movements add up to their balance');
select is((select amount from public.balance_movements where kind = 'usage'), -0.00027::numeric,
  'owner: the charge is 1000 × 0.00000015 + 200 × 0.0000006, negated');
select throws_ok($$insert into public.balance_movements (source, id, user_id, kind, amount, currency, reference) values ('ledger', 1, '73737373-0000-4000-8000-00000000000a', 'top_up', 1000, 'USD', 'forged')$$,
  '55000', null, 'owner: insert through balance_movements is refused (a list, not a table)');
select throws_ok($$delete from public.balance_movements$$, '55000', null, 'owner: delete through balance_movements is refused');
reset role;

-- ── Another user ──────────────────────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"73737373-0000-4000-8000-00000000000b"}';
select is_empty($$select 1 from public.balance_movements where user_id = '73737373-0000-4000-8000-00000000000a'$$, 'other user: the owner''s movements are hidden');
select is((select count(*)::int from public.balance_movements), 2, 'other user: sees their own two');
reset role;

-- ── service_role ──────────────────────────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select is((select count(*)::int from public.balance_movements where user_id::text like '73737373%'), 4, 'service_role: reads every user''s movements');
select throws_ok($$update public.balance_movements set amount = 0$$, '55000', null, 'service_role: update through balance_movements is refused');
reset role;

SELECT * FROM finish();
ROLLBACK;
