-- 20251018000004_add_user_balance_insert_policy.sql
--
-- Fallback for a missing balance row (the signup trigger logged an error and nobody ran
-- repair_missing_balances() yet): a signed-in user may create THEIR OWN row, and only with a
-- zero balance. Two guards, either of which suffices:
--   * the column grant: authenticated may set only user_id, so balance and currency always take
--     their defaults (0, USD);
--   * the policy: the row must be the caller's and its balance exactly 0.
-- No UPDATE or DELETE is granted to anyone: balances change only through the money functions.

create policy "Users create their own zero balance" on public.user_balances
  for insert to authenticated
  with check ((select auth.uid()) = user_id and balance = 0);

grant insert (user_id) on public.user_balances to authenticated;
