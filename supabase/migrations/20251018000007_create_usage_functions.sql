-- 20251018000007_create_usage_functions.sql
--
-- Metering: record_usage (one request) and record_usage_batch (many, one transaction).
-- A usage record is a fact and is never dropped: it is charged at its real cost even if the
-- balance goes negative (the result says so); enforcement happens before the provider call
-- (check_balance / reserve_credit). Idempotent on request_id: the same payload again returns
-- the original record (replayed = true, no second charge); another payload raises PT409.
-- Write order, for the shortest lock on a busy user's balance row: usage row, ledger row,
-- (reservation), balance row LAST. The batch inserts in request_id order and updates balances
-- in user_id order, so concurrent batches cannot deadlock.
-- Error codes: see the catalog at the top of 20251018000005_create_pricing_functions.sql.
-- This file raises: 22023 invalid_usage / invalid_argument, PT404 user_not_found,
-- PT409 idempotency_conflict, PT422 unknown_model / ambiguous_model / price_missing /
-- currency_mismatch, 42501 forbidden.

-- ── Types ─────────────────────────────────────────────────────────────────────────────────
-- A validated, priced usage record not yet written.
create type private.usage_item as (
  user_id uuid,
  request_id text,
  input_tokens bigint,
  output_tokens bigint,
  cached_input_tokens bigint,
  metadata jsonb,
  occurred_at timestamptz,
  latency_ms integer,
  status text,
  price public.model_pricing,
  cost numeric
);

-- ── Private helpers ───────────────────────────────────────────────────────────────────────
-- private.prepare_usage(...) → usage_item: prices the (already validated) record. Raises what
-- private.chargeable_price raises.
create function private.prepare_usage(
  user_id uuid, model text, input_tokens bigint, output_tokens bigint, request_id text,
  provider text, cached_input_tokens bigint, metadata jsonb, occurred_at timestamptz,
  latency_ms integer, status text
) returns private.usage_item
language plpgsql stable set search_path = '' as $$
declare
  item private.usage_item;
begin
  item.price := private.chargeable_price(prepare_usage.provider, prepare_usage.model,
                                         prepare_usage.occurred_at);
  item.user_id := prepare_usage.user_id;
  item.request_id := prepare_usage.request_id;
  item.input_tokens := prepare_usage.input_tokens;
  item.output_tokens := prepare_usage.output_tokens;
  item.cached_input_tokens := prepare_usage.cached_input_tokens;
  item.metadata := prepare_usage.metadata;
  item.occurred_at := prepare_usage.occurred_at;
  item.latency_ms := prepare_usage.latency_ms;
  item.status := prepare_usage.status;
  item.cost := private.usage_cost(item.price, prepare_usage.input_tokens,
                                  prepare_usage.output_tokens, prepare_usage.cached_input_tokens);
  return item;
end
$$;

-- private.insert_usage(item) → the new usage row, or a row of NULLs when request_id already
-- exists (ON CONFLICT DO NOTHING waits for a concurrent insert of the same id, so two retries
-- racing each other never both charge). Writes the usage ledger entry when cost > 0.
create function private.insert_usage(item private.usage_item) returns public.usage_records
language plpgsql set search_path = '' as $$
declare
  inserted public.usage_records;
begin
  insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
    output_tokens, cached_input_tokens, price_per_input_token, price_per_output_token,
    price_per_cached_input_token, price_per_request, pricing_id, cost, currency, latency_ms,
    status, metadata, occurred_at)
  values (item.user_id, item.request_id, (item.price).provider_id, (item.price).model_id,
    item.input_tokens, item.output_tokens, item.cached_input_tokens,
    (item.price).price_per_input_token, (item.price).price_per_output_token,
    coalesce((item.price).price_per_cached_input_token, (item.price).price_per_input_token),
    (item.price).price_per_request, (item.price).id, item.cost, (item.price).currency,
    item.latency_ms, item.status, item.metadata, item.occurred_at)
  on conflict on constraint usage_records_request_id_key do nothing
  returning * into inserted;
  if inserted.id is not null and item.cost > 0 then
    insert into public.ledger_entries (user_id, kind, amount, currency, reference)
    values (item.user_id, 'usage', -item.cost, (item.price).currency, item.request_id);
  end if;
  return inserted;
end
$$;

-- private.same_usage(existing, ...) → whether a retry carries the same payload: same user,
-- model (and provider when given) and token counts. metadata, occurred_at, latency and status
-- are not compared: retries legitimately differ there.
create function private.same_usage(
  existing public.usage_records, user_id uuid, provider text, model text, input_tokens bigint,
  output_tokens bigint, cached_input_tokens bigint
) returns boolean
language sql immutable set search_path = '' as $$
  select existing.user_id = same_usage.user_id
     and existing.model_id = same_usage.model
     and (same_usage.provider is null or existing.provider_id = same_usage.provider)
     and existing.input_tokens = same_usage.input_tokens
     and existing.output_tokens = same_usage.output_tokens
     and existing.cached_input_tokens = same_usage.cached_input_tokens
$$;

