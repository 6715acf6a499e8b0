-- 20251130000002_price_admin.sql
--
-- Writing prices, aliases and default providers, reading a model's price history, and the audit
-- trail of every such change. Part of the 0.1.0 baseline (CHANGELOG.md).
--   set_model_price()       creates a price VERSION effective from a time (default now); the
--                           same price again is a no-op (no version, no audit row)
--   set_model_alias() / remove_model_alias()
--   set_default_provider()  picks the provider a bare model name charges (models.is_default)
--   price_history()         every version of a model, newest first, with effective_until
-- The audit: triggers on model_pricing, model_aliases and models.is_default write every change
-- to public.price_audit (20251018000001) — who (role, user id), when, old → new — so a change
-- made through the SQL editor is audited like one made through these functions. They are
-- created here, after the default price list (20251018000002), which is therefore not in the
-- audit; the implicit default of a name's first provider is not logged separately (the price
-- insert that created it is).
-- Error codes (catalog: 20251018000003): 22023 invalid_amount, invalid_argument,
-- invalid_currency, alias_loop; PT422 unknown_model; 42501 forbidden.

-- ── The audit trail ────────────────────────────────────────────────────────────────────────
-- private.audit_price_change(): AFTER INSERT/UPDATE/DELETE on model_pricing and model_aliases,
-- AFTER UPDATE OF is_default on models. SECURITY DEFINER because the audit table is not
-- writable by any API role (service_role only reads it), so the log cannot be forged or erased
-- through the API. Caller check: it refuses to run outside a row trigger on those tables.
create function private.audit_price_change() returns trigger
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

create trigger model_pricing_audit after insert or update or delete on public.model_pricing
  for each row execute function private.audit_price_change();
create trigger model_aliases_audit after insert or update or delete on public.model_aliases
  for each row execute function private.audit_price_change();
-- Only a change of the default is a price decision; other catalog edits are not audited.
create trigger models_default_audit after update of is_default on public.models
  for each row when (old.is_default is distinct from new.is_default)
  execute function private.audit_price_change();

-- ── Private helpers ───────────────────────────────────────────────────────────────────────
-- private.check_currency(currency) → the code; 22023 invalid_currency unless it is one of the
-- ISO-4217 codes we ship (extend the list in a migration when a customer needs another).
create function private.check_currency(currency text) returns text
language plpgsql immutable set search_path = '' as $$
begin
  if currency is null or currency not in ('USD', 'EUR', 'GBP', 'JPY', 'CNY', 'CHF', 'CAD',
      'AUD', 'NZD', 'INR', 'KRW', 'SGD', 'HKD', 'BRL', 'MXN', 'SEK', 'NOK', 'DKK', 'PLN', 'ZAR')
  then
    raise exception using errcode = '22023', message = 'invalid_currency',
      detail = format('currency %s is not a supported ISO-4217 code', coalesce(currency, 'null'));
  end if;
  return currency;
end
$$;

