-- 20251101000006_import_model_prices.sql
--
-- Bulk price import (the CLI sends chunks of <= 500 with a progress bar): every entry goes
-- through set_model_price(), so validation, versions, the no-op rule and the audit trail are
-- exactly those of a single change. One call = one transaction: a bad entry aborts the chunk and
-- the error's detail names its index.
-- Error codes (catalog: 20251018000005): as set_model_price, plus 22023 invalid_argument for a
-- malformed array / entry.

-- public.import_model_prices(prices, source = 'import', dry_run = false) →
-- {added, changed, unchanged, dry_run, diff: [{provider, model, field, old, new}]}.
-- prices: JSON array (1..5000) of objects with set_model_price's argument names (provider,
-- model, input_per_token, output_per_token, cached_input_per_token, per_request, per_image,
-- currency, effective_from, pricing_type, pricing_source, long_context_threshold,
-- input_per_token_above_threshold, output_per_token_above_threshold); pricing_source defaults
-- to `source`. Each entry is compared with the version in effect at its effective_from
-- (default now): none → added, different → changed (diff lists each field, old → new, money as
-- strings), same → unchanged. dry_run validates every entry exactly as the real run would (the
-- write happens in a subtransaction that is rolled back) and leaves nothing behind.
-- Who may call: service_role (DEFINER, caller checked).
create function public.import_model_prices(
  prices jsonb, source text default 'import', dry_run boolean default false
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  entry jsonb;
  idx integer := 0;
  cur public.model_pricing;
  fields jsonb;
  old_fields jsonb;
  eff timestamptz;
  counts integer[] := array[0, 0, 0];
  diff jsonb := '[]'::jsonb;
  field_diff jsonb;
  err_state text;
  err_message text;
  err_detail text;
begin
  perform private.assert_service_role();
  if prices is null or jsonb_typeof(prices) <> 'array'
     or jsonb_array_length(prices) not between 1 and 5000 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'prices must be a JSON array of 1 to 5000 price objects';
  end if;
  for entry in select e from jsonb_array_elements(prices) e loop
    begin
      if jsonb_typeof(entry) <> 'object' then
        raise exception using errcode = '22023', message = 'invalid_argument',
          detail = 'each price must be a JSON object';
      end if;
      eff := coalesce((entry ->> 'effective_from')::timestamptz, now());
      fields := jsonb_build_object(
        'input_per_token', private.money((entry ->> 'input_per_token')::numeric),
        'output_per_token', private.money((entry ->> 'output_per_token')::numeric),
        'cached_input_per_token', private.money((entry ->> 'cached_input_per_token')::numeric),
        'per_request', private.money(coalesce((entry ->> 'per_request')::numeric, 0)),
        'per_image', private.money(coalesce((entry ->> 'per_image')::numeric, 0)),
        'currency', coalesce(entry ->> 'currency', 'USD'),
        'pricing_type', coalesce(entry ->> 'pricing_type', 'paid'),
        'long_context_threshold', (entry ->> 'long_context_threshold')::bigint,
        'input_per_token_above_threshold',
          private.money((entry ->> 'input_per_token_above_threshold')::numeric),
        'output_per_token_above_threshold',
          private.money((entry ->> 'output_per_token_above_threshold')::numeric));
      select p.* into cur from public.model_pricing p
      where p.provider_id = entry ->> 'provider' and p.model_id = entry ->> 'model'
        and p.effective_from <= eff
      order by p.effective_from desc limit 1;
      old_fields := case when cur.id is null then null else jsonb_build_object(
        'input_per_token', private.money(cur.price_per_input_token),
        'output_per_token', private.money(cur.price_per_output_token),
        'cached_input_per_token', private.money(cur.price_per_cached_input_token),
        'per_request', private.money(cur.price_per_request),
        'per_image', private.money(cur.price_per_image), 'currency', cur.currency,
        'pricing_type', cur.pricing_type, 'long_context_threshold', cur.long_context_threshold,
        'input_per_token_above_threshold',
          private.money(cur.price_per_input_token_above_threshold),
        'output_per_token_above_threshold',
          private.money(cur.price_per_output_token_above_threshold)) end;
      select coalesce(jsonb_agg(jsonb_build_object('provider', entry ->> 'provider',
               'model', entry ->> 'model', 'field', f.key, 'old', old_fields -> f.key,
               'new', f.value) order by f.key), '[]')
      into field_diff
      from jsonb_each(fields) f
      where (old_fields -> f.key) is distinct from f.value
        and not (old_fields is null and f.value = 'null'::jsonb);

      if old_fields is null then
        counts[1] := counts[1] + 1;
      elsif jsonb_array_length(field_diff) > 0 then
        counts[2] := counts[2] + 1;
      else
        counts[3] := counts[3] + 1;
      end if;
      diff := diff || field_diff;
      if jsonb_array_length(field_diff) > 0 then
        -- A dry run validates too: the write runs in a subtransaction that is rolled back.
        begin
          perform public.set_model_price(entry ->> 'provider', entry ->> 'model',
            (entry ->> 'input_per_token')::numeric, (entry ->> 'output_per_token')::numeric,
            (entry ->> 'cached_input_per_token')::numeric,
            coalesce((entry ->> 'per_request')::numeric, 0),
            coalesce((entry ->> 'per_image')::numeric, 0), coalesce(entry ->> 'currency', 'USD'),
            eff, coalesce(entry ->> 'pricing_type', 'paid'),
            coalesce(entry ->> 'pricing_source', import_model_prices.source),
            (entry ->> 'long_context_threshold')::bigint,
            (entry ->> 'input_per_token_above_threshold')::numeric,
            (entry ->> 'output_per_token_above_threshold')::numeric);
          if dry_run then
            raise exception using errcode = 'PT000', message = 'dry_run';
          end if;
        exception when sqlstate 'PT000' then
          null;  -- the dry run's write is undone; its validation passed
        end;
      end if;
    exception when others then
      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text,
        err_detail = pg_exception_detail;
      if err_state = '22023' or err_state like 'PT%' or err_state = '42501' then
        raise exception using errcode = err_state, message = err_message,
          detail = format('prices[%s]: %s', idx, err_detail);
      end if;
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = format('prices[%s]: a field has the wrong type: %s', idx, err_message);
    end;
    idx := idx + 1;
  end loop;
  return jsonb_build_object('added', counts[1], 'changed', counts[2], 'unchanged', counts[3],
    'dry_run', dry_run, 'diff', diff);
end
$$;

revoke execute on function public.import_model_prices(jsonb, text, boolean)
  from public, anon, authenticated;
grant execute on function public.import_model_prices(jsonb, text, boolean) to service_role;
