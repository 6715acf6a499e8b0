-- 20251201000002_plan_cached_helpers.sql
--
-- Hot-path helpers in PL/pgSQL instead of SQL, same signatures, same results.
-- Why: a `language sql` function with a SET clause (every billing function pins
-- search_path = '', 00-schema.sql checks it) can never be inlined, and PostgreSQL 15 keeps the
-- plan of a non-inlined SQL function only for the duration of the calling query: each new
-- statement that calls it parses and plans its body again (private.balance_snapshot() alone ran
-- at ~6,900 calls/s; private.money() cost ~6 µs per call against ~1 µs in PL/pgSQL). PL/pgSQL
-- keeps its plans for the whole session. The search_path pin stays on every function.
-- Converted: every `language sql` function on the record_usage / record_usage_batch /
-- reserve_credit / settle_usage / check_balance / estimate_cost paths, and price_json (price
-- admin). private.effective_price already was PL/pgSQL. Not converted (off the hot paths):
-- public.balance_audit, public.price_history and the consolidation helpers of 20251101000002.
-- Also: the JSON builders format money inline (trim_scale(x)::text, the body of
-- private.money) instead of calling private.money once per amount (5 calls per usage result),
-- and balance_snapshot reads the balance row once instead of twice.
-- Error codes: unchanged; none of these functions raises.

-- ── 20251018000005: money and the cost formula ─────────────────────────────────────────────
-- private.money(amount) → exact decimal text without trailing zeros, for JSON results.
-- THE rounding-free money format; the builders below inline its one expression.
create or replace function private.money(amount numeric) returns text
language plpgsql immutable set search_path = '' as $$
begin
  return trim_scale(amount)::text;
end
$$;

-- private.usage_cost(price, input, output, cached, images) → exact cost (formula in the header
-- of 20251101000005): the long-context tier, when input_tokens exceeds the threshold, replaces
-- the input and output prices for the whole request. Scale 12, never rounded.
create or replace function private.usage_cost(
  price public.model_pricing, input_tokens bigint, output_tokens bigint,
  cached_input_tokens bigint, images bigint
) returns numeric
language plpgsql immutable set search_path = '' as $$
declare
  input_price numeric := price.price_per_input_token;
  output_price numeric := price.price_per_output_token;
begin
  if coalesce(usage_cost.input_tokens > price.long_context_threshold, false) then
    input_price := price.price_per_input_token_above_threshold;
    output_price := price.price_per_output_token_above_threshold;
  end if;
  return (usage_cost.input_tokens - usage_cost.cached_input_tokens) * input_price
       + usage_cost.cached_input_tokens
         * coalesce(price.price_per_cached_input_token, input_price)
       + usage_cost.output_tokens * output_price
       + price.price_per_request
       + coalesce(usage_cost.images, 0) * price.price_per_image;
end
$$;

-- The 4-argument form (estimate_cost) is the same formula without images.
create or replace function private.usage_cost(
  price public.model_pricing, input_tokens bigint, output_tokens bigint,
  cached_input_tokens bigint
) returns numeric
language plpgsql immutable set search_path = '' as $$
begin
  return private.usage_cost(price, usage_cost.input_tokens, usage_cost.output_tokens,
                            usage_cost.cached_input_tokens, 0);
end
$$;

-- ── 20251018000006: balances ───────────────────────────────────────────────────────────────
-- private.balance_snapshot(user_id) → {user_id, balance, held, available, currency}.
-- held = unexpired 'held' reservations; an expired hold simply stops counting. A user without
-- a balance row reads as 0 USD.
create or replace function private.balance_snapshot(user_id uuid) returns jsonb
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

-- ── 20251018000007 / 20251201000001: usage ─────────────────────────────────────────────────
-- private.same_usage(existing, ...) → whether a retry carries the same payload: same user,
-- model (as priced or as the client sent it), provider when given (likewise) and token counts.
-- Always true or false, never NULL.
create or replace function private.same_usage(
  existing public.usage_records, user_id uuid, provider text, model text, input_tokens bigint,
  output_tokens bigint, cached_input_tokens bigint
) returns boolean
language plpgsql immutable set search_path = '' as $$
begin
  return coalesce(
       existing.user_id = same_usage.user_id
       and (existing.model_id = same_usage.model
            or coalesce(existing.requested_model = same_usage.model, false))
       and (same_usage.provider is null or existing.provider_id = same_usage.provider
            or coalesce(existing.requested_provider = same_usage.provider, false))
       and existing.input_tokens = same_usage.input_tokens
       and existing.output_tokens = same_usage.output_tokens
       and existing.cached_input_tokens = same_usage.cached_input_tokens,
     false);
end
$$;

-- private.usage_result(row, balance, replayed) → the JSON returned for a usage record
-- (money as private.money formats it).
create or replace function private.usage_result(
  u public.usage_records, balance numeric, replayed boolean
) returns jsonb
language plpgsql immutable set search_path = '' as $$
begin
  return jsonb_build_object('usage_id', u.id, 'request_id', u.request_id, 'user_id', u.user_id,
    'provider', u.provider_id, 'model', u.model_id, 'input_tokens', u.input_tokens,
    'output_tokens', u.output_tokens, 'cached_input_tokens', u.cached_input_tokens,
    'price_per_input_token', trim_scale(u.price_per_input_token)::text,
    'price_per_output_token', trim_scale(u.price_per_output_token)::text,
    'price_per_cached_input_token', trim_scale(u.price_per_cached_input_token)::text,
    'price_per_request', trim_scale(u.price_per_request)::text,
    'cost', trim_scale(u.cost)::text, 'currency', u.currency, 'status', u.status,
    'occurred_at', u.occurred_at,
    'balance', trim_scale(coalesce(usage_result.balance, 0))::text,
    'negative_balance', coalesce(usage_result.balance, 0) < 0,
    'replayed', usage_result.replayed);
end
$$;

-- ── 20251018000009: reservations ───────────────────────────────────────────────────────────
-- private.reservation_result(r) → {reservation_id, request_id, user_id, amount, provider,
-- model, status, expires_at}; status 'expired' for a held row past its expiry.
create or replace function private.reservation_result(r public.credit_reservations)
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

-- ── 20251101000004: price admin ────────────────────────────────────────────────────────────
-- private.price_json(p) → the JSON of one price version (money as exact decimal strings).
create or replace function private.price_json(p public.model_pricing) returns jsonb
language plpgsql immutable set search_path = '' as $$
begin
  return jsonb_build_object('version_id', p.id, 'provider', p.provider_id, 'model', p.model_id,
    'price_per_input_token', trim_scale(p.price_per_input_token)::text,
    'price_per_output_token', trim_scale(p.price_per_output_token)::text,
    'price_per_cached_input_token', trim_scale(p.price_per_cached_input_token)::text,
    'price_per_request', trim_scale(p.price_per_request)::text,
    'price_per_image', trim_scale(p.price_per_image)::text,
    'currency', p.currency, 'pricing_type', p.pricing_type,
    'pricing_source', p.pricing_source, 'source_detail', p.source_detail,
    'effective_from', p.effective_from,
    'long_context_threshold', p.long_context_threshold,
    'price_per_input_token_above_threshold',
      trim_scale(p.price_per_input_token_above_threshold)::text,
    'price_per_output_token_above_threshold',
      trim_scale(p.price_per_output_token_above_threshold)::text,
    'last_updated', p.last_updated);
end
$$;
