-- 20251201000011_default_providers.sql
--
-- A default provider per model name, so a bare name keeps charging when several providers price
-- it (issue 10 §4): LiteLLM's public catalog lists `gpt-4o` (openai) beside `azure/gpt-4o`,
-- `vertex_ai/…`, …, and without a default every `record_usage(model => 'gpt-4o')` answered
-- ambiguous_model the day the catalog was imported.
--
--   * public.models.is_default: at most one provider per model_id (partial unique index) is the
--     name's default. Who sets it:
--       - the first provider a name is priced at becomes its default (trigger on models, which
--         set_model_price / import / direct inserts all reach), so "the only provider" is the
--         default and stays so when a second provider is added later;
--       - public.set_default_provider(model, provider): an operator (`tokenmeter price default`)
--         or the catalog import (the catalog's unprefixed entry) picks one.
--   * public.price_for(provider null, model): a name priced at ONE provider resolves to it (as
--     before); a name priced at several resolves to its default provider; ambiguous_model only
--     when the name has no default (or the default has no version in effect at `at`), with the
--     candidate providers in the detail. The same rule applies where price_for strips a prefix
--     or a date suffix, and to alias targets without a provider. record_usage / settle_usage /
--     estimate_cost / the batch reach price_for through private.chargeable_price, and the usage
--     record keeps the RESOLVED provider (provider_id; requested_provider stays null).
--   * Changes of a default are audited in price_audit (action 'update' of the models row,
--     old/new is_default); the implicit default of a name's first provider is not logged
--     separately (the price insert that created it is).
-- Hot path: a bare name is ONE query, a probe of models_model_id_default_key (partial unique
-- index) joined to one probe of model_pricing's (provider_id, model_id, effective_from) key,
-- whether one provider or many price the name (every name priced at one provider has it as
-- its default); a call naming its provider is the query it was. An alias or dated bare name
-- pays one probe more (its own default, which misses). bench/default_provider_bench.py;
-- numbers in docs/pricing.md.
-- Error codes (catalog: 20251018000005): PT422 unknown_model / ambiguous_model, 42501 forbidden,
-- 22023 invalid_argument.

-- ── models.is_default ─────────────────────────────────────────────────────────────────────
alter table public.models add column if not exists is_default boolean not null default false;
comment on column public.models.is_default is
  'This provider is the default for the model name: price_for(null, model_id) charges it when '
  'several providers price the name. At most one per model_id.';
create index if not exists models_model_id_idx on public.models (model_id);
create unique index if not exists models_model_id_default_key on public.models (model_id)
  where is_default;

-- Backfill: every name with exactly one provider gets it as its default. Names already priced at
-- several providers keep no default (ambiguous, as before) until an operator picks one.
update public.models m set is_default = true
where not m.is_default
  and not exists (select 1 from public.models o
                  where o.model_id = m.model_id and o.provider_id <> m.provider_id);

-- ── Triggers ───────────────────────────────────────────────────────────────────────────────
-- private.default_first_provider(): BEFORE INSERT on models — the first provider of a name
-- becomes its default. The advisory lock (per name, until commit) makes two concurrent first
-- providers of one new name wait for each other instead of both claiming the default.
create or replace function private.default_first_provider() returns trigger
language plpgsql set search_path = '' as $$
begin
  if not new.is_default then
    perform pg_advisory_xact_lock(hashtext('tokenmeter.default_provider'),
                                  hashtext(new.model_id));
    new.is_default := not exists (select 1 from public.models m
                                  where m.model_id = new.model_id);
  end if;
  return new;
end
$$;
revoke execute on function private.default_first_provider() from public;

drop trigger if exists models_default_first_provider on public.models;
create trigger models_default_first_provider before insert on public.models
  for each row execute function private.default_first_provider();

-- The audit trigger function learns the catalog table (its body is 20251101000001's, with
-- 'models' added to the tables it serves). SECURITY DEFINER: price_audit is not writable by any
-- API role, so the log cannot be forged or erased through the API.
create or replace function private.audit_price_change() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  actor_user uuid;
  row_data jsonb := to_jsonb(coalesce(new, old));
begin
  if tg_level <> 'ROW' or tg_when <> 'AFTER' or tg_table_schema <> 'public'
     or tg_table_name not in ('model_pricing', 'model_aliases', 'models') then
    raise exception using errcode = '42501', message = 'forbidden',
      detail = 'audit_price_change runs only as the audit trigger of the price tables';
  end if;
  if tg_op = 'UPDATE' and to_jsonb(new) - 'updated_at' - 'last_updated'
                          = to_jsonb(old) - 'updated_at' - 'last_updated' then
    return null;  -- nothing changed: nothing to audit
  end if;
  begin
    actor_user := auth.uid();
  exception when others then
    actor_user := null;  -- a malformed sub claim must not block the change
  end;
  insert into public.price_audit (actor_role, actor_user_id, provider_id, model_id, action,
                                  old, new)
  values (coalesce(nullif(current_setting('role', true), 'none'), session_user::text),
          actor_user,
          coalesce(row_data ->> 'provider_id', row_data ->> 'target_provider_id'),
          coalesce(row_data ->> 'model_id', row_data ->> 'alias'),
          lower(tg_op),
          case when tg_op <> 'INSERT' then to_jsonb(old) end,
          case when tg_op <> 'DELETE' then to_jsonb(new) end);
  return null;
end
$$;

-- Only a change of the default is a price decision; other catalog edits are not audited.
drop trigger if exists models_default_audit on public.models;
create trigger models_default_audit after update of is_default on public.models
  for each row when (old.is_default is distinct from new.is_default)
  execute function private.audit_price_change();

-- ── public.set_default_provider(model, provider) → jsonb ──────────────────────────────────
-- Makes `provider` the default provider of the model name `model`:
-- {model, provider, previous_provider, changed}; changed = false when it already was.
-- The (provider, model) must have a price (any version, any pricing_type).
-- Who may call: service_role, postgres (SECURITY DEFINER: uses private helpers and takes the
-- per-name lock; checks its caller first). Raises: 42501 forbidden, 22023 invalid_argument
-- (blank names), PT422 unknown_model (no price for that provider and model).
create or replace function public.set_default_provider(model text, provider text)
returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  previous text;
begin
  perform private.assert_service_role();
  perform private.check_text('model', set_default_provider.model);
  perform private.check_text('provider', set_default_provider.provider);
  if not exists (select 1 from public.model_pricing p
                 where p.provider_id = set_default_provider.provider
                   and p.model_id = set_default_provider.model) then
    raise exception using errcode = 'PT422', message = 'unknown_model',
      detail = format('no price for model %s at provider %s; price it before making it the default',
                      set_default_provider.model, set_default_provider.provider);
  end if;
  perform pg_advisory_xact_lock(hashtext('tokenmeter.default_provider'),
                                hashtext(set_default_provider.model));
  select m.provider_id into previous from public.models m
  where m.model_id = set_default_provider.model and m.is_default;
  if previous is distinct from set_default_provider.provider then
    -- unset first: the partial unique index allows one default per name at every moment
    update public.models m set is_default = false
    where m.model_id = set_default_provider.model and m.is_default;
    update public.models m set is_default = true
    where m.model_id = set_default_provider.model
      and m.provider_id = set_default_provider.provider;
  end if;
  return jsonb_build_object('model', set_default_provider.model,
    'provider', set_default_provider.provider, 'previous_provider', previous,
    'changed', previous is distinct from set_default_provider.provider);
end
$$;

-- ── The lookup (body of 20251101000003 + default providers) ───────────────────────────────
-- public.price_for(provider, model, at = now()) → the model_pricing version in effect at `at`
-- for the key `model` resolves to. Precedence (the first step that finds a priced key wins):
--   1. exact        (provider, model) has a price row; provider null: the name's only provider,
--                   else its default provider (models.is_default)
--   2. alias        model_aliases row for model: provider-specific first, then provider-agnostic;
--                   aliases may chain (at most 8 hops; loops are refused when set)
--   3. prefix       'p/name' → (p, name) when provider is null or = p; then steps 1-2
--   4. date suffix  'name-2024-08-06' / 'name-20241022' → 'name'; then steps 1-2
--   5. both         'p/name-2024-08-06' → (p, name); then steps 1-2
-- Then the VERSION: the row of the resolved key with the newest effective_from <= at.
-- Who may call: anon, authenticated, service_role (SECURITY INVOKER: the price list, catalog and
-- aliases are public; no private helper is used so API roles can run it). Raises: 22023
-- invalid_usage (model), PT422 unknown_model (no key, dangling alias, or no version in effect at
-- `at`), PT422 ambiguous_model (several providers, no usable default; the detail lists them).
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

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function public.set_default_provider(text, text)
  from public, anon, authenticated;
grant execute on function public.set_default_provider(text, text) to service_role;
