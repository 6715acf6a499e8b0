-- 71-balance-audit-identity.sql — balance_audit() checks exactly the identity of
-- 20261129200001: balance = Σ ledger_entries.amount − Σ coalesce(original_cost, cost) of the
-- user's usage records. It stays empty through every money path, and it reports each way the
-- identity can break behind the functions' back: a usage cost or a first charge changed with
-- the triggers off, a usage record or a ledger entry deleted or forged, a balance edited. The
-- charge a record carries can never be changed by an UPDATE, not even during a re-price.
BEGIN;
SELECT plan(17);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('71717171-0000-4000-8000-00000000000a', 'audit-a@example.test'),
  ('71717171-0000-4000-8000-00000000000b', 'audit-b@example.test');
insert into public.model_pricing (provider_id, model_id, price_per_input_token, price_per_output_token)
values ('audit-co', 'audit-model', 0.000001, 0.000002);
do $$
begin
  perform public.top_up('71717171-0000-4000-8000-00000000000a', 5, 'audit-fixture-a');
  perform public.top_up('71717171-0000-4000-8000-00000000000b', 5, 'audit-fixture-b');
  perform public.adjust_balance('71717171-0000-4000-8000-00000000000b', -1, 'goodwill reversed', 'audit-adj-b');
  perform public.record_usage('71717171-0000-4000-8000-00000000000a', 'audit-model', 1000, 0, 'audit-r1');   -- 0.001
  perform public.record_usage('71717171-0000-4000-8000-00000000000a', 'audit-model', 2000, 0, 'audit-r2');   -- 0.002
  perform public.record_usage('71717171-0000-4000-8000-00000000000b', 'audit-model', 3000, 0, 'audit-r3');   -- 0.003
  perform public.refund_usage('audit-r2', 'provider error', 0.0005);
end
$$;

select is_empty($$select * from public.balance_audit() where user_id::text like '71717171%'$$, 'after top-ups, an adjustment, charges and a refund the audit is empty');
select results_eq($$select balance from public.user_balances where user_id = '71717171-0000-4000-8000-00000000000a'$$,
  $$values (5 - 0.001 - 0.002 + 0.0005)$$, 'user a: ledger (5 + 0.0005) minus charges (0.003), exactly');

-- ── A usage cost changed behind the functions' back ─────────────────────────────────────
-- With the guard trigger off: what the table's owner editing rows by hand can do. The old audit
-- compared balances with the ledger only and saw nothing.
alter table public.usage_records disable trigger usage_records_forbid_update;
update public.usage_records set cost = 0.0001 where request_id = 'audit-r1';
select results_eq($$select user_id, difference from public.balance_audit() where user_id::text like '71717171%'$$,
  $$values ('71717171-0000-4000-8000-00000000000a'::uuid, -0.0009::numeric)$$,
  'a usage cost lowered by hand shows: the balance is 0.0009 below what its lines add up to');
update public.usage_records set cost = 0.001 where request_id = 'audit-r1';
alter table public.usage_records enable trigger usage_records_forbid_update;
select is_empty($$select * from public.balance_audit() where user_id::text like '71717171%'$$, 'restored, the audit is empty again');

-- ── A usage record deleted, a ledger entry forged or deleted, a balance edited ────────────
create temporary table kept as select * from public.usage_records where request_id = 'audit-r3';
delete from public.usage_records where request_id = 'audit-r3';
select results_eq($$select user_id, difference from public.balance_audit() where user_id::text like '71717171%'$$,
  $$values ('71717171-0000-4000-8000-00000000000b'::uuid, -0.003::numeric)$$, 'a deleted usage record shows: its charge is missing from the lines');
insert into public.usage_records overriding system value select * from kept;
select is_empty($$select * from public.balance_audit() where user_id::text like '71717171%'$$, 'the record back, the audit is empty');
insert into public.ledger_entries (user_id, kind, amount, reference) values ('71717171-0000-4000-8000-00000000000b', 'top_up', 7, 'audit-forged');
select results_eq($$select user_id, difference from public.balance_audit() where user_id::text like '71717171%'$$,
  $$values ('71717171-0000-4000-8000-00000000000b'::uuid, -7::numeric)$$, 'a forged ledger entry shows');
delete from public.ledger_entries where reference = 'audit-forged';
delete from public.ledger_entries where reference = 'audit-adj-b';
select results_eq($$select user_id, difference from public.balance_audit() where user_id::text like '71717171%'$$,
  $$values ('71717171-0000-4000-8000-00000000000b'::uuid, -1::numeric)$$, 'a deleted ledger entry shows');
insert into public.ledger_entries (user_id, kind, amount, reference, description) values ('71717171-0000-4000-8000-00000000000b', 'adjustment', -1, 'audit-adj-b', 'goodwill reversed');
select is_empty($$select * from public.balance_audit() where user_id::text like '71717171%'$$, 'the entry back, the audit is empty');
update public.user_balances set balance = balance + 1 where user_id = '71717171-0000-4000-8000-00000000000b';
select results_eq($$select user_id, difference from public.balance_audit() where user_id::text like '71717171%'$$,
  $$values ('71717171-0000-4000-8000-00000000000b'::uuid, 1::numeric)$$, 'an edited balance shows');
select results_eq($$select ledger_total from public.balance_audit() where user_id::text like '71717171%'$$,
  $$select sum(amount) from public.balance_movements where user_id = '71717171-0000-4000-8000-00000000000b'$$,
  'ledger_total is the sum of the user''s balance_movements');
update public.user_balances set balance = balance - 1 where user_id = '71717171-0000-4000-8000-00000000000b';

-- ── The charge on a usage record never changes ──────────────────────────────────────────
select throws_ok($$update public.usage_records set cost = 0 where request_id = 'audit-r1'$$, '55000', 'immutable_row', 'a usage cost is not updated outside a re-price');
set local tokenmeter.repricing = 'on';
select throws_ok($$update public.usage_records set original_cost = 0 where request_id = 'audit-r1'$$, '55000', 'immutable_row',
  'even while re-pricing, original_cost must keep the first charge (set to 0: refused)');
select throws_ok($$update public.usage_records set cost = 0.0005 where request_id = 'audit-r1'$$, '55000', 'immutable_row',
  'even while re-pricing, a new cost must keep the first charge in original_cost');
select lives_ok($$update public.usage_records set cost = 0.0005, original_cost = 0.001 where request_id = 'audit-r1'$$,
  'a re-price that keeps the first charge in original_cost is allowed');
select lives_ok($$update public.usage_records set cost = 0.0007, original_cost = 0.001 where request_id = 'audit-r1'$$,
  'a second re-price keeps the same first charge');
set local tokenmeter.repricing = 'off';
select is_empty($$select * from public.balance_audit() where user_id::text like '71717171%'$$,
  'the line is the first charge: a re-priced cost leaves the identity alone (reprice_usage posts the difference as an adjustment)');

SELECT * FROM finish();
ROLLBACK;
