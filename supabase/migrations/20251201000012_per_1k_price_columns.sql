-- 20251201000012_per_1k_price_columns.sql
--
-- Seed 001's documented price change works as written in the SQL editor (issue 10 §8):
--   UPDATE model_pricing SET input_price_per_1k_tokens = 0.003, output_price_per_1k_tokens = 0.012
--   WHERE model_id = 'gpt-4o' AND provider_id = 'openai';
-- One source of truth: price_per_input_token / price_per_output_token (per token) stay THE
-- prices; input_price_per_1k_tokens / output_price_per_1k_tokens are their per-1K form, kept by
-- a trigger and bound to them by a CHECK, so the two can never disagree:
--   * every write of a per-token price sets the per-1K column (= per_token × 1000);
--   * a write of a per-1K column sets the per-token price (= per_1k / 1000; at most 9 decimals
--     per 1K, i.e. 12 per token, else 22023 invalid_amount — never rounded); writing both that
--     disagree is 22023 invalid_amount;
--   * an UPDATE that writes a per-1K column (and not its per-token one) is a PRICE CHANGE like
--     set_model_price's: instead of rewriting the version in place, it inserts a new version
--     effective now() (the other
--     columns as the UPDATE leaves them; pricing_source 'manual' unless the UPDATE sets one) and
--     leaves the old version — and every usage charged at it — untouched. The insert is audited
--     in price_audit like any other. Only the version in effect now is changed this way; the
--     UPDATE skips older and future versions its WHERE matched (a NOTICE names them), so the
--     statement reports fewer rows updated than it matched (UPDATE 0 for the seed-001 example).
--     A version that already starts at now() (same transaction) is updated in place.
-- Why not GENERATED columns: PostgreSQL refuses `SET generated_column = value` before any
-- trigger runs ("can only be updated to DEFAULT"), so the documented UPDATE could never work.
-- Plain numeric (no scale) on purpose: a value with too many decimals must reach the trigger to
-- be refused, not be rounded by the column type first.
-- Error codes (catalog: 20251018000005): 22023 invalid_amount.

-- ── Columns (backfilled without firing the price triggers: nothing changes, nothing to audit) ─
alter table public.model_pricing
  add column if not exists input_price_per_1k_tokens numeric,
  add column if not exists output_price_per_1k_tokens numeric;
comment on column public.model_pricing.input_price_per_1k_tokens is
  'price_per_input_token x 1000 (seed 001''s unit). Writing it writes the per-token price.';
comment on column public.model_pricing.output_price_per_1k_tokens is
  'price_per_output_token x 1000 (seed 001''s unit). Writing it writes the per-token price.';

alter table public.model_pricing disable trigger user;
update public.model_pricing p
set input_price_per_1k_tokens = trim_scale(p.price_per_input_token * 1000),
    output_price_per_1k_tokens = trim_scale(p.price_per_output_token * 1000)
where p.input_price_per_1k_tokens is distinct from p.price_per_input_token * 1000
   or p.output_price_per_1k_tokens is distinct from p.price_per_output_token * 1000;
alter table public.model_pricing enable trigger user;

alter table public.model_pricing
  drop constraint if exists model_pricing_input_price_per_1k_tokens_matches,
  drop constraint if exists model_pricing_output_price_per_1k_tokens_matches,
  add constraint model_pricing_input_price_per_1k_tokens_matches
    check (input_price_per_1k_tokens is not distinct from price_per_input_token * 1000),
  add constraint model_pricing_output_price_per_1k_tokens_matches
    check (output_price_per_1k_tokens is not distinct from price_per_output_token * 1000);

-- ── Trigger ────────────────────────────────────────────────────────────────────────────────
-- private.sync_price_per_1k(): BEFORE INSERT OR UPDATE on model_pricing, named to fire before
-- model_pricing_normalize (triggers fire in name order), so last_updated and the audit see the
-- final per-token prices. Rules in the header. Calls no other private function: it runs as the
-- writer (service_role has no USAGE on the private schema).
create or replace function private.sync_price_per_1k() returns trigger
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

drop trigger if exists model_pricing_from_per_1k on public.model_pricing;
create trigger model_pricing_from_per_1k before insert or update on public.model_pricing
  for each row execute function private.sync_price_per_1k();

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.sync_price_per_1k() from public;
