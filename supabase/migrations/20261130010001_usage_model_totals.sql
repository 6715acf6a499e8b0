-- 20261130010001_usage_model_totals.sql
--
-- Usage per UTC day, provider, model and currency over ALL users (issue 13 §2: the dashboard's
-- overview and the pricing consolidation report stay fast on 10 million usage records).
-- usage_daily_totals is per user: a 30-day chart over 2,000 users × 6 models is 360,000 rows to
-- group on every page view, growing with users. This table holds the same numbers summed over
-- users (30 days × models rows), kept by the same rollup:
--   usage_model_summaries     per (day, provider, model, currency): requests, errors, failed
--                             requests, tokens by kind, cost, refunded, latency. Written by
--                             rollup_usage() in the statement that writes usage_summaries,
--                             from the same records and adjustments: same high-water mark,
--                             same re-price / refund / failed-request adjustments, so every
--                             row equals the sum of the users' day rows. The charge itself does
--                             nothing more (no trigger on usage_records' INSERT).
--   usage_model_daily_totals  the exact view: usage_model_summaries + the records after
--                             usage_rolled_up_to() + the adjustments not folded yet (as
--                             usage_daily_totals), under one snapshot.
-- Deleting a user takes their day summaries out of the model totals in the same trigger that
-- deletes those summaries. Archiving a month keeps its totals (as it keeps usage_summaries).
-- Global totals are admin data: service_role and postgres only. RLS is enabled on the table
-- with no policy (an API user reads nothing), SELECT granted to service_role alone; the view is
-- security_invoker and granted to service_role alone.
-- Existing databases: the table is filled from the daily usage_summaries in this migration,
-- holding a lock on the rollup's state, so no rollup runs between the fill and the new body.

-- ── Table ─────────────────────────────────────────────────────────────────────────────────
create table public.usage_model_summaries (
  -- Start of the UTC day.
  usage_date timestamptz not null,
  -- NULL only on rows that count failed metered requests alone (nothing was priced).
  provider_id text,
  model_id text not null,
  currency text not null,
  requests bigint not null default 0,
  error_requests bigint not null default 0,
  failed_requests bigint not null default 0,
  input_tokens bigint not null default 0,
  cached_input_tokens bigint not null default 0,
  output_tokens bigint not null default 0,
  images bigint not null default 0,
  cost numeric(24,12) not null default 0,
  refunded numeric(24,12) not null default 0,
  latency_ms_sum bigint not null default 0,
  latency_count bigint not null default 0,
  updated_at timestamptz not null default now(),
  -- Leading usage_date: a range of days is an index range.
  constraint usage_model_summaries_key unique nulls not distinct
    (usage_date, model_id, provider_id, currency),
  constraint usage_model_summaries_counts_range check (requests >= 0 and error_requests >= 0
    and failed_requests >= 0 and input_tokens >= 0 and cached_input_tokens >= 0
    and output_tokens >= 0 and images >= 0 and latency_ms_sum >= 0 and latency_count >= 0),
  -- cost not CHECKed >= 0, as usage_summaries.cost: a run folding only a lower re-price
  -- proposes a negative difference to ON CONFLICT.
  constraint usage_model_summaries_money_range
    check (cost > -1e15 and cost < 1e15 and refunded >= 0 and refunded < 1e15)
);
comment on table public.usage_model_summaries is
  'Usage per UTC day, provider, model and currency over all users, kept by rollup_usage() '
  'with usage_summaries. Read usage_model_daily_totals for exact current numbers. Admin only.';

-- ── Row level security (no policy: no API user reads global totals) ───────────────────────
alter table public.usage_model_summaries enable row level security;

-- ── Existing rollups: fill from the daily summaries ───────────────────────────────────────
-- EXCLUSIVE on the state table (rollup_usage() locks its row FOR UPDATE): a run of the old body
-- still going finishes first (its summaries are then visible to the next statement), a later
-- one waits for this migration's commit and runs the new body. In a DO block: the Supabase CLI
-- sends a file as one implicit transaction, where a bare LOCK TABLE is refused (25P01); a lock
-- taken inside the block is held to the end of the file's transaction all the same.
do $$ begin lock table private.usage_rollup_state in exclusive mode; end $$;
insert into public.usage_model_summaries (usage_date, provider_id, model_id, currency, requests,
  error_requests, failed_requests, input_tokens, cached_input_tokens, output_tokens, images,
  cost, refunded, latency_ms_sum, latency_count)
select s.period_start, s.provider_id, s.model_id, s.currency, sum(s.requests),
       sum(s.error_requests), sum(s.failed_requests), sum(s.input_tokens),
       sum(s.cached_input_tokens), sum(s.output_tokens), sum(s.images), sum(s.cost),
       sum(s.refunded), sum(s.latency_ms_sum), sum(s.latency_count)
from public.usage_summaries s
where s.period = 'day'
group by s.period_start, s.provider_id, s.model_id, s.currency;

-- ── Trigger function: user deletion ───────────────────────────────────────────────────────
-- private.delete_user_summaries(): AFTER DELETE on auth.users (trigger
-- on_auth_user_deleted_summaries, 20261129220001): the user's day summaries are subtracted from
-- the model totals, then their summaries and pending adjustments go with their usage records.
-- DEFINER: the Auth server deletes users as supabase_auth_admin, which has no privilege on
-- these tables.
create or replace function private.delete_user_summaries() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  update public.usage_model_summaries t set
    requests = t.requests - d.requests, error_requests = t.error_requests - d.error_requests,
    failed_requests = t.failed_requests - d.failed_requests,
    input_tokens = t.input_tokens - d.input_tokens,
    cached_input_tokens = t.cached_input_tokens - d.cached_input_tokens,
    output_tokens = t.output_tokens - d.output_tokens, images = t.images - d.images,
    cost = t.cost - d.cost, refunded = t.refunded - d.refunded,
    latency_ms_sum = t.latency_ms_sum - d.latency_ms_sum,
    latency_count = t.latency_count - d.latency_count, updated_at = now()
  from (select s.period_start, s.provider_id, s.model_id, s.currency,
               sum(s.requests) as requests, sum(s.error_requests) as error_requests,
               sum(s.failed_requests) as failed_requests, sum(s.input_tokens) as input_tokens,
               sum(s.cached_input_tokens) as cached_input_tokens,
               sum(s.output_tokens) as output_tokens, sum(s.images) as images,
               sum(s.cost) as cost, sum(s.refunded) as refunded,
               sum(s.latency_ms_sum) as latency_ms_sum, sum(s.latency_count) as latency_count
        from public.usage_summaries s
        where s.user_id = old.id and s.period = 'day'
        group by s.period_start, s.provider_id, s.model_id, s.currency) d
  where t.usage_date = d.period_start and t.model_id = d.model_id
    and t.provider_id is not distinct from d.provider_id and t.currency = d.currency;
  delete from public.usage_summaries s where s.user_id = old.id;
  delete from public.usage_summary_adjustments a where a.user_id = old.id;
  return null;
end
$$;

-- ── The rollup: usage_summaries and usage_model_summaries in one statement ────────────────
-- Same signature, result, errors, grants and behaviour as 20261129220001; the one change is
-- the model_written step (the day rows summed over users).
-- public.rollup_usage(max_rows = 1000000) → {rolled_up_to, rows, adjustments, summaries,
-- settled_to, pending_to, behind}: folds the usage records in (rolled_up_to, settled_to] (at
-- most max_rows ids of them) and the pending adjustments into usage_summaries and
-- usage_model_summaries, in one transaction. rows: records counted; adjustments: adjustments folded (or dropped because the
-- record they adjust was counted with its new cost); summaries: summary rows written; behind:
-- ids taken but not rolled up yet (in flight, or beyond max_rows: call again).
-- Who may call: service_role, postgres (pg_cron). DEFINER: reads the private state and
-- pg_locks, writes usage_summaries and usage_model_summaries, which no API role may write.
-- Raises: 42501 forbidden, 22023 invalid_argument (max_rows < 1), 55000 sequence_cached.
-- Generic plans: a run's statements are planned once per session, not per run (planning the
-- rollup statement costs more than running it on a few hundred rows).
create or replace function public.rollup_usage(max_rows integer default 1000000) returns jsonb
language plpgsql security definer set search_path = '' set plan_cache_mode = force_generic_plan
as $$
declare
  st private.usage_rollup_state;
  sequence_name text;
  last_id bigint;
  writers text[];
  target bigint;
  counted bigint;
  folded bigint;
  written bigint;
