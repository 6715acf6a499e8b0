-- 20251018000001_create_pricing_tables.sql
--
-- The pricing catalog's tables: what we route (models), what it costs (model_pricing, in
-- versions), names that borrow another model's price (model_aliases) and the log of every price
-- change (price_audit), with the row triggers that keep a price row consistent however it is
-- written (SQL editor, set_model_price, the import, the seed). Part of the 0.1.0 baseline: the
-- pre-release history folded into one file per area (CHANGELOG.md); the functions that read and
-- write prices are in 20251130000001…3, the consolidation tools in 20251130000011…12.
--
-- Money model (why these scales, here and in every money table):
--   * Prices are per token, numeric(20,12): published prices reach $0.000000025/token
--     ($0.025 per 1M), so 12 decimals keep every published price exact.
--   * Costs, balances and ledger amounts are numeric(24,12): tokens (integers) x a scale-12
--     price is exact at scale 12, so a charge is never rounded and balance = sum(ledger) holds
--     to the last digit. Max |amount| < 10^12. Rounding to cents happens only for display.
--
-- The shape of a price:
--   * public.models: one row per (provider, model) we route — display name, capabilities,
--     context length, is_active, metadata, is_default. Every model_pricing row references it
--     (FK on the natural key), and inserting a price for an unknown model creates its catalog
--     row (trigger), so the seed and direct SQL keep working unchanged.
--   * model_pricing is VERSIONED: a row is the price of a model from effective_from on, until
--     the next version's effective_from. The version in effect at T is the newest with
--     effective_from <= T (one index probe). effective_from defaults to 1970-01-01 ("since
--     always": the seed's and other directly inserted first prices cover all past usage);
--     set_model_price() defaults it to now().
--   * Long-context tier: above long_context_threshold input tokens the *_above_threshold prices
--     apply to the WHOLE request (LiteLLM / Gemini semantics), see private.effective_price.
--   * pricing_source is one of provider / manual / estimated / import; a URL or a note given
--     there (the seed puts the pricing page URL) moves to source_detail. last_updated follows
--     every price change. Both are kept by a trigger, so direct SQL cannot leave them wrong.
--   * input_price_per_1k_tokens / output_price_per_1k_tokens (seed 001's unit): the per-1K form
--     of the per-token prices, kept by a trigger and bound to them by a CHECK, so seed 001's
--     documented change works as written in the SQL editor:
--       UPDATE model_pricing SET input_price_per_1k_tokens = 0.003,
--         output_price_per_1k_tokens = 0.012 WHERE model_id = 'gpt-4o' AND provider_id = 'openai';
--     A write of a per-1K column sets the per-token price (= per_1k / 1000; at most 9 decimals
--     per 1K, i.e. 12 per token, else 22023 invalid_amount — never rounded); writing both that
--     disagree is 22023 invalid_amount. An UPDATE that writes a per-1K column (and not its
--     per-token one) is a PRICE CHANGE like set_model_price's: it inserts a new version
--     effective now() (pricing_source 'manual' unless the UPDATE sets one) and leaves the old
--     version — and every usage charged at it — untouched; only the version in effect now is
--     changed this way (the UPDATE skips older and future versions, a NOTICE names them, so it
--     reports fewer rows than it matched: UPDATE 0 for the seed-001 example). A version that
--     already starts at now() (same transaction) is updated in place. Not GENERATED columns:
--     PostgreSQL refuses `SET generated_column = value` before any trigger runs. Plain numeric
--     (no scale) on purpose: a value with too many decimals must reach the trigger to be
--     refused, not be rounded by the column type first.
--   * A default provider per model name (models.is_default, at most one per model_id): the
--     first provider a name is priced at becomes its default (trigger on models, which
--     set_model_price / the import / direct inserts all reach); set_default_provider() picks
--     another. price_for(null, model) charges the default when several providers price a name
--     (LiteLLM's catalog lists `gpt-4o` beside `azure/gpt-4o`, …). The trigger's lock is taken
--     in one of 1,024 buckets (hashtext(model) mod 1024), not one advisory lock per name: one
--     transaction adding ~100,000 names ran out of the shared lock table with a lock per name.
--   * price_audit: every insert / update / delete of a price, an alias or a default provider,
--     and every reprice run, with who (role, user id), when, old → new. Filled by triggers
--     (20251130000002), so ANY change is audited — except this baseline's default price list
--     (20251018000002), which is written before those triggers exist.
--
-- Legacy databases (the consolidation plan, shared seed 004): `models` may already exist with
-- the legacy price columns pricing_prompt / pricing_completion / pricing_image / pricing_request.
-- So models is created only if missing, its columns and constraints added only if missing, and
-- its existing names get their default provider (backfill below); the legacy columns stay until
-- 20251130000012_drop_legacy_pricing_storage.sql (docs/pricing.md, "Consolidation"). On a fresh
-- database these statements simply create the table.
--
-- Writers: service_role may write models, model_pricing and model_aliases directly (the CLI's
-- price commands go through the functions of 20251130000002…3, which validate and audit);
-- nobody writes price_audit but its triggers. RLS is on for every table; privileges are granted
-- explicitly per role because the project has NO default privileges.
-- Error codes raised here: 22023 invalid_amount (per-1K prices), 55000 immutable_row (price_audit).

-- ── Private schema: helpers and trigger functions, not exposed by the API ────────────────────
create schema if not exists private;
revoke all on schema private from public;

-- ── models ─────────────────────────────────────────────────────────────────────────────────
-- Created only if missing and completed column by column: see "Legacy databases" above.
create table if not exists public.models (
  id uuid primary key default gen_random_uuid(),
  provider_id text not null,
  model_id text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
alter table public.models
  add column if not exists display_name text,
  add column if not exists capabilities text[] not null default '{}',
  add column if not exists context_length integer,
  add column if not exists is_active boolean not null default true,
  add column if not exists metadata jsonb not null default '{}'::jsonb,
  add column if not exists is_default boolean not null default false;

-- The constraints, added only when a legacy `models` lacks them.
do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'models_provider_model_key'
                 and conrelid = 'public.models'::regclass) then
    alter table public.models add constraint models_provider_model_key
      unique (provider_id, model_id);
  end if;
  if not exists (select 1 from pg_constraint where conname = 'models_context_length_range'
                 and conrelid = 'public.models'::regclass) then
    alter table public.models
      add constraint models_provider_id_not_blank check (btrim(provider_id) <> ''),
      add constraint models_model_id_not_blank check (btrim(model_id) <> ''),
      add constraint models_context_length_range
        check (context_length is null or context_length between 1 and 100000000),
      add constraint models_metadata_object check (jsonb_typeof(metadata) = 'object');
  end if;
end
$$;
comment on table public.models is
  'Model catalog: what we route. Prices live in model_pricing (versions), never here.';
comment on column public.models.is_default is
  'This provider is the default for the model name: price_for(null, model_id) charges it when '
  'several providers price the name. At most one per model_id.';
create index if not exists models_model_id_idx on public.models (model_id);
create unique index if not exists models_model_id_default_key on public.models (model_id)
  where is_default;

-- Backfill for a legacy catalog: every name with exactly one provider gets it as its default.
-- Names already priced at several providers keep no default (ambiguous) until an operator picks
-- one. Nothing to do on a fresh database.
update public.models m set is_default = true
where not m.is_default
  and not exists (select 1 from public.models o
                  where o.model_id = m.model_id and o.provider_id <> m.provider_id);

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
  pricing_source text not null default 'manual',
  last_updated timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  effective_from timestamptz not null default '1970-01-01 00:00:00+00',
  long_context_threshold bigint,
  price_per_input_token_above_threshold numeric(20,12),
  price_per_output_token_above_threshold numeric(20,12),
  source_detail text,
  input_price_per_1k_tokens numeric,
  output_price_per_1k_tokens numeric,
  -- One version per (provider, model, effective_from). The name predates versions; it is kept
  -- so `on conflict on constraint model_pricing_provider_model_key` (the seed) stays idempotent.
  constraint model_pricing_provider_model_key unique (provider_id, model_id, effective_from),
  constraint model_pricing_model_fkey foreign key (provider_id, model_id)
    references public.models (provider_id, model_id) on update cascade on delete cascade,
  constraint model_pricing_provider_id_not_blank check (btrim(provider_id) <> ''),
  constraint model_pricing_model_id_not_blank check (btrim(model_id) <> ''),
  constraint model_pricing_currency_iso check (currency ~ '^[A-Z]{3}$'),
  constraint model_pricing_pricing_type_valid
    check (pricing_type in ('paid', 'free', 'deprecated', 'missing')),
  constraint model_pricing_pricing_source_valid
    check (pricing_source in ('provider', 'manual', 'estimated', 'import')),
  constraint model_pricing_effective_from_finite check (isfinite(effective_from)),
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
        and price_per_request = 0 and price_per_image = 0)),
  constraint model_pricing_long_context_threshold_range
    check (long_context_threshold is null or long_context_threshold between 1 and 100000000),
  constraint model_pricing_price_per_input_token_above_threshold_range
    check (price_per_input_token_above_threshold >= 0
           and price_per_input_token_above_threshold < 1000),
  constraint model_pricing_price_per_output_token_above_threshold_range
    check (price_per_output_token_above_threshold >= 0
           and price_per_output_token_above_threshold < 1000),
  constraint model_pricing_tier_complete check (
    (long_context_threshold is null and price_per_input_token_above_threshold is null
     and price_per_output_token_above_threshold is null)
    or (long_context_threshold is not null and price_per_input_token_above_threshold is not null
        and price_per_output_token_above_threshold is not null)),
  constraint model_pricing_input_price_per_1k_tokens_matches
    check (input_price_per_1k_tokens is not distinct from price_per_input_token * 1000),
  constraint model_pricing_output_price_per_1k_tokens_matches
    check (output_price_per_1k_tokens is not distinct from price_per_output_token * 1000)
);
-- price_for(null, model) looks a model up without its provider.
create index model_pricing_model_id_idx on public.model_pricing (model_id);
comment on table public.model_pricing is
  'SINGLE SOURCE OF TRUTH for model prices: one row per price version. Look a price up '
  'through public.price_for() only.';
