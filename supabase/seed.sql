-- supabase/seed.sql — development data, applied by `supabase db reset`, `tokenmeter stack start`
-- / `db reset` and `db push --include-seed`. Idempotent (ON CONFLICT DO NOTHING: re-running it
-- never overwrites a price an operator changed).
--
-- The default price list is NOT here: it is schema-time data in
-- migrations/20251018000002_seed_model_pricing.sql, so a database pushed without the seed (or
-- built by pasting the migrations into the SQL editor) can charge every listed model.
-- This file adds what development and the test suite use to exercise the two pricing types the
-- default list does not need:

insert into public.model_pricing (provider_id, model_id, price_per_input_token,
  price_per_output_token, price_per_cached_input_token, pricing_type, pricing_source,
  last_updated)
values
  -- A free model: costs exactly 0 (pricing_type free forces every price to 0).
  ('openrouter', 'meta-llama/llama-3.3-70b-instruct:free', 0, 0, 0, 'free',
   'https://openrouter.ai/meta-llama/llama-3.3-70b-instruct:free', '2025-10-18'),

  -- A routed model we have no token price for (gpt-image-1 is billed per image/quality tier):
  -- charging it raises price_missing instead of costing $0.
  ('openai', 'gpt-image-1', null, null, null, 'missing',
   'https://openai.com/api/pricing/', '2025-10-18')
on conflict on constraint model_pricing_provider_model_key do nothing;
