-- Usage partitioned by month (issue 12 §2, seed 003): the functions and the request-id table.
-- The next migration (20261129210100) turns public.usage_records into a table partitioned by
-- RANGE (created_at), one partition per calendar month (UTC) in the private schema, plus a
-- DEFAULT partition; this one defines what it and the operators use:
--
--   private.usage_request_ids      request ids claimed by live usage rows: UNIQUE across every
--                                  partition, which a partitioned table cannot enforce itself
--                                  (its unique indexes must contain the partition key)
--   private.claim_usage_request_id BEFORE INSERT trigger: claims the id in the same transaction
--   private.release_usage_request_ids / forget_usage_request_ids  deletes and truncates free them
--   private.create_usage_partition one month's partition (moving that month's rows out of the
--                                  default partition, when some landed there)
--   public.ensure_usage_partitions partitions for this month and `months_ahead` more, and for
--                                  every month that has rows in the default partition
--   public.usage_partitions        the partitions, their ranges and rows
--   private.usage_outside_partitions  the alert hook: a row reached the default partition
--
-- Why created_at (the server's insert time) and not occurred_at (the client's): a row's month is
-- then always the current one, so ensuring partitions ahead keeps the default partition empty,
-- and a past month is closed once it has passed: it can be archived and dropped without a late
-- record landing in it. Reports filter on occurred_at; each partition keeps the
-- (user_id, occurred_at) index, so they read every partition's index, as before one index.

-- ── Tables ────────────────────────────────────────────────────────────────────────────────
-- The claim is a separate narrow table rather than a lookup across partitions: one primary-key
-- insert per usage row, whose unique index waits for a concurrent insert of the same id to
-- commit or abort, exactly as usage_records' own UNIQUE (request_id) did.
create table private.usage_request_ids (
  request_id text primary key,
  -- created_at of the usage row holding the id: its partition, without probing the others.
  created_at timestamptz not null
);
comment on table private.usage_request_ids is
  'Request ids of live usage_records rows, unique across all partitions (issue 12 §2).';
alter table private.usage_request_ids enable row level security;
revoke all on table private.usage_request_ids from public, anon, authenticated, service_role;

-- ── Trigger functions ─────────────────────────────────────────────────────────────────────
-- private.claim_usage_request_id() → trigger (BEFORE INSERT FOR EACH ROW on usage_records):
-- claims new.request_id. When another row holds it (committed, or committed while we waited on
-- its insert), the row is skipped (returns NULL): the same outcome as the writers'
-- `ON CONFLICT ... DO NOTHING`, so record_usage, settle_usage, complete_request and the batch
-- find the stored row and replay it, unchanged. Only SECURITY DEFINER functions insert usage
-- rows (no role has INSERT), and all of them use ON CONFLICT DO NOTHING.
create function private.claim_usage_request_id() returns trigger
language plpgsql set search_path = '' as $$
begin
  insert into private.usage_request_ids (request_id, created_at)
  values (new.request_id, new.created_at)
  on conflict (request_id) do nothing;
  if found then
    return new;
  end if;
  return null;
end
$$;

-- private.release_usage_request_ids() → trigger (AFTER DELETE FOR EACH STATEMENT on
-- usage_records, transition table old_rows): a deleted usage row (its user was deleted) frees
-- its request id, as deleting the row did when the id was a unique column.
create function private.release_usage_request_ids() returns trigger
language plpgsql set search_path = '' as $$
begin
  delete from private.usage_request_ids r using old_rows o where r.request_id = o.request_id;
  return null;
end
$$;

-- private.forget_usage_request_ids() → trigger (AFTER TRUNCATE on usage_records).
create function private.forget_usage_request_ids() returns trigger
language plpgsql set search_path = '' as $$
begin
  truncate private.usage_request_ids;
  return null;
end
$$;

