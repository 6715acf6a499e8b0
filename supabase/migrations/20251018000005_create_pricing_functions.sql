-- 20251018000005_create_pricing_functions.sql
--
-- The single price lookup (public.price_for) and the private helpers every money function uses:
-- input validation, chargeable price, cost arithmetic, JSON money formatting.
--
-- ┌ Error catalog of the billing API (migrations 3, 5-10). Every code raised, with its HTTP status
-- │ under PostgREST (PTnnn → nnn; 22xxx → 400; 42501 → 401 anon / 403 authenticated):
-- │  SQLSTATE  message                HTTP  when
-- │  22023     invalid_usage          400   bad usage field; detail names the field (request_id,
-- │                                         user_id, model, input_tokens, output_tokens,
-- │                                         cached_input_tokens, metadata, occurred_at,
-- │                                         latency_ms, status)
-- │  22023     invalid_amount         400   money amount null / NaN / ±Infinity / out of range /
-- │                                         more than 12 decimals / wrong sign; detail names it
-- │  22023     invalid_argument       400   other bad argument (reference, reason, ttl_seconds,
-- │                                         records); detail names it
-- │  PT401     not_authenticated      401   my_balance() without a signed-in user
-- │  PT402     insufficient_balance   402   reserve_credit(): available < amount
-- │  PT404     user_not_found         404   no such auth.users row
-- │  PT404     reservation_not_found  404   settle_usage / release_reservation: unknown request_id
-- │  PT404     usage_not_found        404   refund_usage: unknown request_id
-- │  PT409     idempotency_conflict   409   request_id / reference reused with another payload
-- │  PT422     unknown_model          422   no price row for (provider, model)
-- │  PT422     ambiguous_model        422   provider omitted and the model exists at several
-- │  PT422     price_missing          422   the model's pricing_type is 'missing' (never $0)
-- │  PT422     currency_mismatch      422   price currency differs from the balance currency
-- │  42501     forbidden              401/403 caller check of a SECURITY DEFINER function
-- └  55000     immutable_row          500   UPDATE of a ledger entry or usage record
-- Money in JSON results is a STRING holding the exact decimal (e.g. "0.0025"), never a float.

-- ── Validation helpers (pure, no table access) ─────────────────────────────────────────────
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

-- private.check_usage(...): every usage field; raises invalid_usage naming the field.
-- Token caps: 0..10,000,000 per request; cached_input_tokens is part of input_tokens.
create function private.check_usage(
  user_id uuid, model text, input_tokens bigint, output_tokens bigint, request_id text,
  cached_input_tokens bigint, metadata jsonb, occurred_at timestamptz, latency_ms integer,
  status text
) returns void
language plpgsql stable set search_path = '' as $$
declare
  bad text;
begin
  bad := case
    when request_id is null or btrim(request_id) = '' or length(request_id) > 255
      then 'request_id must be a non-empty string of at most 255 characters'
    when user_id is null then 'user_id is required'
    when model is null or btrim(model) = '' or length(model) > 255
      then 'model must be a non-empty string of at most 255 characters'
    when input_tokens is null or input_tokens not between 0 and 10000000
      then 'input_tokens must be an integer between 0 and 10000000'
    when output_tokens is null or output_tokens not between 0 and 10000000
      then 'output_tokens must be an integer between 0 and 10000000'
    when cached_input_tokens is null or cached_input_tokens < 0
      or cached_input_tokens > input_tokens
      then 'cached_input_tokens must be between 0 and input_tokens'
    when metadata is null or jsonb_typeof(metadata) <> 'object'
      or pg_column_size(metadata) > 16384
      then 'metadata must be a JSON object of at most 16 kB'
    when occurred_at is null or not isfinite(occurred_at)
      or occurred_at > now() + interval '5 minutes'
      or occurred_at < now() - interval '400 days'
      then 'occurred_at must be a timestamp within the last 400 days, not in the future'
    when latency_ms is not null and latency_ms not between 0 and 86400000
      then 'latency_ms must be between 0 and 86400000'
    when status is null or status not in ('success', 'error', 'timeout', 'cancelled')
      then 'status must be one of success, error, timeout, cancelled'
  end;
  if bad is not null then
    raise exception using errcode = '22023', message = 'invalid_usage', detail = bad;
  end if;
