-- 20251101000005_cost_formula_tiers_images.sql
--
-- The cost formula gains per-image prices and the long-context tier, and usage records snapshot
-- the prices actually used and the name the client asked for (an alias or pattern):
--
--   p = the version in effect at occurred_at; if p.long_context_threshold is set and
--       input_tokens > threshold, the *_above_threshold input and output prices replace the
--       base ones for the WHOLE request (LiteLLM / Gemini semantics: the tier is chosen by the
--       prompt size, not applied to the tokens beyond it). Cached input keeps its own price
--       when the version has one, else it costs the (tier's) input price.
--   cost = (input_tokens - cached_input_tokens) * input_price
--        + cached_input_tokens * coalesce(cached_price, input_price)
--        + output_tokens * output_price
--        + price_per_request
--        + images * price_per_image
-- Exact at scale 12, never rounded. images comes from metadata.images (an integer 0..100000;
-- absent = 0): record_usage keeps its signature and JSON keys.
-- usage_records: the price columns now hold the prices actually used (tier applied), plus
-- price_per_image, images, long_context, requested_model / requested_provider, and the reprice
-- bookkeeping (original_cost, repriced_at; migration 7).
-- Replaces (create or replace, same signatures): private.usage_cost, private.prepare_usage,
-- private.insert_usage, private.same_usage. Raises: 22023 invalid_usage (metadata.images).

-- ── usage_records ──────────────────────────────────────────────────────────────────────────
alter table public.usage_records
  add column price_per_image numeric(20,12) not null default 0,
  add column images integer not null default 0,
  add column long_context boolean not null default false,
  add column requested_model text,
  add column requested_provider text,
  add column original_cost numeric(24,12),
  add column repriced_at timestamptz,
  add constraint usage_records_images_range check (images between 0 and 100000);
comment on column public.usage_records.requested_model is
  'The model name the client sent when it differs from model_id (alias or pattern).';
comment on column public.usage_records.long_context is
  'The long-context tier applied: the price columns hold the above-threshold prices.';
comment on column public.usage_records.original_cost is
  'The cost first charged, kept when reprice_usage() changes cost (NULL = never repriced).';

alter type private.usage_item add attribute images integer;
alter type private.usage_item add attribute requested_model text;
alter type private.usage_item add attribute requested_provider text;

-- ── The formula ────────────────────────────────────────────────────────────────────────────
-- private.effective_price(price, input_tokens) → the price with the long-context tier applied.
create function private.effective_price(price public.model_pricing, input_tokens bigint)
returns public.model_pricing
language plpgsql immutable set search_path = '' as $$
begin
  if price.long_context_threshold is not null
     and effective_price.input_tokens > price.long_context_threshold then
    price.price_per_input_token := price.price_per_input_token_above_threshold;
    price.price_per_output_token := price.price_per_output_token_above_threshold;
  end if;
  return price;
end
$$;

-- private.usage_cost(price, input, output, cached, images) → exact cost (formula above).
create function private.usage_cost(
  price public.model_pricing, input_tokens bigint, output_tokens bigint,
  cached_input_tokens bigint, images bigint
) returns numeric
language sql immutable set search_path = '' as $$
  select (input_tokens - cached_input_tokens) * t.input_price
       + cached_input_tokens * coalesce(price.price_per_cached_input_token, t.input_price)
       + output_tokens * t.output_price
       + price.price_per_request
       + coalesce(images, 0) * price.price_per_image
  from (select case when long_context then price.price_per_input_token_above_threshold
                    else price.price_per_input_token end as input_price,
               case when long_context then price.price_per_output_token_above_threshold
                    else price.price_per_output_token end as output_price
        from (select coalesce(input_tokens > price.long_context_threshold, false)
                as long_context) l) t
$$;

-- The 4-argument form (estimate_cost) is the same formula without images.
create or replace function private.usage_cost(
  price public.model_pricing, input_tokens bigint, output_tokens bigint,
  cached_input_tokens bigint
) returns numeric
language sql immutable set search_path = '' as $$
  select private.usage_cost(price, input_tokens, output_tokens, cached_input_tokens, 0)
$$;

-- ── Usage pipeline ─────────────────────────────────────────────────────────────────────────
create or replace function private.prepare_usage(
  user_id uuid, model text, input_tokens bigint, output_tokens bigint, request_id text,
  provider text, cached_input_tokens bigint, metadata jsonb, occurred_at timestamptz,
  latency_ms integer, status text
) returns private.usage_item
language plpgsql stable set search_path = '' as $$
declare
  item private.usage_item;
  images_text text := prepare_usage.metadata ->> 'images';
begin
  if images_text is not null and (images_text !~ '^[0-9]{1,6}$' or images_text::int > 100000)
  then
    raise exception using errcode = '22023', message = 'invalid_usage',
      detail = 'metadata.images must be an integer between 0 and 100000';
  end if;
  item.images := coalesce(images_text::int, 0);
  item.price := private.chargeable_price(prepare_usage.provider, prepare_usage.model,
                                         prepare_usage.occurred_at);
  if (item.price).long_context_threshold is not null
     and prepare_usage.input_tokens > (item.price).long_context_threshold then
    -- snapshot the prices actually used (same rule as private.effective_price)
    item.price := private.effective_price(item.price, prepare_usage.input_tokens);
  end if;
  item.user_id := prepare_usage.user_id;
  item.request_id := prepare_usage.request_id;
  item.input_tokens := prepare_usage.input_tokens;
  item.output_tokens := prepare_usage.output_tokens;
  item.cached_input_tokens := prepare_usage.cached_input_tokens;
  item.metadata := prepare_usage.metadata;
  item.occurred_at := prepare_usage.occurred_at;
  item.latency_ms := prepare_usage.latency_ms;
  item.status := prepare_usage.status;
  item.requested_model := nullif(prepare_usage.model, (item.price).model_id);
  item.requested_provider := nullif(prepare_usage.provider, (item.price).provider_id);
  item.cost := private.usage_cost(item.price, prepare_usage.input_tokens,
    prepare_usage.output_tokens, prepare_usage.cached_input_tokens, item.images);
  return item;
end
$$;

create or replace function private.insert_usage(item private.usage_item)
returns public.usage_records
language plpgsql set search_path = '' as $$
declare
  inserted public.usage_records;
begin
  insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
    output_tokens, cached_input_tokens, price_per_input_token, price_per_output_token,
    price_per_cached_input_token, price_per_request, price_per_image, images, long_context,
    requested_model, requested_provider, pricing_id, cost, currency, latency_ms, status,
    metadata, occurred_at)
  values (item.user_id, item.request_id, (item.price).provider_id, (item.price).model_id,
    item.input_tokens, item.output_tokens, item.cached_input_tokens,
    (item.price).price_per_input_token, (item.price).price_per_output_token,
    coalesce((item.price).price_per_cached_input_token, (item.price).price_per_input_token),
    (item.price).price_per_request, (item.price).price_per_image, coalesce(item.images, 0),
    (item.price).long_context_threshold is not null
      and item.input_tokens > (item.price).long_context_threshold,
    item.requested_model, item.requested_provider, (item.price).id, item.cost,
    (item.price).currency, item.latency_ms, item.status, item.metadata, item.occurred_at)
  on conflict on constraint usage_records_request_id_key do nothing
  returning * into inserted;
  if inserted.id is not null and item.cost > 0 then
    insert into public.ledger_entries (user_id, kind, amount, currency, reference)
    values (item.user_id, 'usage', -item.cost, (item.price).currency, item.request_id);
  end if;
  return inserted;
end
$$;

-- A retry may name the model as the client did (alias / pattern) or as it was priced.
create or replace function private.same_usage(
  existing public.usage_records, user_id uuid, provider text, model text, input_tokens bigint,
  output_tokens bigint, cached_input_tokens bigint
) returns boolean
language sql immutable set search_path = '' as $$
  select existing.user_id = same_usage.user_id
     and (existing.model_id = same_usage.model or existing.requested_model = same_usage.model)
     and (same_usage.provider is null or existing.provider_id = same_usage.provider
          or existing.requested_provider = same_usage.provider)
     and existing.input_tokens = same_usage.input_tokens
     and existing.output_tokens = same_usage.output_tokens
     and existing.cached_input_tokens = same_usage.cached_input_tokens
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.effective_price(public.model_pricing, bigint) from public;
revoke execute on function private.usage_cost(public.model_pricing, bigint, bigint, bigint,
  bigint) from public;