-- private.usage_outside_partitions(created_at, request_id) → void: THE hook for a usage row
-- stored in the default partition (no partition covers its month: ensure_usage_partitions has
-- not run for months). It raises a WARNING; the row is kept. The alerts outbox (issue 12 §6)
-- connects here: `create or replace` this function to also enqueue an alert (one per
-- transaction, see below). Called by private.alert_default_usage_partition().
create function private.usage_outside_partitions(created_at timestamptz, request_id text)
returns void
language plpgsql set search_path = '' as $$
begin
  raise warning 'usage_outside_partitions' using
    detail = format('usage %s (created %s) was stored in private.usage_records_default: no '
      'partition covers %s', request_id, created_at,
      to_char(created_at at time zone 'UTC', 'YYYY-MM')),
    hint = 'run `tokenmeter usage partitions ensure` (or select public.ensure_usage_partitions())';
end
$$;

-- private.alert_default_usage_partition() → trigger (AFTER INSERT FOR EACH ROW on the default
-- partition): calls the hook once per transaction (a batch of 1,000 rows alerts once).
create function private.alert_default_usage_partition() returns trigger
language plpgsql set search_path = '' as $$
begin
  if coalesce(current_setting('tokenmeter.usage_outside_partitions', true), '') <> 'alerted' then
    perform set_config('tokenmeter.usage_outside_partitions', 'alerted', true);
    perform private.usage_outside_partitions(new.created_at, new.request_id);
  end if;
  return null;
end
$$;

-- ── Partition maintenance ─────────────────────────────────────────────────────────────────
-- private.usage_partition_bounds(month) → (name, lower, upper): the partition of the calendar
-- month (UTC) containing `month`.
create function private.usage_partition_bounds(month date, out name text,
  out lower_bound timestamptz, out upper_bound timestamptz)
language sql immutable set search_path = '' as $$
  select format('usage_records_%s', to_char(date_trunc('month', month::timestamp), 'YYYY_MM')),
    date_trunc('month', month::timestamp) at time zone 'UTC',
    (date_trunc('month', month::timestamp) + interval '1 month') at time zone 'UTC'
$$;

-- private.create_usage_partition(month) → bigint: creates private.usage_records_YYYY_MM for the
-- month unless it exists (then null). Rows of that month already in the default partition move
-- into it; returns how many (0 usually). Built as a table and then ATTACHed: ATTACH takes only
-- SHARE UPDATE EXCLUSIVE on usage_records, so charging goes on meanwhile (CREATE TABLE ...
-- PARTITION OF would take ACCESS EXCLUSIVE). Partitions get RLS on and no grants: they are
-- read through usage_records, whose policies apply.
create function private.create_usage_partition(month date) returns bigint
language plpgsql set search_path = '' as $$
declare
  bounds record := private.usage_partition_bounds(month);
  moved bigint := 0;
begin
  if to_regclass(format('private.%I', bounds.name)) is not null then
    return null;
  end if;
  execute format('create table private.%I (like public.usage_records including defaults '
    'including constraints including storage including compression)', bounds.name);
  -- The bounds as a CHECK let ATTACH skip its validation scan.
  execute format('alter table private.%I add constraint %I check (created_at >= %L and '
    'created_at < %L)', bounds.name, bounds.name || '_bounds', bounds.lower_bound,
    bounds.upper_bound);
  if to_regclass('private.usage_records_default') is not null then
    execute format('with moved as (delete from private.usage_records_default d where '
      'd.created_at >= %L and d.created_at < %L returning d.*) insert into private.%I select * '
      'from moved', bounds.lower_bound, bounds.upper_bound, bounds.name);
    get diagnostics moved = row_count;
  end if;
  execute format('alter table public.usage_records attach partition private.%I for values from '
    '(%L) to (%L)', bounds.name, bounds.lower_bound, bounds.upper_bound);
  execute format('alter table private.%I drop constraint %I', bounds.name,
    bounds.name || '_bounds');
  execute format('alter table private.%I enable row level security', bounds.name);
  execute format('revoke all on table private.%I from public, anon, authenticated, service_role',
    bounds.name);
  execute format('comment on table private.%I is %L', bounds.name,
    format('usage_records created in %s (UTC); read it through public.usage_records',
      to_char(bounds.lower_bound at time zone 'UTC', 'YYYY-MM')));
  return moved;
end
$$;

