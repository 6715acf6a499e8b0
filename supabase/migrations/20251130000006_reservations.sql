-- 20251130000006_reservations.sql
--
-- Credit reservations: hold an estimate before the provider call (reserve_credit), then either
-- charge the real usage and release the hold (settle_usage) or just release it after a failed
-- call (release_reservation). Part of the 0.1.0 baseline (CHANGELOG.md).
-- available = balance − unexpired holds. An expired hold stops counting by itself (every reader
-- filters expires_at > now()): a crashed caller can never leak a hold for longer than its ttl,
-- and no cleanup job is needed.
-- Concurrency: reserve_credit locks the user's balance row (FOR UPDATE) while it computes
-- available and inserts the hold, so N concurrent reservations can never overshoot the balance;
-- a retry racing its still-uncommitted original looks the hold up again once it has the lock
-- (READ COMMITTED: that statement sees what the original committed) and is replayed or refused.
-- Every path of settle_usage closes the hold (held → settled, closed_at) in the same
-- transaction, also when the usage of its request_id was already recorded (private.record_one).
-- Error codes (catalog: 20251018000003): 22023 invalid_amount / invalid_argument /
-- invalid_usage, PT402 insufficient_balance, PT404 user_not_found / reservation_not_found,
-- PT409 idempotency_conflict, PT422 (settle_usage: as record_usage), 42501 forbidden.

-- ── credit_reservations: hold before the provider call, settle or release after ─────────────
create table public.credit_reservations (
  id bigint generated always as identity primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  request_id text not null,
  amount numeric(24,12) not null,
  -- Optional: lets settle_usage() omit the model it was reserved for.
  provider_id text,
  model_id text,
  -- 'held' rows count against the balance only while expires_at > now(): an expired hold stops
  -- counting by itself, no job needed.
  status text not null default 'held',
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  closed_at timestamptz,
  constraint credit_reservations_request_id_key unique (request_id),
  constraint credit_reservations_request_id_length check (length(request_id) between 1 and 255),
  constraint credit_reservations_amount_range check (amount > 0 and amount < 1e12),
  constraint credit_reservations_status_valid check (status in ('held', 'settled', 'released')),
  constraint credit_reservations_closed_at_set check ((status = 'held') = (closed_at is null))
);
create index credit_reservations_user_id_held_idx
  on public.credit_reservations (user_id, expires_at) where status = 'held';

-- ── Row level security and policies ───────────────────────────────────────────────────────
alter table public.credit_reservations enable row level security;
create policy "Users read their own credit reservations" on public.credit_reservations
  for select to authenticated using ((select auth.uid()) = user_id);

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.reservation_result(r) → {reservation_id, request_id, user_id, amount, provider,
-- model, status, expires_at}; status 'expired' for a held row past its expiry.
create function private.reservation_result(r public.credit_reservations)
returns jsonb
language plpgsql stable set search_path = '' as $$
begin
  return jsonb_build_object('reservation_id', r.id, 'request_id', r.request_id,
    'user_id', r.user_id, 'amount', trim_scale(r.amount)::text, 'provider', r.provider_id,
    'model', r.model_id,
    'status', case when r.status = 'held' and r.expires_at <= now() then 'expired'
                   else r.status end,
    'expires_at', r.expires_at);
end
$$;

