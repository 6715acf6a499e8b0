-- 20251018000003_create_user_balance_trigger.sql
--
-- Every user gets a balance row at signup: 0, or the configurable signup grant
-- (billing_settings.signup_grant) recorded in the ledger. The trigger never makes a signup fail:
-- if the balance cannot be created, the error goes to public.signup_errors and
-- public.repair_missing_balances() creates what is missing later. Users who existed before this
-- migration are backfilled at the end.

-- ── Helpers ────────────────────────────────────────────────────────────────────────────────
-- private.assert_service_role(): the caller check of every SECURITY DEFINER money function.
-- Inside a SECURITY DEFINER function current_user is the owner, but the `role` setting still
-- holds the role the API switched to (PostgREST: `set local role service_role`). Direct database
-- sessions of the owner roles (SQL editor, migrations, pgbench) are allowed too.
-- Raises: 42501 forbidden.
create function private.assert_service_role() returns void
language plpgsql stable set search_path = '' as $$
declare
  caller text := coalesce(nullif(current_setting('role', true), 'none'), session_user::text);
begin
  if caller not in ('service_role', 'postgres', 'supabase_admin') then
    raise exception using errcode = '42501', message = 'forbidden',
      detail = format('role %s may not call this function; it is service_role only', caller);
  end if;
end
$$;

-- private.create_user_balance(user_id): creates the balance row with the signup grant and the
-- matching ledger entry, in the same transaction, so balance = sum(ledger) from the start.
-- Returns true when it created the row, false when the row already existed.
-- Runs as its caller (the DEFINER trigger / repair function / a money function).
create function private.create_user_balance(user_id uuid) returns boolean
language plpgsql set search_path = '' as $$
declare
  grant_amount numeric(24,12);
  grant_currency text;
begin
  select s.signup_grant, s.currency into grant_amount, grant_currency
  from public.billing_settings s where s.id;
  grant_amount := coalesce(grant_amount, 0);
  grant_currency := coalesce(grant_currency, 'USD');

  insert into public.user_balances (user_id, balance, currency)
  values (create_user_balance.user_id, grant_amount, grant_currency)
  on conflict on constraint user_balances_pkey do nothing;
  if not found then
    return false;
  end if;

  if grant_amount > 0 then
    insert into public.ledger_entries (user_id, kind, amount, currency, reference, description)
    values (create_user_balance.user_id, 'signup_grant', grant_amount, grant_currency,
            'signup:' || create_user_balance.user_id::text, 'signup grant');
  end if;
  return true;
end
$$;

-- private.handle_new_user(): AFTER INSERT trigger on auth.users.
-- SECURITY DEFINER because the Auth server inserts users as supabase_auth_admin, which has no
-- privileges on public tables; the function runs as its owner (postgres). Caller check: it
-- refuses to run outside an AFTER INSERT trigger on auth.users.
-- Never raises for a balance failure: the error is recorded in public.signup_errors instead.
create function private.handle_new_user() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_when <> 'AFTER' or tg_op <> 'INSERT' or tg_table_schema <> 'auth'
     or tg_table_name <> 'users' then
    raise exception using errcode = '42501', message = 'forbidden',
      detail = 'handle_new_user runs only as the AFTER INSERT trigger on auth.users';
  end if;

  begin
    perform private.create_user_balance(new.id);
  exception when others then
    declare
      err_state text;
      err_message text;
      err_detail text;
    begin
      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text,
        err_detail = pg_exception_detail;
      insert into public.signup_errors (user_id, sqlstate, message, detail)
      values (new.id, err_state, err_message, nullif(err_detail, ''));
    exception when others then
      -- Even the error log failed: still let the signup through, leave a trace in the log.
      raise warning 'handle_new_user: balance for % not created: % / %', new.id, err_message,
        sqlerrm;
    end;
  end;
  return null;
end
$$;

-- ── Trigger ────────────────────────────────────────────────────────────────────────────────
create trigger on_auth_user_created
  after insert on auth.users
  for each row execute function private.handle_new_user();

-- ── Functions (API) ────────────────────────────────────────────────────────────────────────
-- public.repair_missing_balances() → integer: creates the balance (with the signup grant) of
-- every user who has none, marks their signup_errors resolved and returns how many balances it
-- created. Who may call: service_role. SECURITY DEFINER because it reads auth.users and writes
-- balances/ledger, which service_role may not do directly. Raises: 42501 forbidden.
create function public.repair_missing_balances() returns integer
language plpgsql security definer set search_path = '' as $$
declare
  missing_user uuid;
  created integer := 0;
begin
  perform private.assert_service_role();
  for missing_user in
    select u.id from auth.users u
    where not exists (select 1 from public.user_balances b where b.user_id = u.id)
    order by u.id
  loop
    if private.create_user_balance(missing_user) then
      created := created + 1;
    end if;
  end loop;
  update public.signup_errors e set resolved_at = now()
  where e.resolved_at is null
    and exists (select 1 from public.user_balances b where b.user_id = e.user_id);
  return created;
end
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.assert_service_role() from public;
revoke execute on function private.create_user_balance(uuid) from public;
revoke execute on function private.handle_new_user() from public;
revoke execute on function public.repair_missing_balances() from public, anon, authenticated;
grant execute on function public.repair_missing_balances() to service_role;

-- ── Backfill: users who signed up before this migration ───────────────────────────────────
select private.create_user_balance(u.id)
from auth.users u
where not exists (select 1 from public.user_balances b where b.user_id = u.id);
