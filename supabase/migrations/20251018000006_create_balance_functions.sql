-- 20251018000006_create_balance_functions.sql
--
-- Balances: read them (check_balance, my_balance), move them (top_up, adjust_balance) and prove
-- them (balance_audit). Every movement is a ledger entry with an idempotency reference, written
-- BEFORE the balance row is touched, so the balance row stays locked for as short as possible.
-- Error codes: see the catalog at the top of 20251018000005_create_pricing_functions.sql.
-- This file raises: 22023 invalid_amount / invalid_argument, PT401 not_authenticated,
-- PT404 user_not_found, PT409 idempotency_conflict, PT422 currency_mismatch, 42501 forbidden.
--
-- Why the writers are SECURITY DEFINER: the invariant balance = sum(ledger) holds only if these
-- functions are the only writers, so no API role (not even service_role) has INSERT/UPDATE on
-- user_balances or ledger_entries; the functions run as their owner and check their caller with
-- private.assert_service_role().

-- ── Private helpers ───────────────────────────────────────────────────────────────────────
-- private.assert_user_exists(user_id): raises PT404 user_not_found.
create function private.assert_user_exists(user_id uuid) returns void
language plpgsql stable set search_path = '' as $$
begin
  if assert_user_exists.user_id is null then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'user_id is required';
  end if;
  if not exists (select 1 from auth.users u where u.id = assert_user_exists.user_id) then
    raise exception using errcode = 'PT404', message = 'user_not_found',
      detail = format('no user %s', assert_user_exists.user_id);
  end if;
end
$$;