-- public.ensure_usage_partitions(months_ahead = 3) → table(partition, month, created, moved):
-- the partitions of the current month (UTC) and the next `months_ahead` months, and of every
-- month that has rows in the default partition (their rows move in), created when missing.
-- Idempotent; scheduled daily with pg_cron where the database has it (20261129210200), run by
-- `tokenmeter usage partitions ensure` and `tokenmeter stack start` otherwise.
-- Who may call: service_role (and the owner, pg_cron's job). DEFINER: it creates tables in the
-- private schema, which service_role cannot use.
-- Raises: 42501 forbidden; 22023 invalid_argument (months_ahead outside 0..60).
create function public.ensure_usage_partitions(months_ahead integer default 3)
returns table (partition text, month date, created boolean, moved bigint)
language plpgsql security definer set search_path = '' as $$
declare
  m date;
  result bigint;
begin
  perform private.assert_service_role();
  if months_ahead is null or months_ahead not between 0 and 60 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = format('months_ahead must be between 0 and 60, got %s',
        coalesce(months_ahead::text, 'null'));
  end if;
  -- One maintainer at a time (cron and the CLI may overlap); released at commit.
  perform pg_advisory_xact_lock(hashtext('tokenmeter.ensure_usage_partitions'));
  for m in
    select distinct date_trunc('month', d.created_at at time zone 'UTC')::date
    from private.usage_records_default d
    union
    select (date_trunc('month', now() at time zone 'UTC') + make_interval(months => i))::date
    from generate_series(0, months_ahead) as i
    order by 1
  loop
    result := private.create_usage_partition(m);
    partition := (private.usage_partition_bounds(m)).name;
    month := m;
    created := result is not null;
    moved := coalesce(result, 0);
    return next;
  end loop;
end
$$;
comment on function public.ensure_usage_partitions(integer) is
  'Creates the usage_records partitions of this month and the next months_ahead (issue 12 §2).';

-- public.usage_partitions(exact = false) → table(partition, month, range_start, range_end,
-- is_default, records, records_exact, bytes): usage_records' partitions, the default one
-- included. records: an exact count for the default partition (it should be empty: any row
-- there is an alert) and when `exact`; otherwise the planner's estimate (null: never analyzed).
-- Who may call: service_role. DEFINER: the partitions are in the private schema.
create function public.usage_partitions(exact boolean default false)
returns table (partition text, month date, range_start timestamptz, range_end timestamptz,
  is_default boolean, records bigint, records_exact boolean, bytes bigint)
language plpgsql security definer set search_path = '' as $$
declare
  p record;
  bound text;
begin
  perform private.assert_service_role();
  for p in
    select c.oid, c.relname::text as name, c.reltuples,
      pg_get_expr(c.relpartbound, c.oid) as expr
    from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'public.usage_records'::regclass
    order by c.relname collate "C"  -- usage_records_YYYY_MM by month, then _default
  loop
    partition := p.name;
    is_default := p.expr = 'DEFAULT';
    range_start := null;
    range_end := null;
    month := null;
    if not is_default then
      bound := substring(p.expr from $re$FROM \('([^']+)'\)$re$);
      range_start := bound::timestamptz;
      range_end := substring(p.expr from $re$TO \('([^']+)'\)$re$)::timestamptz;
      month := (range_start at time zone 'UTC')::date;
    end if;
    records_exact := is_default or coalesce(exact, false);
    if records_exact then
      execute format('select count(*) from private.%I', p.name) into records;
    else
      records := case when p.reltuples < 0 then null else p.reltuples::bigint end;
    end if;
    bytes := pg_total_relation_size(p.oid);
    return next;
  end loop;
end
$$;
comment on function public.usage_partitions(boolean) is
  'usage_records partitions with their month, range, records and size (issue 12 §2).';

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.claim_usage_request_id() from public;
revoke execute on function private.release_usage_request_ids() from public;
revoke execute on function private.forget_usage_request_ids() from public;
revoke execute on function private.usage_outside_partitions(timestamptz, text) from public;
revoke execute on function private.alert_default_usage_partition() from public;
revoke execute on function private.usage_partition_bounds(date) from public;
revoke execute on function private.create_usage_partition(date) from public;
revoke execute on function public.ensure_usage_partitions(integer)
  from public, anon, authenticated;
grant execute on function public.ensure_usage_partitions(integer) to service_role;
revoke execute on function public.usage_partitions(boolean) from public, anon, authenticated;
grant execute on function public.usage_partitions(boolean) to service_role;
