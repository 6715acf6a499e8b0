-- 20251201000020_api_keys.sql
--
-- API keys for the metered endpoint (issue 11 §1; seeds 000, 002, 003): the bearer token an
-- OpenAI client sends. A key belongs to a user and draws on one plan (the user's live
-- subscription to that plan, 20251201000022).
--   * The secret is `tm_` + 32 random bytes in URL-safe base64 (43 characters), generated in SQL
--     by pgcrypto's extensions.gen_random_bytes (pgcrypto lives in schema `extensions` on
--     Supabase and on the local stack), returned ONCE by create_api_key and stored only as its
--     SHA-256 in private.api_key_hashes. That table is in the schema no API role may use and has
--     no grant at all: nobody, not even the owner or service_role, can read a hash; only the
--     SECURITY DEFINER functions (owner postgres) look a key up by it.
--   * prefix: `tm_` + the next 8 characters of the secret, unique, for display and for
--     `keys revoke PREFIX` (48 random bits: a clash is retried at creation).
--   * expires_at NULL = never (seed 000's -1); revoked_at set once by revoke_api_key.
--   * last_used_at: written by authorize_request at most once a minute per key, with SKIP
--     LOCKED, so a busy key is never a row every request writes or waits for.
--   * allowed_models NULL = every model of the plan; spend_limit per calendar UTC period
--     (day | week | month), enforced by authorize_request from api_key_spend (20251201000023).
-- Writes go through create_api_key / revoke_api_key only; users read their own keys (RLS) or
-- call list_api_keys. The plan_id foreign key is added by 20251201000021, which creates plans.
-- Error codes: 22023 invalid_argument (400), PT401 not_authenticated, 42501 forbidden,
-- PT404 user_not_found / plan_not_found / api_key_not_found.

-- ── Tables ────────────────────────────────────────────────────────────────────────────────
create table public.api_keys (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  plan_id uuid not null,
  name text not null,
  prefix text not null,
  -- NULL: every model of the plan. Otherwise the names a request may ask for ('auto' picks
  -- among the plan's routes to these models).
  allowed_models text[],
  -- Most the key may spend per calendar UTC spend_limit_period, holds of requests in flight
  -- included (20251201000023). NULL: only the user's balance limits it.
  spend_limit numeric(24,12),
  spend_limit_period text,
  expires_at timestamptz,
  revoked_at timestamptz,
  last_used_at timestamptz,
  created_at timestamptz not null default now(),
  constraint api_keys_prefix_key unique (prefix),
  constraint api_keys_name_length check (btrim(name) <> '' and length(name) <= 100),
  constraint api_keys_prefix_format check (prefix ~ '^tm_[A-Za-z0-9_-]{8}$'),
  constraint api_keys_allowed_models_valid check (
    cardinality(allowed_models) between 1 and 100
    and array_position(allowed_models, null) is null
    and array_position(allowed_models, '') is null),
  constraint api_keys_spend_limit_range check (spend_limit > 0 and spend_limit < 1e9),
  constraint api_keys_spend_limit_period_valid
    check (spend_limit_period in ('day', 'week', 'month')),
  constraint api_keys_spend_limit_complete
    check ((spend_limit is null) = (spend_limit_period is null)),
  constraint api_keys_expires_at_finite check (isfinite(expires_at))
);
create index api_keys_user_id_created_at_idx on public.api_keys (user_id, created_at desc);
comment on table public.api_keys is
  'Bearer keys of the metered endpoint. The secret is shown once; only its SHA-256 is kept, in '
  'private.api_key_hashes, which no role can read.';
comment on column public.api_keys.prefix is
  'tm_ + the first 8 characters after it: enough to recognise a key, useless to use it.';

-- key_hash → key. One row per key, written with it, never updated.
create table private.api_key_hashes (
  key_hash bytea primary key,
  api_key_id uuid not null references public.api_keys (id) on delete cascade,
  constraint api_key_hashes_api_key_id_key unique (api_key_id),
  constraint api_key_hashes_key_hash_length check (octet_length(key_hash) = 32)
);

-- ── Row level security and policies ───────────────────────────────────────────────────────
alter table public.api_keys enable row level security;
alter table private.api_key_hashes enable row level security;
create policy "Users read their own API keys" on public.api_keys
  for select to authenticated using ((select auth.uid()) = user_id);
-- api_key_hashes: no policy and no grant.

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.api_key_owner(user_id) → the user whose keys the caller may manage: a signed-in user
-- manages their own (user_id null or theirs), service_role (and the owner roles) any existing
-- user, which it must name. Raises: PT401 not_authenticated, 42501 forbidden,
-- 22023 invalid_argument, PT404 user_not_found.
create function private.api_key_owner(user_id uuid) returns uuid
language plpgsql stable set search_path = '' as $$
declare
  caller text := coalesce(nullif(current_setting('role', true), 'none'), session_user::text);
  me uuid;
begin
  if caller = 'authenticated' then
    me := auth.uid();
    if me is null then
      raise exception using errcode = 'PT401', message = 'not_authenticated',
        detail = 'managing API keys needs a signed-in user';
    end if;
    if api_key_owner.user_id is not null and api_key_owner.user_id <> me then
      raise exception using errcode = '42501', message = 'forbidden',
        detail = 'users manage only their own API keys';
    end if;
    return me;
  elsif caller in ('service_role', 'postgres', 'supabase_admin') then
    perform private.assert_user_exists(api_key_owner.user_id);
    return api_key_owner.user_id;
  end if;
  raise exception using errcode = '42501', message = 'forbidden',
    detail = format('role %s may not manage API keys', caller);
end
$$;

-- private.api_key_json(k) → the key as the API shows it (never a secret or a hash), with its
-- plan's name and state: active | expired | revoked.
create function private.api_key_json(k public.api_keys) returns jsonb
language plpgsql stable set search_path = '' as $$
begin
  return jsonb_build_object('id', k.id, 'user_id', k.user_id, 'plan_id', k.plan_id,
    'plan', (select p.name from public.plans p where p.id = k.plan_id),
    'name', k.name, 'prefix', k.prefix, 'allowed_models', k.allowed_models,
    'spend_limit', trim_scale(k.spend_limit)::text, 'spend_limit_period', k.spend_limit_period,
    'expires_at', k.expires_at, 'revoked_at', k.revoked_at, 'last_used_at', k.last_used_at,
    'created_at', k.created_at,
    'state', case when k.revoked_at is not null then 'revoked'
                  when k.expires_at <= now() then 'expired' else 'active' end);
end
$$;

-- public.create_api_key(name, plan, expires_at = null, allowed_models = null,
-- spend_limit = null, spend_limit_period = null, user_id = null) → api_key_json + {key}: the
-- secret, returned this once. plan: the plan's name (active). allowed_models: names among the
-- plan's route models. expires_at: in the future, or null for never.
-- Who may call: authenticated (for themselves; user_id null or their own id), service_role
-- (for user_id). DEFINER: writes api_keys and the hash table, which no API role may write.
-- Raises: PT401 not_authenticated, 42501 forbidden, 22023 invalid_argument (naming the field),
-- PT404 user_not_found / plan_not_found.
create function public.create_api_key(
  name text, plan text, expires_at timestamptz default null, allowed_models text[] default null,
  spend_limit numeric default null, spend_limit_period text default null,
  user_id uuid default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  owner_id uuid := private.api_key_owner(create_api_key.user_id);
  found_plan_id uuid;
  plan_name text;
  secret text;
  created public.api_keys;
  unknown text;
begin
  if create_api_key.name is null or btrim(create_api_key.name) = ''
     or length(create_api_key.name) > 100 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'name must be a non-empty string of at most 100 characters';
  end if;
  perform private.check_text('plan', create_api_key.plan);
  if create_api_key.expires_at is not null
     and (not isfinite(create_api_key.expires_at) or create_api_key.expires_at <= now()) then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'expires_at must be a time in the future, or null for never';
  end if;
  if create_api_key.spend_limit is not null or create_api_key.spend_limit_period is not null then
    perform private.check_amount('spend_limit', create_api_key.spend_limit);
    if create_api_key.spend_limit_period is null
       or create_api_key.spend_limit_period not in ('day', 'week', 'month') then
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = 'spend_limit_period must be day, week or month when spend_limit is set';
    end if;
  end if;
  select p.id, p.name into found_plan_id, plan_name from public.plans p
  where p.name = create_api_key.plan and p.is_active;
  if not found then
    raise exception using errcode = 'PT404', message = 'plan_not_found',
      detail = format('no active plan %s', create_api_key.plan);
  end if;
  if create_api_key.allowed_models is not null then
    if cardinality(create_api_key.allowed_models) not between 1 and 100 then
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = 'allowed_models must list 1 to 100 models, or be null for all';
    end if;
    select m into unknown from unnest(create_api_key.allowed_models) m
    where m is null or not exists (select 1 from public.plan_routes r
                                   where r.plan_id = found_plan_id and r.model = m)
    limit 1;
    if found then
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = format('allowed_models must name models of plan %s; %s is not one',
                        plan_name, coalesce(unknown, 'null'));
    end if;
  end if;
  if (select count(*) from public.api_keys k
      where k.user_id = owner_id and k.revoked_at is null) >= 100 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'user_id has 100 unrevoked API keys already; revoke one first';
  end if;

  for attempt in 1 .. 5 loop
    secret := 'tm_' || translate(encode(extensions.gen_random_bytes(32), 'base64'), '+/=', '-_');
    insert into public.api_keys (user_id, plan_id, name, prefix, allowed_models, spend_limit,
                                 spend_limit_period, expires_at)
    values (owner_id, found_plan_id, btrim(create_api_key.name), substr(secret, 1, 11),
            create_api_key.allowed_models, create_api_key.spend_limit,
            create_api_key.spend_limit_period, create_api_key.expires_at)
    on conflict on constraint api_keys_prefix_key do nothing
    returning * into created;
    exit when created.id is not null;
  end loop;
  if created.id is null then  -- five 48-bit clashes in a row: the generator is broken
    raise exception using errcode = 'XX000', message = 'key_generation_failed',
      detail = 'could not draw an unused key prefix';
  end if;
  insert into private.api_key_hashes (key_hash, api_key_id)
  values (sha256(convert_to(secret, 'UTF8')), created.id);
  return private.api_key_json(created) || jsonb_build_object('key', secret);
end
$$;

-- public.list_api_keys(user_id = null) → one api_key_json per key of the user, newest first
-- (revoked and expired ones included, with their state).
-- Who may call: authenticated (their own), service_role (user_id). DEFINER for the common
-- caller check with create/revoke; it reads only the owner's rows.
-- Raises: PT401 not_authenticated, 42501 forbidden, 22023 invalid_argument, PT404 user_not_found.
create function public.list_api_keys(user_id uuid default null) returns setof jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  owner_id uuid := private.api_key_owner(list_api_keys.user_id);
begin
  return query
    select private.api_key_json(k) from public.api_keys k
    where k.user_id = owner_id order by k.created_at desc, k.id;
end
$$;

-- public.revoke_api_key(key) → api_key_json + {revoked}: key is the key's id or its prefix.
-- revoked = false when it already was (idempotent; revoked_at keeps its first value). Takes
-- effect from the next authorize_request on.
-- Who may call: authenticated (their own keys), service_role (any). DEFINER: writes api_keys.
-- Raises: PT401 not_authenticated, 42501 forbidden, 22023 invalid_argument,
-- PT404 api_key_not_found (also for another user's key: its existence is not revealed).
create function public.revoke_api_key(key text) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  caller text := coalesce(nullif(current_setting('role', true), 'none'), session_user::text);
  me uuid;
  found_key public.api_keys;
  changed boolean;
begin
  if caller = 'authenticated' then
    me := private.api_key_owner(null);
  else
    perform private.assert_service_role();
  end if;
  perform private.check_text('key', revoke_api_key.key);
  select k.* into found_key from public.api_keys k
  where (case when revoke_api_key.key ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              then k.id = revoke_api_key.key::uuid
              else k.prefix = revoke_api_key.key end)
    and (me is null or k.user_id = me)
  for no key update;
  if not found then
    raise exception using errcode = 'PT404', message = 'api_key_not_found',
      detail = format('no API key %s', revoke_api_key.key);
  end if;
  changed := found_key.revoked_at is null;
  if changed then
    update public.api_keys k set revoked_at = now() where k.id = found_key.id
    returning * into found_key;
  end if;
  return private.api_key_json(found_key) || jsonb_build_object('revoked', changed);
end
$$;

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke all on public.api_keys from public, anon, authenticated, service_role;
revoke all on private.api_key_hashes from public, anon, authenticated, service_role;
grant select on public.api_keys to authenticated, service_role;

revoke execute on function private.api_key_owner(uuid) from public;
revoke execute on function private.api_key_json(public.api_keys) from public;
revoke execute on function public.create_api_key(text, text, timestamptz, text[], numeric, text,
  uuid) from public, anon;
revoke execute on function public.list_api_keys(uuid) from public, anon;
revoke execute on function public.revoke_api_key(text) from public, anon;
grant execute on function public.create_api_key(text, text, timestamptz, text[], numeric, text,
  uuid) to authenticated, service_role;
grant execute on function public.list_api_keys(uuid) to authenticated, service_role;
grant execute on function public.revoke_api_key(text) to authenticated, service_role;
