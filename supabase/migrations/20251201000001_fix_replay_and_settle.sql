-- 20251201000001_fix_replay_and_settle.sql
--
-- Four idempotency / settlement bugs, fixed by replacing function bodies (same signatures):
--   1. private.same_usage returned NULL (not false) when the client had sent the exact model or
--      provider name (requested_model / requested_provider stored NULL), so
--      `if not private.same_usage(...)` in replay_usage did not raise: a retry naming ANOTHER
--      model or provider was answered as a replay. NULL is now never "same"; a retry naming the
--      alias / pattern the original used still is.
--   2. settle_usage left the hold counting when the usage of its request_id was already
--      recorded (record_usage first, or a concurrent settle): only the insert path of
--      private.record_one closed the hold. Every path now closes it (held → settled, closed_at),
--      in the same transaction, idempotently (an already settled or released hold is left as
--      it is).
--   3. reserve_credit: a retry racing its still-uncommitted original did not find the hold,
--      waited for the balance row lock, then counted the original's (now committed) hold against
--      itself and raised insufficient_balance. The hold is looked up again after the lock is
--      granted (READ COMMITTED: that statement sees what the original committed), then replayed
--      or refused with PT409.
--   4. record_usage_batch priced every record before looking for a stored one, so a retry whose
--      price had since gone missing / changed failed instead of replaying. Fixed where the batch
--      is rewritten anyway: 20251201000003_set_based_usage_batch.sql answers a stored request_id
--      from the stored record (or PT409) before any pricing, as record_usage does.
-- Error codes: unchanged (catalog at the top of 20251018000005_create_pricing_functions.sql).

-- ── 1. same_usage: never NULL ──────────────────────────────────────────────────────────────
-- private.same_usage(existing, ...) → whether a retry carries the same payload: same user,
-- model (as priced or as the client sent it), provider when given (likewise) and token counts.
-- Always true or false, never NULL (a NULL requested_* column means "the client sent the priced
-- name", not "unknown").
create or replace function private.same_usage(
  existing public.usage_records, user_id uuid, provider text, model text, input_tokens bigint,
  output_tokens bigint, cached_input_tokens bigint
) returns boolean
language sql immutable set search_path = '' as $$
  select coalesce(
       existing.user_id = same_usage.user_id
       and (existing.model_id = same_usage.model
            or coalesce(existing.requested_model = same_usage.model, false))
       and (same_usage.provider is null or existing.provider_id = same_usage.provider
            or coalesce(existing.requested_provider = same_usage.provider, false))
       and existing.input_tokens = same_usage.input_tokens
       and existing.output_tokens = same_usage.output_tokens
       and existing.cached_input_tokens = same_usage.cached_input_tokens,
     false)
$$;

-- ── 2. record_one: the hold is closed on every path ─────────────────────────────────────────
-- private.record_one(..., reservation_id) → usage result JSON. The body of record_usage and
-- settle_usage; reservation_id (or null) is the hold to mark settled, whether this call
-- recorded the usage or found it already recorded (replay). Raises what check_usage,
-- replay_usage (PT409) and prepare_usage raise; nothing is written then.
create or replace function private.record_one(
  user_id uuid, model text, input_tokens bigint, output_tokens bigint, request_id text,
  provider text, cached_input_tokens bigint, metadata jsonb, occurred_at timestamptz,
  latency_ms integer, status text, reservation_id bigint
) returns jsonb
language plpgsql set search_path = '' as $$
declare
  existing public.usage_records;
  inserted public.usage_records;
  item private.usage_item;
  new_balance numeric(24,12);
  replayed jsonb;
begin
  perform private.check_usage(user_id, model, input_tokens, output_tokens, request_id,
    cached_input_tokens, metadata, occurred_at, latency_ms, status);
  -- A retry is answered from the stored record, even if the price list changed since.
  select u.* into existing from public.usage_records u where u.request_id = record_one.request_id;
  if found then
    replayed := private.replay_usage(existing, user_id, provider, model, input_tokens,
                                     output_tokens, cached_input_tokens);
  else
    perform private.assert_user_exists(user_id);
    item := private.prepare_usage(user_id, model, input_tokens, output_tokens, request_id,
      provider, cached_input_tokens, metadata, occurred_at, latency_ms, status);
    inserted := private.insert_usage(item);
    if inserted.id is null then  -- a concurrent retry committed first
      select u.* into existing from public.usage_records u
      where u.request_id = record_one.request_id;
      replayed := private.replay_usage(existing, user_id, (item.price).provider_id,
        (item.price).model_id, input_tokens, output_tokens, cached_input_tokens);
    end if;
  end if;
  -- Settling closes the hold however the usage came to be recorded (before the balance row,
  -- which stays the last lock taken).
  if reservation_id is not null then
    update public.credit_reservations r set status = 'settled', closed_at = now()
    where r.id = record_one.reservation_id and r.status = 'held';
  end if;
  if replayed is not null then
    return replayed;
  end if;
  if item.cost > 0 then
    new_balance := private.apply_balance_delta(user_id, -item.cost, (item.price).currency);
  else
    select b.balance into new_balance from public.user_balances b
    where b.user_id = record_one.user_id;
  end if;
  return private.usage_result(inserted, new_balance, false);
end
$$;

-- ── 3. reserve_credit: look again after the lock ───────────────────────────────────────────
-- public.reserve_credit(user_id, request_id, amount, ttl_seconds = 600, model = null,
-- provider = null) → reservation_result keys + {balance, held, available, replayed}.
-- Contract unchanged (20251018000009): same request_id, user and amount again → the original
-- hold (replayed = true), also when the retry raced the original; otherwise PT409.
-- Who may call: service_role. DEFINER: writes reservations, which no API role may do.
-- Raises: 42501, 22023 invalid_argument / invalid_amount, PT404 user_not_found,
-- PT422 unknown_model / ambiguous_model / price_missing (when model is given),
-- PT402 insufficient_balance, PT409 idempotency_conflict.
create or replace function public.reserve_credit(
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
