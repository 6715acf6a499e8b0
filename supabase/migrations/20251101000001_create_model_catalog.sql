-- 20251101000001_create_model_catalog.sql
--
-- The model catalog and the shape of a price:
--   * public.models: one row per (provider, model) we route — display name, capabilities,
--     context length, is_active, metadata. Every model_pricing row references it (FK on the
--     natural key), and inserting a price for an unknown model creates its catalog row (trigger),
--     so the seed and direct SQL keep working unchanged.
--   * public.model_pricing becomes VERSIONED: a row is the price of a model from effective_from
--     on, until the next version's effective_from. The version in effect at T is the newest with
--     effective_from <= T (one index probe). effective_from defaults to 1970-01-01 ("since
--     always": the seed's and other directly inserted first prices cover all past usage);
--     set_model_price() defaults it to now().
--   * Long-context tier: above long_context_threshold input tokens the *_above_threshold prices
--     apply to the WHOLE request (LiteLLM / Gemini semantics), see private.usage_cost.
--   * pricing_source is one of provider / manual / estimated / import; a URL or a note given
--     there (the seed puts the pricing page URL) moves to source_detail. last_updated follows
--     every price change. Both are kept by a trigger, so direct SQL cannot leave them wrong.
--   * public.price_audit: every insert / update / delete of a price (or alias, migration 3) with
--     who (role, user id), when, old → new. Filled by a trigger, so ANY change is audited.
-- Works on a fresh database and on one in the legacy state (a `models` table already exists,
-- possibly with the legacy pricing_* columns — 20251101000002 defines the tools that copy and
-- check them, 20251101000008 drops them).

-- ── models ─────────────────────────────────────────────────────────────────────────────────
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
  add column if not exists metadata jsonb not null default '{}'::jsonb;

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

-- Every model that already has a price gets its catalog row.
insert into public.models (provider_id, model_id)
select distinct p.provider_id, p.model_id from public.model_pricing p
on conflict (provider_id, model_id) do nothing;

-- ── model_pricing: versions, tier, source ─────────────────────────────────────────────────
alter table public.model_pricing
  add column if not exists effective_from timestamptz not null
    default '1970-01-01 00:00:00+00',
  add column if not exists long_context_threshold bigint,
  add column if not exists price_per_input_token_above_threshold numeric(20,12),
  add column if not exists price_per_output_token_above_threshold numeric(20,12),
  add column if not exists source_detail text;
comment on column public.model_pricing.effective_from is
  'This version applies to usage at or after effective_from, until the next version of the model.';
comment on column public.model_pricing.long_context_threshold is
  'When input_tokens > threshold, the *_above_threshold prices apply to the whole request.';
comment on column public.model_pricing.source_detail is
  'Where the price came from (pricing page URL, import file, note).';

update public.model_pricing p
set source_detail = p.pricing_source,
    pricing_source = case when p.pricing_source ~* '^https?://' then 'provider' else 'manual' end
where p.pricing_source is null
   or p.pricing_source not in ('provider', 'manual', 'estimated', 'import');
alter table public.model_pricing alter column pricing_source set default 'manual';
alter table public.model_pricing alter column pricing_source set not null;

-- One version per (provider, model, effective_from). The constraint keeps its old name so
-- `on conflict on constraint model_pricing_provider_model_key` (seed.sql) stays idempotent.
alter table public.model_pricing drop constraint model_pricing_provider_model_key;
alter table public.model_pricing add constraint model_pricing_provider_model_key
  unique (provider_id, model_id, effective_from);
alter table public.model_pricing
  add constraint model_pricing_pricing_source_valid
    check (pricing_source in ('provider', 'manual', 'estimated', 'import')),
  add constraint model_pricing_effective_from_finite check (isfinite(effective_from)),
  add constraint model_pricing_long_context_threshold_range
    check (long_context_threshold is null or long_context_threshold between 1 and 100000000),
  add constraint model_pricing_price_per_input_token_above_threshold_range
    check (price_per_input_token_above_threshold >= 0
           and price_per_input_token_above_threshold < 1000),
  add constraint model_pricing_price_per_output_token_above_threshold_range
    check (price_per_output_token_above_threshold >= 0
           and price_per_output_token_above_threshold < 1000),
  add constraint model_pricing_tier_complete check (
    (long_context_threshold is null and price_per_input_token_above_threshold is null
     and price_per_output_token_above_threshold is null)
    or (long_context_threshold is not null and price_per_input_token_above_threshold is not null
        and price_per_output_token_above_threshold is not null)),
  add constraint model_pricing_model_fkey foreign key (provider_id, model_id)
    references public.models (provider_id, model_id) on update cascade on delete cascade;

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

-- private.audit_price_change(): AFTER INSERT/UPDATE/DELETE on model_pricing (and model_aliases).
-- SECURITY DEFINER because the audit table is not writable by any API role (service_role only
-- reads it), so the log cannot be forged or erased through the API. Caller check: it refuses
-- to run outside a row trigger on those two tables.
create function private.audit_price_change() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  actor_user uuid;
  row_data jsonb := to_jsonb(coalesce(new, old));
begin
  if tg_level <> 'ROW' or tg_when <> 'AFTER' or tg_table_schema <> 'public'
     or tg_table_name not in ('model_pricing', 'model_aliases') then
    raise exception using errcode = '42501', message = 'forbidden',
      detail = 'audit_price_change runs only as the audit trigger of the price tables';
  end if;
  if tg_op = 'UPDATE' and to_jsonb(new) - 'updated_at' - 'last_updated'
                          = to_jsonb(old) - 'updated_at' - 'last_updated' then
    return null;  -- nothing changed: nothing to audit
  end if;
  begin
    actor_user := auth.uid();
  exception when others then
    actor_user := null;  -- a malformed sub claim must not block the change
  end;
  insert into public.price_audit (actor_role, actor_user_id, provider_id, model_id, action,
                                  old, new)
  values (coalesce(nullif(current_setting('role', true), 'none'), session_user::text),
          actor_user,
          coalesce(row_data ->> 'provider_id', row_data ->> 'target_provider_id'),
          coalesce(row_data ->> 'model_id', row_data ->> 'alias'),
          lower(tg_op),
          case when tg_op <> 'INSERT' then to_jsonb(old) end,
          case when tg_op <> 'DELETE' then to_jsonb(new) end);
  return null;
end
$$;

-- ── Triggers ───────────────────────────────────────────────────────────────────────────────
create trigger models_touch before update on public.models
  for each row execute function private.touch_models();
create trigger model_pricing_normalize before insert or update on public.model_pricing
  for each row execute function private.normalize_model_pricing();
create trigger model_pricing_audit after insert or update or delete on public.model_pricing
  for each row execute function private.audit_price_change();
create trigger price_audit_forbid_update before update on public.price_audit
  for each row execute function private.forbid_update();

-- ── Row level security and policies ───────────────────────────────────────────────────────
alter table public.models enable row level security;
alter table public.price_audit enable row level security;
create policy "Visitors read the model catalog" on public.models
  for select to anon using (true);
create policy "Users read the model catalog" on public.models
  for select to authenticated using (true);
-- price_audit: no policy; service_role bypasses RLS and is the only role granted SELECT.

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke all on public.models, public.price_audit from public, anon, authenticated, service_role;
grant select on public.models to anon, authenticated, service_role;
grant insert, update, delete on public.models to service_role;
grant select on public.price_audit to service_role;

revoke execute on function private.touch_models() from public;
revoke execute on function private.normalize_model_pricing() from public;
revoke execute on function private.audit_price_change() from public;