-- private.apply_balance_delta(user_id, delta, currency) → the new balance. The LAST write of
-- every money function (it takes the row lock that serialises one user's movements). Creates a
-- missing balance row first (with the signup grant), as repair_missing_balances() would.
create function private.apply_balance_delta(user_id uuid, delta numeric, currency text)
returns numeric
language plpgsql set search_path = '' as $$
declare
  new_balance numeric(24,12);
begin
  update public.user_balances b
  set balance = b.balance + apply_balance_delta.delta, updated_at = now()
  where b.user_id = apply_balance_delta.user_id and b.currency = apply_balance_delta.currency
  returning b.balance into new_balance;
  if found then
    return new_balance;
  end if;
  if exists (select 1 from public.user_balances b where b.user_id = apply_balance_delta.user_id) then
    raise exception using errcode = 'PT422', message = 'currency_mismatch',
      detail = format('the balance of user %s is not kept in %s', apply_balance_delta.user_id,
                      apply_balance_delta.currency);
  end if;
  perform private.create_user_balance(apply_balance_delta.user_id);
  update public.user_balances b
  set balance = b.balance + apply_balance_delta.delta, updated_at = now()
  where b.user_id = apply_balance_delta.user_id and b.currency = apply_balance_delta.currency
  returning b.balance into new_balance;
  if not found then
    raise exception using errcode = 'PT422', message = 'currency_mismatch',
      detail = format('the balance of user %s is not kept in %s', apply_balance_delta.user_id,
                      apply_balance_delta.currency);
  end if;
  return new_balance;
end
$$;

-- private.balance_snapshot(user_id) → {user_id, balance, held, available, currency}.
-- held = unexpired 'held' reservations; an expired hold simply stops counting.
create function private.balance_snapshot(user_id uuid) returns jsonb
language sql stable set search_path = '' as $$
  with bal as (
    select coalesce((select b.balance from public.user_balances b
                     where b.user_id = balance_snapshot.user_id), 0) as balance,
           coalesce((select b.currency from public.user_balances b
                     where b.user_id = balance_snapshot.user_id), 'USD') as currency,
           coalesce((select sum(r.amount) from public.credit_reservations r
                     where r.user_id = balance_snapshot.user_id and r.status = 'held'
                       and r.expires_at > now()), 0) as held
  )
  select jsonb_build_object('user_id', balance_snapshot.user_id,
    'balance', trim_scale(bal.balance)::text, 'held', trim_scale(bal.held)::text,
    'available', trim_scale(bal.balance - bal.held)::text, 'currency', bal.currency)
  from bal
$$;

-- private.post_ledger_entry(kind, user_id, amount, reference, description) → result JSON.
-- Idempotent on (kind, reference): the same movement again returns the original entry with
-- replayed = true; the same reference with another user/amount/description raises PT409.
create function private.post_ledger_entry(
  kind text, user_id uuid, amount numeric, reference text, description text
) returns jsonb
language plpgsql set search_path = '' as $$
declare
  entry public.ledger_entries;
  new_balance numeric(24,12);
  replayed boolean := false;
begin
  perform private.check_amount('amount', post_ledger_entry.amount, false,
                               post_ledger_entry.kind = 'adjustment');
  perform private.check_text('reference', post_ledger_entry.reference);
  perform private.assert_user_exists(post_ledger_entry.user_id);

  insert into public.ledger_entries (user_id, kind, amount, reference, description)
  values (post_ledger_entry.user_id, post_ledger_entry.kind, post_ledger_entry.amount,
          post_ledger_entry.reference, post_ledger_entry.description)
  on conflict on constraint ledger_entries_kind_reference_key do nothing
  returning * into entry;

  if entry.id is null then
    select l.* into entry from public.ledger_entries l
    where l.kind = post_ledger_entry.kind and l.reference = post_ledger_entry.reference;
    if entry.user_id <> post_ledger_entry.user_id or entry.amount <> post_ledger_entry.amount
       or entry.description is distinct from post_ledger_entry.description then
      raise exception using errcode = 'PT409', message = 'idempotency_conflict',
        detail = format('%s reference %s was already used with another payload',
                        post_ledger_entry.kind, post_ledger_entry.reference);
    end if;
    replayed := true;
    select b.balance into new_balance from public.user_balances b
    where b.user_id = entry.user_id;
  else
    new_balance := private.apply_balance_delta(entry.user_id, entry.amount, entry.currency);
  end if;

  return jsonb_build_object('ledger_entry_id', entry.id, 'user_id', entry.user_id,
    'kind', entry.kind, 'amount', private.money(entry.amount), 'currency', entry.currency,
    'reference', entry.reference, 'description', entry.description,
    'created_at', entry.created_at, 'balance', private.money(coalesce(new_balance, 0)),
    'replayed', replayed);
end
$$;

-- ── Functions (API) ────────────────────────────────────────────────────────────────────────
-- public.check_balance(user_id, estimated_cost = 0) → {user_id, balance, held, available,
-- currency, estimated_cost, allowed}; allowed = available >= estimated_cost.
-- Who may call: service_role. DEFINER: reads any user's balance through private helpers.
-- Raises: 42501 forbidden, 22023 invalid_amount (estimated_cost), PT404 user_not_found.
create function public.check_balance(user_id uuid, estimated_cost numeric default 0)
returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  snapshot jsonb;
begin
  perform private.assert_service_role();
  perform private.check_amount('estimated_cost', check_balance.estimated_cost, true);
  perform private.assert_user_exists(check_balance.user_id);
  snapshot := private.balance_snapshot(check_balance.user_id);
  return snapshot || jsonb_build_object(
    'estimated_cost', private.money(check_balance.estimated_cost),
    'allowed', (snapshot ->> 'available')::numeric >= check_balance.estimated_cost);
end
$$;

-- public.my_balance() → {user_id, balance, held, available, currency} of the signed-in user.
-- Who may call: authenticated. SECURITY INVOKER: RLS already limits the caller to their own
-- balance and reservations. Raises: PT401 not_authenticated.
create function public.my_balance() returns jsonb
language plpgsql stable set search_path = '' as $$
declare
  me uuid := auth.uid();
  own_balance numeric;
  own_currency text;
  held_total numeric;
begin
  if me is null then
    raise exception using errcode = 'PT401', message = 'not_authenticated',
      detail = 'my_balance() needs a signed-in user';
  end if;
  select b.balance, b.currency into own_balance, own_currency
  from public.user_balances b where b.user_id = me;
  select coalesce(sum(r.amount), 0) into held_total from public.credit_reservations r
  where r.user_id = me and r.status = 'held' and r.expires_at > now();
  own_balance := coalesce(own_balance, 0);
  return jsonb_build_object('user_id', me, 'balance', trim_scale(own_balance)::text,
    'held', trim_scale(held_total)::text,
    'available', trim_scale(own_balance - held_total)::text,
    'currency', coalesce(own_currency, 'USD'));
end
$$;

-- public.top_up(user_id, amount, reference) → {ledger_entry_id, user_id, kind, amount, currency,
-- reference, description, created_at, balance, replayed}. amount > 0; reference = the payment's
-- id (idempotency key). Who may call: service_role. DEFINER: see the header.
-- Raises: 42501, 22023 invalid_amount / invalid_argument, PT404 user_not_found, PT409.
create function public.top_up(user_id uuid, amount numeric, reference text) returns jsonb
language plpgsql security definer set search_path = '' as $$
begin
  perform private.assert_service_role();
  return private.post_ledger_entry('top_up', top_up.user_id, top_up.amount, top_up.reference,
                                   null);
end
$$;

-- public.adjust_balance(user_id, amount, reason, reference) → same shape as top_up, with
-- description = reason. amount non-zero, either sign. Who may call: service_role (DEFINER).
-- Raises: as top_up, plus 22023 invalid_argument (reason).
create function public.adjust_balance(user_id uuid, amount numeric, reason text, reference text)
returns jsonb
language plpgsql security definer set search_path = '' as $$
begin
  perform private.assert_service_role();
  perform private.check_text('reason', adjust_balance.reason);
  return private.post_ledger_entry('adjustment', adjust_balance.user_id, adjust_balance.amount,
                                   adjust_balance.reference, adjust_balance.reason);
end
$$;

-- public.balance_audit() → rows (user_id, balance, ledger_total, difference) for every user
-- whose balance differs from the sum of their ledger entries. Always empty.
-- Who may call: service_role. SECURITY INVOKER (service_role reads both tables).
create function public.balance_audit()
returns table (user_id uuid, balance numeric, ledger_total numeric, difference numeric)
language sql stable set search_path = '' as $$
  select coalesce(b.user_id, l.user_id), coalesce(b.balance, 0), coalesce(l.total, 0),
         coalesce(b.balance, 0) - coalesce(l.total, 0)
  from public.user_balances b
  full join (select e.user_id, sum(e.amount) as total from public.ledger_entries e
             group by e.user_id) l on l.user_id = b.user_id
  where coalesce(b.balance, 0) <> coalesce(l.total, 0)
  order by 1
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.assert_user_exists(uuid) from public;
revoke execute on function private.apply_balance_delta(uuid, numeric, text) from public;
revoke execute on function private.balance_snapshot(uuid) from public;
revoke execute on function private.post_ledger_entry(text, uuid, numeric, text, text) from public;

revoke execute on function public.check_balance(uuid, numeric) from public, anon, authenticated;
revoke execute on function public.my_balance() from public, anon, service_role;
revoke execute on function public.top_up(uuid, numeric, text) from public, anon, authenticated;
revoke execute on function public.adjust_balance(uuid, numeric, text, text)
  from public, anon, authenticated;
revoke execute on function public.balance_audit() from public, anon, authenticated;

grant execute on function public.check_balance(uuid, numeric) to service_role;
grant execute on function public.my_balance() to authenticated;
grant execute on function public.top_up(uuid, numeric, text) to service_role;
grant execute on function public.adjust_balance(uuid, numeric, text, text) to service_role;
grant execute on function public.balance_audit() to service_role;