comment on column public.model_pricing.effective_from is
  'This version applies to usage at or after effective_from, until the next version of the model.';
comment on column public.model_pricing.long_context_threshold is
  'When input_tokens > threshold, the *_above_threshold prices apply to the whole request.';
comment on column public.model_pricing.source_detail is
  'Where the price came from (pricing page URL, import file, note).';
comment on column public.model_pricing.input_price_per_1k_tokens is
  'price_per_input_token x 1000 (seed 001''s unit). Writing it writes the per-token price.';
comment on column public.model_pricing.output_price_per_1k_tokens is
  'price_per_output_token x 1000 (seed 001''s unit). Writing it writes the per-token price.';

-- ── model_aliases ──────────────────────────────────────────────────────────────────────────
create table public.model_aliases (
  id uuid primary key default gen_random_uuid(),
  alias text not null,
  -- NULL: the alias applies whichever provider is asked (or none).
  provider_id text,
  -- NULL: the target lives at the alias's provider (or the provider asked for).
  target_provider_id text,
  target_model_id text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint model_aliases_alias_provider_key unique nulls not distinct (alias, provider_id),
  constraint model_aliases_alias_not_blank check (btrim(alias) <> '' and length(alias) <= 255),
  constraint model_aliases_target_model_id_not_blank
    check (btrim(target_model_id) <> '' and length(target_model_id) <= 255),
  constraint model_aliases_not_self check (alias <> target_model_id
    or coalesce(target_provider_id, provider_id, '') <> coalesce(provider_id, ''))
);
comment on table public.model_aliases is
  'A model name that uses another model''s price (seed 000 alias_for). Resolved by price_for().';

