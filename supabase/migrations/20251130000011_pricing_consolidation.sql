-- 20251130000011_pricing_consolidation.sql
--
-- Consolidation plan (shared seed 004): model_pricing is the ONLY source of prices. A database
-- in the legacy state has `models` with the legacy price columns pricing_prompt /
-- pricing_completion / pricing_image / pricing_request and an unused pricing_tiers table. This
-- file defines the tools of the consolidation and changes no data and no legacy storage:
--   * public.populate_model_pricing(): copies the legacy prices (and single pricing_tiers rows as
--     the long-context tier) into model_pricing; idempotent;
--   * public.pricing_consolidation_report(): the checks of scripts/verify_pricing_migration.py,
--     runnable from the SQL editor;
--   * private.assert_consolidation_safe(): aborts naming every model that would lose a price;
--   * the plan's views, all reading the version of a price in effect now.
-- Everything here works with AND without the legacy storage (dynamic SQL, checked at run time),
-- because the storage stays in place until the LAST baseline migration,
-- 20251130000012_drop_legacy_pricing_storage.sql, which runs populate itself, verifies with
-- private.assert_consolidation_safe() and only then drops it. In between, a team in the legacy
-- state runs the verification script and populate_model_pricing() (docs/pricing.md,
-- "Consolidation": push up to this file with `tokenmeter db push --up-to 20251130000011`).
-- Every statement is re-runnable (create or replace). Part of the 0.1.0 baseline
-- (CHANGELOG.md).
-- Legacy units: pricing_prompt / pricing_completion are per token (like model_pricing),
-- pricing_image per image, pricing_request per request; NULL image/request means 0.
-- Error codes (catalog: 20251018000003): 42501 forbidden; P0001 consolidation_would_lose_prices.

-- ── Helpers ───────────────────────────────────────────────────────────────────────────────
-- private.has_legacy_pricing() → whether models still carries ALL legacy price columns.
create or replace function private.has_legacy_pricing() returns boolean
language sql stable set search_path = '' as $$
  select count(*) = 4 from information_schema.columns c
  where c.table_schema = 'public' and c.table_name = 'models'
    and c.column_name in ('pricing_prompt', 'pricing_completion', 'pricing_image',
                          'pricing_request')
$$;

-- private.legacy_prices() → (provider_id, model_id, input, output, image, request) of every
-- model with a legacy prompt or completion price; empty once the columns are gone.
create or replace function private.legacy_prices()
returns table (provider_id text, model_id text, input numeric, output numeric, image numeric,
               request numeric)
-- rows: the planner must expect a catalog-sized result (hash joins, not 100k index probes).
language plpgsql stable rows 100000 set search_path = '' as $$
  -- @plpgsql_check_options: extra_warnings = false
  -- (plpgsql_check cannot see which columns RETURN QUERY EXECUTE fills, so it would warn that
  -- every OUT column is "maybe unmodified": the SQL is dynamic because the legacy columns may
  -- be gone.)
begin
  if not private.has_legacy_pricing() then
    return;
  end if;
  return query execute format(
    'select m.provider_id, m.model_id, coalesce(m.%1$I, 0)::numeric, coalesce(m.%2$I, 0)::numeric,'
    ' coalesce(m.%3$I, 0)::numeric, coalesce(m.%4$I, 0)::numeric from %5$I.%6$I m'
    ' where m.%1$I is not null or m.%2$I is not null order by 1, 2',
    'pricing_prompt', 'pricing_completion', 'pricing_image', 'pricing_request', 'public',
    'models');
end
$$;

-- private.legacy_tiers() → rows of pricing_tiers (empty when the table is gone).
create or replace function private.legacy_tiers()
returns table (id bigint, provider_id text, model_id text, min_input_tokens bigint,
               input numeric, output numeric)
language plpgsql stable rows 10000 set search_path = '' as $$
  -- @plpgsql_check_options: extra_warnings = false
  -- (plpgsql_check cannot see which columns RETURN QUERY EXECUTE fills, so it would warn that
  -- every OUT column is "maybe unmodified": the SQL is dynamic because the legacy columns may
  -- be gone.)
begin
  if to_regclass('public.pricing_tiers') is null then
    return;
  end if;
  return query execute format(
    'select t.%1$I::bigint, t.%2$I, t.%3$I, t.%4$I::bigint, t.%5$I::numeric, t.%6$I::numeric'
    ' from %7$I.%8$I t order by 2, 3, 4',
    'id', 'provider_id', 'model_id', 'min_input_tokens', 'price_per_input_token',
    'price_per_output_token', 'public', 'pricing_tiers');
