-- 20261129220002_usage_statistics_views.sql
--
-- Reading the rollups (issue 12 §3): exact numbers, fast.
--   usage_daily_totals  per UTC day, user, provider/model, key, subscription and currency:
--                       the daily summaries + the usage records not rolled up yet (id >
--                       usage_rolled_up_to()) + the adjustments not folded in yet, read under one
--                       snapshot, so the totals are exact however long ago rollup_usage() ran
--                       (the rollup commits summaries, its position and the adjustments it folds
--                       together). The lag only costs speed: the records after the position are
--                       read one by one.
--   usage_statistics    seed 003's view (user_id, model_id, usage_date, request_count,
--                       total_tokens, avg_latency_ms, error_count) + tokens by kind. Requests and
--                       errors include metered requests that failed upstream (nothing charged).
--   user_daily_spend    per user, UTC day and currency: requests, cost, refunded, net_cost.
-- All three are security_invoker: the reader's RLS applies to every table under them, so a
-- signed-in user sees only their own rows (usage_summaries, usage_records, metered_requests and
-- usage_summary_adjustments each let a user read only their own). anon reads nothing.
-- usage_report() (20251201000060) now reads usage_daily_totals when its range is whole UTC days
-- (or open): same columns, same numbers, without scanning the usage records of the range.
-- Filter on usage_date (timestamptz, start of the UTC day): it reaches the summaries' index.

-- ── Views ─────────────────────────────────────────────────────────────────────────────────
create view public.usage_daily_totals with (security_invoker = true) as
select f.usage_date, f.user_id, f.provider_id, f.model_id, f.api_key_id, f.subscription_id,
       f.currency,
       sum(f.requests)::bigint as requests,
       sum(f.error_requests)::bigint as error_requests,
       sum(f.failed_requests)::bigint as failed_requests,
       sum(f.input_tokens)::bigint as input_tokens,
       sum(f.cached_input_tokens)::bigint as cached_input_tokens,
       sum(f.output_tokens)::bigint as output_tokens,
       sum(f.images)::bigint as images,
       sum(f.cost) as cost,
       sum(f.refunded) as refunded,
       sum(f.latency_ms_sum)::bigint as latency_ms_sum,
       sum(f.latency_count)::bigint as latency_count
from (
  select s.period_start as usage_date, s.user_id, s.provider_id, s.model_id, s.api_key_id,
         s.subscription_id, s.currency, s.requests, s.error_requests, s.failed_requests,
         s.input_tokens, s.cached_input_tokens, s.output_tokens, s.images, s.cost, s.refunded,
         s.latency_ms_sum, s.latency_count
  from public.usage_summaries s
  where s.period = 'day'
  union all
  select date_trunc('day', u.occurred_at, 'UTC'), u.user_id, u.provider_id, u.model_id,
         m.api_key_id, m.subscription_id, u.currency, 1, (u.status <> 'success')::integer, 0,
         u.input_tokens, u.cached_input_tokens, u.output_tokens, u.images, u.cost, 0,
         coalesce(u.latency_ms, 0), (u.latency_ms is not null)::integer
  from public.usage_records u
  left join public.metered_requests m on m.request_id = u.request_id
  where u.id > public.usage_rolled_up_to()
  union all
  select date_trunc('day', a.occurred_at, 'UTC'), a.user_id, a.provider_id, a.model_id,
         a.api_key_id, a.subscription_id, a.currency, 0, 0, (a.kind = 'failed')::integer, 0, 0,
         0, 0, a.cost, a.refunded, coalesce(a.latency_ms, 0),
         (a.latency_ms is not null)::integer
  from public.usage_summary_adjustments a
  -- A re-price of a record not rolled up yet is in the cost the branch above reads.
  where a.kind <> 'reprice' or a.usage_id <= public.usage_rolled_up_to()
) as f
group by f.usage_date, f.user_id, f.provider_id, f.model_id, f.api_key_id, f.subscription_id,
         f.currency;
comment on view public.usage_daily_totals is
  'Exact usage per UTC day, user, model, key, subscription and currency: usage_summaries plus '
  'what rollup_usage() has not folded in yet. Rows are the reader''s own (RLS).';

create view public.usage_statistics with (security_invoker = true) as
select t.user_id, t.model_id, t.usage_date,
       sum(t.requests + t.failed_requests)::bigint as request_count,
       sum(t.input_tokens + t.output_tokens)::bigint as total_tokens,
       sum(t.input_tokens)::bigint as input_tokens,
       sum(t.cached_input_tokens)::bigint as cached_input_tokens,
       sum(t.output_tokens)::bigint as output_tokens,
       round(sum(t.latency_ms_sum)::numeric / nullif(sum(t.latency_count), 0), 3)
         as avg_latency_ms,
       sum(t.error_requests + t.failed_requests)::bigint as error_count
from public.usage_daily_totals t
group by t.user_id, t.model_id, t.usage_date;
comment on view public.usage_statistics is
  'Seed 003 usage_statistics: per user, model and UTC day. Rows are the reader''s own (RLS).';

