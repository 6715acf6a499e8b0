-- 20251018000003_create_user_balance_trigger.sql
--
-- Balances, the ledger and signup: every user's prepaid balance (user_balances), the ledger of
-- every balance movement (ledger_entries), the operator's settings (billing_settings: the signup
-- grant) and the signup error log; the functions that read balances (check_balance,
-- my_balance), move them (top_up, adjust_balance) and prove them (balance_audit); and the
-- helpers every money function shares (caller check, validation, money as JSON). Part of the
-- 0.1.0 baseline (CHANGELOG.md).
--
-- Signup: every user gets a balance row at signup — 0, or the configurable signup grant
-- (billing_settings.signup_grant) recorded in the ledger. The trigger never makes a signup fail:
-- if the balance cannot be created, the error goes to public.signup_errors and
-- public.repair_missing_balances() creates what is missing later. Users who existed before this
-- migration are backfilled at the end. A user who has no row yet may create their own zero
-- balance (20251018000004).
--
-- Movements: every one is a ledger entry with an idempotency reference, written BEFORE the
-- balance row is touched, so the balance row stays locked for as short as possible.
-- Why the writers are SECURITY DEFINER: the invariant balance = sum(ledger) holds only if these
-- functions are the only writers, so no API role (not even service_role) has INSERT/UPDATE on
-- user_balances or ledger_entries (except the zero-balance self insert of 20251018000004); the
-- functions run as their owner and check their caller with private.assert_service_role().
--
-- Users of ledger entries and usage records: not foreign keys but set-based checks. The foreign
-- keys ledger_entries.user_id and usage_records.user_id → auth.users ran one query per inserted
-- row, each taking a FOR KEY SHARE lock on the user's auth.users row (a batch of 1,000 usage
-- records ran 2,000 of them: ~50 of its ~150 ms, docs/benchmarks.md "Set-based user checks"),
-- and batches charging the same users made every such lock a MultiXact. What replaces them,
-- with the same guarantees:
--   1. on insert: an AFTER INSERT … FOR EACH STATEMENT trigger looks every new row's user up in
--      ONE query over the statement's new rows (a transition table) and raises 23503
--      foreign_key_violation, like the foreign key did, when one is missing. Nothing is
--      written: the statement fails. It guards every writer, the money functions and anyone
--      inserting by hand (postgres in the SQL editor).
--   2. on user deletion: an AFTER DELETE trigger on auth.users deletes the user's ledger entries
--      and usage records, as ON DELETE CASCADE did.
--   3. a user deleted while a transaction records usage for them: the foreign key's row lock
--      made the deletion wait for that transaction. Now every writer locks a row of the user
--      before it commits: a charge or a top-up updates the user's balance row, and a zero-cost
--      usage record takes FOR KEY SHARE on the user's auth.users row (private.record_one,
--      record_usage_batch). The deletion cascades to the balance row, so it waits for that
--      transaction; the cleanup trigger (2) runs after the cascade (PostgreSQL fires a table's
--      row triggers in name order: "RI_ConstraintTrigger_…" before "on_auth_user_deleted") and
--      each of its statements takes a new snapshot, so it sees and deletes what the transaction
--      committed. A transaction that writes after the deletion fails: its balance update finds
--      no row, and re-creating it violates user_balances' foreign key.
--      tests/test_user_integrity.py runs both orders on two connections.
-- user_balances keeps its foreign key to auth.users: one row per user, written rarely by
-- inserts. Storage: user_balances leaves half of each page free (fillfactor 50), so the update
-- of a balance usually stays on its page (a HOT update, no new index entry), and autovacuum
-- visits it after 1,000 + 5 % of rows changed instead of 50 + 20 %: it is small and written on
-- every charge.
--
-- ┌ Error catalog: every code the baseline's functions raise (20251018000001 … 20251130000012),
-- │ with its HTTP status under PostgREST (PTnnn → nnn; 22xxx → 400; P0001 → 400; 42501 → 401
-- │ anon / 403 authenticated; others → 500). app/errors.py maps each to a Python error
-- │ (tests/test_error_mapping.py checks this table against both):
-- │  SQLSTATE  message                HTTP  when
-- │  22023     invalid_usage          400   bad usage field; detail names the field (request_id,
-- │                                         user_id, model, input_tokens, output_tokens,
-- │                                         cached_input_tokens, metadata, occurred_at,
-- │                                         latency_ms, status)
-- │  22023     invalid_amount         400   money amount null / NaN / ±Infinity / out of range /
-- │                                         more than 12 decimals / wrong sign; detail names it
-- │  22023     invalid_argument       400   other bad argument (reference, reason, ttl_seconds,
-- │                                         records); detail names it
-- │  22023     invalid_currency       400   a price's currency is not one of the ISO-4217 codes
-- │                                         we ship (private.check_currency)
-- │  22023     alias_loop             400   an alias would point back to itself, or a chain is
-- │                                         longer than 8
-- │  PT401     not_authenticated      401   my_balance() / a key function without a signed-in user
-- │  PT401     invalid_api_key        401   authorize_request: malformed or unknown key
-- │  PT401     expired_api_key        401   authorize_request: the key has expired
-- │  PT401     revoked_api_key        401   authorize_request: the key was revoked
-- │  PT402     insufficient_balance   402   reserve_credit() / authorize_request: available < amount
-- │  PT403     model_not_allowed      403   authorize_request: the key may not use the model
-- │  PT403     subscription_inactive  403   authorize_request: no active, unexpired subscription
-- │  PT404     user_not_found         404   no such auth.users row
-- │  PT404     reservation_not_found  404   settle_usage / release_reservation: unknown request_id
-- │  PT404     usage_not_found        404   refund_usage: unknown request_id
-- │  PT404     plan_not_found         404   create_api_key: no such active plan
-- │  PT404     api_key_not_found      404   revoke_api_key / usage_report: no such key visible
-- │  PT404     subscription_not_found 404   set_subscription_status: no such subscription
-- │  PT404     request_not_found      404   complete_request: unknown request_id
-- │  PT409     idempotency_conflict   409   request_id / reference reused with another payload
-- │  PT409     invalid_status_change  409   set_subscription_status: not from this status
-- │  PT422     unknown_model          422   no price row for (provider, model)
-- │  PT422     ambiguous_model        422   provider omitted and the model exists at several
-- │  PT422     price_missing          422   the model's pricing_type is 'missing' (never $0)
-- │  PT422     currency_mismatch      422   price currency differs from the balance currency
-- │  PT429     quota_exceeded         429   authorize_request: a subscription quota is used up
-- │                                         (hint = when to retry, for Retry-After)
-- │  PT429     spend_limit_exceeded   429   authorize_request: the key's spend limit (hint)
-- │  PT503     no_route               503   authorize_request: no active, configured route
-- │  P0001     consolidation_would_lose_prices 400  the guarded drop of the legacy price storage
-- │  42501     forbidden              401/403 caller check of a SECURITY DEFINER function
-- │  55000     immutable_row          500   UPDATE of a ledger entry, price_audit row or usage
-- │                                         record (outside reprice_usage)
-- └  XX000     key_generation_failed  500   create_api_key could not draw an unused prefix
-- Money in JSON results is a STRING holding the exact decimal (e.g. "0.0025"), never a float.