end
$$;

-- private.current_price(provider, model) → the version in effect now (NULLs when none).
create or replace function private.current_price(provider text, model text)
returns public.model_pricing
language sql stable set search_path = '' as $$
  select p.* from public.model_pricing p
  where p.provider_id = current_price.provider and p.model_id = current_price.model
    and p.effective_from <= now()
  order by p.effective_from desc limit 1
$$;

-- private.valid_price(x) → whether x fits model_pricing's price columns.
create or replace function private.valid_price(x numeric) returns boolean
language sql immutable set search_path = '' as $$
  select x is not null and x >= 0 and x < 1000 and x = round(x, 12)
$$;

-- ── public.populate_model_pricing() → integer ─────────────────────────────────────────────
-- Copies the legacy prices (and single pricing_tiers rows, as the long-context tier) into
-- model_pricing and returns how many model_pricing rows it wrote; 0 when there is nothing left
-- to copy (idempotent). A model without any price gets a version effective since 1970 (it
-- prices all past usage); a model whose current price differs gets a NEW version effective now
-- (past usage keeps the price it was charged). Tier rows it copied are deleted from
-- pricing_tiers. Invalid legacy values (negative, >= 1000, > 12 decimals) and tiers it cannot
-- place (no price, several tiers for one model) are left for the report to name.
-- Who may call: service_role, postgres. SECURITY DEFINER: reads and empties legacy tables that
-- API roles were never granted. Raises: 42501 forbidden.
create or replace function public.populate_model_pricing() returns integer
language plpgsql security definer set search_path = '' as $$
declare
  target record;
  cur public.model_pricing;
  want public.model_pricing;
  written integer := 0;
begin
  perform private.assert_service_role();
  for target in
    with legacy as (
      select l.* from private.legacy_prices() l
      where private.valid_price(l.input) and private.valid_price(l.output)
        and private.valid_price(l.image) and private.valid_price(l.request)),
    tiers as (
      select t.provider_id, t.model_id, min(t.id) as id, min(t.min_input_tokens) as threshold,
             min(t.input) as input, min(t.output) as output
      from private.legacy_tiers() t
      group by t.provider_id, t.model_id
      having count(*) = 1 and min(t.min_input_tokens) between 1 and 100000000
         and private.valid_price(min(t.input)) and private.valid_price(min(t.output)))
    select coalesce(l.provider_id, t.provider_id) as provider_id,
           coalesce(l.model_id, t.model_id) as model_id,
           l.provider_id is not null as has_legacy, l.input, l.output, l.image, l.request,
           t.id as tier_id, t.threshold, t.input as tier_input, t.output as tier_output
    from legacy l full join tiers t using (provider_id, model_id)
    order by 1, 2
  loop
    cur := private.current_price(target.provider_id, target.model_id);
    if cur.id is null and not target.has_legacy then
      continue;  -- a tier for a model without any price: nothing to attach it to
    end if;
    want := cur;
    want.currency := coalesce(cur.currency, 'USD');
    want.pricing_source := coalesce(cur.pricing_source, 'import');
    if target.has_legacy then
      want.price_per_input_token := target.input;
      want.price_per_output_token := target.output;
      want.price_per_request := target.request;
      want.price_per_image := target.image;
      want.pricing_source := 'import';
      want.source_detail := 'legacy models.pricing_* columns';
      want.pricing_type := case
        when target.input = 0 and target.output = 0 and target.image = 0 and target.request = 0
          then 'free'
        when cur.pricing_type = 'deprecated' then 'deprecated'
        else 'paid' end;
      if want.pricing_type = 'free' or cur.pricing_type in ('free', 'missing') then
        want.price_per_cached_input_token := null;  -- a free row's 0 is no cache price
      end if;
    end if;
    if target.tier_id is not null then
      want.long_context_threshold := target.threshold;
      want.price_per_input_token_above_threshold := target.tier_input;
      want.price_per_output_token_above_threshold := target.tier_output;
    end if;
    if cur.id is null or (want.price_per_input_token, want.price_per_output_token,
        want.price_per_request, want.price_per_image, want.pricing_type,
        want.long_context_threshold, want.price_per_input_token_above_threshold,
        want.price_per_output_token_above_threshold)
       is distinct from (cur.price_per_input_token, cur.price_per_output_token,
        cur.price_per_request, cur.price_per_image, cur.pricing_type, cur.long_context_threshold,
        cur.price_per_input_token_above_threshold, cur.price_per_output_token_above_threshold)
    then
      insert into public.model_pricing (provider_id, model_id, price_per_input_token,
        price_per_output_token, price_per_cached_input_token, price_per_request, price_per_image,
        currency, pricing_type, pricing_source, source_detail, effective_from,
        long_context_threshold, price_per_input_token_above_threshold,
        price_per_output_token_above_threshold, last_updated)
      values (target.provider_id, target.model_id, want.price_per_input_token,
        want.price_per_output_token, want.price_per_cached_input_token, want.price_per_request,
        want.price_per_image, want.currency, want.pricing_type, want.pricing_source,
        want.source_detail,
        case when cur.id is null then '1970-01-01 00:00:00+00'::timestamptz else now() end,
        want.long_context_threshold, want.price_per_input_token_above_threshold,
        want.price_per_output_token_above_threshold, now())
      on conflict on constraint model_pricing_provider_model_key do update set
        price_per_input_token = excluded.price_per_input_token,
        price_per_output_token = excluded.price_per_output_token,
        price_per_cached_input_token = excluded.price_per_cached_input_token,
        price_per_request = excluded.price_per_request,
        price_per_image = excluded.price_per_image, pricing_type = excluded.pricing_type,
        pricing_source = excluded.pricing_source, source_detail = excluded.source_detail,
        long_context_threshold = excluded.long_context_threshold,
        price_per_input_token_above_threshold = excluded.price_per_input_token_above_threshold,
        price_per_output_token_above_threshold = excluded.price_per_output_token_above_threshold;
      written := written + 1;
    end if;
    if target.tier_id is not null then
      execute format('delete from %I.%I where %I = $1', 'public', 'pricing_tiers', 'id')
        using target.tier_id;
    end if;
  end loop;
  return written;
