-- 20251130000001_price_lookup.sql
--
-- THE price lookup and THE cost formula. Every charge (record_usage, settle_usage, the batch,
-- reprice_usage) and every estimate (estimate_cost, authorize_request) goes through
-- public.price_for (via private.chargeable_price) and private.usage_cost, so an estimate never
-- drifts from the charge. Part of the 0.1.0 baseline (CHANGELOG.md); the tables are in
-- 20251018000001.
--
-- Resolution (public.price_for(provider, model, at); deterministic, the first step that finds a
-- priced key wins; each step is a unique-index probe, never a scan over patterns):
--   1. exact        (provider, model) has a price row; provider null: the name's only provider,
--                   else its default provider (models.is_default)
--   2. alias        model_aliases row for model: provider-specific first, then provider-agnostic;
--                   aliases may chain (at most 8 hops; loops are refused when set)
--   3. prefix       'p/name' → (p, name) when provider is null or = p; then steps 1-2
--   4. date suffix  'name-2024-08-06' / 'name-20241022' → 'name'; then steps 1-2
--   5. both         'p/name-2024-08-06' → (p, name); then steps 1-2
-- Then the VERSION: the row of the resolved key with the newest effective_from <= at.
-- ambiguous_model only when a bare name is priced at several providers and has no default (or
-- the default has no version in effect at `at`); the detail lists the candidates. Hot path: a
-- bare name is ONE query, a probe of models_model_id_default_key joined to one probe of
-- model_pricing's (provider_id, model_id, effective_from) key; a call naming its provider is
-- one probe; an alias or dated bare name pays one probe more (bench/default_provider_bench.py,
-- numbers in docs/pricing.md). The usage record keeps the RESOLVED provider and model.
--
-- The cost formula (exact at scale 12, never rounded):
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
-- images comes from metadata.images (an integer 0..100000; absent = 0).
--
-- Why PL/pgSQL for the small helpers on the charging paths: a `language sql` function with a SET
-- clause (every billing function pins search_path = '', 00-schema.sql checks it) can never be
-- inlined, and PostgreSQL 15 keeps the plan of a non-inlined SQL function only for the calling
-- query, so each statement that calls it parses and plans its body again; PL/pgSQL keeps its
-- plans for the whole session.
-- Error codes (catalog: 20251018000003): 22023 invalid_usage, PT422 unknown_model /
-- ambiguous_model / price_missing.

-- ── The lookup ─────────────────────────────────────────────────────────────────────────────
-- public.price_for(provider, model, at = now()) → the model_pricing version in effect at `at`
-- for the key `model` resolves to (precedence in the header); a JSON object over REST.
-- Returns the row whatever its pricing_type; charging a 'missing' price is refused by
-- private.chargeable_price().
-- Who may call: anon, authenticated, service_role (SECURITY INVOKER: the price list, catalog and
-- aliases are public; no private helper is used so API roles can run it). Raises: 22023
-- invalid_usage (model), PT422 unknown_model (no key, dangling alias, or no version in effect at
-- `at`), PT422 ambiguous_model (several providers, no usable default; the detail lists them).
create function public.price_for(provider text, model text, at timestamptz default now())
returns public.model_pricing
language plpgsql stable set search_path = '' as $$
declare
  found_row public.model_pricing;
  date_suffix constant text := '-([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8})$';
  cand_providers text[] := array[price_for.provider];
  cand_models text[] := array[price_for.model];
  prefix text;
  base text := price_for.model;
  key_provider text;
  key_model text;
  hit_providers text[];
  alias_rows public.model_aliases[];
  hops integer;