-- ── billing_settings: one row of operator settings ──────────────────────────────────────────
create table public.billing_settings (
  id boolean primary key default true,
  signup_grant numeric(24,12) not null default 0,
  currency text not null default 'USD',
  updated_at timestamptz not null default now(),
  constraint billing_settings_id_single_row check (id),
  constraint billing_settings_signup_grant_range check (signup_grant >= 0 and signup_grant < 1e6),
  constraint billing_settings_currency_iso check (currency ~ '^[A-Z]{3}$')
);
comment on column public.billing_settings.signup_grant is
  'Credit given to every new user at signup, recorded in the ledger as kind signup_grant.';
insert into public.billing_settings (id) values (true) on conflict (id) do nothing;

-- ── user_balances ────────────────────────────────────────────────────────────────────────────
create table public.user_balances (
  user_id uuid primary key references auth.users (id) on delete cascade,
  balance numeric(24,12) not null default 0,
  currency text not null default 'USD',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint user_balances_balance_not_nan check (balance < 1e12),
  constraint user_balances_currency_iso check (currency ~ '^[A-Z]{3}$')
) with (fillfactor = 50, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_scale_factor = 0.05);
comment on column public.user_balances.balance is
  'Exact prepaid balance; may go negative (usage is a fact). Always = sum(ledger_entries.amount).';

