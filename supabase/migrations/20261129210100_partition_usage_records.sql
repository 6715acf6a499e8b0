-- usage_records becomes partitioned by RANGE (created_at), one partition per month (issue 12
-- §2; the functions are in 20261129210000).
--
-- PostgreSQL cannot turn a table into a partitioned one in place, so the table is rebuilt: the
-- old one is renamed, a partitioned public.usage_records is created LIKE it (columns, defaults,
-- CHECKs, identity, comments), the rows are copied with their ids, the old table is dropped and
-- everything that pointed at it is put back. That "everything" is read from the catalog when
-- this migration runs, not written out here, so columns, indexes, triggers, policies or grants
-- added by earlier migrations are carried over as they are then:
--   * functions whose signature uses the row type (private.usage_result, usage_mismatch,
--     replay_usage) are recreated from their own definitions (pg_get_functiondef), with their
--     grants and comments; composite types holding it (private.usage_batch_item) are altered;
--   * views reading the table (public.usage_logs) are recreated with their options, grants and
--     comments;
--   * triggers, policies, RLS flags, table and column grants, indexes, foreign keys to other
--     tables and publication memberships are recreated;
--   * PRIMARY KEY (id) becomes (id, created_at) and UNIQUE (request_id) becomes
--     usage_records_request_id_key UNIQUE (request_id, created_at): a partitioned table's unique
--     indexes must hold the partition key. The constraint keeps its name, so the writers'
--     `ON CONFLICT ON CONSTRAINT usage_records_request_id_key DO NOTHING` still parses, and it
--     serves the lookups by request_id. The global uniqueness of request_id is
--     private.usage_request_ids' (claimed by a BEFORE INSERT trigger).
-- It refuses (and changes nothing) when the table has something it would not carry over
-- faithfully: a foreign key pointing AT usage_records, another unique index, a table column or
-- a materialized view built on it, a view built on its views.
-- Table storage options (fillfactor, autovacuum) are not carried over: a partitioned table has
-- none (there were none).
--
-- Cost: the rows are copied once (a full rewrite, in this migration's transaction); the table
-- is locked meanwhile. Tokenmeter is not released yet; on a big database, run it off-peak.

do $migration$
declare
  old_table constant regclass := 'public.usage_records'::regclass;
  row_type oid;
  saved_search_path text := current_setting('search_path');
  owner_name text;
  r record;
  a record;
  stmt text;
  columns text;
  functions jsonb := '[]';
  views jsonb := '[]';
  triggers text[] := '{}';
  indexes text[] := '{}';
  foreign_keys text[] := '{}';
  policies text[] := '{}';
  grants text[] := '{}';
  publications text[] := '{}';
  composite_attrs text[] := '{}';
  table_comment text;
  rls boolean;
  force_rls boolean;
  seq text;
  max_id bigint;
  m date;
begin
  if (select c.relkind from pg_class c where c.oid = old_table) = 'p' then
    raise notice 'public.usage_records is already partitioned';
    return;
  end if;
  -- Printed definitions then carry schema-qualified names, valid once the names move.
  perform set_config('search_path', '', true);
  select c.reltype, c.relowner::regrole::text, c.relrowsecurity, c.relforcerowsecurity,
    obj_description(c.oid, 'pg_class')
  into row_type, owner_name, rls, force_rls, table_comment
  from pg_class c where c.oid = old_table;

  -- ── refuse what would not be carried over faithfully ──────────────────────────────────
  if exists (select 1 from pg_constraint k where k.confrelid = old_table) then
    raise exception 'cannot partition usage_records: a foreign key references it (%)',
      (select string_agg(k.conname || ' on ' || k.conrelid::regclass::text, ', ')
       from pg_constraint k where k.confrelid = old_table);
  end if;
  if exists (select 1 from pg_index i where i.indrelid = old_table and i.indisunique
             and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid
                             and k.conname in ('usage_records_pkey',
                                               'usage_records_request_id_key'))) then
    raise exception 'cannot partition usage_records: a unique index other than its primary key '
      'and usage_records_request_id_key exists';
  end if;
  if exists (select 1 from pg_attribute t join pg_class c on c.oid = t.attrelid
             where t.atttypid = row_type and c.relkind in ('r', 'p', 'm', 'f')
               and not t.attisdropped) then
    raise exception 'cannot partition usage_records: a table column has its row type';
  end if;
  if exists (select 1 from pg_depend d join pg_rewrite w on w.oid = d.objid
             join pg_class v on v.oid = w.ev_class
             where d.classid = 'pg_rewrite'::regclass and d.refobjid = old_table
               and v.relkind = 'm') then
    raise exception 'cannot partition usage_records: a materialized view reads it';
  end if;

  -- ── what points at the old table ──────────────────────────────────────────────────────
  -- Functions whose arguments or result use its row type (or an array of it).
  for r in
    select distinct p.oid, p.oid::regprocedure::text as signature,
      pg_get_functiondef(p.oid) as definition, obj_description(p.oid, 'pg_proc') as comment,
      coalesce(p.proacl, acldefault('f', p.proowner)) as acl, p.proowner
    from pg_depend d join pg_proc p on p.oid = d.objid
    where d.classid = 'pg_proc'::regclass
      and d.refobjid in (row_type, (select t.typarray from pg_type t where t.oid = row_type))
  loop
    functions := functions || jsonb_build_object('signature', r.signature,
      'definition', r.definition, 'comment', r.comment,
      'grants', (select coalesce(jsonb_agg(jsonb_build_object(
          'grantee', case when x.grantee = 0 then 'public' else x.grantee::regrole::text end,
          'grantable', x.is_grantable)), '[]')
        from aclexplode(r.acl) x where x.grantee <> r.proowner));
  end loop;
  -- Views reading it (and nothing built on those views: they would be dropped with them).
  for r in
    select distinct v.oid, v.oid::regclass::text as name, pg_get_viewdef(v.oid) as definition,
      v.reloptions, v.relacl, obj_description(v.oid, 'pg_class') as comment
    from pg_depend d join pg_rewrite w on w.oid = d.objid join pg_class v on v.oid = w.ev_class
    where d.classid = 'pg_rewrite'::regclass and d.refobjid = old_table and v.relkind = 'v'
  loop
    if exists (select 1 from pg_depend d join pg_rewrite w on w.oid = d.objid
               where d.classid = 'pg_rewrite'::regclass and d.refobjid = r.oid
                 and w.ev_class <> r.oid) then
      raise exception 'cannot partition usage_records: view % is read by another view', r.name;
    end if;
    views := views || jsonb_build_object('name', r.name, 'definition', r.definition,
      'options', coalesce(array_to_string(r.reloptions, ', '), ''), 'comment', r.comment,
      'grants', (select coalesce(jsonb_agg(format('grant %s on table %s to %s%s',
          x.privilege_type, r.name,
          case when x.grantee = 0 then 'public' else quote_ident(x.grantee::regrole::text) end,
          case when x.is_grantable then ' with grant option' else '' end)), '[]')
        from aclexplode(r.relacl) x
        where x.grantee <> (select c.relowner from pg_class c where c.oid = r.oid)),
      'column_comments', (select coalesce(jsonb_agg(format('comment on column %s.%I is %L',
          r.name, t.attname, col_description(r.oid, t.attnum))), '[]')
        from pg_attribute t where t.attrelid = r.oid and t.attnum > 0
          and col_description(r.oid, t.attnum) is not null));
  end loop;
  -- Composite types holding a value of the row type.
  for r in
    select t.attrelid::regclass::text as type_name, t.attname
    from pg_attribute t join pg_class c on c.oid = t.attrelid
    where t.atttypid = row_type and c.relkind = 'c' and not t.attisdropped
  loop
    composite_attrs := composite_attrs || format('alter type %s alter attribute %I type '
      'public.usage_records', r.type_name, r.attname);
  end loop;
  -- Its own triggers, indexes, foreign keys, policies, grants, publications.
  select coalesce(array_agg(pg_get_triggerdef(t.oid) order by t.tgname), '{}') into triggers
  from pg_trigger t where t.tgrelid = old_table and not t.tgisinternal;
  select coalesce(array_agg(pg_get_indexdef(i.indexrelid)), '{}') into indexes
  from pg_index i
  where i.indrelid = old_table
    and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid
                    and k.conrelid = old_table);
  select coalesce(array_agg(format('alter table public.usage_records add constraint %I %s',
      k.conname, pg_get_constraintdef(k.oid))), '{}') into foreign_keys
  from pg_constraint k where k.conrelid = old_table and k.contype = 'f';
  select coalesce(array_agg(format('create policy %I on public.usage_records as %s for %s to %s%s%s',
      p.polname, case when p.polpermissive then 'permissive' else 'restrictive' end,
      case p.polcmd when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update'
        when 'd' then 'delete' else 'all' end,
      case when p.polroles = '{0}' then 'public' else (select string_agg(quote_ident(
        rr::regrole::text), ', ') from unnest(p.polroles) rr) end,
      coalesce(' using (' || pg_get_expr(p.polqual, p.polrelid) || ')', ''),
      coalesce(' with check (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')', ''))),
    '{}') into policies
  from pg_policy p where p.polrelid = old_table;
  select coalesce(array_agg(format('grant %s on table public.usage_records to %s%s',
      x.privilege_type,
      case when x.grantee = 0 then 'public' else quote_ident(x.grantee::regrole::text) end,
      case when x.is_grantable then ' with grant option' else '' end)), '{}') into grants
  from pg_class c, aclexplode(c.relacl) x where c.oid = old_table and x.grantee <> c.relowner;
  select grants || coalesce(array_agg(format('grant %s (%I) on table public.usage_records to %s',
      x.privilege_type, t.attname,
      case when x.grantee = 0 then 'public' else quote_ident(x.grantee::regrole::text) end)),
    '{}') into grants
  from pg_attribute t, aclexplode(t.attacl) x
  where t.attrelid = old_table and t.attacl is not null and not t.attisdropped;
  select coalesce(array_agg(format('alter publication %I add table public.usage_records',
      p.pubname)), '{}') into publications
  from pg_publication_rel pr join pg_publication p on p.oid = pr.prpubid
  where pr.prrelid = old_table;

  -- ── take the old table apart ──────────────────────────────────────────────────────────
  for r in select value from jsonb_array_elements(views) loop
    execute format('drop view %s', r.value ->> 'name');
  end loop;
  for r in select value from jsonb_array_elements(functions) loop
    execute format('drop function %s', r.value ->> 'signature');
  end loop;
  alter table public.usage_records rename to usage_records_unpartitioned;
  for r in
    select c.relname::text as name from pg_index i join pg_class c on c.oid = i.indexrelid
    where i.indrelid = old_table
  loop
    execute format('alter index public.%I rename to %I', r.name,
      'unpartitioned_' || r.name);
  end loop;
  seq := pg_get_serial_sequence('public.usage_records_unpartitioned', 'id');
  if seq is not null then
    execute format('alter sequence %s rename to usage_records_unpartitioned_id_seq', seq);
  end if;

  -- ── the partitioned table ─────────────────────────────────────────────────────────────
  create table public.usage_records (like public.usage_records_unpartitioned including defaults
    including constraints including comments including identity including generated
    including storage including compression) partition by range (created_at);
  execute format('alter table public.usage_records owner to %I', owner_name);
  alter table public.usage_records
    add constraint usage_records_pkey primary key (id, created_at),
    add constraint usage_records_request_id_key unique (request_id, created_at);
  foreach stmt in array indexes loop
    execute stmt;
  end loop;
  foreach stmt in array foreign_keys loop
    execute stmt;
  end loop;
  create table private.usage_records_default partition of public.usage_records default;
  alter table private.usage_records_default enable row level security;
  revoke all on table private.usage_records_default from public, anon, authenticated,
    service_role;
  comment on table private.usage_records_default is
    'usage_records outside every monthly partition: should stay empty (each row raises an '
    'alert); public.ensure_usage_partitions() moves them into their month''s partition';
  for m in
    select distinct date_trunc('month', u.created_at at time zone 'UTC')::date
    from public.usage_records_unpartitioned u
    union
    select (date_trunc('month', now() at time zone 'UTC') + make_interval(months => i))::date
    from generate_series(0, 3) as i
  loop
    perform private.create_usage_partition(m);
  end loop;

  -- ── the rows, with their ids; the identity continues after them ───────────────────────
  select string_agg(quote_ident(t.attname), ', ' order by t.attnum) into columns
  from pg_attribute t
  where t.attrelid = 'public.usage_records_unpartitioned'::regclass and t.attnum > 0
    and not t.attisdropped and t.attgenerated = '';
  execute format('insert into public.usage_records (%s) overriding system value select %s from '
    'public.usage_records_unpartitioned', columns, columns);
  insert into private.usage_request_ids (request_id, created_at)
  select u.request_id, u.created_at from public.usage_records u;
  select max(u.id) into max_id from public.usage_records u;
  if max_id is not null then
    perform setval(pg_get_serial_sequence('public.usage_records', 'id'), max_id);
  end if;

  -- ── put back what pointed at the old table ────────────────────────────────────────────
  foreach stmt in array composite_attrs loop
    execute stmt;
  end loop;
  drop table public.usage_records_unpartitioned;
  for r in select value from jsonb_array_elements(functions) loop
    execute r.value ->> 'definition';
    execute format('revoke all on function %s from public', r.value ->> 'signature');
    for a in select value from jsonb_array_elements(r.value -> 'grants') loop
      execute format('grant execute on function %s to %s%s', r.value ->> 'signature',
        case when a.value ->> 'grantee' = 'public' then 'public'
          else quote_ident(a.value ->> 'grantee') end,
        case when (a.value ->> 'grantable')::boolean then ' with grant option' else '' end);
    end loop;
    if r.value ->> 'comment' is not null then
      execute format('comment on function %s is %L', r.value ->> 'signature',
        r.value ->> 'comment');
    end if;
  end loop;
  for r in select value from jsonb_array_elements(views) loop
    execute format('create view %s%s as %s', r.value ->> 'name',
      case when r.value ->> 'options' <> '' then ' with (' || (r.value ->> 'options') || ')'
        else '' end,
      rtrim(r.value ->> 'definition', ';'));
    for a in select value from jsonb_array_elements_text(r.value -> 'grants') loop
      execute a.value;
    end loop;
    if r.value ->> 'comment' is not null then
      execute format('comment on view %s is %L', r.value ->> 'name', r.value ->> 'comment');
    end if;
    for a in select value from jsonb_array_elements_text(r.value -> 'column_comments') loop
      execute a.value;
    end loop;
  end loop;
  foreach stmt in array triggers loop
    execute stmt;
  end loop;
  if rls then
    alter table public.usage_records enable row level security;
  end if;
  if force_rls then
    alter table public.usage_records force row level security;
  end if;
  foreach stmt in array policies loop
    execute stmt;
  end loop;
  revoke all on table public.usage_records from public, anon, authenticated, service_role;
  foreach stmt in array grants loop
    execute stmt;
  end loop;
  foreach stmt in array publications loop
    execute stmt;
  end loop;
  if table_comment is not null then
    execute format('comment on table public.usage_records is %L', table_comment);
  end if;
  perform set_config('search_path', saved_search_path, true);
end
$migration$;

-- ── Triggers of the partitioned table (issue 12 §2) ───────────────────────────────────────
create trigger usage_records_claim_request_id
  before insert on public.usage_records
  for each row execute function private.claim_usage_request_id();
create trigger usage_records_release_request_ids
  after delete on public.usage_records referencing old table as old_rows
  for each statement execute function private.release_usage_request_ids();
create trigger usage_records_forget_request_ids
  after truncate on public.usage_records
  for each statement execute function private.forget_usage_request_ids();
create trigger usage_records_default_alert
  after insert on private.usage_records_default
  for each row execute function private.alert_default_usage_partition();

comment on table public.usage_records is
  'One row per metered request (a fact, never updated but by reprice_usage). Partitioned by '
  'RANGE (created_at), one partition per month (UTC) in the private schema; request_id is '
  'unique across partitions through private.usage_request_ids (issue 12 §2).';