begin
  if price_for.model is null or btrim(price_for.model) = '' or length(price_for.model) > 255 then
    raise exception using errcode = '22023', message = 'invalid_usage',
      detail = 'model must be a non-empty string of at most 255 characters';
  end if;
  -- Fast path, the common case: the exact name has a version in effect at `at` (one query).
  -- Without a provider: the name's default provider (every name priced at one provider has it
  -- as its default), one probe of the default's unique index and one of the version.
  if price_for.provider is null then
    select v.* into found_row
    from public.models m
    cross join lateral (
      select p.* from public.model_pricing p
      where p.provider_id = m.provider_id and p.model_id = m.model_id
        and p.effective_from <= coalesce(price_for.at, now())
      order by p.effective_from desc limit 1) v
    where m.model_id = price_for.model and m.is_default;
    if found then
      return found_row;
    end if;
  end if;
  -- With a provider, or a name without a usable default: priced at one provider → it.
  hops := 0;
  for found_row in
    select distinct on (p.provider_id) p.* from public.model_pricing p
    where p.model_id = price_for.model
      and (price_for.provider is null or p.provider_id = price_for.provider)
      and p.effective_from <= coalesce(price_for.at, now())
    order by p.provider_id, p.effective_from desc
    limit 2
  loop
    hops := hops + 1;
    exit when hops > 1;
  end loop;
  if hops = 1 then
    return found_row;
  elsif hops > 1 then
    raise exception using errcode = 'PT422', message = 'ambiguous_model',
      detail = format('model %s is priced at several providers (%s) and has no default '
                      'provider priced at that time; pass provider, or set a default with '
                      'set_default_provider(model, provider)', price_for.model,
                      (select string_agg(c.provider_id, ', ') from (
                         select distinct p.provider_id from public.model_pricing p
                         where p.model_id = price_for.model order by 1 limit 20) c));
  end if;
  -- Slow path: candidate keys, in precedence order (steps 3-5 only add names; no table access here).
  if position('/' in price_for.model) > 1 then
    prefix := split_part(price_for.model, '/', 1);
    if price_for.provider is null or price_for.provider = prefix then
      base := substr(price_for.model, length(prefix) + 2);
      if base <> '' then
        cand_providers := cand_providers || prefix;
        cand_models := cand_models || base;
      else
        base := price_for.model;
      end if;
    end if;
  end if;
  if price_for.model ~ date_suffix then
    cand_providers := cand_providers || price_for.provider;
    cand_models := cand_models || regexp_replace(price_for.model, date_suffix, '');
  end if;
  if base <> price_for.model and base ~ date_suffix then
    cand_providers := cand_providers || prefix;
    cand_models := cand_models || regexp_replace(base, date_suffix, '');
  end if;

  <<candidates>>
  for i in 1 .. array_length(cand_models, 1) loop
    key_provider := cand_providers[i];
    key_model := cand_models[i];
    hops := 0;
    loop
      -- exact (provider null: the name's default provider, else its only provider; the name
      -- as sent already had its default probed by the fast path)
      hit_providers := '{}';
      if key_provider is null and (i > 1 or hops > 0) then
        hit_providers := array(select m.provider_id from public.models m
                               where m.model_id = key_model and m.is_default
                                 and exists (select 1 from public.model_pricing p
                                             where p.provider_id = m.provider_id
                                               and p.model_id = m.model_id));
      end if;
      if cardinality(hit_providers) = 0 then
        hit_providers := array(select distinct p.provider_id from public.model_pricing p
                               where p.model_id = key_model
                                 and (key_provider is null or p.provider_id = key_provider)
                               limit 2);
      end if;
      if cardinality(hit_providers) > 1 then
        raise exception using errcode = 'PT422', message = 'ambiguous_model',
          detail = format('model %s is priced at several providers (%s) and has no default '
                          'provider; pass provider, or set a default with '
                          'set_default_provider(model, provider)', key_model,
                          (select string_agg(c.provider_id, ', ') from (
                             select distinct p.provider_id from public.model_pricing p
                             where p.model_id = key_model order by 1 limit 20) c));
      elsif cardinality(hit_providers) = 1 then
        key_provider := hit_providers[1];
        exit candidates;
      end if;
      -- alias: the provider's own first, then the provider-agnostic one
      alias_rows := array(select a from public.model_aliases a
                          where a.alias = key_model
                            and (key_provider is null or a.provider_id = key_provider
                                 or a.provider_id is null)
                          order by (a.provider_id is not distinct from key_provider) desc,
                                   (a.provider_id is null) desc
                          limit 2);
      if cardinality(alias_rows) = 0 then
        if hops = 0 then
          continue candidates;
        end if;
        raise exception using errcode = 'PT422', message = 'unknown_model',
          detail = format('alias of %s points to %s/%s, which has no price', price_for.model,
                          coalesce(key_provider, '(any)'), key_model);
      end if;
      if key_provider is null and cardinality(alias_rows) > 1
         and alias_rows[1].provider_id is not null then
        raise exception using errcode = 'PT422', message = 'ambiguous_model',
          detail = format('alias %s exists at several providers; pass provider', key_model);
      end if;
      key_provider := coalesce(alias_rows[1].target_provider_id, alias_rows[1].provider_id,
                               key_provider);
      key_model := alias_rows[1].target_model_id;
      hops := hops + 1;
      if hops > 8 then
        raise exception using errcode = '22023', message = 'alias_loop',
          detail = format('alias chain of %s is longer than 8 hops', price_for.model);
      end if;
    end loop;
  end loop;
  if key_provider is null or cardinality(hit_providers) <> 1 then
    raise exception using errcode = 'PT422', message = 'unknown_model',
      detail = format('no price for model %s at provider %s', price_for.model,
                      coalesce(price_for.provider, '(any)'));
  end if;

  select p.* into found_row from public.model_pricing p
  where p.provider_id = key_provider and p.model_id = key_model
    and p.effective_from <= coalesce(price_for.at, now())
  order by p.effective_from desc limit 1;
  if not found then
    raise exception using errcode = 'PT422', message = 'unknown_model',
      detail = format('model %s/%s has no price in effect at %s', key_provider, key_model,
                      coalesce(price_for.at, now()));
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

