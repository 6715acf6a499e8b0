-- 20251018000001_create_pricing_tables.sql
--
-- The billing core's tables: the price list, prepaid balances, the ledger of every balance
-- movement, one usage record per metered request, credit reservations (hold, then settle),
-- the signup-grant setting and the signup error log. Row level security is on for every table;
-- privileges are granted explicitly per role because the project has NO default privileges.
--
-- Money model (why these scales):
--   * Prices are per token, numeric(20,12): published prices reach $0.000000025/token
--     ($0.025 per 1M), so 12 decimals keep every published price exact.
--   * Costs, balances and ledger amounts are numeric(24,12): tokens (integers) x a scale-12
--     price is exact at scale 12, so a charge is never rounded and balance = sum(ledger) holds
--     to the last digit. Max |amount| < 10^12. Rounding to cents happens only for display.
-- Writers: only the money functions (SECURITY DEFINER, migrations 5-8) write balances, the
-- ledger, usage records and reservations; API roles get no INSERT/UPDATE/DELETE on them (except
-- the zero-balance self insert of migration 4).

-- ── Private schema: helpers and trigger functions, not exposed by the API ────────────────────
create schema if not exists private;
revoke all on schema private from public;

-- ── model_pricing ────────────────────────────────────────────────────────────────────────────
create table public.model_pricing (
  id uuid primary key default gen_random_uuid(),
  provider_id text not null,
  model_id text not null,
  -- USD (or `currency`) per token. NULL only when pricing_type = 'missing'.
  price_per_input_token numeric(20,12),
  price_per_output_token numeric(20,12),
  -- NULL = the provider gives no cache discount: cached input tokens cost the input price.
  price_per_cached_input_token numeric(20,12),
  price_per_request numeric(20,12) not null default 0,
  price_per_image numeric(20,12) not null default 0,
  currency text not null default 'USD',
  -- paid: charge; free: costs 0; deprecated: still charged at its last price; missing: we route
  -- the model but have no price, so charging it raises price_missing (never a silent $0).
  pricing_type text not null default 'paid',
  pricing_source text,
  last_updated timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint model_pricing_provider_model_key unique (provider_id, model_id),
  constraint model_pricing_provider_id_not_blank check (btrim(provider_id) <> ''),
  constraint model_pricing_model_id_not_blank check (btrim(model_id) <> ''),
  constraint model_pricing_currency_iso check (currency ~ '^[A-Z]{3}$'),
  constraint model_pricing_pricing_type_valid
    check (pricing_type in ('paid', 'free', 'deprecated', 'missing')),
  -- `x >= 0 and x < 1000` also rejects NaN (NaN compares greater than every number).
  constraint model_pricing_price_per_input_token_range
    check (price_per_input_token >= 0 and price_per_input_token < 1000),
  constraint model_pricing_price_per_output_token_range
    check (price_per_output_token >= 0 and price_per_output_token < 1000),
  constraint model_pricing_price_per_cached_input_token_range
    check (price_per_cached_input_token >= 0 and price_per_cached_input_token < 1000),
  constraint model_pricing_price_per_request_range
    check (price_per_request >= 0 and price_per_request < 1000),
  constraint model_pricing_price_per_image_range
    check (price_per_image >= 0 and price_per_image < 1000),
  constraint model_pricing_prices_known check (
    pricing_type = 'missing'
    or (price_per_input_token is not null and price_per_output_token is not null)),
  constraint model_pricing_free_is_zero check (
    pricing_type <> 'free'
    or (price_per_input_token = 0 and price_per_output_token = 0
        and coalesce(price_per_cached_input_token, 0) = 0
        and price_per_request = 0 and price_per_image = 0))
);
-- price_for(null, model) looks a model up without its provider.
create index model_pricing_model_id_idx on public.model_pricing (model_id);
comment on table public.model_pricing is
  'Price per token per (provider, model). Read it through public.price_for() only.';