end
$$;

-- ── public.pricing_consolidation_report() → jsonb ─────────────────────────────────────────
-- {passed, legacy_columns_present, pricing_tiers_present, checks: [{name, severity, passed,
-- count, items}]}; passed = every 'error' check passed. Works with or without the legacy
-- storage (dynamic SQL, identifiers through format('%I')). items: at most 1000 per check
-- (count is the full number), money as exact decimal strings. Checks:
--   legacy_price_not_in_model_pricing (error)  {provider, model, legacy: {pricing_prompt, ...}}
--       (no model_pricing version in effect now)
--   legacy_price_differs (error)  one item per field: {provider, model, field, old, new}
--                                 old = legacy column, new = model_pricing (version now)
--   paid_model_priced_zero (error)  current version 'paid' with every price 0
--   active_model_without_price (warning)  active catalog model whose price is missing (no
--       version now, or pricing_type 'missing'): charging it is refused, never $0
--   pricing_tiers_not_empty (error)  {id, provider, model, min_input_tokens, input, output}
--   usage_without_price (error)  {provider, model, records}: usage whose model had no
--       chargeable version at occurred_at
-- Who may call: service_role, postgres (dashboard SQL editor). SECURITY DEFINER: reads every
-- user's usage and the legacy tables. Raises: 42501 forbidden.
-- jit off / work_mem: each check is one scan over a catalog-sized table; JIT compilation cost
-- more than it saved (~250 ms per check at 100k models) and sorts spilled to disk.
create or replace function public.pricing_consolidation_report() returns jsonb
language plpgsql stable security definer
set search_path = '' set jit = off set work_mem = '64MB' as $$
declare
  checks jsonb := '[]'::jsonb;
  cnt integer;
  items jsonb;
  cnt2 integer;
  items2 jsonb;
