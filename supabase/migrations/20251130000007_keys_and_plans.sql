-- 20251130000007_keys_and_plans.sql
--
-- Where a metered request goes, and who may send it (issue 11 §1; seeds 000, 002, 003). Part of
-- the 0.1.0 baseline (CHANGELOG.md); subscriptions are 20251130000008, the calls around a
-- request 20251130000009.
--   * upstreams: an OpenAI-compatible provider endpoint — name, base URL (NULL until the operator
--     sets it), wire format ('openai_chat': OpenAI chat completions), and the NAME of the
--     environment variable (edge-function secret) that holds its API key. Never the key itself.
--   * plans: what a subscription buys (seed 002's `subscriptions` table: unique name, price as
--     display text, e.g. '50K/month'), with the period its quotas count over.
--   * plan_routes: plan → model at an upstream with a relative weight (seed 002's quota_items).
--     Weights are normalised at run time (cursor-pro-opus totals 130); the same model may be
--     routed to two upstreams; weight 0 parks a route.
--   * private.pick_route(plan, model, allowed_models): THE router. A model the plan routes →
--     weighted pick among that model's routes; 'auto' or a model the plan does not route →
--     weighted pick among all the plan's routes (seed 002's router). Only routes to active,
--     configured upstreams (is_active, base_url set) and, when the key restricts them, to
--     allowed models take part; a model of the plan with no usable route gets none (503 from
--     authorize_request), not another model. The model a route names is what the upstream is
--     asked for and what is priced (price_for(null, model): aliases and default providers apply).
--   * api_keys: the bearer token an OpenAI client sends. A key belongs to a user and draws on one
--     plan (the user's live subscription to that plan).
--       - The secret is `tm_` + 32 random bytes in URL-safe base64 (43 characters), generated in
--         SQL by pgcrypto's extensions.gen_random_bytes (pgcrypto lives in schema `extensions` on
--         Supabase and on the local stack), returned ONCE by create_api_key and stored only as
--         its SHA-256 in private.api_key_hashes. That table is in the schema no API role may use
--         and has no grant at all: nobody, not even the owner or service_role, can read a hash;
--         only the SECURITY DEFINER functions (owner postgres) look a key up by it.
--       - prefix: `tm_` + the next 8 characters of the secret, unique, for display and for
--         `keys revoke PREFIX` (48 random bits: a clash is retried at creation).
--       - expires_at NULL = never (seed 000's -1); revoked_at set once by revoke_api_key.
--       - last_used_at: written by authorize_request at most once a minute per key, with SKIP
--         LOCKED, so a busy key is never a row every request writes or waits for.
--       - allowed_models NULL = every model of the plan; spend_limit per calendar UTC period
--         (day | week | month), enforced by authorize_request from api_key_spend.
-- Writers: service_role writes upstreams, plans and routes (the CLI's `upstreams` / `plans`
-- commands); keys are written through create_api_key / revoke_api_key only; users read their own
-- keys (RLS) or call list_api_keys. Seed: the three plans of seed 002, their upstreams and models
-- are in supabase/seed.sql.
-- Error codes: 22023 invalid_argument (400), PT401 not_authenticated, 42501 forbidden,
-- PT404 user_not_found / plan_not_found / api_key_not_found (the router raises none:
-- authorize_request maps an empty pick).

-- ── Tables ────────────────────────────────────────────────────────────────────────────────
create table public.upstreams (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  base_url text,
  wire_format text not null default 'openai_chat',
  -- The environment variable of the edge function that holds this upstream's API key.
  api_key_env text,
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint upstreams_name_key unique (name),
  constraint upstreams_name_format check (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
  constraint upstreams_base_url_format
    check (base_url ~ '^https?://[^[:space:]]+$' and length(base_url) <= 2048),
  constraint upstreams_wire_format_valid check (wire_format in ('openai_chat')),
  constraint upstreams_api_key_env_format check (api_key_env ~ '^[A-Z_][A-Z0-9_]{0,127}$')
);
comment on table public.upstreams is
  'LLM endpoints requests are routed to. api_key_env names the secret; the secret is never here.';

create table public.plans (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  -- Display text as sold ('50K/month', 'pending'): what the user pays is not computed from it.
  price text,
  -- Default quota period of the plan's subscriptions.
  period text not null default 'month',
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint plans_name_key unique (name),
  constraint plans_name_format check (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
  constraint plans_price_length check (length(price) <= 100),
  constraint plans_period_valid check (period in ('day', 'week', 'month', 'year'))
);

create table public.plan_routes (
  id uuid primary key default gen_random_uuid(),
  plan_id uuid not null references public.plans (id) on delete cascade,
  upstream_id uuid not null references public.upstreams (id) on delete restrict,
  model text not null,
  weight integer not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint plan_routes_plan_upstream_model_key unique (plan_id, upstream_id, model),
  constraint plan_routes_model_not_blank check (btrim(model) <> '' and length(model) <= 255),
  constraint plan_routes_weight_range check (weight between 0 and 1000000)
);
create index plan_routes_plan_id_model_idx on public.plan_routes (plan_id, model);
create index plan_routes_upstream_id_idx on public.plan_routes (upstream_id);
comment on column public.plan_routes.weight is
  'Relative weight among the routes picked from (normalised at run time); 0 parks the route.';

create table public.api_keys (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  -- A key's plan cannot be deleted from under it: deactivate the plan instead.
  plan_id uuid not null references public.plans (id) on delete restrict,
  name text not null,
  prefix text not null,
  -- NULL: every model of the plan. Otherwise the names a request may ask for ('auto' picks
  -- among the plan's routes to these models).
  allowed_models text[],
  -- Most the key may spend per calendar UTC spend_limit_period, holds of requests in flight
  -- included (20251130000009). NULL: only the user's balance limits it.
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
create index api_keys_plan_id_idx on public.api_keys (plan_id);
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

-- ── Triggers ──────────────────────────────────────────────────────────────────────────────
-- private.touch_updated_at(): BEFORE UPDATE — updated_at follows every change.
create function private.touch_updated_at() returns trigger
language plpgsql set search_path = '' as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create trigger upstreams_touch before update on public.upstreams
  for each row execute function private.touch_updated_at();
create trigger plans_touch before update on public.plans
  for each row execute function private.touch_updated_at();
create trigger plan_routes_touch before update on public.plan_routes
  for each row execute function private.touch_updated_at();

-- ── Row level security and policies ───────────────────────────────────────────────────────
alter table public.upstreams enable row level security;
alter table public.plans enable row level security;
alter table public.plan_routes enable row level security;
alter table public.api_keys enable row level security;
alter table private.api_key_hashes enable row level security;
-- Plans and their models are a public catalog, like the price list; upstreams (base URLs,
-- secret names) are the operator's: service_role only, no policy.
create policy "Visitors read the plans" on public.plans for select to anon using (true);
create policy "Users read the plans" on public.plans for select to authenticated using (true);
create policy "Visitors read the plan routes" on public.plan_routes
  for select to anon using (true);
create policy "Users read the plan routes" on public.plan_routes
  for select to authenticated using (true);
create policy "Users read their own API keys" on public.api_keys
  for select to authenticated using ((select auth.uid()) = user_id);
-- api_key_hashes: no policy and no grant.

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.pick_route(plan_id, model, allowed_models = null) → the plan_routes row to use, or
-- NULL when no route qualifies. If the plan has routes for `model`, only those; else ('auto' is
-- never a route model) all of the plan's routes. Of these, the usable ones take part: weight >
-- 0, upstream active with a base_url, model in allowed_models (when given). One draw of random() over the cumulative weights (in id order): route i is
-- picked with probability weight_i / sum(weights). Tested by chi-square in 51-plans-routing.sql.
-- Runs as its caller (authorize_request); no API role may call it.
create function private.pick_route(plan_id uuid, model text, allowed_models text[] default null)
returns public.plan_routes
language plpgsql volatile set search_path = '' as $$
declare
  picked public.plan_routes;
  only_model boolean;
  roll double precision := random();
begin
  -- Whether the plan routes this model at all, usable or not: a model of the plan whose
  -- routes are all down gets no route (503), never silently another model.
  only_model := exists (select 1 from public.plan_routes r
                        where r.plan_id = pick_route.plan_id and r.model = pick_route.model);
  select c.id, c.plan_id, c.upstream_id, c.model, c.weight, c.created_at, c.updated_at
  into picked
  from (select r.*, sum(r.weight) over (order by r.id rows unbounded preceding) as upto,
               sum(r.weight) over () as total
        from public.plan_routes r join public.upstreams u on u.id = r.upstream_id
        where r.plan_id = pick_route.plan_id and r.weight > 0
          and u.is_active and u.base_url is not null
          and (pick_route.allowed_models is null or r.model = any (pick_route.allowed_models))
          and (not only_model or r.model = pick_route.model)) c
  where c.upto > roll * c.total
  order by c.upto
  limit 1;
  return picked;
end
$$;

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
revoke all on public.upstreams, public.plans, public.plan_routes
  from public, anon, authenticated, service_role;
grant select, insert, update, delete on public.upstreams to service_role;
grant select on public.plans to anon, authenticated;
grant select, insert, update, delete on public.plans to service_role;
grant select on public.plan_routes to anon, authenticated;
grant select, insert, update, delete on public.plan_routes to service_role;
revoke all on public.api_keys from public, anon, authenticated, service_role;
revoke all on private.api_key_hashes from public, anon, authenticated, service_role;
grant select on public.api_keys to authenticated, service_role;

revoke execute on function private.touch_updated_at() from public;
revoke execute on function private.pick_route(uuid, text, text[]) from public;
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