-- ── billing_settings: one row of operator settings ──────────────────────────────────────────
create table public.billing_settings (
  id boolean primary key default true,
  signup_grant numeric(24,12) not null default 0,
  currency text not null default 'USD',
  updated_at timestamptz not null default now(),
  constraint billing_settings_id_single_row check (id),
  constraint billing_settings_signup_grant_range check (signup_grant >= 0 and signup_grant < 1e6),
  constraint billing_settings_currency_iso check (currency ~ '^[A-Z]{3}$')
);
comment on column public.billing_settings.signup_grant is
  'Credit given to every new user at signup, recorded in the ledger as kind signup_grant.';
insert into public.billing_settings (id) values (true) on conflict (id) do nothing;

-- ── user_balances ────────────────────────────────────────────────────────────────────────────
create table public.user_balances (
  user_id uuid primary key references auth.users (id) on delete cascade,
  balance numeric(24,12) not null default 0,
  currency text not null default 'USD',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint user_balances_balance_not_nan check (balance < 1e12),
  constraint user_balances_currency_iso check (currency ~ '^[A-Z]{3}$')
);
comment on column public.user_balances.balance is
  'Exact prepaid balance; may go negative (usage is a fact). Always = sum(ledger_entries.amount).';

-- ── ledger_entries: every balance movement, append-only ────────────────────────────────────
create table public.ledger_entries (
  id bigint generated always as identity primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  kind text not null,
  amount numeric(24,12) not null,
  currency text not null default 'USD',
  -- Idempotency key of the movement: the request_id for usage, the payment reference for a
  -- top-up, 'signup:<user_id>' for the signup grant. Unique per kind.
  reference text not null,
  description text,
  created_at timestamptz not null default now(),
  constraint ledger_entries_kind_reference_key unique (kind, reference),
  constraint ledger_entries_kind_valid
    check (kind in ('signup_grant', 'top_up', 'usage', 'adjustment', 'refund')),
  constraint ledger_entries_amount_range check (amount <> 0 and amount > -1e12 and amount < 1e12),
  constraint ledger_entries_amount_sign check (
    case kind when 'usage' then amount < 0 when 'adjustment' then true else amount > 0 end),
  constraint ledger_entries_reference_length check (length(reference) between 1 and 255),
  constraint ledger_entries_currency_iso check (currency ~ '^[A-Z]{3}$')
);
create index ledger_entries_user_id_created_at_idx
  on public.ledger_entries (user_id, created_at desc);

