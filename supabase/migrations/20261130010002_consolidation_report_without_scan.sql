-- 20261130010002_consolidation_report_without_scan.sql
--
-- public.pricing_consolidation_report() (20251130000011) without reading every usage record
-- (issue 13 §2: the dashboard's consolidation report took ~55 s on 10 million usage records and
-- hit its 60 s timeout). Same signature, result, checks, errors and grants; only the
-- usage_without_price check changes how it counts.
--
-- Before: the first usage of every (provider, model) (a scan of usage_records), then the
-- price version in effect for every record of a suspect model (a probe per record).
-- Now: a record is unpriced iff it lies in a GAP of its (provider, model): before the model's
-- first version (the whole time line when it has none), or in the span of a version whose
-- pricing_type is 'missing' (until the next version). Gaps come from model_pricing (a
-- catalog-sized read); each gap's records are counted in four disjoint parts:
--   (a) records not rolled up yet (id > rolled_up_to): read one by one, a short range of the
--       primary key (what the rollup has not reached: seconds of traffic with the worker on);
--   (b) the gap's whole UTC days: requests of usage_model_summaries (20261130010001), which
--       counts every rolled-up record once, per day, provider and model;
--   (c) the gap's first and last day where the gap starts or ends inside it: their whole
--       hours from the hourly usage_summaries (an index range of that day), their cut hours
--       record by record for the users whose hourly summary shows that model in that hour,
--       through usage_records' (user_id, occurred_at) index, between the gap's ends;
--   (d) the gap's part before settled_from (below), the same way over the users whose day
--       summaries show the model before it.
-- All four read one snapshot (a STABLE function), in which the rollup's position, the
-- summaries and the records agree (rollup_usage() commits them together).
-- settled_from: archiving (tokenmeter usage archive) drops whole months of usage_records but
-- keeps their summaries, so the summaries over-count days whose records were archived. Those
-- records were created before the newest run of consecutive monthly partitions starts, and
-- record_usage takes occurred_at at most 5 minutes after created_at; so from that run's
-- second day on, every rolled-up record counted in the summaries is still in usage_records.
-- Before it, (d) reads the records themselves. (A record written around the charging functions
-- with occurred_at far after created_at, then archived, would be counted; nothing in tokenmeter
-- writes one.) Without monthly partitions, settled_from is infinity: everything is (a) or (d).
-- Cost: (a) the records behind the rollup; (b) the summary days of the gaps; (c) the hourly
-- summaries of at most two days per gap, and one index probe per partition and user with usage
-- of the model in a cut hour; (d) the same per user with usage of it before settled_from.
-- Measured on 10 M records (docs/benchmarks.md): 0.07-0.09 s without a gap in the data,
-- 0.5-0.7 s with an 11-day 'missing' span cut inside two hours, under a load of 7-9 on 2 cores. A model priced since before its first use and without a 'missing' version
-- costs nothing beyond the gap computation.
-- plan_cache_mode = force_custom_plan: rolled_up_to and settled_from must reach the planner as
-- values, so the PK range and the index probes are planned as such, not as a third of the
-- table.

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
set search_path = '' set jit = off set work_mem = '64MB' set plan_cache_mode = force_custom_plan
as $$
declare
  checks jsonb := '[]'::jsonb;
  cnt integer;
  items jsonb;
  cnt2 integer;
  items2 jsonb;
  rolled bigint;
  settled_from timestamptz;
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

  -- usage_without_price: the usage records whose (provider, model) had no chargeable version
  -- at occurred_at, counted without reading every record (see the header for why each part
  -- is exact). A record is unpriced iff it lies in a gap of its model: before the model's first
  -- version, or in the span of a 'missing' version (until the next version). Its count per
  -- gap = (a) the records not rolled up yet (id > rolled_up_to, one by one: a short PK range)
  -- + (b) the whole UTC days of the gap from usage_model_summaries + (c) the gap's cut first and
  -- last days: whole hours from the hourly summaries, cut hours per user, and (d) whatever lies
  -- before `settled_from`, read per user through usage_records (user_id, occurred_at): only
  -- users whose summaries show the model there.
  select s.rolled_up_to into rolled from private.usage_rollup_state s;
  -- From the second day of the newest run of consecutive monthly partitions on, every rolled-up
  -- record of usage_summaries is still in usage_records: archiving drops whole months before
  -- it, whose records occurred at most 5 minutes after their created_at (record_usage's rule).
  select coalesce(max(m.month::timestamp at time zone 'UTC') + interval '24 hours', 'infinity')
  into settled_from
  from (select to_date(substring(c.relname from '(\d{4}_\d{2})$'), 'YYYY_MM') as month
        from pg_catalog.pg_inherits i
        join pg_catalog.pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'public.usage_records'::regclass
          and c.relname ~ '^usage_records_\d{4}_\d{2}$') m
  where not exists (
    select 1 from pg_catalog.pg_inherits i2
    join pg_catalog.pg_class c2 on c2.oid = i2.inhrelid
    where i2.inhparent = 'public.usage_records'::regclass
      and c2.relname = 'usage_records_' || to_char(m.month - interval '1 month', 'YYYY_MM'));

  with pairs as (
    select s.provider_id, s.model_id from public.usage_model_summaries s
    where s.requests > 0 and s.provider_id is not null
    union
    select u.provider_id, u.model_id from public.usage_records u where u.id > rolled
  ), gaps as materialized (
    select pr.provider_id, pr.model_id, '-infinity'::timestamptz as lo,
           coalesce(min(p.effective_from), 'infinity') as hi
    from pairs pr
    left join public.model_pricing p
      on p.provider_id = pr.provider_id and p.model_id = pr.model_id
    group by pr.provider_id, pr.model_id
    union all
    select v.provider_id, v.model_id, v.effective_from, coalesce(v.next_from, 'infinity')
    from (select p.provider_id, p.model_id, p.effective_from, p.pricing_type,
                 lead(p.effective_from) over (partition by p.provider_id, p.model_id
                                              order by p.effective_from) as next_from
          from public.model_pricing p
          where (p.provider_id, p.model_id) in (select pr.provider_id, pr.model_id
                                                from pairs pr)) v
    where v.pricing_type = 'missing'
  ), fresh as (
    select u.provider_id, u.model_id, count(*) as records
    from public.usage_records u
    join gaps g on g.provider_id = u.provider_id and g.model_id = u.model_id
               and u.occurred_at >= g.lo and u.occurred_at < g.hi
    where u.id > rolled
    group by u.provider_id, u.model_id
  ), whole_days as (
    -- UTC days are 24 hours whatever the session's TimeZone.
    select g.provider_id, g.model_id, sum(s.requests) as records
    from gaps g
    join public.usage_model_summaries s
      on s.provider_id = g.provider_id and s.model_id = g.model_id
     and s.usage_date >= greatest(g.lo, settled_from)
     and s.usage_date + interval '24 hours' <= g.hi
    group by g.provider_id, g.model_id
  ), cut_days as (
    -- The gap's first and last day from settled_from on, where the gap cuts them.
    select g.provider_id, g.model_id, greatest(g.lo, settled_from, d.day) as lo,
           least(g.hi, d.day + interval '24 hours') as hi, d.day
    from gaps g
    cross join lateral (
      select distinct x as day
      from unnest(array[date_trunc('day', greatest(g.lo, settled_from), 'UTC'),
                        date_trunc('day', g.hi, 'UTC')]) as x
      where isfinite(x)) d
  ), cut as (
    select c.* from cut_days c
    where c.lo < c.hi and not (c.lo = c.day and c.hi = c.day + interval '24 hours')
  ), whole_hours as (
    -- A cut day's whole hours: the users' hourly summaries (an index range per cut day).
    select c.provider_id, c.model_id, sum(n.records) as records
    from cut c
    cross join lateral (
      select sum(s.requests) as records from public.usage_summaries s
      where s.period = 'hour' and s.period_start >= c.lo
        and s.period_start <= c.hi - interval '1 hour'
        and s.provider_id = c.provider_id and s.model_id = c.model_id) n
    group by c.provider_id, c.model_id
  ), segments as (
    -- A cut day's cut hours (read per user, the users of that hour), and the gap's part
    -- before settled_from (hour null: per user, the users of those days).
    select c.provider_id, c.model_id, h.hour, greatest(c.lo, h.hour) as lo,
           least(c.hi, h.hour + interval '1 hour') as hi
    from cut c
    cross join lateral (
      select distinct x as hour
      from unnest(array[date_trunc('hour', c.lo, 'UTC'), date_trunc('hour', c.hi, 'UTC')]) as x
    ) h
    union all
    select g.provider_id, g.model_id, null, g.lo, least(g.hi, settled_from)
    from gaps g
    where g.lo < settled_from
  ), probes as (
    -- LATERAL: each segment's users are an index range of the summaries (period,
    -- period_start), not a pass over all of them.
    select distinct sg.provider_id, sg.model_id, sg.lo, sg.hi, who.user_id
    from segments sg
    cross join lateral (
      select s.user_id from public.usage_summaries s
      where s.period = 'hour' and s.period_start = sg.hour and sg.hour is not null
        and s.provider_id = sg.provider_id and s.model_id = sg.model_id and s.requests > 0
      union all
      select s.user_id from public.usage_summaries s
      where s.period = 'day' and sg.hour is null
        and s.period_start >= date_trunc('day', sg.lo, 'UTC') and s.period_start < sg.hi
        and s.provider_id = sg.provider_id and s.model_id = sg.model_id and s.requests > 0
    ) who
    where sg.lo < sg.hi
      and not (sg.hour is not null and sg.lo = sg.hour and sg.hi = sg.hour + interval '1 hour')
  ), probed as (
    -- LATERAL: one (user_id, occurred_at) index range per probe, never a join over the table.
    select pb.provider_id, pb.model_id, sum(n.records) as records
    from probes pb
    cross join lateral (
      select count(*) as records from public.usage_records u
      where u.user_id = pb.user_id and u.occurred_at >= pb.lo and u.occurred_at < pb.hi
        and u.provider_id = pb.provider_id and u.model_id = pb.model_id
        and u.id <= rolled) n
    group by pb.provider_id, pb.model_id
  ), counted as (
    select c.provider_id, c.model_id, sum(c.records)::bigint as records
    from (select * from fresh union all select * from whole_days
          union all select * from whole_hours union all select * from probed) c
    group by c.provider_id, c.model_id
    having sum(c.records) > 0
  )
  select count(*), coalesce(jsonb_agg(x.item order by x.n) filter (where x.n <= 1000), '[]')
  into cnt, items
  from (select row_number() over (order by c.provider_id, c.model_id) as n,
               jsonb_build_object('provider', c.provider_id, 'model', c.model_id,
                 'records', c.records) as item
        from counted c) x;

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

-- ── Grants (as 20251130000011: CREATE OR REPLACE keeps them; restated) ────────────────────
revoke execute on function public.pricing_consolidation_report()
  from public, anon, authenticated;
grant execute on function public.pricing_consolidation_report() to service_role;