end
$$;

-- private.money(amount) → exact decimal text without trailing zeros, for JSON results.
create function private.money(amount numeric) returns text
language sql immutable set search_path = '' as $$
  select trim_scale(amount)::text
$$;

-- ── The price lookup ──────────────────────────────────────────────────────────────────────
-- public.price_for(provider, model, at) → one public.model_pricing row (a JSON object over REST).
-- THE one place a price is looked up: record_usage, settle_usage and the batch call it, so the
-- pricing issue can add aliases and effective-dated versions (`at`) by replacing only this body.
-- provider null: the model_id must exist at exactly one provider.
-- Who may call: anon, authenticated, service_role (the price list is public).
-- Raises: invalid_usage (model), unknown_model, ambiguous_model (PT422).
-- Returns the row whatever its pricing_type; charging a 'missing' price is refused by
-- private.chargeable_price().
create function public.price_for(provider text, model text, at timestamptz default now())
returns public.model_pricing
language plpgsql stable set search_path = '' as $$
declare
  found_row public.model_pricing;
  matches integer := 0;
begin
  -- Inline check (no private helper): anon and authenticated run this as themselves.
  if price_for.model is null or btrim(price_for.model) = '' or length(price_for.model) > 255 then
    raise exception using errcode = '22023', message = 'invalid_usage',
      detail = 'model must be a non-empty string of at most 255 characters';
  end if;
  if price_for.provider is null then
    for found_row in
      select p.* from public.model_pricing p where p.model_id = price_for.model limit 2
    loop
      matches := matches + 1;
    end loop;
    if matches > 1 then
      raise exception using errcode = 'PT422', message = 'ambiguous_model',
        detail = format('model %s exists at several providers; pass provider', price_for.model);
    end if;
    -- matches = 1: found_row already holds the one row the loop fetched.
  else
    select p.* into found_row from public.model_pricing p
    where p.provider_id = price_for.provider and p.model_id = price_for.model;
    if found then
      matches := 1;
    end if;
  end if;
  if matches = 0 then
    raise exception using errcode = 'PT422', message = 'unknown_model',
      detail = format('no price for model %s at provider %s', price_for.model,
                      coalesce(price_for.provider, '(any)'));
  end if;
  return found_row;
end
$$;

-- private.chargeable_price(provider, model, at): price_for() plus the refusal to charge a
-- model whose price is missing. Raises what price_for raises, and price_missing.
create function private.chargeable_price(provider text, model text, at timestamptz)
returns public.model_pricing
language plpgsql stable set search_path = '' as $$
declare
  price public.model_pricing;
begin
  price := public.price_for(provider, model, at);
  if price.pricing_type = 'missing' or price.price_per_input_token is null
     or price.price_per_output_token is null then
    raise exception using errcode = 'PT422', message = 'price_missing',
      detail = format('model %s/%s has no known price; refusing to charge it as $0',
                      price.provider_id, price.model_id);
  end if;
  return price;
end
$$;

-- private.usage_cost(price, input, output, cached) → exact cost (scale 12, never rounded).
-- Uncached input at the input price, cached input at the cached price (input price when the
-- provider has no cache discount), output at the output price, plus the per-request price.
create function private.usage_cost(
  price public.model_pricing, input_tokens bigint, output_tokens bigint,
  cached_input_tokens bigint
) returns numeric
language sql immutable set search_path = '' as $$
  select (input_tokens - cached_input_tokens) * price.price_per_input_token
       + cached_input_tokens
         * coalesce(price.price_per_cached_input_token, price.price_per_input_token)
       + output_tokens * price.price_per_output_token
       + price.price_per_request
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.check_amount(text, numeric, boolean, boolean) from public;
revoke execute on function private.check_text(text, text, text) from public;
revoke execute on function private.check_usage(uuid, text, bigint, bigint, text, bigint, jsonb,
  timestamptz, integer, text) from public;
revoke execute on function private.money(numeric) from public;
revoke execute on function private.chargeable_price(text, text, timestamptz) from public;
revoke execute on function private.usage_cost(public.model_pricing, bigint, bigint, bigint)
  from public;
revoke execute on function public.price_for(text, text, timestamptz) from public;
grant execute on function public.price_for(text, text, timestamptz)
  to anon, authenticated, service_role;