begin
  perform private.assert_service_role();
  if rollup_usage.max_rows is null or rollup_usage.max_rows < 1 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'max_rows must be at least 1';
  end if;
  -- One run at a time: a second waits here, then reads what the first committed.
  select s.* into st from private.usage_rollup_state s for update;

  if st.pending_to is not null and not private.any_running(st.pending_writers) then
    st.settled_to := greatest(st.settled_to, st.pending_to);
    st.pending_to := null;
    st.pending_writers := null;
  end if;
  -- The last id first, the writers after: a transaction that took an id <= last_id held its
  -- write lock before that, so it is among the writers unless it has already ended.
  sequence_name := pg_catalog.pg_get_serial_sequence('public.usage_records', 'id');
  -- A backend that caches ids could use one <= last_id in a later transaction, unseen here.
  if (select s.seqcache from pg_catalog.pg_sequence s
      where s.seqrelid = sequence_name::regclass) <> 1 then
    raise exception using errcode = '55000', message = 'sequence_cached',
      detail = format('%s must have CACHE 1 for rollup_usage() to see every id', sequence_name);
  end if;
  last_id := coalesce(pg_catalog.pg_sequence_last_value(sequence_name::regclass), 0);
  writers := private.usage_writers();
  if writers = '{}' then
    st.settled_to := greatest(st.settled_to, last_id);
    st.pending_to := null;
    st.pending_writers := null;
  elsif st.pending_to is null and last_id > st.settled_to then
    st.pending_to := last_id;
    st.pending_writers := writers;
  end if;
  target := least(st.settled_to, st.rolled_up_to + rollup_usage.max_rows);

  -- One statement, one snapshot: a re-price is either in the record's cost this run reads or
  -- in an adjustment it sees, never both, never neither.
  with fresh as (
    select u.occurred_at, u.user_id, u.provider_id, u.model_id, m.api_key_id,
           m.subscription_id, u.currency, 1 as requests,
           (u.status <> 'success')::integer as error_requests, 0 as failed_requests,
           u.input_tokens, u.cached_input_tokens, u.output_tokens, u.images::bigint as images,
           u.cost, 0::numeric as refunded, u.latency_ms
    from public.usage_records u
    left join public.metered_requests m on m.request_id = u.request_id
    where u.id > st.rolled_up_to and u.id <= target
  ), taken as (
    delete from public.usage_summary_adjustments a
    where a.usage_id is null or a.usage_id <= target
    returning a.*
  ), adjusting as (
    select a.occurred_at, a.user_id, a.provider_id, a.model_id, a.api_key_id,
           a.subscription_id, a.currency, 0, 0, (a.kind = 'failed')::integer, 0::bigint,
           0::bigint, 0::bigint, 0::bigint, a.cost, a.refunded, a.latency_ms
    from taken a
    -- A re-price of a record this run counts is in the cost it reads already.
    where a.kind <> 'reprice' or a.usage_id <= st.rolled_up_to
  ), facts as (
    select * from fresh union all select * from adjusting
  ), grouped as (
    select p.period, pg_catalog.date_trunc(p.period, f.occurred_at, 'UTC') as period_start,
           f.user_id, f.provider_id, f.model_id, f.api_key_id, f.subscription_id, f.currency,
           sum(f.requests) as requests, sum(f.error_requests) as error_requests,
           sum(f.failed_requests) as failed_requests, sum(f.input_tokens) as input_tokens,
           sum(f.cached_input_tokens) as cached_input_tokens,
           sum(f.output_tokens) as output_tokens, sum(f.images) as images,
           sum(f.cost) as cost, sum(f.refunded) as refunded,
           coalesce(sum(f.latency_ms), 0) as latency_ms_sum,
           count(f.latency_ms) as latency_count
    from facts f
    cross join (values ('hour'), ('day'), ('month')) as p (period)
    group by 1, 2, 3, 4, 5, 6, 7, 8
  ), written as (
    insert into public.usage_summaries as s (period, period_start, user_id, provider_id,
      model_id, api_key_id, subscription_id, currency, requests, error_requests,
      failed_requests, input_tokens, cached_input_tokens, output_tokens, images, cost, refunded,
      latency_ms_sum, latency_count)
    select g.period, g.period_start, g.user_id, g.provider_id, g.model_id, g.api_key_id,
           g.subscription_id, g.currency, g.requests, g.error_requests, g.failed_requests,
           g.input_tokens, g.cached_input_tokens, g.output_tokens, g.images, g.cost,
           g.refunded, g.latency_ms_sum, g.latency_count
    from grouped g
    order by g.user_id, g.period, g.period_start, g.model_id, g.provider_id, g.api_key_id,
             g.subscription_id, g.currency
    on conflict on constraint usage_summaries_key do update set
      requests = s.requests + excluded.requests,
      error_requests = s.error_requests + excluded.error_requests,
      failed_requests = s.failed_requests + excluded.failed_requests,
      input_tokens = s.input_tokens + excluded.input_tokens,
      cached_input_tokens = s.cached_input_tokens + excluded.cached_input_tokens,
      output_tokens = s.output_tokens + excluded.output_tokens,
      images = s.images + excluded.images,
      cost = s.cost + excluded.cost,
      refunded = s.refunded + excluded.refunded,
      latency_ms_sum = s.latency_ms_sum + excluded.latency_ms_sum,
      latency_count = s.latency_count + excluded.latency_count,
      updated_at = now()
    returning 1
  ), model_written as (
    -- The same facts per (UTC day, provider, model, currency), over all users. Read from
    -- fresh and adjusting (fresh is materialized already: counted below), not from grouped or
    -- facts: a second reader makes PostgreSQL materialize those too. On 500,000 records under
    -- load, reading grouped took 42-58 s a run against 22-51 s without the step; this form's
    -- backend CPU is 16.3-20.1 s against 17.2-19.8 s (3 alternating runs each).
    insert into public.usage_model_summaries as s (usage_date, provider_id, model_id,
      currency, requests, error_requests, failed_requests, input_tokens, cached_input_tokens,
      output_tokens, images, cost, refunded, latency_ms_sum, latency_count)
    select pg_catalog.date_trunc('day', f.occurred_at, 'UTC'), f.provider_id, f.model_id,
           f.currency, sum(f.requests), sum(f.error_requests), sum(f.failed_requests),
           sum(f.input_tokens), sum(f.cached_input_tokens), sum(f.output_tokens),
           sum(f.images), sum(f.cost), sum(f.refunded), coalesce(sum(f.latency_ms), 0),
           count(f.latency_ms)
    from (select * from fresh union all select * from adjusting) as f
    group by 1, 2, 3, 4
    order by 1, 3, 2, 4
    on conflict on constraint usage_model_summaries_key do update set
      requests = s.requests + excluded.requests,
      error_requests = s.error_requests + excluded.error_requests,
      failed_requests = s.failed_requests + excluded.failed_requests,
      input_tokens = s.input_tokens + excluded.input_tokens,
      cached_input_tokens = s.cached_input_tokens + excluded.cached_input_tokens,
      output_tokens = s.output_tokens + excluded.output_tokens,
      images = s.images + excluded.images,
      cost = s.cost + excluded.cost,
      refunded = s.refunded + excluded.refunded,
      latency_ms_sum = s.latency_ms_sum + excluded.latency_ms_sum,
      latency_count = s.latency_count + excluded.latency_count,
      updated_at = now()
    returning 1
  )
  -- model_written runs to completion unread (as every data-modifying WITH): the result keeps
  -- its keys.
  select (select count(*) from fresh), (select count(*) from taken),
         (select count(*) from written)
  into counted, folded, written;

  update private.usage_rollup_state s set
    rolled_up_to = target, settled_to = st.settled_to, pending_to = st.pending_to,
    pending_writers = st.pending_writers, runs = s.runs + 1,
    rows_rolled = s.rows_rolled + counted, last_run_at = now();

  return jsonb_build_object('rolled_up_to', target, 'rows', counted, 'adjustments', folded,
    'summaries', written, 'settled_to', st.settled_to, 'pending_to', st.pending_to,
    'behind', greatest(last_id - target, 0));
