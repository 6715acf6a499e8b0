-- 20261129230001_audit_logs.sql
--
-- The audit trail (issue 12 §5, seed 003's audit_logs): one append-only table for every change
-- an operator or a user makes to what money and access depend on.
--   * Who: actor_role (the API role: service_role, authenticated, or the database role for SQL
--     run directly), actor_user_id (auth.uid() of a signed-in caller), actor_api_key_id (the
--     tokenmeter API key the call came with: set by private.api_key_for in the transaction, so
--     authorize_request's changes carry it). From where: ip_address (the first address of the
--     request's X-Forwarded-For, else X-Real-IP, as Supabase's gateway passes them in
--     request.headers; the database connection's peer for SQL run directly) and user_agent; the
--     whole forwarded chain is kept in metadata.forwarded_for.
--   * What: action (insert / update / delete of a row; top_up / adjustment / refund of a balance;
--     reprice; set_low_balance_threshold …), resource_type (the table) and resource_id, user_id
--     (whose data it is: the key's, subscription's or balance's owner; null for catalog rows),
--     before / after (the row, or the balance, as jsonb), metadata.
--   * Covered: prices, aliases and default providers (the former price_audit, folded in),
--     balance movements by admins (top-ups, adjustments, refunds — re-pricing's adjustments
--     among them — not usage charges nor signup grants), API keys (not last_used_at), plans,
--     plan routes and upstreams, subscriptions and their quotas (not the used_* counters),
--     re-pricing runs.
--   * Append-only: no role has INSERT, UPDATE, DELETE or TRUNCATE; the trigger functions write
--     it (SECURITY DEFINER). A BEFORE UPDATE OR DELETE row trigger and a BEFORE TRUNCATE trigger
--     refuse the change for every role, the owner included, and are ENABLE ALWAYS so that
--     session_replication_role = replica does not skip them. Only DDL by the owner (dropping the
--     trigger) can get around them: that is a schema change, visible in the migrations.
--   * No foreign key to auth.users: an entry outlives the user it names (a cascade would have to
--     update or delete it).
--   * price_audit becomes a view of the price entries with its old columns (and ids: the rows
--     are moved over with them), so whatever read it still does; an INSERT into it (as
--     reprice_usage does) goes to audit_logs through an INSTEAD OF trigger.
-- Read: users their own entries (user_id or actor_user_id theirs; RLS), service_role all.
-- Error codes: 55000 append_only (any UPDATE / DELETE / TRUNCATE), 42501 forbidden.

-- ── Tables ────────────────────────────────────────────────────────────────────────────────
create table public.audit_logs (
  -- bigint, not seed 003's uuid: the price_audit rows keep their ids, and reprice_usage's
  -- result names its run by this id (audit_id).
  id bigint generated always as identity primary key,
  created_at timestamptz not null default now(),
  actor_role text not null,
  actor_user_id uuid,
  actor_api_key_id uuid,
  action text not null,
  resource_type text not null,
  resource_id text,
  -- Whose data the entry is about (owner of the key, subscription or balance).
  user_id uuid,
  before jsonb,
  after jsonb,
  ip_address inet,
  user_agent text,
  metadata jsonb not null default '{}',
  constraint audit_logs_action_format check (action ~ '^[a-z][a-z0-9_.]{0,99}$'),
  constraint audit_logs_resource_type_format check (resource_type ~ '^[a-z][a-z0-9_.]{0,49}$'),
  constraint audit_logs_resource_id_length check (length(resource_id) <= 255),
  constraint audit_logs_actor_role_length check (length(actor_role) between 1 and 100),
  constraint audit_logs_user_agent_length check (length(user_agent) <= 1000),
  constraint audit_logs_metadata_object check (jsonb_typeof(metadata) = 'object')
);
create index audit_logs_user_id_created_at_idx on public.audit_logs (user_id, created_at desc)
  where user_id is not null;
create index audit_logs_actor_user_id_created_at_idx
  on public.audit_logs (actor_user_id, created_at desc) where actor_user_id is not null;
create index audit_logs_resource_idx on public.audit_logs (resource_type, resource_id);
create index audit_logs_action_created_at_idx on public.audit_logs (action, created_at desc);
create index audit_logs_created_at_idx on public.audit_logs (created_at);
-- price_audit's reads: one model's history.
create index audit_logs_price_model_idx
  on public.audit_logs ((metadata ->> 'provider_id'), (metadata ->> 'model_id'), created_at desc)
  where resource_type in ('model_pricing', 'model_aliases', 'models', 'usage_records');
comment on table public.audit_logs is
  'Append-only audit trail: who (role, user, API key, address), what (action, resource, '
  'before/after), when. Nobody can change or delete an entry.';
comment on column public.audit_logs.user_id is
  'The user the entry is about (owner of the key, subscription or balance); they can read it.';
comment on column public.audit_logs.ip_address is
  'First address of X-Forwarded-For (else X-Real-IP) of the API request: the client as the '
  'proxy in front saw it. The whole chain is metadata.forwarded_for.';

-- The price history moves over with its ids; which table a row came from was not recorded, so
-- it is read from the row's columns.
insert into public.audit_logs (id, created_at, actor_role, actor_user_id, action, resource_type,
                               resource_id, before, after, metadata)
overriding system value
select p.id, p.changed_at, p.actor_role, p.actor_user_id, p.action,
       case when p.action = 'reprice' then 'usage_records'
            when coalesce(p.new, p.old) ? 'alias' then 'model_aliases'
            when coalesce(p.new, p.old) ? 'price_per_input_token' then 'model_pricing'
            else 'models' end,
       coalesce(coalesce(p.new, p.old) ->> 'id', p.provider_id || '/' || p.model_id),
       p.old, p.new,
       jsonb_strip_nulls(jsonb_build_object('provider_id', p.provider_id,
                                            'model_id', p.model_id))
from public.price_audit p
order by p.id;
select setval(pg_get_serial_sequence('public.audit_logs', 'id'),
              greatest((select max(a.id) from public.audit_logs a), 1),
              (select max(a.id) from public.audit_logs a) is not null);
drop table public.price_audit;

-- ── Views ─────────────────────────────────────────────────────────────────────────────────
-- price_audit (20251101000001's table, same columns): the price, alias and default-provider
-- entries and the re-pricing runs. security_invoker: readable by whoever may read audit_logs'
-- rows; only service_role is granted it.
create view public.price_audit with (security_invoker = true) as
select a.id, a.created_at as changed_at, a.actor_role, a.actor_user_id,
       a.metadata ->> 'provider_id' as provider_id, a.metadata ->> 'model_id' as model_id,
       a.action, a.before as old, a.after as new
from public.audit_logs a
where a.resource_type in ('model_pricing', 'model_aliases', 'models')
   or (a.resource_type = 'usage_records' and a.action = 'reprice');
comment on view public.price_audit is
  'The price entries of audit_logs with price_audit''s former columns (kept for its readers).';

-- ── Functions: writing an entry ───────────────────────────────────────────────────────────
-- private.write_audit(action, resource_type, resource_id, user_id, before, after, metadata)
-- → the entry's id. Adds who and from where, read from the transaction: the role, the JWT's
-- sub, tokenmeter.api_key_id, and request.headers (PostgREST's GUCs; the local gateway sets the
-- same). Malformed values are left out rather than blocking the change being audited.
-- Runs as its caller: the SECURITY DEFINER trigger functions below and the admin functions.
-- No API role may call it.
create function private.write_audit(
  action text, resource_type text, resource_id text, user_id uuid, before jsonb, after jsonb,
  metadata jsonb default '{}'
) returns bigint
language plpgsql set search_path = '' as $$
declare
  uuid_pattern constant text := '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$';
  headers jsonb;
  claims_sub text := current_setting('request.jwt.claim.sub', true);
  key_id text := current_setting('tokenmeter.api_key_id', true);
  forwarded text;
  address text;
  ip inet;
  agent text;
  extra jsonb := coalesce(write_audit.metadata, '{}');
  entry_id bigint;
begin
  begin
    headers := nullif(current_setting('request.headers', true), '')::jsonb;
    claims_sub := coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb
                           ->> 'sub', claims_sub);
  exception when others then
    headers := null;  -- a malformed setting must not block the change
  end;
  if jsonb_typeof(headers) = 'object' then
    forwarded := left(headers ->> 'x-forwarded-for', 1000);
    address := btrim(coalesce(nullif(split_part(forwarded, ',', 1), ''),
                              headers ->> 'x-real-ip'));
    agent := left(headers ->> 'user-agent', 1000);
    if address is not null then
      begin
        ip := address::inet;
      exception when others then
        ip := null;
        extra := extra || jsonb_build_object('invalid_address', left(address, 100));
      end;
    end if;
    if forwarded is not null then
      extra := extra || jsonb_build_object('forwarded_for', forwarded);
    end if;
  else
    ip := inet_client_addr();  -- SQL run directly: the connection's peer (null on a socket)
  end if;
  insert into public.audit_logs (actor_role, actor_user_id, actor_api_key_id, action,
                                 resource_type, resource_id, user_id, before, after, ip_address,
                                 user_agent, metadata)
  values (coalesce(nullif(current_setting('role', true), 'none'), session_user::text),
          case when claims_sub ~ uuid_pattern then claims_sub::uuid end,
          case when key_id ~ uuid_pattern then key_id::uuid end,
          write_audit.action, write_audit.resource_type, left(write_audit.resource_id, 255),
          write_audit.user_id, write_audit.before, write_audit.after, ip, agent, extra)
  returning id into entry_id;
  return entry_id;
end
$$;

-- ── Trigger functions ─────────────────────────────────────────────────────────────────────
-- private.refuse_audit_change(): BEFORE UPDATE OR DELETE (row) and BEFORE TRUNCATE (statement)
-- on audit_logs: refuses, whoever asks. Raises 55000 append_only.
create function private.refuse_audit_change() returns trigger
language plpgsql set search_path = '' as $$
begin
  raise exception using errcode = '55000', message = 'append_only',
    detail = format('%I.%I is append-only: %s is refused for every role', tg_table_schema,
                    tg_table_name, tg_op);
end
$$;

-- private.audit_price_change(): AFTER INSERT/UPDATE/DELETE on model_pricing, model_aliases and
-- AFTER UPDATE OF is_default on models (20251201000011's body, writing audit_logs).
-- SECURITY DEFINER: audit_logs is writable by no API role. Refuses to run outside those triggers.
create or replace function private.audit_price_change() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  row_data jsonb := to_jsonb(coalesce(new, old));
  provider text := coalesce(row_data ->> 'provider_id', row_data ->> 'target_provider_id');
  model text := coalesce(row_data ->> 'model_id', row_data ->> 'alias');
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
  perform private.write_audit(lower(tg_op), tg_table_name,
    coalesce(row_data ->> 'id', provider || '/' || model), null,
    case when tg_op <> 'INSERT' then to_jsonb(old) end,
    case when tg_op <> 'DELETE' then to_jsonb(new) end,
    jsonb_strip_nulls(jsonb_build_object('provider_id', provider, 'model_id', model)));
  return null;
end
$$;

-- private.insert_price_audit(): INSTEAD OF INSERT on the price_audit view (reprice_usage writes
-- its run there): the entry goes to audit_logs; the view's row, id included, is returned so
-- that INSERT … RETURNING id still works. Runs as the inserting role, which must be granted
-- INSERT on the view: only its owner is.
create function private.insert_price_audit() returns trigger
language plpgsql set search_path = '' as $$
begin
  new.id := private.write_audit(new.action,
    case when new.action = 'reprice' then 'usage_records' else 'model_pricing' end,
    coalesce(new.provider_id || '/' || new.model_id, new.provider_id, new.model_id), null,
    new.old, new.new,
    jsonb_strip_nulls(jsonb_build_object('provider_id', new.provider_id,
                                         'model_id', new.model_id)));
  select a.created_at, a.actor_role, a.actor_user_id
  into new.changed_at, new.actor_role, new.actor_user_id
  from public.audit_logs a where a.id = new.id;
  return new;
end
$$;

-- private.audit_row_change(): AFTER INSERT/UPDATE/DELETE on api_keys, plans, plan_routes,
-- upstreams and subscriptions. An UPDATE that changes only bookkeeping columns (last_used_at,
-- updated_at, the usage counters and their period, the alert levels) is not an entry; the
-- triggers' WHEN clauses already skip the frequent ones. metadata.changed lists the columns an
-- UPDATE changed. SECURITY DEFINER: service_role writes these tables, audit_logs is writable by
-- no API role. Refuses to run outside those triggers.
create function private.audit_row_change() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  bookkeeping constant text[] := array['last_used_at', 'updated_at', 'used_requests',
    'used_tokens', 'reset_at', 'requests_alert_level', 'tokens_alert_level'];
  old_row jsonb := case when tg_op <> 'INSERT' then to_jsonb(old) end;
  new_row jsonb := case when tg_op <> 'DELETE' then to_jsonb(new) end;
  changed jsonb;
begin
  if tg_level <> 'ROW' or tg_when <> 'AFTER' or tg_table_schema <> 'public'
     or tg_table_name not in ('api_keys', 'plans', 'plan_routes', 'upstreams',
                              'subscriptions') then
    raise exception using errcode = '42501', message = 'forbidden',
      detail = 'audit_row_change runs only as the audit trigger of the metering tables';
  end if;
  if tg_op = 'UPDATE' then
    select coalesce(jsonb_agg(n.key order by n.key), '[]') into changed
    from jsonb_each(new_row) n
    where n.value is distinct from old_row -> n.key and n.key <> all (bookkeeping);
    if changed = '[]' then
      return null;
    end if;
  end if;
  perform private.write_audit(lower(tg_op), tg_table_name,
    coalesce(new_row, old_row) ->> 'id',
    (coalesce(new_row, old_row) ->> 'user_id')::uuid, old_row, new_row,
    case when changed is not null then jsonb_build_object('changed', changed) else '{}' end);
  return null;
end
$$;

-- private.audit_balance_movement(): AFTER INSERT on ledger_entries of an admin movement
-- (top_up, adjustment, refund; the trigger's WHEN clause). Posted before the balance row is
-- updated (private.post_ledger_entry), so the balance read here, under the row lock that update
-- takes next anyway, is the balance before the movement. SECURITY DEFINER: audit_logs is
-- writable by no API role. Refuses to run outside that trigger.
create function private.audit_balance_movement() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  balance_before numeric;
begin
  if tg_level <> 'ROW' or tg_when <> 'AFTER' or tg_op <> 'INSERT'
     or tg_table_schema <> 'public' or tg_table_name <> 'ledger_entries' then
    raise exception using errcode = '42501', message = 'forbidden',
      detail = 'audit_balance_movement runs only as the audit trigger of ledger_entries';
  end if;
  select b.balance into balance_before from public.user_balances b
  where b.user_id = new.user_id
  for no key update;
  balance_before := coalesce(balance_before, 0);
  perform private.write_audit(new.kind, 'ledger_entries', new.id::text, new.user_id,
    jsonb_build_object('balance', trim_scale(balance_before)::text),
    jsonb_build_object('balance', trim_scale(balance_before + new.amount)::text),
    jsonb_strip_nulls(jsonb_build_object('amount', trim_scale(new.amount)::text,
      'currency', new.currency, 'reference', new.reference,
      'description', new.description)));
  return null;
end
$$;

-- private.api_key_for(secret): 20251201000023's body, and it names the key in the transaction
-- (tokenmeter.api_key_id, transaction-local) so that what the request changes is audited with
-- the key. Raises PT401 invalid_api_key / revoked_api_key / expired_api_key.
create or replace function private.api_key_for(secret text) returns public.api_keys
language plpgsql stable set search_path = '' as $$
declare
  found_key public.api_keys;
begin
  if secret is null or secret !~ '^tm_[A-Za-z0-9_-]{43}$' then
    raise exception using errcode = 'PT401', message = 'invalid_api_key',
      detail = 'the API key is missing or malformed';
  end if;
  select k.* into found_key
  from private.api_key_hashes h join public.api_keys k on k.id = h.api_key_id
  where h.key_hash = sha256(convert_to(api_key_for.secret, 'UTF8'));
  if not found then
    raise exception using errcode = 'PT401', message = 'invalid_api_key',
      detail = 'the API key is not known';
  end if;
  if found_key.revoked_at is not null then
    raise exception using errcode = 'PT401', message = 'revoked_api_key',
      detail = format('API key %s was revoked at %s', found_key.prefix, found_key.revoked_at);
  end if;
  if found_key.expires_at <= now() then
    raise exception using errcode = 'PT401', message = 'expired_api_key',
      detail = format('API key %s expired at %s', found_key.prefix, found_key.expires_at);
  end if;
  perform set_config('tokenmeter.api_key_id', found_key.id::text, true);
  return found_key;
end
$$;

-- ── Triggers ──────────────────────────────────────────────────────────────────────────────
create trigger audit_logs_append_only before update or delete on public.audit_logs
  for each row execute function private.refuse_audit_change();
create trigger audit_logs_no_truncate before truncate on public.audit_logs
  for each statement execute function private.refuse_audit_change();
alter table public.audit_logs enable always trigger audit_logs_append_only;
alter table public.audit_logs enable always trigger audit_logs_no_truncate;

create trigger price_audit_insert instead of insert on public.price_audit
  for each row execute function private.insert_price_audit();

create trigger ledger_entries_audit after insert on public.ledger_entries
  for each row when (new.kind in ('top_up', 'adjustment', 'refund'))
  execute function private.audit_balance_movement();
-- last_used_at is written by authorize_request (at most once a minute per key): not an entry,
-- and not worth a function call.
create trigger api_keys_audit after insert or delete on public.api_keys
  for each row execute function private.audit_row_change();
create trigger api_keys_audit_update after update on public.api_keys
  for each row when ((to_jsonb(old) - 'last_used_at') is distinct from
                     (to_jsonb(new) - 'last_used_at'))
  execute function private.audit_row_change();
create trigger plans_audit after insert or update or delete on public.plans
  for each row execute function private.audit_row_change();
create trigger plan_routes_audit after insert or update or delete on public.plan_routes
  for each row execute function private.audit_row_change();
create trigger upstreams_audit after insert or update or delete on public.upstreams
  for each row execute function private.audit_row_change();
-- complete_request counts every request on the subscription: only a change of what the
-- operator sets (or of the status the quota trigger keeps) is an entry.
create trigger subscriptions_audit after insert or delete on public.subscriptions
  for each row execute function private.audit_row_change();
create trigger subscriptions_audit_update after update on public.subscriptions
  for each row when ((old.status, old.suspension_reason, old.quota_requests, old.quota_tokens,
                      old.period, old.expires_at, old.plan_id, old.user_id, old.started_at)
                     is distinct from
                     (new.status, new.suspension_reason, new.quota_requests, new.quota_tokens,
                      new.period, new.expires_at, new.plan_id, new.user_id, new.started_at))
  execute function private.audit_row_change();

-- ── Row level security and policies ───────────────────────────────────────────────────────
alter table public.audit_logs enable row level security;
create policy "Users read their own audit entries" on public.audit_logs
  for select to authenticated
  using ((select auth.uid()) = user_id or (select auth.uid()) = actor_user_id);

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke all on public.audit_logs, public.price_audit from public, anon, authenticated, service_role;
grant select on public.audit_logs to authenticated, service_role;
grant select on public.price_audit to service_role;

revoke execute on function private.write_audit(text, text, text, uuid, jsonb, jsonb, jsonb)
  from public;
revoke execute on function private.refuse_audit_change() from public;
revoke execute on function private.insert_price_audit() from public;
revoke execute on function private.audit_row_change() from public;
revoke execute on function private.audit_balance_movement() from public;