-- ── price_audit ────────────────────────────────────────────────────────────────────────────
create table public.price_audit (
  id bigint generated always as identity primary key,
  changed_at timestamptz not null default now(),
  -- The API role that made the change (service_role, postgres for migrations / SQL editor).
  actor_role text not null,
  -- auth.uid() of the signed-in caller when there is one (a JWT with a sub).
  actor_user_id uuid,
  provider_id text,
  model_id text,
  -- insert / update / delete (of a price or alias row), alias_set / alias_removed, reprice
  action text not null,
  old jsonb,
  new jsonb,
  constraint price_audit_action_valid
    check (action in ('insert', 'update', 'delete', 'reprice'))
);
create index price_audit_provider_model_idx
  on public.price_audit (provider_id, model_id, changed_at desc);
comment on table public.price_audit is
  'Every price and alias change (trigger) and every reprice run: who, when, old -> new.';

-- ── Trigger functions ──────────────────────────────────────────────────────────────────────
-- private.forbid_update(): BEFORE UPDATE on the append-only tables (price_audit here, the ledger
-- in 20251018000003). Raises 55000 immutable_row.
create function private.forbid_update() returns trigger
language plpgsql set search_path = '' as $$
begin
  raise exception using errcode = '55000', message = 'immutable_row',
    detail = format('rows of %I.%I are facts and are never updated', tg_table_schema, tg_table_name);
