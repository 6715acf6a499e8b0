-- 20261129220001_usage_rollups.sql
--
-- Usage rollups (issue 12 §3, seed 003's usage_summaries): hourly, daily and monthly totals per
-- user, provider and model, API key and subscription — requests, errors, tokens by kind, cost,
-- refunds and latency — kept by an incremental rollup, public.rollup_usage(), that the charging
-- transaction never waits for and that never misses or double-counts a row.
--
-- Why not a counter row updated by every charge: measured on the charging benchmark in the same
-- run (docs/benchmarks.md, "Usage rollups"), maintaining the summaries inside the charge costs
-- each record_usage far more server CPU than the rollup costs per row; the charge already pays
-- for one row of its user (the balance), a summary upsert is a second one per period.
--
-- How rollup_usage() never misses a row. Usage records get ids from a sequence, but ids are
-- taken at insert time and committed in any order: id 101 may commit while id 100 is still in
-- flight. "Everything up to the largest visible id" would skip 100 for good. Instead the rollup
-- keeps rolled_up_to (every record with id <= it is in usage_summaries) and advances it only to
-- an id whose writers have all finished: it reads the sequence's last value L and then the
-- transactions holding a write lock on usage_records (any partition). A transaction that took an
-- id <= L did so while holding that lock, and holds it to its end; so once none of those
-- transactions is running any more, every id <= L is committed (visible) or rolled back
-- (never will be). Until then L waits as the pending checkpoint; when no writer is in flight at
-- all, L is settled at once. Each run rolls up the ids in (rolled_up_to, settled] in ONE
-- statement and moves rolled_up_to in the same transaction, so a record is counted exactly once.
-- Runs are serialised on the state row.
--
-- Changes to records already rolled up come as adjustments, written by triggers in the
-- transaction that makes them (rare paths, never the charge itself) into
-- public.usage_summary_adjustments, and folded in by the next run:
--   reprice   reprice_usage() changed a record's cost: the difference. The run that rolls the
--             record itself up reads its new cost, so it drops such an adjustment instead
--             (both are read in the same statement, so each change is counted once);
--   refund    a 'refund' ledger entry (refund_usage): summaries.refunded of the record's own
--             period (cost − refunded = the period's net spend);
--   failed    a metered request that failed (complete_request with a non-2xx status): no usage
--             record, nothing charged; counted in failed_requests with its latency.
--
-- Reading: public.usage_daily_totals (next migration) adds to the summaries the records not yet
-- rolled up and the adjustments not yet folded in, all under one snapshot, so what a reader
-- sees is exact whenever rollup_usage() last ran; the rollup only makes reads fast.
-- rollup_usage() runs from pg_cron every 10 s where the database has pg_cron (hosted Supabase;
-- scheduled below), else from `tokenmeter usage rollup` (the local stack runs it).
-- Deleting a user deletes their summaries and adjustments (as their usage records).
-- Error codes: 42501 forbidden (not service_role / postgres), 22023 invalid_argument, 55000
-- sequence_cached (usage_records' id sequence must keep CACHE 1, as identity columns have).

-- ── Tables ────────────────────────────────────────────────────────────────────────────────
create table public.usage_summaries (
  period text not null,
  -- Start of the UTC hour, day or month.
  period_start timestamptz not null,
  user_id uuid not null,
  -- NULL only on rows that count failed metered requests alone (nothing was priced).
  provider_id text,
  model_id text not null,
  -- NULL: usage recorded directly (record_usage / settle_usage), not through an API key.
  api_key_id uuid,
  subscription_id uuid,
  currency text not null,
  -- Usage records (charged requests, any status).
  requests bigint not null default 0,
  -- Usage records whose status is not 'success'.
  error_requests bigint not null default 0,
  -- Metered requests that failed upstream: no usage record, nothing charged.
  failed_requests bigint not null default 0,
  input_tokens bigint not null default 0,
  cached_input_tokens bigint not null default 0,
  output_tokens bigint not null default 0,
  images bigint not null default 0,
  -- Sum of the records' current cost (re-pricing included), exact.
  cost numeric(24,12) not null default 0,
  -- Refunds of the period's records (refund_usage), exact; net spend = cost - refunded.
  refunded numeric(24,12) not null default 0,
  -- Average latency = latency_ms_sum / latency_count (records and failures that report one).
  latency_ms_sum bigint not null default 0,
  latency_count bigint not null default 0,
  updated_at timestamptz not null default now(),
  constraint usage_summaries_key unique nulls not distinct
    (user_id, period, period_start, model_id, provider_id, api_key_id, subscription_id, currency),
  constraint usage_summaries_period_valid check (period in ('hour', 'day', 'month')),
  constraint usage_summaries_counts_range check (requests >= 0 and error_requests >= 0
    and failed_requests >= 0 and input_tokens >= 0 and cached_input_tokens >= 0
    and output_tokens >= 0 and images >= 0 and latency_ms_sum >= 0 and latency_count >= 0),
  -- cost is >= 0 after every run (a sum of current costs), but not CHECKed so: INSERT … ON
  -- CONFLICT checks the row it proposes before finding the conflict, and a run that folds only
  -- a lower re-price proposes a negative difference.
  constraint usage_summaries_money_range
    check (cost > -1e12 and cost < 1e12 and refunded >= 0 and refunded < 1e12)
);
comment on table public.usage_summaries is
  'Hourly, daily and monthly usage totals per user, model, key and subscription, kept by '
  'rollup_usage() (seed 003 usage_summaries). Read usage_daily_totals for exact current numbers.';
-- Reports over everyone for a range, and per key.
create index usage_summaries_period_start_idx on public.usage_summaries (period, period_start);
create index usage_summaries_api_key_idx on public.usage_summaries (api_key_id, period, period_start)
  where api_key_id is not null;

create table public.usage_summary_adjustments (
  id bigint generated always as identity primary key,
  kind text not null,
  -- reprice: the usage record re-priced (its adjustment waits until that record is rolled up).
  usage_id bigint,
  -- When the usage (or the failed request) happened: selects the summary periods.
  occurred_at timestamptz not null,
  user_id uuid not null,
  provider_id text,
  model_id text not null,
  api_key_id uuid,
  subscription_id uuid,
  currency text not null,
  cost numeric(24,12) not null default 0,
  refunded numeric(24,12) not null default 0,
  latency_ms integer,
  created_at timestamptz not null default now(),
  constraint usage_summary_adjustments_kind_valid
    check (kind in ('reprice', 'refund', 'failed')),
  constraint usage_summary_adjustments_usage_id_set check ((kind = 'reprice') = (usage_id is not null))
);
comment on table public.usage_summary_adjustments is
  'Changes to usage already counted (re-price, refund, failed request) that the next '
  'rollup_usage() folds into usage_summaries.';
create index usage_summary_adjustments_user_id_idx on public.usage_summary_adjustments (user_id);

-- One row: how far the rollup has gone.
create table private.usage_rollup_state (
  singleton boolean primary key default true,
  -- Every usage record with id <= rolled_up_to is counted in usage_summaries.
  rolled_up_to bigint not null default 0,
  -- Every id <= settled_to is committed or rolled back for good.
  settled_to bigint not null default 0,
  -- A checkpoint: ids <= pending_to are settled once the transactions pending_writers (virtual
  -- transaction ids that held a write lock on usage_records when it was taken) have ended.
  pending_to bigint,
  pending_writers text[],
  runs bigint not null default 0,
  rows_rolled bigint not null default 0,
  last_run_at timestamptz,
  constraint usage_rollup_state_singleton check (singleton),
  constraint usage_rollup_state_order check (rolled_up_to <= settled_to)
);
insert into private.usage_rollup_state default values;

-- ── Row level security, policies ──────────────────────────────────────────────────────────
alter table public.usage_summaries enable row level security;
alter table public.usage_summary_adjustments enable row level security;
alter table private.usage_rollup_state enable row level security;
create policy "Users read their own usage summaries" on public.usage_summaries
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "Users read their own usage summary adjustments"
  on public.usage_summary_adjustments
  for select to authenticated using ((select auth.uid()) = user_id);

-- ── Trigger functions: the adjustments (never on the charge's own insert) ─────────────────
-- private.queue_reprice_adjustment(): AFTER UPDATE of a usage record whose cost changed
-- (only reprice_usage may update one: guard_usage_update). Runs as the updating role (the money
-- functions' owner).
create function private.queue_reprice_adjustment() returns trigger
language plpgsql set search_path = '' as $$
begin
  insert into public.usage_summary_adjustments (kind, usage_id, occurred_at, user_id,
    provider_id, model_id, api_key_id, subscription_id, currency, cost)
  select 'reprice', new.id, new.occurred_at, new.user_id, new.provider_id, new.model_id,
         m.api_key_id, m.subscription_id, new.currency, new.cost - old.cost
  from (select) as one
  left join public.metered_requests m on m.request_id = new.request_id;
  return null;
end
$$;

-- private.queue_refund_adjustment(): AFTER INSERT of a 'refund' ledger entry (refund_usage):
-- the refunded amount, in the periods of the usage record it refunds (reference = request_id).
create function private.queue_refund_adjustment() returns trigger
language plpgsql set search_path = '' as $$
begin
  insert into public.usage_summary_adjustments (kind, occurred_at, user_id, provider_id,
    model_id, api_key_id, subscription_id, currency, refunded)
  select 'refund', u.occurred_at, u.user_id, u.provider_id, u.model_id, m.api_key_id,
         m.subscription_id, u.currency, new.amount
  from public.usage_records u
  left join public.metered_requests m on m.request_id = u.request_id
  where u.request_id = new.reference;
  return null;
end
$$;

-- private.queue_failed_request(): AFTER UPDATE of a metered request to 'failed'
-- (complete_request with a non-2xx status): one failed request, nothing charged.
create function private.queue_failed_request() returns trigger
language plpgsql set search_path = '' as $$
begin
  insert into public.usage_summary_adjustments (kind, occurred_at, user_id, model_id,
    api_key_id, subscription_id, currency, latency_ms)
  values ('failed', coalesce(new.completed_at, now()), new.user_id, new.model,
          new.api_key_id, new.subscription_id, new.currency, new.latency_ms);
  return null;
end
$$;

-- private.delete_user_summaries(): AFTER DELETE on auth.users: the user's summaries and
-- pending adjustments go with their usage records. DEFINER: the Auth server deletes users as
-- supabase_auth_admin, which has no privilege on these tables.
create function private.delete_user_summaries() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  delete from public.usage_summaries s where s.user_id = old.id;
  delete from public.usage_summary_adjustments a where a.user_id = old.id;
  return null;
end
$$;

create trigger usage_records_rollup_reprice
  after update of cost on public.usage_records
  for each row when (old.cost is distinct from new.cost)
  execute function private.queue_reprice_adjustment();
create trigger ledger_entries_rollup_refund
  after insert on public.ledger_entries
  for each row when (new.kind = 'refund')
  execute function private.queue_refund_adjustment();
create trigger metered_requests_rollup_failed
  after update of status on public.metered_requests
  for each row when (old.status = 'authorized' and new.status = 'failed')
  execute function private.queue_failed_request();
create trigger on_auth_user_deleted_summaries
  after delete on auth.users
  for each row execute function private.delete_user_summaries();

-- ── The rollup ────────────────────────────────────────────────────────────────────────────
-- private.usage_writers() → the virtual transaction ids (other than the caller's) holding a
-- lock on usage_records or one of its partitions in a mode that lets them insert. pg_locks
-- lists fast-path locks and prepared transactions too.
create function private.usage_writers() returns text[]
language sql stable set search_path = '' as $$
  select coalesce(array_agg(distinct l.virtualtransaction), '{}')
  from pg_catalog.pg_locks l
  where l.locktype = 'relation'
    and l.database = (select d.oid from pg_catalog.pg_database d
                      where d.datname = pg_catalog.current_database())
    and l.relation in (select t.relid from pg_catalog.pg_partition_tree('public.usage_records') t)
    and l.mode not in ('AccessShareLock', 'RowShareLock')
    and l.pid is distinct from pg_catalog.pg_backend_pid()
$$;

-- private.any_running(vxids) → whether any of these virtual transactions still holds a lock
-- (every transaction holds its own virtualxid lock; a prepared one keeps its relation locks).
create function private.any_running(vxids text[]) returns boolean
language sql stable set search_path = '' as $$
  select exists (select 1 from pg_catalog.pg_locks l
                 where l.virtualtransaction = any (any_running.vxids))
$$;

-- public.rollup_usage(max_rows = 1000000) → {rolled_up_to, rows, adjustments, summaries,
-- settled_to, pending_to, behind}: folds the usage records in (rolled_up_to, settled_to] (at
-- most max_rows ids of them) and the pending adjustments into usage_summaries, in one
-- transaction. rows: records counted; adjustments: adjustments folded (or dropped because the
-- record they adjust was counted with its new cost); summaries: summary rows written; behind:
-- ids taken but not rolled up yet (in flight, or beyond max_rows: call again).
-- Who may call: service_role, postgres (pg_cron). DEFINER: reads the private state and
-- pg_locks, writes usage_summaries, which no API role may write.
-- Raises: 42501 forbidden, 22023 invalid_argument (max_rows < 1), 55000 sequence_cached.
-- Generic plans: a run's statements are planned once per session, not per run (planning the
-- rollup statement costs more than running it on a few hundred rows).
create function public.rollup_usage(max_rows integer default 1000000) returns jsonb
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
  )
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

-- public.usage_rolled_up_to() → every usage record with id <= this is in usage_summaries (as
-- of the caller's snapshot). The views add the records after it. Who may call: authenticated,
-- service_role (the views run as their reader). DEFINER: reads the private rollup state; it
-- tells a user nothing but how many usage ids exist.
create function public.usage_rolled_up_to() returns bigint
language sql stable security definer set search_path = '' as $$
  select s.rolled_up_to from private.usage_rollup_state s
$$;

-- ── Schedule: pg_cron where the database has it (hosted Supabase) ─────────────────────────
do $$
begin
  if exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
    execute $cron$select cron.schedule('tokenmeter-rollup-usage', '10 seconds',
                                        'select public.rollup_usage()')$cron$;
  end if;
end
$$;

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
grant select on public.usage_summaries to authenticated, service_role;
grant select on public.usage_summary_adjustments to authenticated, service_role;
revoke execute on function private.queue_reprice_adjustment() from public;
revoke execute on function private.queue_refund_adjustment() from public;
revoke execute on function private.queue_failed_request() from public;
revoke execute on function private.delete_user_summaries() from public;
revoke execute on function private.usage_writers() from public;
revoke execute on function private.any_running(text[]) from public;
revoke execute on function public.rollup_usage(integer) from public, anon, authenticated;
grant execute on function public.rollup_usage(integer) to service_role;
revoke execute on function public.usage_rolled_up_to() from public, anon;
grant execute on function public.usage_rolled_up_to() to authenticated, service_role;
