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

-- ── Metered endpoint (issue 11): seed 002's upstreams, plans and routes ─────────────────────
-- Idempotent and never overwriting: every insert skips what exists (by name / natural key), so
-- an operator's base URLs, weights or prices survive a re-run. Base URLs are left for the
-- operator (`tokenmeter upstreams set NAME --base-url URL`): a route to an upstream without
-- one is never picked. api_key_env names the edge-function secret holding the upstream's key.
-- One DO block, skipped on a database pushed only up to a version before the metering tables
-- (db push --up-to … --include-seed): the statements inside are planned only when run.
do $seed$
begin
  if to_regclass('public.plan_routes') is null then
    return;
  end if;
  insert into public.upstreams (name, wire_format, api_key_env)
  values ('antigravity', 'openai_chat', 'ANTIGRAVITY_API_KEY'),
         ('ghcp', 'openai_chat', 'GHCP_API_KEY')
  on conflict on constraint upstreams_name_key do nothing;

  -- Prices as sold (display text), exactly as seed 002 has them.
  insert into public.plans (name, price, period)
  values ('cursor-pro-auto', '50K/month', 'month'),
         ('cursor-pro-sonnet', '75K/month', 'month'),
         ('cursor-pro-opus', 'pending', 'month')
  on conflict on constraint plans_name_key do nothing;

  -- Weights exactly as seed 002 (relative; cursor-pro-opus totals 130). Its "Copilot" slot is
  -- claude-opus-4-6-thinking via ghcp, as seed 002 assumes.
  insert into public.plan_routes (plan_id, upstream_id, model, weight)
  select p.id, u.id, r.model, r.weight
  from (values
      ('cursor-pro-auto', 'gemini-3-flash', 'antigravity', 50),
      ('cursor-pro-auto', 'gpt-5-mini', 'ghcp', 50),
      ('cursor-pro-sonnet', 'claude-sonnet-4-5-thinking', 'antigravity', 20),
      ('cursor-pro-sonnet', 'claude-sonnet-4.5', 'ghcp', 10),
      ('cursor-pro-sonnet', 'gemini-3-flash', 'antigravity', 40),
      ('cursor-pro-sonnet', 'gpt-5-mini', 'ghcp', 30),
      ('cursor-pro-opus', 'claude-opus-4-5-thinking', 'antigravity', 20),
      ('cursor-pro-opus', 'claude-opus-4-6-thinking', 'antigravity', 10),
      ('cursor-pro-opus', 'claude-opus-4-6-thinking', 'ghcp', 10),
      ('cursor-pro-opus', 'claude-sonnet-4.5', 'ghcp', 30),
      ('cursor-pro-opus', 'gemini-3-flash', 'antigravity', 30),
      ('cursor-pro-opus', 'gpt-5-mini', 'ghcp', 30)
    ) as r (plan, model, upstream, weight)
  join public.plans p on p.name = r.plan
  join public.upstreams u on u.name = r.upstream
  on conflict on constraint plan_routes_plan_upstream_model_key do nothing;

  -- Prices of the routed models. A route's model is priced by name (price_for(null, model)), so
  -- every name above must resolve; a name that already resolves (gpt-5-mini: openai, in the
  -- default price list of 20251018000002) is left alone, and a price or alias an operator set for
  -- a name is never replaced.
  -- New list prices (USD per token; $ per 1M in the comment: input / cache read / output), from
  -- the providers' pages as of 2026-02 — re-check before relying on them:
  insert into public.model_pricing (provider_id, model_id, price_per_input_token,
    price_per_output_token, price_per_cached_input_token, pricing_type, pricing_source,
    last_updated)
  select v.provider_id, v.model_id, v.input, v.output, v.cached, 'paid', v.source, '2026-02-20'
  from (values
      -- Gemini 3 Flash (preview), prompts of any size: 0.50 / 0.05 / 3.00
      ('google', 'gemini-3-flash', 0.0000005, 0.000003, 0.00000005,
       'https://ai.google.dev/gemini-api/docs/pricing'),
      -- Claude Opus 4.5 and 4.6, standard context: 5 / 0.50 / 25
      ('anthropic', 'claude-opus-4-5', 0.000005, 0.000025, 0.0000005,
       'https://www.anthropic.com/pricing#api'),
      ('anthropic', 'claude-opus-4-6', 0.000005, 0.000025, 0.0000005,
       'https://www.anthropic.com/pricing#api')
    ) as v (provider_id, model_id, input, output, cached, source)
  where not exists (select 1 from public.model_pricing p where p.model_id = v.model_id)
  on conflict on constraint model_pricing_provider_model_key do nothing;

  -- The upstreams' names for Anthropic models are aliases of Anthropic's ids: the same price,
  -- maintained once. Extended thinking is billed as output tokens at the model's own price
  -- (Anthropic), so a "-thinking" name costs what its base model costs.
  insert into public.model_aliases (alias, provider_id, target_provider_id, target_model_id)
  select v.alias, null, 'anthropic', v.target
  from (values
      ('claude-sonnet-4.5', 'claude-sonnet-4-5'),
      ('claude-sonnet-4-5-thinking', 'claude-sonnet-4-5'),
      ('claude-opus-4-5-thinking', 'claude-opus-4-5'),
      ('claude-opus-4-6-thinking', 'claude-opus-4-6')
    ) as v (alias, target)
  where not exists (select 1 from public.model_pricing p where p.model_id = v.alias)
  on conflict on constraint model_aliases_alias_provider_key do nothing;
end
$seed$;
