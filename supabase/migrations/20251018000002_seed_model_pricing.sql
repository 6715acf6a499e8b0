-- 20251018000002_seed_model_pricing.sql
--
-- The default price list: every model a fresh database can charge. It lives in a migration (not
-- only in seed.sql) so each documented way to deploy gives a chargeable catalog: `supabase db
-- push` to a hosted project WITHOUT --include-seed, pasting the migration files into the
-- dashboard SQL editor (seed 001's Option 2), `tokenmeter db push`. supabase/seed.sql keeps the
-- development data (a free model and a routed model without a price, for the $0 and
-- price_missing paths).
-- Safe to re-run, here and on the final schema (ON CONFLICT DO NOTHING): it never overwrites a
-- price an operator changed. The rows take model_pricing's defaults and pass its row triggers
-- (20251018000001): effective_from 1970-01-01 ("since always"), the URL in pricing_source moves
-- to source_detail (pricing_source becomes 'provider'; the seed-000 note becomes 'manual'), the
-- per-1K columns are filled, each model gets its catalog row and becomes its name's default
-- provider. The audit triggers come later (20251130000002): the default list is not audited.
-- `on conflict on constraint model_pricing_provider_model_key` names the unique key
-- (provider, model, effective_from); before 0.1.0 this file ran against an earlier
-- model_pricing whose key of that name was (provider, model), so the statement is unchanged.
--
-- Prices: USD PER TOKEN as exact decimals ($2.50 per 1M tokens = 0.0000025), the providers'
-- published list prices for standard (non-batch) API use, standard-context tier. Two lists:
--   * today's (published-price date 2025-10-18, last_updated; the pricing page in
--     pricing_source). Re-check against those pages before relying on them in production.
--   * seed 000's twelve default prices (BurnCloud v1.1.0 migration guide, "published rates as of
--     2025-02-15", per 1M tokens there), with that date and source. Its gpt-4o and gpt-4o-mini
--     are today's prices too (listed once, in today's list, with their cache prices). Models the
--     provider has since retired are 'deprecated': still charged at this price (late or
--     replayed usage), marked as retired in `tokenmeter price list --wide`. Seed 000 gives no
--     cache price: cached input costs the input price.
-- Not modelled here (see docs/pricing.md): long-context tiers, cache WRITE prices, batch
-- discounts, per-image prices, dated model ids and aliases.
-- price_per_cached_input_token = cache READ price (OpenAI cached input, Anthropic cache hits,
-- Gemini context caching).

insert into public.model_pricing (provider_id, model_id, price_per_input_token,
  price_per_output_token, price_per_cached_input_token, pricing_type, pricing_source,
  last_updated)
