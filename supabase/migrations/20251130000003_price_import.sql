-- 20251130000003_price_import.sql
--
-- Bulk price import (`tokenmeter price import`: the CLI sends chunks with a progress bar; LiteLLM's
-- catalog, ~3,000 entries), set-based: the validation, versions, no-op rule and audit rows are
-- exactly those of a single set_model_price (20251130000002). Part of the 0.1.0 baseline
-- (CHANGELOG.md).
-- How: every entry is parsed and validated by one function call (the checks of
-- set_model_price, errors prefixed `prices[i]: `); the version in effect for every entry is
-- found with one index probe each, in one statement; the new and changed versions are written
-- with one INSERT … ON CONFLICT (the tables' row triggers still create the catalog row and the
-- audit row of each); the diff is aggregated once. A dry run stops before the writes: all the
-- checks the writes could fail are made on every entry first.
-- Why set-based: a loop calling set_model_price once per entry in its own exception block (a
-- subtransaction), growing the diff by concatenation (O(n²)), ran LiteLLM's catalog into the
-- API roles' 8 s statement timeout; set-based, 250 / 1,000 / 2,000 entries take
-- 0.03 / 0.10 / 0.15 s (bench/price_import_bench.py, docs/benchmarks.md).
-- Result: {added, changed, unchanged, keys_changed, dry_run, diff, added_models,
-- defaults_changed}. diff lists each changed field of CHANGED entries only ({provider, model,
-- field, old, new}, money as exact strings); added_models lists the new (provider, model) pairs
-- (a new model's prices are what was sent). Entries may also carry `litellm_key` (the catalog
-- key they came from, kept in models.metadata so `price export` writes the same key back;
-- keys_changed counts the entries whose key is new or different) and `is_default` (this
-- provider becomes the default of the model name, models.is_default: the catalog's unprefixed
-- entry); defaults_changed lists {model, old, new} (old null: the name had no default).
-- Error codes (catalog: 20251018000003): 22023 invalid_argument / invalid_amount /
-- invalid_currency, 42501 forbidden.

-- ── Types ──────────────────────────────────────────────────────────────────────────────────
-- One import entry, parsed: set_model_price's arguments plus the entry's index and catalog key.
create type private.price_import_item as (
  idx integer,
  provider text,
  model text,
  input_per_token numeric,
  output_per_token numeric,
  cached_input_per_token numeric,
  per_request numeric,
  per_image numeric,
  currency text,
  effective_from timestamptz,
  pricing_type text,
  pricing_source text,
  long_context_threshold bigint,
  input_per_token_above_threshold numeric,
  output_per_token_above_threshold numeric,
  litellm_key text,
  is_default boolean
);

-- ── Parsing and validation of one entry ───────────────────────────────────────────────────
-- private.import_number(entry, field) → the field as numeric (null when absent or JSON null);
-- 22023 invalid_argument when it is neither a JSON number nor a string holding one.
create function private.import_number(entry jsonb, field text) returns numeric
language plpgsql immutable set search_path = '' as $$
declare
  value jsonb := entry -> field;