end
$$;

-- ── View ──────────────────────────────────────────────────────────────────────────────────
-- usage_model_daily_totals: exact usage per UTC day, provider, model and currency over all
-- users — the model summaries + the records not rolled up yet + the adjustments not folded in
-- yet (the three branches of usage_daily_totals, without the per-user columns). Filter on
-- usage_date (start of the UTC day): it reaches the key's index.
create view public.usage_model_daily_totals with (security_invoker = true) as
select f.usage_date, f.provider_id, f.model_id, f.currency,
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
  select s.usage_date, s.provider_id, s.model_id, s.currency, s.requests, s.error_requests,
         s.failed_requests, s.input_tokens, s.cached_input_tokens, s.output_tokens, s.images,
         s.cost, s.refunded, s.latency_ms_sum, s.latency_count
  from public.usage_model_summaries s
  union all
  select date_trunc('day', u.occurred_at, 'UTC'), u.provider_id, u.model_id, u.currency, 1,
         (u.status <> 'success')::integer, 0, u.input_tokens, u.cached_input_tokens,
         u.output_tokens, u.images, u.cost, 0, coalesce(u.latency_ms, 0),
         (u.latency_ms is not null)::integer
  from public.usage_records u
  where u.id > public.usage_rolled_up_to()
  union all
  select date_trunc('day', a.occurred_at, 'UTC'), a.provider_id, a.model_id, a.currency, 0, 0,
         (a.kind = 'failed')::integer, 0, 0, 0, 0, a.cost, a.refunded,
         coalesce(a.latency_ms, 0), (a.latency_ms is not null)::integer
  from public.usage_summary_adjustments a
  -- A re-price of a record not rolled up yet is in the cost the branch above reads.
  where a.kind <> 'reprice' or a.usage_id <= public.usage_rolled_up_to()
) as f
group by f.usage_date, f.provider_id, f.model_id, f.currency;
comment on view public.usage_model_daily_totals is
  'Exact usage per UTC day, provider, model and currency over all users: '
  'usage_model_summaries plus what rollup_usage() has not folded in yet. Admin only.';

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
grant select on public.usage_model_summaries to service_role;
grant select on public.usage_model_daily_totals to service_role;
