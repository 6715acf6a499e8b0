-- 74-ledger-line-user-deletion.sql — deleting a user deletes their usage charges and ledger
-- entries together (private.delete_user_usage, 20251201000004): no movement of theirs is left
-- in balance_movements, and the other users' identity is untouched.
BEGIN;
SELECT plan(7);

insert into auth.users (id, email) values
  ('74747474-0000-4000-8000-00000000000a', 'del-a@example.test'),
  ('74747474-0000-4000-8000-00000000000b', 'del-b@example.test');
do $$
begin
  perform public.top_up(u, 3, 'del-topup-' || u)
  from unnest(array['74747474-0000-4000-8000-00000000000a', '74747474-0000-4000-8000-00000000000b']::uuid[]) u;
  perform public.record_usage('74747474-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1000, 200, 'del-a1');
  perform public.record_usage('74747474-0000-4000-8000-00000000000a', 'gpt-4o', 1000, 200, 'del-a2');
  perform public.refund_usage('del-a2', 'test');
  perform public.record_usage('74747474-0000-4000-8000-00000000000b', 'gpt-4o-mini', 1000, 200, 'del-b1');
end
$$;

select is((select count(*)::int from public.balance_movements where user_id = '74747474-0000-4000-8000-00000000000a'), 4,
  'before: a has a top-up, two charges and a refund');
select is_empty($$select * from public.balance_audit() where user_id::text like '74747474%'$$, 'before: the audit is empty');
delete from auth.users where id = '74747474-0000-4000-8000-00000000000a';
select is_empty($$select 1 from public.balance_movements where user_id = '74747474-0000-4000-8000-00000000000a'$$, 'after: none of a''s movements is left');
select is_empty($$select 1 from public.usage_records where user_id = '74747474-0000-4000-8000-00000000000a'$$, 'after: none of a''s usage records');
select is_empty($$select 1 from public.ledger_entries where user_id = '74747474-0000-4000-8000-00000000000a'$$, 'after: none of a''s ledger entries');
select is((select count(*)::int from public.balance_movements where user_id = '74747474-0000-4000-8000-00000000000b'), 2, 'b keeps their top-up and charge');
select is_empty($$select * from public.balance_audit() where user_id::text like '74747474%'$$, 'after: the audit is still empty');

SELECT * FROM finish();
ROLLBACK;