-- ── ledger_entries: every balance movement, append-only ────────────────────────────────────
create table public.ledger_entries (
  id bigint generated always as identity primary key,
  -- An auth.users id: checked per statement by ledger_entries_user_exists (see the header).
  user_id uuid not null,
  kind text not null,
  amount numeric(24,12) not null,
  currency text not null default 'USD',
  -- Idempotency key of the movement: the request_id for usage, the payment reference for a
  -- top-up, 'signup:<user_id>' for the signup grant. Unique per kind.
  reference text not null,
  description text,
  created_at timestamptz not null default now(),
  constraint ledger_entries_kind_reference_key unique (kind, reference),
  constraint ledger_entries_kind_valid
    check (kind in ('signup_grant', 'top_up', 'usage', 'adjustment', 'refund')),
  constraint ledger_entries_amount_range check (amount <> 0 and amount > -1e12 and amount < 1e12),
  constraint ledger_entries_amount_sign check (
    case kind when 'usage' then amount < 0 when 'adjustment' then true else amount > 0 end),
  constraint ledger_entries_reference_length check (length(reference) between 1 and 255),
  constraint ledger_entries_currency_iso check (currency ~ '^[A-Z]{3}$')
);
create index ledger_entries_user_id_created_at_idx
  on public.ledger_entries (user_id, created_at desc);

-- ── signup_errors: what the signup trigger could not do (signup itself never fails) ─────────
create table public.signup_errors (
  id bigint generated always as identity primary key,
  -- No FK: the log must survive whatever happened to the user row.
  user_id uuid,
  sqlstate text,
  message text,
  detail text,
  created_at timestamptz not null default now(),
  resolved_at timestamptz
);
create index signup_errors_unresolved_idx on public.signup_errors (created_at)
  where resolved_at is null;

-- ── Trigger functions ──────────────────────────────────────────────────────────────────────
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

-- ── Triggers ───────────────────────────────────────────────────────────────────────────────
-- History is append-only.
create trigger ledger_entries_forbid_update before update on public.ledger_entries
  for each row execute function private.forbid_update();
create trigger ledger_entries_user_exists
  after insert on public.ledger_entries referencing new table as new_rows
  for each statement execute function private.assert_rows_have_users();
create trigger on_auth_user_created
  after insert on auth.users
  for each row execute function private.handle_new_user();
-- The name must sort after "RI_ConstraintTrigger_…" (see 3. in the header).
create trigger on_auth_user_deleted
  after delete on auth.users
  for each row execute function private.delete_user_usage();

-- ── Row level security ─────────────────────────────────────────────────────────────────────
alter table public.billing_settings enable row level security;
alter table public.user_balances enable row level security;
alter table public.ledger_entries enable row level security;
alter table public.signup_errors enable row level security;

-- ── Policies (service_role bypasses RLS; its reach is set by the grants below) ─────────────
create policy "Users read their own balance" on public.user_balances
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "Users read their own ledger entries" on public.ledger_entries
  for select to authenticated using ((select auth.uid()) = user_id);
-- billing_settings and signup_errors: no policy, so anon/authenticated see nothing even if a
-- grant were added by mistake. The self insert of a zero balance: 20251018000004.

-- ── Functions: shared helpers ──────────────────────────────────────────────────────────────
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

-- private.check_amount(field, amount, allow_zero, allow_negative): raises invalid_amount.
create function private.check_amount(
  field text, amount numeric, allow_zero boolean default false,
  allow_negative boolean default false
) returns numeric
language plpgsql immutable set search_path = '' as $$
begin
  if amount is null or amount in ('NaN'::numeric, 'Infinity'::numeric, '-Infinity'::numeric) then
    raise exception using errcode = '22023', message = 'invalid_amount',
      detail = format('%s must be a finite number', field);
  end if;
  if amount <> round(amount, 12) then
    raise exception using errcode = '22023', message = 'invalid_amount',
      detail = format('%s has more than 12 decimal places', field);
  end if;
  if abs(amount) >= 1e9 then
    raise exception using errcode = '22023', message = 'invalid_amount',
      detail = format('%s must be less than 1000000000 in absolute value', field);
  end if;
  if (amount = 0 and not allow_zero) or (amount < 0 and not allow_negative) then
    raise exception using errcode = '22023', message = 'invalid_amount',
      detail = format('%s must be %s', field,
        case when allow_negative then 'non-zero' when allow_zero then '>= 0' else '> 0' end);
  end if;
  return amount;
