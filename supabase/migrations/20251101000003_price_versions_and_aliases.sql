-- 20251101000003_price_versions_and_aliases.sql
--
-- Prices that match real traffic: aliases, name patterns and effective-dated versions, all
-- resolved by THE one lookup, public.price_for(provider, model, at) (same signature and result
-- type as before; record_usage / settle_usage / estimate_cost reach it through
-- private.chargeable_price, so they all follow these rules).
--
-- Resolution precedence (deterministic; the first step that finds a priced key wins):
--   1. exact        (provider, model) has a price row
--   2. alias        model_aliases row for model: provider-specific first, then provider-agnostic;
--                   aliases may chain (at most 8 hops; loops are refused when set)
--   3. prefix       'p/name' → (p, name) when provider is null or = p; then steps 1-2
--   4. date suffix  'name-2024-08-06' / 'name-20241022' → 'name'; then steps 1-2
--   5. both         'p/name-2024-08-06' → (p, name); then steps 1-2
-- Each step is a unique-index probe (never a scan over patterns), so a hit on step 1 costs what
-- the old lookup cost. provider null: a name priced at several providers raises ambiguous_model.
-- Then the VERSION: the row of the resolved key with the newest effective_from <= at.
--
-- Error codes added to the catalog (20251018000005): 22023 invalid_currency, 22023 alias_loop.
-- This file raises: 22023 invalid_argument / invalid_amount / invalid_currency / alias_loop /
-- invalid_usage, PT422 unknown_model / ambiguous_model, 42501 forbidden.

-- ── model_aliases ──────────────────────────────────────────────────────────────────────────
create table public.model_aliases (
  id uuid primary key default gen_random_uuid(),
  alias text not null,
  -- NULL: the alias applies whichever provider is asked (or none).
  provider_id text,
  -- NULL: the target lives at the alias's provider (or the provider asked for).
  target_provider_id text,
  target_model_id text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint model_aliases_alias_provider_key unique nulls not distinct (alias, provider_id),
  constraint model_aliases_alias_not_blank check (btrim(alias) <> '' and length(alias) <= 255),
  constraint model_aliases_target_model_id_not_blank
    check (btrim(target_model_id) <> '' and length(target_model_id) <= 255),
  constraint model_aliases_not_self check (alias <> target_model_id
    or coalesce(target_provider_id, provider_id, '') <> coalesce(provider_id, ''))
);
comment on table public.model_aliases is
  'A model name that uses another model''s price (seed 000 alias_for). Resolved by price_for().';

create trigger model_aliases_audit after insert or update or delete on public.model_aliases
  for each row execute function private.audit_price_change();

alter table public.model_aliases enable row level security;
create policy "Visitors read the model aliases" on public.model_aliases
  for select to anon using (true);
create policy "Users read the model aliases" on public.model_aliases
  for select to authenticated using (true);

revoke all on public.model_aliases from public, anon, authenticated, service_role;
grant select on public.model_aliases to anon, authenticated, service_role;
grant insert, update, delete on public.model_aliases to service_role;

-- ── The lookup ─────────────────────────────────────────────────────────────────────────────
-- public.price_for(provider, model, at = now()) → the model_pricing version in effect at `at`
-- for the key `model` resolves to (precedence above). Who may call: anon, authenticated,
-- service_role (SECURITY INVOKER: the price list and aliases are public; no private helper is
-- used so API roles can run it). Raises: 22023 invalid_usage (model), PT422 unknown_model
-- (no key, dangling alias, or no version in effect at `at`), PT422 ambiguous_model.
create or replace function public.price_for(provider text, model text, at timestamptz default now())
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
  i integer;
begin
  if price_for.model is null or btrim(price_for.model) = '' or length(price_for.model) > 255 then
    raise exception using errcode = '22023', message = 'invalid_usage',
      detail = 'model must be a non-empty string of at most 255 characters';
  end if;
  -- Fast path, the common case: the exact name has a version in effect at `at` (one query).
  -- Without a provider, the name must be priced at `at` by exactly one provider.
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
    key_provider := found_row.provider_id;
  end loop;
  if hops = 1 then
    return found_row;
  elsif hops > 1 then
    raise exception using errcode = 'PT422', message = 'ambiguous_model',
      detail = format('model %s exists at several providers; pass provider', price_for.model);
  end if;
  key_provider := null;
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
      -- exact
      hit_providers := array(select distinct p.provider_id from public.model_pricing p
                             where p.model_id = key_model
                               and (key_provider is null or p.provider_id = key_provider)
                             limit 2);
      if cardinality(hit_providers) > 1 then
        raise exception using errcode = 'PT422', message = 'ambiguous_model',
          detail = format('model %s exists at several providers; pass provider', key_model);
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
