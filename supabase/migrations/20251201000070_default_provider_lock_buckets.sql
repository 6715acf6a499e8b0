-- 20251201000070_default_provider_lock_buckets.sql
--
-- The per-name lock that keeps one default provider per model name (20251201000011) is taken
-- in one of 1,024 buckets instead of one lock per name.
-- Why: the lock was one advisory lock per new name, held until commit, and PostgreSQL keeps
-- every such lock in its shared lock table (max_locks_per_transaction x connections, about
-- 6,400 slots on a default server). One transaction adding tens of thousands of new names
-- (a bulk INSERT into models, pricing_bench's 100,000-model catalog) ran out of it: "out of
-- shared memory ... increase max_locks_per_transaction". With buckets a transaction holds at most
-- 1,024 such locks whatever it adds; two writers of different names share a bucket one time in
-- 1,024 and then simply wait for each other, which is what the lock is for anyway.
-- Replaces: private.default_first_provider (the trigger body) and public.set_default_provider
-- (same signature, contract and errors; only the lock changes). Both take the same bucket key
-- (hashtext(model) mod 1024), so they still exclude each other for the same name.

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.default_first_provider(): BEFORE INSERT on models — the first provider of a name
-- becomes its default. A name that already has a row needs no lock: it has a first provider.
create or replace function private.default_first_provider() returns trigger
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

-- public.set_default_provider: the contract of 20251201000011, the bucketed lock.
create or replace function public.set_default_provider(model text, provider text)
returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  previous text;
begin
  perform private.assert_service_role();
  perform private.check_text('model', set_default_provider.model);
  perform private.check_text('provider', set_default_provider.provider);
  if not exists (select 1 from public.model_pricing p
                 where p.provider_id = set_default_provider.provider
                   and p.model_id = set_default_provider.model) then
    raise exception using errcode = 'PT422', message = 'unknown_model',
      detail = format('no price for model %s at provider %s; price it before making it the default',
                      set_default_provider.model, set_default_provider.provider);
  end if;
  -- the bucket lock default_first_provider takes for the same name
  perform pg_advisory_xact_lock(hashtext('tokenmeter.default_provider'),
                                abs(hashtext(set_default_provider.model) % 1024));
  select m.provider_id into previous from public.models m
  where m.model_id = set_default_provider.model and m.is_default;
  if previous is distinct from set_default_provider.provider then
    -- unset first: the partial unique index allows one default per name at every moment
    update public.models m set is_default = false
    where m.model_id = set_default_provider.model and m.is_default;
    update public.models m set is_default = true
    where m.model_id = set_default_provider.model
      and m.provider_id = set_default_provider.provider;
  end if;
  return jsonb_build_object('model', set_default_provider.model,
    'provider', set_default_provider.provider, 'previous_provider', previous,
    'changed', previous is distinct from set_default_provider.provider);
end
$$;