begin
  perform private.assert_service_role();

  -- legacy_price_not_in_model_pricing / legacy_price_differs: one pass over the legacy
  -- columns (dynamic SQL: they may be gone) against the version in effect now.
  if private.has_legacy_pricing() then
    execute format($q$
      with l as materialized (
        select m.provider_id, m.model_id, coalesce(m.%1$I, 0)::numeric as input,
               coalesce(m.%2$I, 0)::numeric as output, coalesce(m.%3$I, 0)::numeric as image,
               coalesce(m.%4$I, 0)::numeric as request
        from public.models m where m.%1$I is not null or m.%2$I is not null),
      c as (
        select distinct on (p.provider_id, p.model_id) p.provider_id, p.model_id,
               p.price_per_input_token, p.price_per_output_token, p.price_per_image,
               p.price_per_request
        from public.model_pricing p
        where p.effective_from <= now()
          and (p.provider_id, p.model_id) in (select l.provider_id, l.model_id from l)
        order by p.provider_id, p.model_id, p.effective_from desc),
      missing as (
        select l.* from l
        where not exists (select 1 from c where c.provider_id = l.provider_id
                                           and c.model_id = l.model_id)),
      differs as (
        select l.provider_id, l.model_id, f.field, f.old, f.new
        from l join c using (provider_id, model_id)
        cross join lateral (values
          ('price_per_input_token', l.input, c.price_per_input_token),
          ('price_per_output_token', l.output, c.price_per_output_token),
          ('price_per_image', l.image, c.price_per_image),
          ('price_per_request', l.request, c.price_per_request)) as f(field, old, new)
        where f.old is distinct from f.new)
      select (select count(*)::int from missing),
             (select coalesce(jsonb_agg(jsonb_build_object('provider', x.provider_id,
                       'model', x.model_id, 'legacy', jsonb_build_object(
                         'pricing_prompt', private.money(x.input),
                         'pricing_completion', private.money(x.output),
                         'pricing_image', private.money(x.image),
                         'pricing_request', private.money(x.request)))
                       order by x.provider_id, x.model_id), '[]')
              from (select * from missing order by provider_id, model_id limit 1000) x),
             (select count(*)::int from differs),
             (select coalesce(jsonb_agg(jsonb_build_object('provider', x.provider_id,
                       'model', x.model_id, 'field', x.field, 'old', private.money(x.old),
                       'new', private.money(x.new))
                       order by x.provider_id, x.model_id, x.field), '[]')
              from (select * from differs order by provider_id, model_id, field limit 1000) x)
      $q$, 'pricing_prompt', 'pricing_completion', 'pricing_image', 'pricing_request')
    into cnt, items, cnt2, items2;
  else
    cnt := 0; items := '[]'; cnt2 := 0; items2 := '[]';
  end if;
  checks := checks || jsonb_build_object('name', 'legacy_price_not_in_model_pricing',
    'severity', 'error', 'passed', cnt = 0, 'count', cnt, 'items', items);
  checks := checks || jsonb_build_object('name', 'legacy_price_differs', 'severity', 'error',
    'passed', cnt2 = 0, 'count', cnt2, 'items', items2);

  -- paid_model_priced_zero / active_model_without_price: one pass over the current versions
  select count(*), coalesce(jsonb_agg(x.item) filter (where x.n <= 1000), '[]')
  into cnt, items
  from (select row_number() over (order by c.provider_id, c.model_id) as n,
               jsonb_build_object('provider', c.provider_id, 'model', c.model_id,
                 'effective_from', c.effective_from) as item
        from (select distinct on (p.provider_id, p.model_id) p.*
              from public.model_pricing p where p.effective_from <= now()
              order by p.provider_id, p.model_id, p.effective_from desc) c
        where c.pricing_type = 'paid' and c.price_per_input_token = 0
          and c.price_per_output_token = 0 and c.price_per_request = 0
          and c.price_per_image = 0) x;
  checks := checks || jsonb_build_object('name', 'paid_model_priced_zero', 'severity', 'error',
    'passed', cnt = 0, 'count', cnt, 'items', items);

  select count(*), coalesce(jsonb_agg(x.item) filter (where x.n <= 1000), '[]')
  into cnt, items
  from (select row_number() over (order by m.provider_id, m.model_id) as n,
               jsonb_build_object('provider', m.provider_id, 'model', m.model_id,
                 'pricing_type', 'missing') as item
        from public.models m
        left join (select distinct on (p.provider_id, p.model_id) p.provider_id, p.model_id,
                          p.pricing_type
                   from public.model_pricing p where p.effective_from <= now()
                   order by p.provider_id, p.model_id, p.effective_from desc) c
          using (provider_id, model_id)
        where m.is_active and (c.pricing_type is null or c.pricing_type = 'missing')) x;
  checks := checks || jsonb_build_object('name', 'active_model_without_price',
    'severity', 'warning', 'passed', cnt = 0, 'count', cnt, 'items', items);

  -- pricing_tiers_not_empty
  select count(*), coalesce(jsonb_agg(x.item) filter (where x.n <= 1000), '[]')
  into cnt, items
  from (select row_number() over (order by t.provider_id, t.model_id, t.id) as n,
               jsonb_build_object('id', t.id, 'provider', t.provider_id, 'model', t.model_id,
                 'min_input_tokens', t.min_input_tokens, 'price_per_input_token',
                 private.money(t.input), 'price_per_output_token', private.money(t.output))
                 as item
        from private.legacy_tiers() t) x;
  checks := checks || jsonb_build_object('name', 'pricing_tiers_not_empty', 'severity', 'error',
    'passed', cnt = 0, 'count', cnt, 'items', items);

  -- usage_without_price. Fast path per (provider, model): when a chargeable version starts at
  -- or before its first usage and the model has no 'missing' version, every record is priced;
  -- only the other models are checked record by record.
  select count(*), coalesce(jsonb_agg(x.item) filter (where x.n <= 1000), '[]')
  into cnt, items
  from (select row_number() over (order by u.provider_id, u.model_id) as n,
               jsonb_build_object('provider', u.provider_id, 'model', u.model_id,
                 'records', u.records) as item
        from (select r.provider_id, r.model_id, count(*) as records
              from public.usage_records r
              join (select g.provider_id, g.model_id
                    from (select r2.provider_id, r2.model_id, min(r2.occurred_at) as first_at
                          from public.usage_records r2 group by 1, 2) g
                    where not exists (select 1 from public.model_pricing p
                                      where p.provider_id = g.provider_id
                                        and p.model_id = g.model_id
                                        and p.effective_from <= g.first_at
                                        and p.pricing_type <> 'missing')
                       or exists (select 1 from public.model_pricing p
                                  where p.provider_id = g.provider_id
                                    and p.model_id = g.model_id
                                    and p.pricing_type = 'missing')) suspect
                using (provider_id, model_id)
              where not exists (
                select 1 from (select p.pricing_type from public.model_pricing p
                               where p.provider_id = r.provider_id and p.model_id = r.model_id
                                 and p.effective_from <= r.occurred_at
                               order by p.effective_from desc limit 1) v
                where v.pricing_type <> 'missing')
              group by r.provider_id, r.model_id) u) x;
  checks := checks || jsonb_build_object('name', 'usage_without_price', 'severity', 'error',
    'passed', cnt = 0, 'count', cnt, 'items', items);

  return jsonb_build_object(
    'passed', not exists (select 1 from jsonb_array_elements(checks) c
                          where c ->> 'severity' = 'error' and not (c ->> 'passed')::boolean),
    'legacy_columns_present', private.has_legacy_pricing(),
    'pricing_tiers_present', to_regclass('public.pricing_tiers') is not null,
    'checks', checks);