-- public.reserve_credit(user_id, request_id, amount, ttl_seconds = 600, model = null,
-- provider = null) → reservation_result keys + {balance, held, available, replayed}.
-- Same request_id, user and amount again → the original hold (replayed = true), also when the
-- retry raced the original; otherwise PT409. model/provider are optional and let settle_usage
-- omit them.
-- Who may call: service_role. DEFINER: writes reservations, which no API role may do.
-- Raises: 42501, 22023 invalid_argument / invalid_amount, PT404 user_not_found,
-- PT422 unknown_model / ambiguous_model / price_missing (when model is given),
-- PT402 insufficient_balance, PT409 idempotency_conflict.
create function public.reserve_credit(
  user_id uuid, request_id text, amount numeric, ttl_seconds integer default 600,
  model text default null, provider text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  hold public.credit_reservations;
  locked_balance numeric(24,12);
  held_total numeric;
begin
  perform private.assert_service_role();
  perform private.check_text('request_id', reserve_credit.request_id);
  perform private.check_amount('amount', reserve_credit.amount);
  if ttl_seconds is null or ttl_seconds not between 1 and 86400 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'ttl_seconds must be between 1 and 86400';
  end if;
  perform private.assert_user_exists(reserve_credit.user_id);
  if reserve_credit.model is not null then
    -- Refuse early a hold for a model that could not be charged afterwards.
    perform private.chargeable_price(reserve_credit.provider, reserve_credit.model, now());
  end if;

  select r.* into hold from public.credit_reservations r
  where r.request_id = reserve_credit.request_id;
  if not found then
    -- Serialise this user's reservations on their balance row.
    select b.balance into locked_balance from public.user_balances b
    where b.user_id = reserve_credit.user_id for update;
    if not found then
      perform private.create_user_balance(reserve_credit.user_id);
      select b.balance into locked_balance from public.user_balances b
      where b.user_id = reserve_credit.user_id for update;
    end if;
    -- The lock may have been held by this request's own original (a retry racing it): now that
    -- it is granted, this new statement sees the hold the original committed. Replay it rather
    -- than count it against the retry.
    select r.* into hold from public.credit_reservations r
    where r.request_id = reserve_credit.request_id;
    if not found then
      select coalesce(sum(r.amount), 0) into held_total from public.credit_reservations r
      where r.user_id = reserve_credit.user_id and r.status = 'held' and r.expires_at > now();
      if locked_balance - held_total < reserve_credit.amount then
        raise exception using errcode = 'PT402', message = 'insufficient_balance',
          detail = format('available %s is less than the requested %s',
                          trim_scale(locked_balance - held_total),
                          trim_scale(reserve_credit.amount));
      end if;
      insert into public.credit_reservations (user_id, request_id, amount, provider_id,
                                              model_id, expires_at)
      values (reserve_credit.user_id, reserve_credit.request_id, reserve_credit.amount,
              reserve_credit.provider, reserve_credit.model,
              now() + make_interval(secs => reserve_credit.ttl_seconds))
      on conflict on constraint credit_reservations_request_id_key do nothing
      returning * into hold;
      if hold.id is not null then
        return private.reservation_result(hold) || jsonb_build_object(
          'balance', private.money(locked_balance),
          'held', private.money(held_total + reserve_credit.amount),
          'available', private.money(locked_balance - held_total - reserve_credit.amount),
          'replayed', false);
      end if;
      -- Another user's reservation took this request_id meanwhile: conflict below.
      select r.* into hold from public.credit_reservations r
      where r.request_id = reserve_credit.request_id;
    end if;
  end if;

  if hold.user_id <> reserve_credit.user_id or hold.amount <> reserve_credit.amount then
    raise exception using errcode = 'PT409', message = 'idempotency_conflict',
      detail = format('request_id %s was already reserved with another payload',
                      reserve_credit.request_id);
  end if;
  return private.reservation_result(hold)
    || (private.balance_snapshot(hold.user_id) - 'user_id' - 'currency')
    || jsonb_build_object('replayed', true);
end
$$;

-- public.settle_usage(request_id, input_tokens, output_tokens, cached_input_tokens = 0,
-- model = null, provider = null, metadata = '{}', occurred_at = now(), latency_ms = null,
-- status = 'success') → record_usage's keys + {reservation_id, reserved_amount,
-- reservation_status}. Records the usage at its REAL cost for the reservation's user (model and
-- provider default to the reserved ones), charges it and releases the hold, in one
-- transaction. Idempotent like record_usage. Settling an expired or released hold still records
-- the usage (a fact). Who may call: service_role (DEFINER, as record_usage).
-- Raises: PT404 reservation_not_found, and everything record_usage raises.
create function public.settle_usage(
  request_id text, input_tokens bigint, output_tokens bigint,
  cached_input_tokens bigint default 0, model text default null, provider text default null,
  metadata jsonb default '{}'::jsonb, occurred_at timestamptz default now(),
  latency_ms integer default null, status text default 'success'
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  hold public.credit_reservations;
  result jsonb;
begin
  perform private.assert_service_role();
  perform private.check_text('request_id', settle_usage.request_id, 'invalid_usage');
  select r.* into hold from public.credit_reservations r
  where r.request_id = settle_usage.request_id;
  if not found then
    raise exception using errcode = 'PT404', message = 'reservation_not_found',
      detail = format('no reservation for request_id %s', settle_usage.request_id);
  end if;
  result := private.record_one(hold.user_id, coalesce(settle_usage.model, hold.model_id),
    settle_usage.input_tokens, settle_usage.output_tokens, settle_usage.request_id,
    coalesce(settle_usage.provider, hold.provider_id), settle_usage.cached_input_tokens,
    settle_usage.metadata, settle_usage.occurred_at, settle_usage.latency_ms,
    settle_usage.status, hold.id);
  select r.* into hold from public.credit_reservations r where r.id = hold.id;
  return result || jsonb_build_object('reservation_id', hold.id,
    'reserved_amount', private.money(hold.amount),
    'reservation_status', private.reservation_result(hold) ->> 'status');
end
$$;

-- public.release_reservation(request_id) → reservation_result keys + {released}: released is
-- true when this call released a held (or expired) hold, false when it was already settled or
-- released (idempotent). Who may call: service_role (DEFINER: writes reservations).
-- Raises: 42501, 22023 invalid_argument, PT404 reservation_not_found.
create function public.release_reservation(request_id text) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  hold public.credit_reservations;
begin
  perform private.assert_service_role();
  perform private.check_text('request_id', release_reservation.request_id);
  update public.credit_reservations r set status = 'released', closed_at = now()
  where r.request_id = release_reservation.request_id and r.status = 'held'
  returning r.* into hold;
  if found then
    return private.reservation_result(hold) || jsonb_build_object('released', true);
  end if;
  select r.* into hold from public.credit_reservations r
  where r.request_id = release_reservation.request_id;
  if not found then
    raise exception using errcode = 'PT404', message = 'reservation_not_found',
      detail = format('no reservation for request_id %s', release_reservation.request_id);
  end if;
  return private.reservation_result(hold) || jsonb_build_object('released', false);
end
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke all on public.credit_reservations from public, anon, authenticated, service_role;
grant select on public.credit_reservations to authenticated, service_role;

revoke execute on function private.reservation_result(public.credit_reservations) from public;
revoke execute on function public.reserve_credit(uuid, text, numeric, integer, text, text)
  from public, anon, authenticated;
revoke execute on function public.settle_usage(text, bigint, bigint, bigint, text, text, jsonb,
  timestamptz, integer, text) from public, anon, authenticated;
revoke execute on function public.release_reservation(text) from public, anon, authenticated;
grant execute on function public.reserve_credit(uuid, text, numeric, integer, text, text)
  to service_role;
grant execute on function public.settle_usage(text, bigint, bigint, bigint, text, text, jsonb,
  timestamptz, integer, text) to service_role;
grant execute on function public.release_reservation(text) to service_role;
