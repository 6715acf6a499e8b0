-- 40-pricing-rollback.sql — the rollback SQL of docs/pricing.md ("Rollback"), run verbatim
-- inside this test's transaction: the legacy columns come back filled from model_pricing (the
-- version in effect now), the consolidation report accepts the result, and rolling forward
-- again (20251130000012_drop_legacy_pricing_storage.sql) drops them with nothing lost.
-- Keep the block between `rollback:begin` and `rollback:end` identical to the docs.
BEGIN;
SELECT plan(9);
set local client_min_messages = warning;

-- rollback:begin
alter table public.models
  add column pricing_prompt numeric(20,10),
  add column pricing_completion numeric(20,10),
  add column pricing_image numeric(20,10),
  add column pricing_request numeric(10,6);

update public.models m
set pricing_prompt = w.price_per_input_token,
    pricing_completion = w.price_per_output_token,
    pricing_image = w.price_per_image,
    pricing_request = w.price_per_request
from public.models_with_pricing w
where w.id = m.id and w.pricing_id is not null and w.pricing_type <> 'missing';
-- rollback:end

select has_column('public', 'models', c, 'rollback restores models.' || c)
from unnest(array['pricing_prompt', 'pricing_completion', 'pricing_image', 'pricing_request'])
  as c;
select is((select row(pricing_prompt, pricing_completion)::text from public.models
           where provider_id = 'openai' and model_id = 'gpt-4o'),
  '(0.0000025000,0.0000100000)', 'the legacy columns hold the current price');
select is((select pricing_prompt from public.models where model_id = 'gpt-image-1'), null,
  'a model whose price is missing gets NULL legacy prices, as before');
select is((public.pricing_consolidation_report() ->> 'passed')::boolean, true,
  'after the rollback the report passes: the legacy columns agree with model_pricing');

-- roll forward again
\ir ../migrations/20251130000012_drop_legacy_pricing_storage.sql
select hasnt_column('public', 'models', 'pricing_prompt',
  'rolling forward drops the restored columns again');
select is((public.price_for('openai', 'gpt-4o')).price_per_input_token, 0.0000025::numeric,
  'and prices are unchanged');

SELECT * FROM finish();
ROLLBACK;