-- private.usage_cost(price, input, output, cached, images) → exact cost (formula in the header):
-- the long-context tier, when input_tokens exceeds the threshold, replaces the input and output
-- prices for the whole request. Scale 12, never rounded.
create function private.usage_cost(
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
create function private.usage_cost(
  price public.model_pricing, input_tokens bigint, output_tokens bigint,
  cached_input_tokens bigint
) returns numeric
language plpgsql immutable set search_path = '' as $$
begin
  return private.usage_cost(price, usage_cost.input_tokens, usage_cost.output_tokens,
                            usage_cost.cached_input_tokens, 0);
end
$$;

-- ── Estimates ──────────────────────────────────────────────────────────────────────────────
-- public.estimate_cost(model, input_tokens, max_output_tokens, provider = null,
-- cached_input_tokens = 0) → {provider, model, input_tokens, max_output_tokens, cost, currency}.
-- Who may call: anon, authenticated, service_role (prices are public). DEFINER so that callers
-- need no access to the private schema's cost helpers; it reads only the public price list, so
-- there is no caller to check.
-- Raises: 22023 invalid_usage (token counts, model), PT422 unknown_model / ambiguous_model /
-- price_missing.
create function public.estimate_cost(
  model text, input_tokens bigint, max_output_tokens bigint, provider text default null,
  cached_input_tokens bigint default 0
) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  price public.model_pricing;
begin
  if estimate_cost.input_tokens is null or estimate_cost.input_tokens not between 0 and 10000000
  then
    raise exception using errcode = '22023', message = 'invalid_usage',
      detail = 'input_tokens must be an integer between 0 and 10000000';
  end if;
  if estimate_cost.max_output_tokens is null
     or estimate_cost.max_output_tokens not between 0 and 10000000 then
    raise exception using errcode = '22023', message = 'invalid_usage',
      detail = 'max_output_tokens must be an integer between 0 and 10000000';
  end if;
  if estimate_cost.cached_input_tokens is null or estimate_cost.cached_input_tokens < 0
     or estimate_cost.cached_input_tokens > estimate_cost.input_tokens then
    raise exception using errcode = '22023', message = 'invalid_usage',
      detail = 'cached_input_tokens must be between 0 and input_tokens';
  end if;
  price := private.chargeable_price(estimate_cost.provider, estimate_cost.model, now());
  return jsonb_build_object(
    'provider', price.provider_id, 'model', price.model_id,
    'input_tokens', estimate_cost.input_tokens,
    'max_output_tokens', estimate_cost.max_output_tokens,
    'cost', private.money(private.usage_cost(price, estimate_cost.input_tokens,
                                             estimate_cost.max_output_tokens,
                                             estimate_cost.cached_input_tokens)),
    'currency', price.currency);
end
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.chargeable_price(text, text, timestamptz) from public;
revoke execute on function private.effective_price(public.model_pricing, bigint) from public;
revoke execute on function private.usage_cost(public.model_pricing, bigint, bigint, bigint,
  bigint) from public;
revoke execute on function private.usage_cost(public.model_pricing, bigint, bigint, bigint)
  from public;

revoke execute on function public.price_for(text, text, timestamptz) from public;
grant execute on function public.price_for(text, text, timestamptz)
  to anon, authenticated, service_role;
revoke execute on function public.estimate_cost(text, bigint, bigint, text, bigint) from public;
grant execute on function public.estimate_cost(text, bigint, bigint, text, bigint)
  to anon, authenticated, service_role;