-- private.usage_result(row, balance, replayed) → the JSON returned for a usage record.
create function private.usage_result(u public.usage_records, balance numeric, replayed boolean)
returns jsonb
language sql immutable set search_path = '' as $$
  select jsonb_build_object('usage_id', u.id, 'request_id', u.request_id, 'user_id', u.user_id,
    'provider', u.provider_id, 'model', u.model_id, 'input_tokens', u.input_tokens,
    'output_tokens', u.output_tokens, 'cached_input_tokens', u.cached_input_tokens,
    'price_per_input_token', private.money(u.price_per_input_token),
    'price_per_output_token', private.money(u.price_per_output_token),
    'price_per_cached_input_token', private.money(u.price_per_cached_input_token),
    'price_per_request', private.money(u.price_per_request),
    'cost', private.money(u.cost), 'currency', u.currency, 'status', u.status,
    'occurred_at', u.occurred_at, 'balance', private.money(coalesce(balance, 0)),
    'negative_balance', coalesce(balance, 0) < 0, 'replayed', replayed)
$$;

-- private.replay_usage(existing, ...) → the original result, or PT409 when the payload differs.
create function private.replay_usage(
  existing public.usage_records, user_id uuid, provider text, model text, input_tokens bigint,
  output_tokens bigint, cached_input_tokens bigint
) returns jsonb
language plpgsql stable set search_path = '' as $$
begin
  if not private.same_usage(existing, user_id, provider, model, input_tokens, output_tokens,
                            cached_input_tokens) then
    raise exception using errcode = 'PT409', message = 'idempotency_conflict',
      detail = format('request_id %s was already recorded with another payload',
                      existing.request_id);
  end if;
  return private.usage_result(existing,
    (select b.balance from public.user_balances b where b.user_id = existing.user_id), true);
end
$$;

-- private.record_one(..., reservation_id) → usage result JSON. The body of record_usage and
-- settle_usage; reservation_id (or null) is the hold to mark settled.
create function private.record_one(
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
begin
  perform private.check_usage(user_id, model, input_tokens, output_tokens, request_id,
    cached_input_tokens, metadata, occurred_at, latency_ms, status);
  -- A retry is answered from the stored record, even if the price list changed since.
  select u.* into existing from public.usage_records u where u.request_id = record_one.request_id;
  if found then
    return private.replay_usage(existing, user_id, provider, model, input_tokens,
                                output_tokens, cached_input_tokens);
  end if;
  perform private.assert_user_exists(user_id);
  item := private.prepare_usage(user_id, model, input_tokens, output_tokens, request_id,
    provider, cached_input_tokens, metadata, occurred_at, latency_ms, status);

  inserted := private.insert_usage(item);
  if inserted.id is null then  -- a concurrent retry committed first
    select u.* into existing from public.usage_records u
    where u.request_id = record_one.request_id;
    return private.replay_usage(existing, user_id, (item.price).provider_id,
      (item.price).model_id, input_tokens, output_tokens, cached_input_tokens);
  end if;
  if reservation_id is not null then
    update public.credit_reservations r set status = 'settled', closed_at = now()
    where r.id = record_one.reservation_id and r.status = 'held';
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

-- ── Functions (API) ────────────────────────────────────────────────────────────────────────
-- public.record_usage(...) → {usage_id, request_id, user_id, provider, model, input_tokens,
-- output_tokens, cached_input_tokens, price_per_input_token, price_per_output_token,
-- price_per_cached_input_token, price_per_request, cost, currency, status, occurred_at,
-- balance, negative_balance, replayed}. input_tokens INCLUDES cached_input_tokens.
-- Who may call: service_role. DEFINER: the only writer of usage, ledger and balances.
create function public.record_usage(
  user_id uuid, model text, input_tokens bigint, output_tokens bigint, request_id text,
  provider text default null, cached_input_tokens bigint default 0,
  metadata jsonb default '{}'::jsonb, occurred_at timestamptz default now(),
  latency_ms integer default null, status text default 'success'
) returns jsonb
language plpgsql security definer set search_path = '' as $$
begin
  perform private.assert_service_role();
  return private.record_one(user_id, model, input_tokens, output_tokens, request_id, provider,
    cached_input_tokens, metadata, occurred_at, latency_ms, status, null);
end
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.prepare_usage(uuid, text, bigint, bigint, text, text, bigint,
  jsonb, timestamptz, integer, text) from public;
revoke execute on function private.insert_usage(private.usage_item) from public;
revoke execute on function private.same_usage(public.usage_records, uuid, text, text, bigint,
  bigint, bigint) from public;
revoke execute on function private.usage_result(public.usage_records, numeric, boolean)
  from public;
revoke execute on function private.replay_usage(public.usage_records, uuid, text, text, bigint,
  bigint, bigint) from public;
revoke execute on function private.record_one(uuid, text, bigint, bigint, text, text, bigint,
  jsonb, timestamptz, integer, text, bigint) from public;

revoke execute on function public.record_usage(uuid, text, bigint, bigint, text, text, bigint,
  jsonb, timestamptz, integer, text) from public, anon, authenticated;
grant execute on function public.record_usage(uuid, text, bigint, bigint, text, text, bigint,
  jsonb, timestamptz, integer, text) to service_role;