end
$$;

-- private.assert_consolidation_safe(): raises P0001 consolidation_would_lose_prices naming
-- every model whose legacy price or tier is not (identically) in model_pricing. The DO block
-- of 20251130000012_drop_legacy_pricing_storage.sql calls it right before dropping the legacy
-- storage.
create or replace function private.assert_consolidation_safe() returns void
language plpgsql stable set search_path = '' as $$
declare
  report jsonb := public.pricing_consolidation_report();
  lost text;
begin
  select string_agg(distinct (i ->> 'provider') || '/' || (i ->> 'model'), ', ')
  into lost
  from jsonb_array_elements(report -> 'checks') c, jsonb_array_elements(c -> 'items') i
  where c ->> 'name' in ('legacy_price_not_in_model_pricing', 'legacy_price_differs',
                         'pricing_tiers_not_empty')
    and not (c ->> 'passed')::boolean;
  if lost is not null then
    raise exception using errcode = 'P0001', message = 'consolidation_would_lose_prices',
      detail = format('dropping the legacy price columns / pricing_tiers would lose the prices '
                      'of: %s. Fix them (populate_model_pricing(), set_model_price()) and '
                      'run the migration again; nothing was changed.', lost);
  end if;
end
$$;

-- ── Views (security_invoker: the caller's grants and RLS apply) ─────────────────────────
-- models_with_pricing: every catalog model with the price version in effect now (or NULLs).
-- The version's columns are listed, not v.*: a view stores the expansion of * as of its
-- creation, and this one has always carried the 19 columns model_pricing had before the per-1K
-- columns (the fold keeps the stored view identical; docs/pricing.md).
create or replace view public.models_with_pricing with (security_invoker = true) as
select m.id, m.provider_id, m.model_id, m.display_name, m.capabilities, m.context_length,
       m.is_active, m.metadata, m.created_at, m.updated_at,
       p.id as pricing_id, p.price_per_input_token, p.price_per_output_token,
       p.price_per_cached_input_token, p.price_per_request, p.price_per_image, p.currency,
       p.pricing_type, p.pricing_source, p.source_detail, p.effective_from,
       p.long_context_threshold, p.price_per_input_token_above_threshold,
       p.price_per_output_token_above_threshold, p.last_updated
from public.models m
left join lateral (select v.id, v.provider_id, v.model_id, v.price_per_input_token,
                          v.price_per_output_token, v.price_per_cached_input_token,
                          v.price_per_request, v.price_per_image, v.currency, v.pricing_type,
                          v.pricing_source, v.last_updated, v.created_at, v.updated_at,
                          v.effective_from, v.long_context_threshold,
                          v.price_per_input_token_above_threshold,
                          v.price_per_output_token_above_threshold, v.source_detail
                   from public.model_pricing v
                   where v.provider_id = m.provider_id and v.model_id = m.model_id
                     and v.effective_from <= now()
                   order by v.effective_from desc limit 1) p on true;

-- models_pricing_classified: + pricing_classification paid / free / deprecated / missing.
create or replace view public.models_pricing_classified with (security_invoker = true) as
select w.*, coalesce(w.pricing_type, 'missing') as pricing_classification,
       coalesce(w.pricing_type, 'missing') in ('paid', 'deprecated') as is_chargeable
from public.models_with_pricing w;

-- models_pricing_status: one line per model for dashboards: classification, versions, next
-- scheduled change, and whether it needs attention (the report's per-model problems).
create or replace view public.models_pricing_status with (security_invoker = true) as
select c.provider_id, c.model_id, c.display_name, c.is_active, c.pricing_classification,
       c.pricing_source, c.currency, c.effective_from, c.last_updated,
       (select count(*) from public.model_pricing v
        where v.provider_id = c.provider_id and v.model_id = c.model_id) as version_count,
       (select min(v.effective_from) from public.model_pricing v
        where v.provider_id = c.provider_id and v.model_id = c.model_id
          and v.effective_from > now()) as next_change_at,
       case
         when c.is_active and c.pricing_classification = 'missing' then 'active_without_price'
         when c.pricing_classification = 'paid' and c.price_per_input_token = 0
              and c.price_per_output_token = 0 and c.price_per_request = 0
              and c.price_per_image = 0 then 'paid_priced_zero'
       end as problem
from public.models_pricing_classified c;

-- models_legacy_pricing: temporary compatibility view with the legacy column names (plan,
-- appendix C) for code not yet migrated. Read-only; drop it once nothing reads it.
create or replace view public.models_legacy_pricing with (security_invoker = true) as
select w.id, w.provider_id, w.model_id, w.display_name, w.capabilities, w.context_length,
       w.is_active, w.metadata, w.created_at, w.updated_at,
       w.price_per_input_token as pricing_prompt, w.price_per_output_token as pricing_completion,
       w.price_per_image as pricing_image, w.price_per_request as pricing_request
from public.models_with_pricing w;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke all on public.models_with_pricing, public.models_pricing_classified,
  public.models_pricing_status, public.models_legacy_pricing
  from public, anon, authenticated, service_role;
grant select on public.models_with_pricing, public.models_pricing_classified,
  public.models_pricing_status, public.models_legacy_pricing
  to anon, authenticated, service_role;

revoke execute on function private.has_legacy_pricing() from public;
revoke execute on function private.legacy_prices() from public;
revoke execute on function private.legacy_tiers() from public;
revoke execute on function private.current_price(text, text) from public;
revoke execute on function private.valid_price(numeric) from public;
revoke execute on function private.assert_consolidation_safe() from public;
revoke execute on function public.populate_model_pricing() from public, anon, authenticated;
revoke execute on function public.pricing_consolidation_report()
  from public, anon, authenticated;
grant execute on function public.populate_model_pricing() to service_role;
grant execute on function public.pricing_consolidation_report() to service_role;
