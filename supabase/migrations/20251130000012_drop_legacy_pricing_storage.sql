-- 20251130000012_drop_legacy_pricing_storage.sql — the last migration of the 0.1.0 baseline
--
-- What: the last step of the consolidation plan (shared seed 004, phase 3). Drops the legacy
-- price storage — the columns models.pricing_prompt / pricing_completion / pricing_image /
-- pricing_request and the unused pricing_tiers table — so model_pricing is the only place a
-- price can live.
-- Why a separate, LAST migration: 20251130000011 defines populate_model_pricing(),
-- pricing_consolidation_report() and private.assert_consolidation_safe(), and no baseline
-- migration before this one touches the legacy storage, so a team in the legacy state can run
-- scripts/verify_pricing_migration.py and `select populate_model_pricing();` against a database
-- that still has its legacy prices, and only then apply this file (docs/pricing.md,
-- "Consolidation").
-- Guarded: it runs public.populate_model_pricing() itself, then
-- private.assert_consolidation_safe() aborts with P0001 consolidation_would_lose_prices, the
-- detail naming every model whose legacy price or tier is not (identically) in model_pricing;
-- the migration is then rolled back whole (the copy too) and nothing is dropped. Copy, check
-- and drop are one statement (the DO block), so they stay all-or-nothing even when the file is
-- run with `psql -f` outside a transaction.
-- On a fresh database (no legacy column, no pricing_tiers) it is a no-op: both end in the same
-- schema. Re-runnable: after the rollback SQL of docs/pricing.md it consolidates again.
-- Error codes (catalog: 20251018000003): P0001 consolidation_would_lose_prices.

do $$
begin
  if not exists (select 1 from information_schema.columns c
                 where c.table_schema = 'public' and c.table_name = 'models'
                   and c.column_name in ('pricing_prompt', 'pricing_completion',
                                         'pricing_image', 'pricing_request'))
     and to_regclass('public.pricing_tiers') is null then
    raise notice 'no legacy pricing storage: nothing to consolidate';
    return;
  end if;
  raise notice 'populate_model_pricing() copied % price rows',
    public.populate_model_pricing();
  perform private.assert_consolidation_safe();
  alter table public.models
    drop column if exists pricing_prompt,
    drop column if exists pricing_completion,
    drop column if exists pricing_image,
    drop column if exists pricing_request;
  drop table if exists public.pricing_tiers;
end
$$;