begin
  if value is null or jsonb_typeof(value) = 'null' then
    return null;
  end if;
  if jsonb_typeof(value) = 'number'
     or (jsonb_typeof(value) = 'string'
         and value #>> '{}' ~ '^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$') then
    return (value #>> '{}')::numeric;
  end if;
  raise exception using errcode = '22023', message = 'invalid_argument',
    detail = format('a field has the wrong type: %s must be a number', field);
end
$$;

-- private.import_item(entry, idx, source) → the parsed entry, checked exactly as
-- set_model_price checks its arguments (same codes and messages), so a dry run refuses what
-- the real run would. Raises with detail `prices[idx]: …`: 22023 invalid_argument /
-- invalid_amount / invalid_currency.
create function private.import_item(entry jsonb, idx integer, source text)
returns private.price_import_item
language plpgsql stable set search_path = '' as $$
declare
  item private.price_import_item;
  missing boolean;
  err_state text;
  err_message text;
  err_detail text;
begin
  begin
    if jsonb_typeof(entry) <> 'object' then
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = 'each price must be a JSON object';
    end if;
    item.idx := idx;
    item.provider := entry ->> 'provider';
    item.model := entry ->> 'model';
    item.input_per_token := private.import_number(entry, 'input_per_token');
    item.output_per_token := private.import_number(entry, 'output_per_token');
    item.cached_input_per_token := private.import_number(entry, 'cached_input_per_token');
    item.per_request := coalesce(private.import_number(entry, 'per_request'), 0);
    item.per_image := coalesce(private.import_number(entry, 'per_image'), 0);
    item.currency := coalesce(entry ->> 'currency', 'USD');
    item.effective_from := coalesce((entry ->> 'effective_from')::timestamptz, now());
    item.pricing_type := coalesce(entry ->> 'pricing_type', 'paid');
    item.pricing_source := coalesce(entry ->> 'pricing_source', import_item.source);
    item.long_context_threshold := private.import_number(entry, 'long_context_threshold');
    item.input_per_token_above_threshold :=
      private.import_number(entry, 'input_per_token_above_threshold');
    item.output_per_token_above_threshold :=
      private.import_number(entry, 'output_per_token_above_threshold');
    item.litellm_key := entry ->> 'litellm_key';
    item.is_default := coalesce((entry ->> 'is_default')::boolean, false);

    -- The checks of set_model_price (20251101000004), in its order.
    missing := item.pricing_type = 'missing';
    perform private.check_text('provider', item.provider);
    perform private.check_text('model', item.model);
    if item.pricing_type not in ('paid', 'free', 'deprecated', 'missing') then
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = 'pricing_type must be one of paid, free, deprecated, missing';
    end if;
    if item.pricing_source not in ('provider', 'manual', 'estimated', 'import') then
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = 'pricing_source must be one of provider, manual, estimated, import';
    end if;
    perform private.check_price('input_per_token', item.input_per_token, missing);
    perform private.check_price('output_per_token', item.output_per_token, missing);
    perform private.check_price('cached_input_per_token', item.cached_input_per_token, true);
    perform private.check_price('per_request', item.per_request);
    perform private.check_price('per_image', item.per_image);
    perform private.check_price('input_per_token_above_threshold',
                                item.input_per_token_above_threshold, true);
    perform private.check_price('output_per_token_above_threshold',
                                item.output_per_token_above_threshold, true);
    perform private.check_currency(item.currency);
    if (item.long_context_threshold is null) <> (item.input_per_token_above_threshold is null)
       or (item.long_context_threshold is null) <> (item.output_per_token_above_threshold is null)
       or item.long_context_threshold not between 1 and 100000000 then
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = 'long_context_threshold (1..100000000) and both *_above_threshold prices go together';
    end if;
    if item.pricing_type = 'free' and (item.input_per_token <> 0 or item.output_per_token <> 0
       or coalesce(item.cached_input_per_token, 0) <> 0 or item.per_request <> 0
       or item.per_image <> 0 or coalesce(item.input_per_token_above_threshold, 0) <> 0
       or coalesce(item.output_per_token_above_threshold, 0) <> 0) then
      raise exception using errcode = '22023', message = 'invalid_amount',
        detail = 'a free model has every price 0';
    end if;
    if not isfinite(item.effective_from) then
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = 'effective_from must be a finite timestamp';
    end if;
  exception when others then
    -- No write happens in this block, so its subtransaction never takes an XID.
    get stacked diagnostics err_state = returned_sqlstate, err_message = message_text,
      err_detail = pg_exception_detail;
    if err_state = '22023' or err_state like 'PT%' then
      raise exception using errcode = err_state, message = err_message,
        detail = format('prices[%s]: %s', idx, err_detail);
    end if;
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = format('prices[%s]: a field has the wrong type: %s', idx, err_message);
  end;
  return item;
end
$$;

-- ── The import ─────────────────────────────────────────────────────────────────────────────
-- public.import_model_prices(prices, source = 'import', dry_run = false) → the result above.
-- prices: JSON array (1..5000) of objects with set_model_price's argument names (provider,
-- model, input_per_token, output_per_token, cached_input_per_token, per_request, per_image,
-- currency, effective_from, pricing_type, pricing_source, long_context_threshold,
-- input_per_token_above_threshold, output_per_token_above_threshold) and optionally
-- litellm_key; pricing_source defaults to `source`. Each entry is compared with the version in
-- effect at its effective_from (default now), counting an earlier entry of the same model in
-- this call as applied: none → added, different → changed, same → unchanged (no version, no
-- audit row: set_model_price's no-op rule). One call = one transaction: a bad entry aborts the
-- call and the detail names its index. The same (provider, model, effective_from) twice in one
-- call is refused (which should win is not knowable). dry_run validates every entry exactly as
-- the real run would and writes nothing.
-- The plpgsql_check pragma in the body declares the transaction's work table, which the
-- function creates at run time (`supabase db lint` could not see it otherwise).
-- Who may call: service_role (SECURITY DEFINER: private helpers, the audit trigger's table;
-- caller checked first).
create function public.import_model_prices(
  prices jsonb, source text default 'import', dry_run boolean default false
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  items private.price_import_item[];
  twice integer[];
  result jsonb;
begin
  perform private.assert_service_role();
  if prices is null or jsonb_typeof(prices) <> 'array'
     or jsonb_array_length(prices) not between 1 and 5000 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'prices must be a JSON array of 1 to 5000 price objects';
  end if;
  -- Entries are parsed in array order, so the first bad one is the one reported.
  items := array(select private.import_item(t.e, (t.n - 1)::integer, import_model_prices.source)
                 from jsonb_array_elements(prices) with ordinality t(e, n) order by t.n);

  select array[min(i.idx), max(i.idx)] into twice
  from unnest(items) i
  group by i.provider, i.model, i.effective_from
  having count(*) > 1
  order by min(i.idx) limit 1;
  if twice is not null then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = format('prices[%s]: the same provider, model and effective_from as prices[%s]',
                      twice[2], twice[1]);
  end if;
  select array[min(i.idx), max(i.idx)] into twice
  from unnest(items) i
  where i.is_default
  group by i.model
  having count(distinct i.provider) > 1
  order by min(i.idx) limit 1;
  if twice is not null then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = format('prices[%s]: a second default provider for the model of prices[%s]',
                      twice[2], twice[1]);
  end if;

  -- The entries with their status, for the statements below (dropped at commit; a second call
  -- in the same transaction reuses it).
  if to_regclass('pg_temp.price_import_rows') is null then
    create temporary table price_import_rows (
      item private.price_import_item, status text, old_fields jsonb, new_fields jsonb
    ) on commit drop;
  end if;
  -- For plpgsql_check (`supabase db lint`), which reads the body without running it and so
  -- never sees the table created above; at run time a no-op (the constant is selected).
  perform 'PRAGMA:TABLE: price_import_rows (item private.price_import_item, status text, '
          'old_fields jsonb, new_fields jsonb)';
  truncate pg_temp.price_import_rows;

  -- The version in effect for every entry: the newest stored version of its key that has begun
  -- by its effective_from (one probe of model_pricing_provider_model_key each) or an earlier
  -- entry of the same key in this call (applied before it, as the old loop did), whichever is
  -- newer; at the same effective_from the entry wins (it replaces that version).
  insert into pg_temp.price_import_rows (item, status, old_fields, new_fields)
  with entries as materialized (
    select i as item, i.idx, i.provider, i.model, i.effective_from,
      jsonb_build_object(
        'input_per_token', trim_scale(i.input_per_token)::text,
        'output_per_token', trim_scale(i.output_per_token)::text,
        'cached_input_per_token', trim_scale(i.cached_input_per_token)::text,
        'per_request', trim_scale(i.per_request)::text,
        'per_image', trim_scale(i.per_image)::text,
        'currency', i.currency, 'pricing_type', i.pricing_type,
        'long_context_threshold', i.long_context_threshold,
        'input_per_token_above_threshold', trim_scale(i.input_per_token_above_threshold)::text,
        'output_per_token_above_threshold', trim_scale(i.output_per_token_above_threshold)::text
      ) as fields
    from unnest(items) i
  ),
  candidates as (
    select e.idx, v.effective_from, 0 as rank, v.fields
    from entries e
    cross join lateral (
      select p.effective_from, jsonb_build_object(
        'input_per_token', trim_scale(p.price_per_input_token)::text,
        'output_per_token', trim_scale(p.price_per_output_token)::text,
        'cached_input_per_token', trim_scale(p.price_per_cached_input_token)::text,
        'per_request', trim_scale(p.price_per_request)::text,
        'per_image', trim_scale(p.price_per_image)::text,
        'currency', p.currency, 'pricing_type', p.pricing_type,
        'long_context_threshold', p.long_context_threshold,
        'input_per_token_above_threshold',
          trim_scale(p.price_per_input_token_above_threshold)::text,
        'output_per_token_above_threshold',
          trim_scale(p.price_per_output_token_above_threshold)::text) as fields
      from public.model_pricing p
      where p.provider_id = e.provider and p.model_id = e.model
        and p.effective_from <= e.effective_from
      order by p.effective_from desc limit 1
    ) v
    union all
    select e.idx, earlier.effective_from, 1 + earlier.idx, earlier.fields
    from entries e
    join entries earlier on earlier.provider = e.provider and earlier.model = e.model
      and earlier.idx < e.idx and earlier.effective_from <= e.effective_from
  ),
  current_versions as (
    select distinct on (c.idx) c.idx, c.fields
    from candidates c
    order by c.idx, c.effective_from desc, c.rank desc
  )
  select e.item,
    case when c.fields is null then 'added'
         when c.fields = e.fields then 'unchanged'
         else 'changed' end,
    c.fields, e.fields
  from entries e
  left join current_versions c on c.idx = e.idx;

  select jsonb_build_object(
    'added', count(*) filter (where r.status = 'added'),
    'changed', count(*) filter (where r.status = 'changed'),
    'unchanged', count(*) filter (where r.status = 'unchanged'),
    'dry_run', import_model_prices.dry_run,
    'keys_changed', (
      select count(*) from pg_temp.price_import_rows k
      left join public.models m on m.provider_id = (k.item).provider
        and m.model_id = (k.item).model
      where (k.item).litellm_key is not null
        and (m.metadata ->> 'litellm_key') is distinct from (k.item).litellm_key),
    'defaults_changed', (
      select coalesce(jsonb_agg(jsonb_build_object('model', (d.item).model,
               'old', m.provider_id, 'new', (d.item).provider) order by (d.item).idx), '[]')
      from pg_temp.price_import_rows d
      left join public.models m on m.model_id = (d.item).model and m.is_default
      where (d.item).is_default and m.provider_id is distinct from (d.item).provider),
    'added_models', coalesce(jsonb_agg(jsonb_build_object('provider', (r.item).provider,
        'model', (r.item).model) order by (r.item).idx) filter (where r.status = 'added'),
      '[]'::jsonb))
  into result
  from pg_temp.price_import_rows r;
  result := result || jsonb_build_object('diff', (
    select coalesce(jsonb_agg(jsonb_build_object('provider', (r.item).provider,
             'model', (r.item).model, 'field', f.key, 'old', r.old_fields -> f.key,
             'new', f.value) order by (r.item).idx, f.key), '[]'::jsonb)
    from pg_temp.price_import_rows r
    cross join lateral jsonb_each(r.new_fields) f
    where r.status = 'changed' and (r.old_fields -> f.key) is distinct from f.value));

  if not dry_run then
    -- The catalog rows first (the price trigger would create them one by one), with the key
    -- the entry came from for `price export`.
    insert into public.models as m (provider_id, model_id, metadata)
    select (r.item).provider, (r.item).model,
      case when (r.item).litellm_key is null then '{}'::jsonb
           else jsonb_build_object('litellm_key', (r.item).litellm_key) end
    from pg_temp.price_import_rows r
    order by (r.item).idx
    on conflict (provider_id, model_id) do update
      set metadata = m.metadata || excluded.metadata
      where excluded.metadata <> '{}'::jsonb and not m.metadata @> excluded.metadata;

    insert into public.model_pricing (provider_id, model_id, price_per_input_token,
      price_per_output_token, price_per_cached_input_token, price_per_request, price_per_image,
      currency, pricing_type, pricing_source, effective_from, long_context_threshold,
      price_per_input_token_above_threshold, price_per_output_token_above_threshold,
      last_updated)
    select (r.item).provider, (r.item).model, (r.item).input_per_token,
      (r.item).output_per_token, (r.item).cached_input_per_token, (r.item).per_request,
      (r.item).per_image, (r.item).currency, (r.item).pricing_type, (r.item).pricing_source,
      (r.item).effective_from, (r.item).long_context_threshold,
      (r.item).input_per_token_above_threshold, (r.item).output_per_token_above_threshold, now()
    from pg_temp.price_import_rows r
    where r.status <> 'unchanged'
    order by (r.item).idx
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
      last_updated = now();

    -- Defaults last (the rows exist now), under set_default_provider's per-name lock, in name
    -- order so two imports cannot deadlock; the old default is unset first (partial unique
    -- index models_model_id_default_key: one default per name at every moment).
    perform pg_advisory_xact_lock(hashtext('tokenmeter.default_provider'), hashtext(d.model))
    from (select distinct (r.item).model as model from pg_temp.price_import_rows r
          where (r.item).is_default order by 1) d;
    update public.models m set is_default = false
    from pg_temp.price_import_rows r
    where (r.item).is_default and m.model_id = (r.item).model and m.is_default
      and m.provider_id <> (r.item).provider;
    update public.models m set is_default = true
    from pg_temp.price_import_rows r
    where (r.item).is_default and m.model_id = (r.item).model
      and m.provider_id = (r.item).provider and not m.is_default;

    -- A catalog imported into a fresh database grows the price tables many times over within
    -- minutes, before autovacuum analyzes them: the row-level checks each new row triggers
    -- (the foreign key to models, the default-provider trigger) keep plans made for a table
    -- of a few rows — sequential scans, so every chunk cost more than the one before (10,000
    -- entries: 5.5 s instead of 2 s). When this call grew the catalog by more than a tenth,
    -- fresh statistics make the next calls plan index probes (and invalidate those plans).
    if (select count(*) from pg_temp.price_import_rows r where r.status = 'added')
       > 0.1 * greatest((select c.reltuples from pg_catalog.pg_class c
                         where c.oid = 'public.models'::regclass), 0) then
      analyze public.models;
      analyze public.model_pricing;
    end if;
  end if;
  truncate pg_temp.price_import_rows;
  return result;
end
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.import_number(jsonb, text) from public;
revoke execute on function private.import_item(jsonb, integer, text) from public;
revoke execute on function public.import_model_prices(jsonb, text, boolean)
  from public, anon, authenticated;
grant execute on function public.import_model_prices(jsonb, text, boolean) to service_role;