-- private.check_price(field, x, nullable) → x; 22023 invalid_amount unless 0 <= x < 1000 with
-- at most 12 decimals (model_pricing's numeric(20,12) range).
create function private.check_price(field text, x numeric, nullable boolean default false)
returns numeric
language plpgsql immutable set search_path = '' as $$
begin
  if x is null and nullable then
    return null;
  end if;
  perform private.check_amount(field, x, true);
  if x >= 1000 then
    raise exception using errcode = '22023', message = 'invalid_amount',
      detail = format('%s must be less than 1000 per unit', field);
  end if;
  return x;
end
$$;

-- private.price_json(p) → the JSON of one price version (money as exact decimal strings).
create function private.price_json(p public.model_pricing) returns jsonb
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

-- ── Prices ────────────────────────────────────────────────────────────────────────────────
-- ── public.set_model_price(...) → jsonb ────────────────────────────────────────────────────
-- The version {version_id, provider, model, price_per_*, currency, pricing_type, pricing_source,
-- source_detail, effective_from, long_context_threshold, price_per_*_above_threshold,
-- last_updated, created}. created = false when the version in effect at effective_from already
-- has exactly these prices (no-op). A version with the same effective_from is replaced.
-- Creates the models row if missing. Who may call: service_role (SECURITY DEFINER: uses private
-- helpers; checks its caller first). Raises: 42501 forbidden, 22023 invalid_argument /
-- invalid_amount / invalid_currency.
create function public.set_model_price(
  provider text, model text, input_per_token numeric, output_per_token numeric,
  cached_input_per_token numeric default null, per_request numeric default 0,
  per_image numeric default 0, currency text default 'USD',
  effective_from timestamptz default now(), pricing_type text default 'paid',
  pricing_source text default 'manual', long_context_threshold bigint default null,
  input_per_token_above_threshold numeric default null,
  output_per_token_above_threshold numeric default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  missing boolean := set_model_price.pricing_type = 'missing';
  cur public.model_pricing;
  saved public.model_pricing;
begin
  perform private.assert_service_role();
  perform private.check_text('provider', set_model_price.provider);
  perform private.check_text('model', set_model_price.model);
  if set_model_price.pricing_type is null
     or set_model_price.pricing_type not in ('paid', 'free', 'deprecated', 'missing') then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'pricing_type must be one of paid, free, deprecated, missing';
  end if;
  if set_model_price.pricing_source is null or set_model_price.pricing_source
     not in ('provider', 'manual', 'estimated', 'import') then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'pricing_source must be one of provider, manual, estimated, import';
  end if;
  perform private.check_price('input_per_token', input_per_token, missing);
  perform private.check_price('output_per_token', output_per_token, missing);
  perform private.check_price('cached_input_per_token', cached_input_per_token, true);
  perform private.check_price('per_request', per_request);
  perform private.check_price('per_image', per_image);
  perform private.check_price('input_per_token_above_threshold',
                              input_per_token_above_threshold, true);
  perform private.check_price('output_per_token_above_threshold',
                              output_per_token_above_threshold, true);
  perform private.check_currency(set_model_price.currency);
  if (long_context_threshold is null) <> (input_per_token_above_threshold is null)
     or (long_context_threshold is null) <> (output_per_token_above_threshold is null)
     or long_context_threshold not between 1 and 100000000 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'long_context_threshold (1..100000000) and both *_above_threshold prices go together';
  end if;
  if set_model_price.pricing_type = 'free' and (input_per_token <> 0 or output_per_token <> 0
     or coalesce(cached_input_per_token, 0) <> 0 or per_request <> 0 or per_image <> 0
     or coalesce(input_per_token_above_threshold, 0) <> 0
     or coalesce(output_per_token_above_threshold, 0) <> 0) then
    raise exception using errcode = '22023', message = 'invalid_amount',
      detail = 'a free model has every price 0';
  end if;
  if set_model_price.effective_from is null or not isfinite(set_model_price.effective_from) then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'effective_from must be a finite timestamp';
  end if;

  select p.* into cur from public.model_pricing p
  where p.provider_id = set_model_price.provider and p.model_id = set_model_price.model
    and p.effective_from <= set_model_price.effective_from
  order by p.effective_from desc limit 1;
  if found and (cur.price_per_input_token, cur.price_per_output_token,
      cur.price_per_cached_input_token, cur.price_per_request, cur.price_per_image, cur.currency,
      cur.pricing_type, cur.long_context_threshold, cur.price_per_input_token_above_threshold,
      cur.price_per_output_token_above_threshold)
     is not distinct from (input_per_token, output_per_token, cached_input_per_token,
      per_request, per_image, set_model_price.currency, set_model_price.pricing_type,
      long_context_threshold, input_per_token_above_threshold, output_per_token_above_threshold)
  then
    return private.price_json(cur) || jsonb_build_object('created', false);
  end if;

  insert into public.model_pricing (provider_id, model_id, price_per_input_token,
    price_per_output_token, price_per_cached_input_token, price_per_request, price_per_image,
    currency, pricing_type, pricing_source, effective_from, long_context_threshold,
    price_per_input_token_above_threshold, price_per_output_token_above_threshold, last_updated)
  values (set_model_price.provider, set_model_price.model, input_per_token, output_per_token,
    cached_input_per_token, per_request, per_image, set_model_price.currency,
    set_model_price.pricing_type, set_model_price.pricing_source, set_model_price.effective_from,
    long_context_threshold, input_per_token_above_threshold, output_per_token_above_threshold,
    now())
  on conflict on constraint model_pricing_provider_model_key do update set
    price_per_input_token = excluded.price_per_input_token,
    price_per_output_token = excluded.price_per_output_token,
    price_per_cached_input_token = excluded.price_per_cached_input_token,
    price_per_request = excluded.price_per_request, price_per_image = excluded.price_per_image,
    currency = excluded.currency, pricing_type = excluded.pricing_type,
    pricing_source = excluded.pricing_source, source_detail = null,
    long_context_threshold = excluded.long_context_threshold,
    price_per_input_token_above_threshold = excluded.price_per_input_token_above_threshold,
    price_per_output_token_above_threshold = excluded.price_per_output_token_above_threshold,
    last_updated = now()
  returning * into saved;
  return private.price_json(saved) || jsonb_build_object('created', true);
end
$$;

-- ── Aliases ───────────────────────────────────────────────────────────────────────────────
-- public.set_model_alias(alias, target_model, target_provider = null, provider = null) →
-- {alias, provider, target_provider, target_model}. provider null: the alias applies to any
-- provider; target_provider null: the target is looked up at the asked provider. Replaces the
-- alias's previous target. Who may call: service_role (DEFINER, caller checked).
-- Raises: 42501 forbidden, 22023 invalid_argument (blank, or the alias is itself a priced
-- model: exact names win, so the alias would never apply), PT422 unknown_model (target has no
-- price and is no alias), 22023 alias_loop (alias → … → alias).
create function public.set_model_alias(
  alias text, target_model text, target_provider text default null, provider text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  hop_provider text := coalesce(set_model_alias.target_provider, set_model_alias.provider);
  hop_model text := set_model_alias.target_model;
  next_alias public.model_aliases;
  hops integer := 0;
  saved public.model_aliases;
begin
  perform private.assert_service_role();
  perform private.check_text('alias', set_model_alias.alias);
  perform private.check_text('target_model', set_model_alias.target_model);
  if exists (select 1 from public.model_pricing p where p.model_id = set_model_alias.alias
             and (set_model_alias.provider is null or p.provider_id = set_model_alias.provider))
  then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = format('%s is a priced model; an alias with its name would never apply',
                      set_model_alias.alias);
  end if;
  loop
    if hop_model = set_model_alias.alias then
      raise exception using errcode = '22023', message = 'alias_loop',
        detail = format('alias %s would point back to itself', set_model_alias.alias);
    end if;
    exit when exists (select 1 from public.model_pricing p where p.model_id = hop_model
                      and (hop_provider is null or p.provider_id = hop_provider));
    select a.* into next_alias from public.model_aliases a
    where a.alias = hop_model
      and (hop_provider is null or a.provider_id = hop_provider or a.provider_id is null)
    order by (a.provider_id is not distinct from hop_provider) desc, (a.provider_id is null) desc
    limit 1;
    if not found then
      raise exception using errcode = 'PT422', message = 'unknown_model',
        detail = format('alias target %s/%s has no price', coalesce(hop_provider, '(any)'),
                        hop_model);
    end if;
    hop_provider := coalesce(next_alias.target_provider_id, next_alias.provider_id, hop_provider);
    hop_model := next_alias.target_model_id;
    hops := hops + 1;
    if hops >= 8 then
      raise exception using errcode = '22023', message = 'alias_loop',
        detail = format('alias chain from %s is longer than 8 hops', set_model_alias.alias);
    end if;
  end loop;

  insert into public.model_aliases (alias, provider_id, target_provider_id, target_model_id)
  values (set_model_alias.alias, set_model_alias.provider, set_model_alias.target_provider,
          set_model_alias.target_model)
  on conflict on constraint model_aliases_alias_provider_key do update set
    target_provider_id = excluded.target_provider_id,
    target_model_id = excluded.target_model_id, updated_at = now()
  returning * into saved;
  return jsonb_build_object('alias', saved.alias, 'provider', saved.provider_id,
    'target_provider', saved.target_provider_id, 'target_model', saved.target_model_id);
end
$$;

-- public.remove_model_alias(alias, provider = null) → {alias, provider, removed}; removed is
-- false when there was no such alias (idempotent). Who may call: service_role (DEFINER).
-- Raises: 42501 forbidden, 22023 invalid_argument.
create function public.remove_model_alias(alias text, provider text default null)
returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  removed integer;
begin
  perform private.assert_service_role();
  perform private.check_text('alias', remove_model_alias.alias);
  delete from public.model_aliases a
  where a.alias = remove_model_alias.alias
    and a.provider_id is not distinct from remove_model_alias.provider;
  get diagnostics removed = row_count;
  return jsonb_build_object('alias', remove_model_alias.alias,
    'provider', remove_model_alias.provider, 'removed', removed > 0);
end
$$;

-- ── Default providers ─────────────────────────────────────────────────────────────────────
-- public.set_default_provider(model, provider) → {model, provider, previous_provider, changed}:
-- makes `provider` the default provider of the model name `model`; changed = false when it
-- already was. The (provider, model) must have a price (any version, any pricing_type).
-- Takes the name's bucket lock (hashtext(model) mod 1024, as the models trigger of
-- 20251018000001 does), so the two exclude each other for the same name.
-- Who may call: service_role, postgres (SECURITY DEFINER: uses private helpers and takes the
-- per-name lock; checks its caller first). Raises: 42501 forbidden, 22023 invalid_argument
-- (blank names), PT422 unknown_model (no price for that provider and model).
create function public.set_default_provider(model text, provider text)
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
  -- the bucket lock default_first_provider takes for the same name
  perform pg_advisory_xact_lock(hashtext('tokenmeter.default_provider'),
                                abs(hashtext(set_default_provider.model) % 1024));
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

-- ── History ───────────────────────────────────────────────────────────────────────────────
-- ── public.price_history(provider, model) → setof jsonb ─────────────────────────────────────
-- Every version of (provider, model), newest first: price_json keys + effective_until (NULL
-- for the last one) + in_effect (the version price_for would use now). Exact key, no alias
-- resolution. Who may call: anon, authenticated, service_role (the price list is public).
-- SECURITY DEFINER only so callers need no access to the private JSON helper; it reads public
-- data only, so there is no caller to check.
create function public.price_history(provider text, model text) returns setof jsonb
language sql stable security definer set search_path = '' as $$
  select private.price_json(v.p)
         || jsonb_build_object('effective_until', v.effective_until,
              'in_effect', (v.p).effective_from <= now()
                           and (v.effective_until is null or v.effective_until > now()))
  from (select p, lead(p.effective_from) over (order by p.effective_from) as effective_until
        from public.model_pricing p
        where p.provider_id = price_history.provider and p.model_id = price_history.model) v
  order by (v.p).effective_from desc
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.audit_price_change() from public;
revoke execute on function private.check_currency(text) from public;
revoke execute on function private.check_price(text, numeric, boolean) from public;
revoke execute on function private.price_json(public.model_pricing) from public;

revoke execute on function public.set_model_price(text, text, numeric, numeric, numeric, numeric,
  numeric, text, timestamptz, text, text, bigint, numeric, numeric) from public, anon,
  authenticated;
revoke execute on function public.set_model_alias(text, text, text, text)
  from public, anon, authenticated;
revoke execute on function public.remove_model_alias(text, text)
  from public, anon, authenticated;
revoke execute on function public.set_default_provider(text, text)
  from public, anon, authenticated;
revoke execute on function public.price_history(text, text) from public;
grant execute on function public.set_model_price(text, text, numeric, numeric, numeric, numeric,
  numeric, text, timestamptz, text, text, bigint, numeric, numeric) to service_role;
grant execute on function public.set_model_alias(text, text, text, text) to service_role;
grant execute on function public.remove_model_alias(text, text) to service_role;
grant execute on function public.set_default_provider(text, text) to service_role;
grant execute on function public.price_history(text, text)
  to anon, authenticated, service_role;