end
$$;

-- private.touch_models(): BEFORE UPDATE on models — updated_at follows every change.
create function private.touch_models() returns trigger
language plpgsql set search_path = '' as $$
begin
  new.updated_at := now();
  return new;
end
$$;

-- private.normalize_model_pricing(): BEFORE INSERT OR UPDATE on model_pricing.
-- Creates the catalog row of a new model; keeps pricing_source in its four values (a URL or a
-- note moves to source_detail); last_updated / updated_at follow every change of a price.
create function private.normalize_model_pricing() returns trigger
language plpgsql set search_path = '' as $$
begin
  if new.pricing_source is null
     or new.pricing_source not in ('provider', 'manual', 'estimated', 'import') then
    new.source_detail := coalesce(new.pricing_source, new.source_detail);
    new.pricing_source := case when new.pricing_source ~* '^https?://' then 'provider'
                               else 'manual' end;
  end if;
  if tg_op = 'INSERT' then
    insert into public.models (provider_id, model_id)
    values (new.provider_id, new.model_id)
    on conflict (provider_id, model_id) do nothing;
  else
    new.updated_at := now();
    if (new.price_per_input_token, new.price_per_output_token, new.price_per_cached_input_token,
        new.price_per_request, new.price_per_image, new.currency, new.pricing_type,
        new.long_context_threshold, new.price_per_input_token_above_threshold,
        new.price_per_output_token_above_threshold, new.effective_from)
       is distinct from
       (old.price_per_input_token, old.price_per_output_token, old.price_per_cached_input_token,
        old.price_per_request, old.price_per_image, old.currency, old.pricing_type,
        old.long_context_threshold, old.price_per_input_token_above_threshold,
        old.price_per_output_token_above_threshold, old.effective_from)
       and new.last_updated is not distinct from old.last_updated then
      new.last_updated := now();
    end if;
  end if;
  return new;
end
$$;

-- private.sync_price_per_1k(): BEFORE INSERT OR UPDATE on model_pricing, named to fire before
-- model_pricing_normalize (triggers fire in name order), so last_updated and the audit see the
-- final per-token prices. Rules in the header. Calls no other private function: it runs as the
-- writer (service_role has no USAGE on the private schema).
create function private.sync_price_per_1k() returns trigger
language plpgsql set search_path = '' as $$
declare
  in_1k_written boolean;
  out_1k_written boolean;
  in_written boolean;
  out_written boolean;