end
$$;

-- private.check_text(field, value, message): non-blank, at most 255 characters.
create function private.check_text(field text, value text, message text default 'invalid_argument')
returns text
language plpgsql immutable set search_path = '' as $$
begin
  if value is null or btrim(value) = '' or length(value) > 255 then
    raise exception using errcode = '22023', message = check_text.message,
      detail = format('%s must be a non-empty string of at most 255 characters', field);
  end if;
  return value;
end
$$;

-- private.money(amount) → exact decimal text without trailing zeros, for JSON results.
-- THE rounding-free money format; the hot JSON builders inline its one expression
-- (trim_scale(x)::text) instead of calling it once per amount.
create function private.money(amount numeric) returns text
language plpgsql immutable set search_path = '' as $$
begin
  return trim_scale(amount)::text;
end
$$;

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
-- held = unexpired 'held' reservations; an expired hold simply stops counting. A user without
-- a balance row reads as 0 USD.
create function private.balance_snapshot(user_id uuid) returns jsonb
language plpgsql stable set search_path = '' as $$
declare
  own_balance numeric;
  own_currency text;
  held_total numeric;
begin
  select b.balance, b.currency into own_balance, own_currency
  from public.user_balances b where b.user_id = balance_snapshot.user_id;
  select coalesce(sum(r.amount), 0) into held_total from public.credit_reservations r
  where r.user_id = balance_snapshot.user_id and r.status = 'held' and r.expires_at > now();
  own_balance := coalesce(own_balance, 0);
  return jsonb_build_object('user_id', balance_snapshot.user_id,
    'balance', trim_scale(own_balance)::text, 'held', trim_scale(held_total)::text,
    'available', trim_scale(own_balance - held_total)::text,
    'currency', coalesce(own_currency, 'USD'));
end
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

-- public.user_id_for_email(email) → the user's id (text). Who may call: service_role.
-- DEFINER: auth.users is not readable by API roles. Raises: 42501 forbidden,
-- 22023 invalid_argument, PT404 user_not_found.
create function public.user_id_for_email(email text) returns text
language plpgsql stable security definer set search_path = '' as $$
declare
  found_id uuid;
begin
  perform private.assert_service_role();
  perform private.check_text('email', user_id_for_email.email);
  select u.id into found_id from auth.users u
  where lower(u.email) = lower(btrim(user_id_for_email.email)) and u.deleted_at is null;
  if found_id is null then
    raise exception using errcode = 'PT404', message = 'user_not_found',
      detail = format('no user with email %s', user_id_for_email.email);
  end if;
  return found_id::text;
end
$$;

-- ── Grants (explicit: there are no default privileges) ─────────────────────────────────────
revoke all on public.billing_settings, public.user_balances, public.ledger_entries,
  public.signup_errors from public, anon, authenticated, service_role;
grant select, update on public.billing_settings to service_role;
grant select on public.user_balances to authenticated, service_role;
grant select on public.ledger_entries to authenticated, service_role;
grant select, update on public.signup_errors to service_role;

revoke execute on function private.assert_rows_have_users() from public;
revoke execute on function private.delete_user_usage() from public;
revoke execute on function private.create_user_balance(uuid) from public;
revoke execute on function private.handle_new_user() from public;
revoke execute on function private.assert_service_role() from public;
revoke execute on function private.check_amount(text, numeric, boolean, boolean) from public;
revoke execute on function private.check_text(text, text, text) from public;
revoke execute on function private.money(numeric) from public;
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
revoke execute on function public.repair_missing_balances() from public, anon, authenticated;
revoke execute on function public.user_id_for_email(text) from public;

grant execute on function public.check_balance(uuid, numeric) to service_role;
grant execute on function public.my_balance() to authenticated;
grant execute on function public.top_up(uuid, numeric, text) to service_role;
grant execute on function public.adjust_balance(uuid, numeric, text, text) to service_role;
grant execute on function public.balance_audit() to service_role;
grant execute on function public.repair_missing_balances() to service_role;
grant execute on function public.user_id_for_email(text) to service_role;

-- ── Backfill: users who signed up before this migration ───────────────────────────────────
select private.create_user_balance(u.id)
from auth.users u
where not exists (select 1 from public.user_balances b where b.user_id = u.id);
