-- 20251201000021_plans_and_routes.sql
--
-- Where a metered request goes (issue 11 §1, seed 002):
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
--     authorize_request), not another model. The model a route names is what the upstream is asked for and
--     what is priced (price_for(null, model): aliases and default providers apply).
-- Also: api_keys.plan_id (20251201000020) gets its foreign key, and a generic updated_at trigger.
-- Seed: the three plans of seed 002, their upstreams and models are in supabase/seed.sql.
-- Error codes: none raised here (authorize_request, 20251201000023, maps an empty pick).

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

-- A key's plan cannot be deleted from under it: deactivate the plan instead.
alter table public.api_keys add constraint api_keys_plan_id_fkey
  foreign key (plan_id) references public.plans (id) on delete restrict;
create index api_keys_plan_id_idx on public.api_keys (plan_id);

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
-- Plans and their models are a public catalog, like the price list; upstreams (base URLs,
-- secret names) are the operator's: service_role only, no policy.
create policy "Visitors read the plans" on public.plans for select to anon using (true);
create policy "Users read the plans" on public.plans for select to authenticated using (true);
create policy "Visitors read the plan routes" on public.plan_routes
  for select to anon using (true);
create policy "Users read the plan routes" on public.plan_routes
  for select to authenticated using (true);

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

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke all on public.upstreams, public.plans, public.plan_routes
  from public, anon, authenticated, service_role;
grant select, insert, update, delete on public.upstreams to service_role;
grant select on public.plans to anon, authenticated;
grant select, insert, update, delete on public.plans to service_role;
grant select on public.plan_routes to anon, authenticated;
grant select, insert, update, delete on public.plan_routes to service_role;

revoke execute on function private.touch_updated_at() from public;
revoke execute on function private.pick_route(uuid, text, text[]) from public;