create view public.user_daily_spend with (security_invoker = true) as
select t.user_id, t.usage_date, (t.usage_date at time zone 'UTC')::date as day, t.currency,
       sum(t.requests)::bigint as requests,
       sum(t.cost) as cost,
       sum(t.refunded) as refunded,
       sum(t.cost) - sum(t.refunded) as net_cost
from public.usage_daily_totals t
group by t.user_id, t.usage_date, t.currency;
comment on view public.user_daily_spend is
  'Spend per user, UTC day and currency: cost, refunds of that day''s usage, net. Own rows (RLS).';

-- ── usage_report(): the rollups for whole days ────────────────────────────────────────────
-- Same signature, result, errors and grants as 20251201000060. The only change: a range whose
-- ends are both midnight UTC (or open) is summed from usage_daily_totals; any other range from
-- usage_records as before. Both give the same numbers (tests/test_usage_rollups.py and pgTAP 82
-- compare them).
create or replace function public.usage_report(
  since timestamptz default null,
  until timestamptz default null,
  for_user uuid default null,
  for_key text default null,
  group_by text default 'day'
) returns table (
  day date,
  model text,
  user_id uuid,
  api_key_id uuid,
  api_key_name text,
  currency text,
  requests bigint,
  input_tokens bigint,
  cached_input_tokens bigint,
  output_tokens bigint,
  cost numeric
)
language plpgsql stable security invoker set search_path = '' as $$
#variable_conflict use_column
declare
  key_id uuid;
  whole_days boolean;
begin
  if group_by is null or group_by not in ('day', 'model', 'user', 'key', 'day_model') then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = format('group_by must be one of day, model, user, key, day_model; got %s',
                      coalesce(group_by, 'null'));
  end if;
  if since is not null and until is not null and until <= since then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = format('until must be after since (%s .. %s)', since, until);
  end if;
  -- A balance row exists for every user (signup trigger) and RLS shows a user only their own.
  if for_user is not null
     and not exists (select 1 from public.user_balances b where b.user_id = for_user) then
    raise exception using errcode = 'PT404', message = 'user_not_found',
      detail = format('no user %s (or not yours to see)', for_user);
  end if;
  if for_key is not null then
    -- Cast only what looks like a uuid: a prefix given to ::uuid would raise 22P02.
    if for_key ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
      select k.id into key_id from public.api_keys k where k.id = for_key::uuid;
    else
      select k.id into key_id from public.api_keys k where k.prefix = for_key;
    end if;
    if key_id is null then
      raise exception using errcode = 'PT404', message = 'api_key_not_found',
        detail = format('no API key %s (give its id or its tm_ prefix)', for_key);
    end if;
  end if;
  whole_days := (since is null or since = date_trunc('day', since, 'UTC'))
                and (until is null or until = date_trunc('day', until, 'UTC'));

  return query
  with picked as (
    select (t.usage_date at time zone 'UTC')::date as day, t.model_id, t.user_id,
           t.api_key_id, t.currency, t.requests, t.input_tokens, t.cached_input_tokens,
           t.output_tokens, t.cost
    from public.usage_daily_totals t
    where whole_days
      and (since is null or t.usage_date >= since)
      and (until is null or t.usage_date < until)
      and (for_user is null or t.user_id = for_user)
      and (key_id is null or t.api_key_id = key_id)
    union all
    select (u.occurred_at at time zone 'UTC')::date, u.model_id, u.user_id, m.api_key_id,
           u.currency, 1, u.input_tokens, u.cached_input_tokens, u.output_tokens, u.cost
    from public.usage_records u
    left join public.metered_requests m on m.request_id = u.request_id
    where not whole_days
      and (since is null or u.occurred_at >= since)
      and (until is null or u.occurred_at < until)
      and (for_user is null or u.user_id = for_user)
      and (key_id is null or m.api_key_id = key_id)
  ), grouped as (
    -- Dimensions not asked for are NULL, so one GROUP BY serves every group_by.
    select case when group_by in ('day', 'day_model') then p.day end as day,
           case when group_by in ('model', 'day_model') then p.model_id end as model,
           case when group_by = 'user' then p.user_id end as user_id,
           case when group_by = 'key' then p.api_key_id end as api_key_id,
           p.currency,
           sum(p.requests)::bigint as requests,
           sum(p.input_tokens)::bigint as input_tokens,
           sum(p.cached_input_tokens)::bigint as cached_input_tokens,
           sum(p.output_tokens)::bigint as output_tokens,
           sum(p.cost) as cost
    from picked p
    group by 1, 2, 3, 4, 5
    -- Days with only failed requests (no usage record) are not usage.
    having sum(p.requests) > 0
  )
  select g.day, g.model, g.user_id, g.api_key_id, k.name, g.currency, g.requests,
         g.input_tokens, g.cached_input_tokens, g.output_tokens, g.cost
  from grouped g
  left join public.api_keys k on k.id = g.api_key_id
  order by g.day nulls first, g.cost desc, g.model, g.user_id, g.api_key_id, g.currency;
end
$$;

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
grant select on public.usage_daily_totals to authenticated, service_role;
grant select on public.usage_statistics to authenticated, service_role;
grant select on public.user_daily_spend to authenticated, service_role;