-- ── usage_records: one row per metered request ──────────────────────────────────────────────
create table public.usage_records (
  id bigint generated always as identity primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  -- Client-chosen idempotency key, globally unique (simplest for clients to reason about).
  request_id text not null,
  provider_id text not null,
  model_id text not null,
  -- input_tokens includes cached_input_tokens (OpenAI's usage shape): the uncached part costs
  -- the input price, the cached part the cached price.
  input_tokens bigint not null,
  output_tokens bigint not null,
  cached_input_tokens bigint not null default 0,
  -- Snapshot of the unit prices used, so a later price change never re-prices history.
  price_per_input_token numeric(20,12) not null,
  price_per_output_token numeric(20,12) not null,
  price_per_cached_input_token numeric(20,12) not null,
  price_per_request numeric(20,12) not null,
  pricing_id uuid,
  cost numeric(24,12) not null,
  currency text not null default 'USD',
  latency_ms integer,
  status text not null default 'success',
  metadata jsonb not null default '{}'::jsonb,
  occurred_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  constraint usage_records_request_id_key unique (request_id),
  constraint usage_records_request_id_length check (length(request_id) between 1 and 255),
  constraint usage_records_input_tokens_range check (input_tokens between 0 and 10000000),
  constraint usage_records_output_tokens_range check (output_tokens between 0 and 10000000),
  constraint usage_records_cached_input_tokens_range
    check (cached_input_tokens >= 0 and cached_input_tokens <= input_tokens),
  constraint usage_records_cost_range check (cost >= 0 and cost < 1e12),
  constraint usage_records_latency_ms_range check (latency_ms between 0 and 86400000),
  constraint usage_records_status_valid
    check (status in ('success', 'error', 'timeout', 'cancelled')),
  constraint usage_records_metadata_object check (jsonb_typeof(metadata) = 'object'),
  constraint usage_records_currency_iso check (currency ~ '^[A-Z]{3}$')
);
create index usage_records_user_id_occurred_at_idx
  on public.usage_records (user_id, occurred_at desc);

-- ── credit_reservations: hold before the provider call, settle or release after ─────────────
create table public.credit_reservations (
  id bigint generated always as identity primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  request_id text not null,
  amount numeric(24,12) not null,
  -- Optional: lets settle_usage() omit the model it was reserved for.
  provider_id text,
  model_id text,
  -- 'held' rows count against the balance only while expires_at > now(): an expired hold stops
  -- counting by itself, no job needed.
  status text not null default 'held',
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  closed_at timestamptz,
  constraint credit_reservations_request_id_key unique (request_id),
  constraint credit_reservations_request_id_length check (length(request_id) between 1 and 255),
  constraint credit_reservations_amount_range check (amount > 0 and amount < 1e12),
  constraint credit_reservations_status_valid check (status in ('held', 'settled', 'released')),
  constraint credit_reservations_closed_at_set check ((status = 'held') = (closed_at is null))
);
create index credit_reservations_user_id_held_idx
  on public.credit_reservations (user_id, expires_at) where status = 'held';

-- ── signup_errors: what the signup trigger could not do (signup itself never fails) ─────────
create table public.signup_errors (
  id bigint generated always as identity primary key,
  -- No FK: the log must survive whatever happened to the user row.
  user_id uuid,
  sqlstate text,
  message text,
  detail text,
  created_at timestamptz not null default now(),
  resolved_at timestamptz
);
create index signup_errors_unresolved_idx on public.signup_errors (created_at)
  where resolved_at is null;

-- ── Triggers: history is append-only ───────────────────────────────────────────────────────
create function private.forbid_update() returns trigger
language plpgsql set search_path = '' as $$
begin
  raise exception using errcode = '55000', message = 'immutable_row',
    detail = format('rows of %I.%I are facts and are never updated', tg_table_schema, tg_table_name);
end
$$;
revoke execute on function private.forbid_update() from public;

create trigger ledger_entries_forbid_update before update on public.ledger_entries
  for each row execute function private.forbid_update();
create trigger usage_records_forbid_update before update on public.usage_records
  for each row execute function private.forbid_update();

-- ── Row level security ─────────────────────────────────────────────────────────────────────
alter table public.model_pricing enable row level security;
alter table public.billing_settings enable row level security;
alter table public.user_balances enable row level security;
alter table public.ledger_entries enable row level security;
alter table public.usage_records enable row level security;
alter table public.credit_reservations enable row level security;
alter table public.signup_errors enable row level security;

-- ── Policies (service_role bypasses RLS; its reach is set by the grants below) ─────────────
create policy "Visitors read the price list" on public.model_pricing
  for select to anon using (true);
create policy "Users read the price list" on public.model_pricing
  for select to authenticated using (true);
create policy "Users read their own balance" on public.user_balances
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "Users read their own ledger entries" on public.ledger_entries
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "Users read their own usage records" on public.usage_records
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "Users read their own credit reservations" on public.credit_reservations
  for select to authenticated using ((select auth.uid()) = user_id);
-- billing_settings and signup_errors: no policy, so anon/authenticated see nothing even if a
-- grant were added by mistake.

-- ── Grants (explicit: there are no default privileges) ─────────────────────────────────────
revoke all on public.model_pricing, public.billing_settings, public.user_balances,
  public.ledger_entries, public.usage_records, public.credit_reservations, public.signup_errors
  from public, anon, authenticated, service_role;

grant select on public.model_pricing to anon, authenticated, service_role;
grant insert, update, delete on public.model_pricing to service_role;

grant select, update on public.billing_settings to service_role;

grant select on public.user_balances to authenticated, service_role;
grant select on public.ledger_entries to authenticated, service_role;
grant select on public.usage_records to authenticated, service_role;
grant select on public.credit_reservations to authenticated, service_role;

grant select, update on public.signup_errors to service_role;