begin
  if tg_op = 'INSERT' then
    in_1k_written := new.input_price_per_1k_tokens is not null;
    out_1k_written := new.output_price_per_1k_tokens is not null;
    in_written := new.price_per_input_token is not null;
    out_written := new.price_per_output_token is not null;
  else
    in_1k_written := new.input_price_per_1k_tokens
                     is distinct from old.input_price_per_1k_tokens;
    out_1k_written := new.output_price_per_1k_tokens
                      is distinct from old.output_price_per_1k_tokens;
    in_written := new.price_per_input_token is distinct from old.price_per_input_token;
    out_written := new.price_per_output_token is distinct from old.price_per_output_token;
  end if;

  if in_1k_written and in_written then
    if new.input_price_per_1k_tokens is distinct from new.price_per_input_token * 1000 then
      raise exception using errcode = '22023', message = 'invalid_amount',
        detail = format('input_price_per_1k_tokens %s disagrees with price_per_input_token %s',
                        new.input_price_per_1k_tokens, new.price_per_input_token);
    end if;
  elsif in_1k_written then
    if new.input_price_per_1k_tokens <> round(new.input_price_per_1k_tokens, 9) then
      raise exception using errcode = '22023', message = 'invalid_amount',
        detail = format('input_price_per_1k_tokens %s has more than 9 decimals (12 per token)',
                        new.input_price_per_1k_tokens);
    end if;
    new.price_per_input_token := round(new.input_price_per_1k_tokens / 1000, 12);
  end if;
  if out_1k_written and out_written then
    if new.output_price_per_1k_tokens is distinct from new.price_per_output_token * 1000 then
      raise exception using errcode = '22023', message = 'invalid_amount',
        detail = format('output_price_per_1k_tokens %s disagrees with price_per_output_token %s',
                        new.output_price_per_1k_tokens, new.price_per_output_token);
    end if;
  elsif out_1k_written then
    if new.output_price_per_1k_tokens <> round(new.output_price_per_1k_tokens, 9) then
      raise exception using errcode = '22023', message = 'invalid_amount',
        detail = format('output_price_per_1k_tokens %s has more than 9 decimals (12 per token)',
                        new.output_price_per_1k_tokens);
    end if;
    new.price_per_output_token := round(new.output_price_per_1k_tokens / 1000, 12);
  end if;
  -- trim_scale: 0.0025, not 0.002500000000 (the per-token column's scale 12 times 1000)
  new.input_price_per_1k_tokens := trim_scale(new.price_per_input_token * 1000);
  new.output_price_per_1k_tokens := trim_scale(new.price_per_output_token * 1000);

  -- Only a write made through the per-1K columns alone is seed 001's price change; a write that
  -- sets both forms (e.g. a whole-row upsert copying every column) is an ordinary UPDATE.
  if tg_op = 'INSERT' or not ((in_1k_written and not in_written)
                              or (out_1k_written and not out_written))
     or old.effective_from = now() then
    return new;
  end if;
  -- A per-1K UPDATE is a price change: a new version from now on, for the version in effect.
  if old.effective_from > now() or exists (
       select 1 from public.model_pricing p
       where p.provider_id = old.provider_id and p.model_id = old.model_id
         and p.effective_from > old.effective_from and p.effective_from <= now()) then
    raise notice 'model_pricing %/% version from % is not in effect now: left unchanged '
                 '(per-1K writes change the current price)',
                 old.provider_id, old.model_id, old.effective_from;
    return null;
  end if;
  if new.pricing_source is not distinct from old.pricing_source
     and new.source_detail is not distinct from old.source_detail then
    new.pricing_source := 'manual';
    new.source_detail := 'UPDATE of the per-1K price columns';
  end if;
  insert into public.model_pricing (provider_id, model_id, price_per_input_token,
    price_per_output_token, price_per_cached_input_token, price_per_request, price_per_image,
    currency, pricing_type, pricing_source, source_detail, effective_from,
    long_context_threshold, price_per_input_token_above_threshold,
    price_per_output_token_above_threshold, last_updated)
  values (new.provider_id, new.model_id, new.price_per_input_token, new.price_per_output_token,
    new.price_per_cached_input_token, new.price_per_request, new.price_per_image, new.currency,
    new.pricing_type, new.pricing_source, new.source_detail, now(), new.long_context_threshold,
    new.price_per_input_token_above_threshold, new.price_per_output_token_above_threshold,
    now());
  return null;  -- the old version stays as it was
end
$$;

-- private.default_first_provider(): BEFORE INSERT on models — the first provider of a name
-- becomes its default. A name that already has a row needs no lock: it has a first provider.
create function private.default_first_provider() returns trigger
language plpgsql set search_path = '' as $$
begin
  if not new.is_default
     and not exists (select 1 from public.models m where m.model_id = new.model_id) then
    -- the name's bucket lock; set_default_provider takes the same key (inlined: the trigger
    -- runs as the inserting role, which may not call private functions)
    perform pg_advisory_xact_lock(hashtext('tokenmeter.default_provider'),
                                  abs(hashtext(new.model_id) % 1024));
    new.is_default := not exists (select 1 from public.models m
                                  where m.model_id = new.model_id);
  end if;
  return new;