values
  -- ── today's list (published-price date 2025-10-18) ────────────────────────────────────
  -- OpenAI — https://openai.com/api/pricing/ ($ per 1M: input / cached input / output)
  ('openai', 'gpt-5',        0.00000125,  0.00001,   0.000000125, 'paid',  -- 1.25 / 0.125 / 10.00
   'https://openai.com/api/pricing/', '2025-10-18'),
  ('openai', 'gpt-5-mini',   0.00000025,  0.000002,  0.000000025, 'paid',  -- 0.25 / 0.025 / 2.00
   'https://openai.com/api/pricing/', '2025-10-18'),
  ('openai', 'gpt-5-nano',   0.00000005,  0.0000004, 0.000000005, 'paid',  -- 0.05 / 0.005 / 0.40
   'https://openai.com/api/pricing/', '2025-10-18'),
  ('openai', 'gpt-4.1',      0.000002,    0.000008,  0.0000005,   'paid',  -- 2.00 / 0.50 / 8.00
   'https://openai.com/api/pricing/', '2025-10-18'),
  ('openai', 'gpt-4.1-mini', 0.0000004,   0.0000016, 0.0000001,   'paid',  -- 0.40 / 0.10 / 1.60
   'https://openai.com/api/pricing/', '2025-10-18'),
  ('openai', 'gpt-4.1-nano', 0.0000001,   0.0000004, 0.000000025, 'paid',  -- 0.10 / 0.025 / 0.40
   'https://openai.com/api/pricing/', '2025-10-18'),
  ('openai', 'gpt-4o',       0.0000025,   0.00001,   0.00000125,  'paid',  -- 2.50 / 1.25 / 10.00
   'https://openai.com/api/pricing/', '2025-10-18'),
  ('openai', 'gpt-4o-mini',  0.00000015,  0.0000006, 0.000000075, 'paid',  -- 0.15 / 0.075 / 0.60
   'https://openai.com/api/pricing/', '2025-10-18'),
  ('openai', 'o3',           0.000002,    0.000008,  0.0000005,   'paid',  -- 2.00 / 0.50 / 8.00
   'https://openai.com/api/pricing/', '2025-10-18'),
  ('openai', 'o4-mini',      0.0000011,   0.0000044, 0.000000275, 'paid',  -- 1.10 / 0.275 / 4.40
   'https://openai.com/api/pricing/', '2025-10-18'),
  -- Retired by OpenAI (2025-07-14) but still priced, so late usage is charged correctly.
  ('openai', 'gpt-4.5-preview', 0.000075, 0.00015,   0.0000375,   'deprecated', -- 75 / 37.5 / 150
   'https://openai.com/api/pricing/', '2025-10-18'),

  -- Anthropic — https://www.anthropic.com/pricing#api (input / cache read / output)
  ('anthropic', 'claude-opus-4-1',   0.000015,  0.000075, 0.0000015,  'paid', -- 15 / 1.50 / 75
   'https://www.anthropic.com/pricing#api', '2025-10-18'),
  ('anthropic', 'claude-opus-4',     0.000015,  0.000075, 0.0000015,  'paid', -- 15 / 1.50 / 75
   'https://www.anthropic.com/pricing#api', '2025-10-18'),
  ('anthropic', 'claude-sonnet-4-5', 0.000003,  0.000015, 0.0000003,  'paid', -- 3 / 0.30 / 15
   'https://www.anthropic.com/pricing#api', '2025-10-18'),
  ('anthropic', 'claude-sonnet-4',   0.000003,  0.000015, 0.0000003,  'paid', -- 3 / 0.30 / 15
   'https://www.anthropic.com/pricing#api', '2025-10-18'),
  ('anthropic', 'claude-3-7-sonnet', 0.000003,  0.000015, 0.0000003,  'paid', -- 3 / 0.30 / 15
   'https://www.anthropic.com/pricing#api', '2025-10-18'),
  ('anthropic', 'claude-haiku-4-5',  0.000001,  0.000005, 0.0000001,  'paid', -- 1 / 0.10 / 5
   'https://www.anthropic.com/pricing#api', '2025-10-18'),
  ('anthropic', 'claude-3-5-haiku',  0.0000008, 0.000004, 0.00000008, 'paid', -- 0.80 / 0.08 / 4
   'https://www.anthropic.com/pricing#api', '2025-10-18'),

  -- Google — https://ai.google.dev/gemini-api/docs/pricing (paid tier, prompts <= 200k;
  -- input / context-cache read / output)
  ('google', 'gemini-2.5-pro',        0.00000125, 0.00001,   0.00000031,  'paid', -- 1.25/0.31/10
   'https://ai.google.dev/gemini-api/docs/pricing', '2025-10-18'),
  ('google', 'gemini-2.5-flash',      0.0000003,  0.0000025, 0.000000075, 'paid', -- 0.30/0.075/2.50
   'https://ai.google.dev/gemini-api/docs/pricing', '2025-10-18'),
  ('google', 'gemini-2.5-flash-lite', 0.0000001,  0.0000004, 0.000000025, 'paid', -- 0.10/0.025/0.40
   'https://ai.google.dev/gemini-api/docs/pricing', '2025-10-18'),
  ('google', 'gemini-2.0-flash',      0.0000001,  0.0000004, 0.000000025, 'paid', -- 0.10/0.025/0.40
   'https://ai.google.dev/gemini-api/docs/pricing', '2025-10-18'),
  -- ── seed 000's list (published rates as of 2025-02-15; $ per 1M: input / output) ──────────
  ('openai', 'gpt-4',             0.00003,    0.00006,   null, 'paid',       -- 30 / 60
   'seed 000 (BurnCloud v1.1.0 migration guide): default prices, published rates as of 2025-02-15', '2025-02-15'),
  ('openai', 'gpt-4-turbo',       0.00001,    0.00003,   null, 'paid',       -- 10 / 30
   'seed 000 (BurnCloud v1.1.0 migration guide): default prices, published rates as of 2025-02-15', '2025-02-15'),
  ('openai', 'gpt-3.5-turbo',     0.0000005,  0.0000015, null, 'paid',       -- 0.50 / 1.50
   'seed 000 (BurnCloud v1.1.0 migration guide): default prices, published rates as of 2025-02-15', '2025-02-15'),
  ('anthropic', 'claude-3-haiku', 0.00000025, 0.00000125, null, 'paid',      -- 0.25 / 1.25
   'seed 000 (BurnCloud v1.1.0 migration guide): default prices, published rates as of 2025-02-15', '2025-02-15'),
  -- Retired by their providers since (Anthropic: Claude 3 Sonnet and 3.5 Sonnet in 2025,
  -- Claude 3 Opus in January 2026; Google: Gemini 1.0 Pro and 1.5 in 2025).
  ('anthropic', 'claude-3-opus',     0.000015,  0.000075,  null, 'deprecated', -- 15 / 75
   'seed 000 (BurnCloud v1.1.0 migration guide): default prices, published rates as of 2025-02-15', '2025-02-15'),
  ('anthropic', 'claude-3-sonnet',   0.000003,  0.000015,  null, 'deprecated', -- 3 / 15
   'seed 000 (BurnCloud v1.1.0 migration guide): default prices, published rates as of 2025-02-15', '2025-02-15'),
  ('anthropic', 'claude-3-5-sonnet', 0.000003,  0.000015,  null, 'deprecated', -- 3 / 15
   'seed 000 (BurnCloud v1.1.0 migration guide): default prices, published rates as of 2025-02-15', '2025-02-15'),
  ('google', 'gemini-1.5-pro',       0.0000035, 0.0000105, null, 'deprecated', -- 3.50 / 10.50
   'seed 000 (BurnCloud v1.1.0 migration guide): default prices, published rates as of 2025-02-15', '2025-02-15'),
  ('google', 'gemini-1.5-flash',     0.000000075, 0.0000003, null, 'deprecated', -- 0.075 / 0.30
   'seed 000 (BurnCloud v1.1.0 migration guide): default prices, published rates as of 2025-02-15', '2025-02-15'),
  ('google', 'gemini-pro',           0.0000005, 0.0000015, null, 'deprecated', -- 0.50 / 1.50
   'seed 000 (BurnCloud v1.1.0 migration guide): default prices, published rates as of 2025-02-15', '2025-02-15')
on conflict on constraint model_pricing_provider_model_key do nothing;
