-- supabase/seed.sql — the default price list (idempotent: ON CONFLICT DO NOTHING, so re-running
-- it never overwrites a price an operator changed).
--
-- Prices are the providers' published list prices for standard (non-batch) API use, in USD
-- PER TOKEN as exact decimals: $2.50 per 1M tokens = 0.0000025. Published-price date: the
-- providers' pricing pages as of 2025-10-18 (last_updated). Re-check against the pages named
-- in pricing_source before relying on them in production.
-- Not modelled yet (a later pricing issue): long-context tiers (Gemini 2.5 Pro and Claude
-- Sonnet above 200k prompt tokens), cache WRITE prices (Anthropic 1.25x input), batch
-- discounts, per-image prices, dated model ids and aliases. The rates below are the
-- standard-context tier.
-- price_per_cached_input_token = cache READ price (OpenAI cached input, Anthropic cache hits,
-- Gemini context caching).

insert into public.model_pricing (provider_id, model_id, price_per_input_token,
  price_per_output_token, price_per_cached_input_token, pricing_type, pricing_source,
  last_updated)
values
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

  -- A free model: costs exactly 0 (pricing_type free forces every price to 0).
  ('openrouter', 'meta-llama/llama-3.3-70b-instruct:free', 0, 0, 0, 'free',
   'https://openrouter.ai/meta-llama/llama-3.3-70b-instruct:free', '2025-10-18'),

  -- A routed model we have no token price for (gpt-image-1 is billed per image/quality tier):
  -- charging it raises price_missing instead of costing $0.
  ('openai', 'gpt-image-1', null, null, null, 'missing',
   'https://openai.com/api/pricing/', '2025-10-18')
on conflict on constraint model_pricing_provider_model_key do nothing;