end
$$;

-- ── Triggers ───────────────────────────────────────────────────────────────────────────────
create trigger models_touch before update on public.models
  for each row execute function private.touch_models();
create trigger models_default_first_provider before insert on public.models
  for each row execute function private.default_first_provider();
create trigger model_pricing_from_per_1k before insert or update on public.model_pricing
  for each row execute function private.sync_price_per_1k();
create trigger model_pricing_normalize before insert or update on public.model_pricing
  for each row execute function private.normalize_model_pricing();
create trigger price_audit_forbid_update before update on public.price_audit
  for each row execute function private.forbid_update();

-- ── Row level security ─────────────────────────────────────────────────────────────────────
alter table public.models enable row level security;
alter table public.model_pricing enable row level security;
alter table public.model_aliases enable row level security;
alter table public.price_audit enable row level security;

-- ── Policies (service_role bypasses RLS; its reach is set by the grants below) ─────────────
create policy "Visitors read the model catalog" on public.models
  for select to anon using (true);
create policy "Users read the model catalog" on public.models
  for select to authenticated using (true);
create policy "Visitors read the price list" on public.model_pricing
  for select to anon using (true);
create policy "Users read the price list" on public.model_pricing
  for select to authenticated using (true);
create policy "Visitors read the model aliases" on public.model_aliases
  for select to anon using (true);
create policy "Users read the model aliases" on public.model_aliases
  for select to authenticated using (true);
-- price_audit: no policy; service_role bypasses RLS and is the only role granted SELECT.

-- ── Grants (explicit: there are no default privileges) ─────────────────────────────────────
revoke all on public.models, public.model_pricing, public.model_aliases, public.price_audit
  from public, anon, authenticated, service_role;
grant select on public.models to anon, authenticated, service_role;
grant insert, update, delete on public.models to service_role;
grant select on public.model_pricing to anon, authenticated, service_role;
grant insert, update, delete on public.model_pricing to service_role;
grant select on public.model_aliases to anon, authenticated, service_role;
grant insert, update, delete on public.model_aliases to service_role;
grant select on public.price_audit to service_role;

revoke execute on function private.forbid_update() from public;
revoke execute on function private.touch_models() from public;
revoke execute on function private.normalize_model_pricing() from public;
revoke execute on function private.sync_price_per_1k() from public;
revoke execute on function private.default_first_provider() from public;
