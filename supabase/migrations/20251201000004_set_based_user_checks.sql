-- 20251201000004_set_based_user_checks.sql
--
-- The user of every usage record and ledger entry is checked once per statement instead of
-- once per row, and the balance rows get room for in-place (HOT) updates.
-- Why: the foreign keys usage_records.user_id and ledger_entries.user_id → auth.users ran one
-- query per inserted row, and each took a FOR KEY SHARE lock on the user's auth.users row. A
-- batch of 1,000 records ran 2,000 of them: ~50 of its ~150 ms (docs/benchmarks.md, "Set-based
-- user checks"). Batches that charge the same users also made every such lock a MultiXact.
--
-- What replaces each foreign key, with the same guarantees:
--   1. on insert: an AFTER INSERT … FOR EACH STATEMENT trigger looks every new row's user up in
--      ONE query over the statement's new rows (a transition table) and raises 23503
--      foreign_key_violation, like the foreign key did, when one is missing. Nothing is
--      written: the statement fails. It guards every writer, the money functions and anyone
--      inserting by hand (postgres in the SQL editor).
--   2. on user deletion: an AFTER DELETE trigger on auth.users deletes the user's ledger entries
--      and usage records, as ON DELETE CASCADE did.
--   3. a user deleted while a transaction records usage for them: the foreign key's row lock
--      made the deletion wait for that transaction. Now every writer locks a row of the user
--      before it commits: a charge or a top-up updates the user's balance row (it always did),
--      and a zero-cost usage record takes FOR KEY SHARE on the user's auth.users row
--      (20251201000005, 20251201000006). The deletion cascades to the balance row, so it waits
--      for that transaction; the cleanup trigger (2) runs after the cascade (PostgreSQL fires a
--      table's row triggers in name order: "RI_ConstraintTrigger_…" before
--      "on_auth_user_deleted") and each of its statements takes a new snapshot, so it sees and
--      deletes what the transaction committed. A transaction that writes after the deletion
--      fails: its balance update finds no row, and re-creating it violates user_balances'
--      foreign key. tests/test_user_integrity.py runs both orders on two connections.
-- user_balances keeps its foreign key to auth.users: one row per user, written rarely by
-- inserts. credit_reservations keeps its own too (one row per reserve_credit call).
-- Storage: user_balances leaves half of each page free (fillfactor 50), so the update of a
-- balance usually stays on its page (a HOT update, no new index entry), and autovacuum visits it
-- after 1,000 + 5 % of rows changed instead of 50 + 20 %: it is small and written on every
-- charge.

-- ── Tables ────────────────────────────────────────────────────────────────────────────────
alter table public.usage_records drop constraint usage_records_user_id_fkey;
alter table public.ledger_entries drop constraint ledger_entries_user_id_fkey;

alter table public.user_balances set (fillfactor = 50, autovacuum_vacuum_threshold = 1000,
                                      autovacuum_vacuum_scale_factor = 0.05);

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.assert_rows_have_users() → trigger (AFTER INSERT FOR EACH STATEMENT, transition
-- table new_rows with a user_id column): raises 23503 foreign_key_violation naming the first
-- user_id of the statement that is not in auth.users. Runs as the inserting role (a money
-- function's owner, or postgres): both read auth.users.
create function private.assert_rows_have_users() returns trigger
language plpgsql set search_path = '' as $$
declare
  missing uuid;
begin
  select n.user_id into missing from new_rows n
  where not exists (select 1 from auth.users u where u.id = n.user_id)
  limit 1;
  if found then
    raise exception using errcode = '23503', message = format(
        'insert into %I.%I violates its user check', tg_table_schema, tg_table_name),
      detail = format('Key (user_id)=(%s) is not present in table "auth.users".', missing);
  end if;
  return null;
end
$$;

-- private.delete_user_usage() → trigger (AFTER DELETE FOR EACH ROW on auth.users): deletes the
-- user's ledger entries and usage records (what ON DELETE CASCADE did). DEFINER: the Auth
-- server deletes users as supabase_auth_admin, which has no privilege on those tables.
create function private.delete_user_usage() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  delete from public.ledger_entries l where l.user_id = old.id;
  delete from public.usage_records u where u.user_id = old.id;
  return null;
end
$$;

-- ── Triggers ──────────────────────────────────────────────────────────────────────────────
create trigger usage_records_user_exists
  after insert on public.usage_records referencing new table as new_rows
  for each statement execute function private.assert_rows_have_users();
create trigger ledger_entries_user_exists
  after insert on public.ledger_entries referencing new table as new_rows
  for each statement execute function private.assert_rows_have_users();
-- The name must sort after "RI_ConstraintTrigger_…" (see 3. above).
create trigger on_auth_user_deleted
  after delete on auth.users
  for each row execute function private.delete_user_usage();

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.assert_rows_have_users() from public;
revoke execute on function private.delete_user_usage() from public;
