-- 20251018000008_create_usage_batch_function.sql
--
-- record_usage_batch(records jsonb): up to 1000 usage records in ONE transaction, with one
-- result per record (a bad record does not stop the others). Same idempotency as record_usage.
-- Deadlock-free under concurrent batches: phase 1 validates and prices without writing;
-- phase 2 inserts usage + ledger rows in request_id order (unique-index waits are ordered);
-- phase 3 charges each user once, in user_id order (row locks are ordered), after all inserts.
-- Error codes: see the catalog at the top of 20251018000005_create_pricing_functions.sql.
-- This function raises: 42501 forbidden, 22023 invalid_argument (records). Per-record errors
-- are returned, not raised: {code, message, detail} with the same codes as record_usage.

-- public.record_usage_batch(records) → {results: [...], recorded, replayed, failed}.
-- records: JSON array of objects with record_usage's parameter names as keys (user_id, model,
-- input_tokens, output_tokens, request_id, provider, cached_input_tokens, metadata,
-- occurred_at, latency_ms, status). results[i] (same order as records):
--   ok:    {index, ok: true, ...record_usage's keys}; balance = the user's balance after the batch
--   error: {index, ok: false, request_id, error: {code, message, detail}}
-- Who may call: service_role. DEFINER: the only writer of usage, ledger and balances.
create function public.record_usage_batch(records jsonb) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  n integer;
  rec jsonb;
  item private.usage_item;
  items private.usage_item[] := '{}';
  positions integer[] := '{}';          -- positions[k] = index in records of items[k]
  results jsonb[];
  inserted public.usage_records;
  existing public.usage_records;
  charged_users uuid[] := '{}';
  charged_costs numeric[] := '{}';
  charged_currencies text[] := '{}';
  balances jsonb := '{}'::jsonb;       -- user_id → balance after the batch
  charge record;
  k integer;
  i integer;
  err_state text;
  err_message text;
  err_detail text;
  counts integer[] := array[0, 0, 0];  -- recorded, replayed, failed
begin
  perform private.assert_service_role();
  if records is null or jsonb_typeof(records) <> 'array'
     or jsonb_array_length(records) not between 1 and 1000 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'records must be a JSON array of 1 to 1000 usage objects';
  end if;
  n := jsonb_array_length(records);
  results := array_fill(null::jsonb, array[n]);

  -- Phase 1: parse, validate and price; nothing is written, so a failure costs nothing.
  for i in 1 .. n loop
    rec := records -> (i - 1);
    begin
      if jsonb_typeof(rec) <> 'object' then
        raise exception using errcode = '22023', message = 'invalid_usage',
          detail = 'each record must be a JSON object';
      end if;
      perform private.check_usage((rec ->> 'user_id')::uuid, rec ->> 'model',
        (rec ->> 'input_tokens')::bigint, (rec ->> 'output_tokens')::bigint,
        rec ->> 'request_id', coalesce((rec ->> 'cached_input_tokens')::bigint, 0),
        coalesce(rec -> 'metadata', '{}'::jsonb),
        coalesce((rec ->> 'occurred_at')::timestamptz, now()),
        (rec ->> 'latency_ms')::integer, coalesce(rec ->> 'status', 'success'));
      perform private.assert_user_exists((rec ->> 'user_id')::uuid);
      item := private.prepare_usage((rec ->> 'user_id')::uuid, rec ->> 'model',
        (rec ->> 'input_tokens')::bigint, (rec ->> 'output_tokens')::bigint,
        rec ->> 'request_id', rec ->> 'provider',
        coalesce((rec ->> 'cached_input_tokens')::bigint, 0),
        coalesce(rec -> 'metadata', '{}'::jsonb),
        coalesce((rec ->> 'occurred_at')::timestamptz, now()),
        (rec ->> 'latency_ms')::integer, coalesce(rec ->> 'status', 'success'));
      items := items || item;
      positions := positions || i;
    exception when others then
      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text,
        err_detail = pg_exception_detail;
      if err_state not in ('22023') and err_state not like 'PT%' then
        -- A cast failed (e.g. "1.5" for a token count): report it as invalid_usage.
        err_detail := 'a field has the wrong type: ' || err_message;
        err_state := '22023';
        err_message := 'invalid_usage';
      end if;
      results[i] := jsonb_build_object('index', i - 1, 'ok', false,
        'request_id', rec ->> 'request_id', 'error', jsonb_build_object(
          'code', err_state, 'message', err_message, 'detail', nullif(err_detail, '')));
      counts[3] := counts[3] + 1;
    end;
  end loop;

  -- Phase 2: insert in request_id order; a request_id seen before is a replay or a conflict.
  for k in
    select s.k from generate_subscripts(items, 1) as s(k)
    order by (items[s.k]).request_id, s.k
  loop
    item := items[k];
    i := positions[k];
    inserted := private.insert_usage(item);
    if inserted.id is not null then
      results[i] := private.usage_result(inserted, null, false);
      counts[1] := counts[1] + 1;
      if item.cost > 0 then
        charged_users := charged_users || item.user_id;
        charged_costs := charged_costs || item.cost;
        charged_currencies := charged_currencies || (item.price).currency;
      end if;
    else
      select u.* into existing from public.usage_records u where u.request_id = item.request_id;
      if private.same_usage(existing, item.user_id, (item.price).provider_id,
                            (item.price).model_id, item.input_tokens, item.output_tokens,
                            item.cached_input_tokens) then
        results[i] := private.usage_result(existing, null, true);
        counts[2] := counts[2] + 1;
      else
        results[i] := jsonb_build_object('index', i - 1, 'ok', false,
          'request_id', item.request_id, 'error', jsonb_build_object('code', 'PT409',
            'message', 'idempotency_conflict', 'detail',
            format('request_id %s was already recorded with another payload', item.request_id)));
        counts[3] := counts[3] + 1;
      end if;
    end if;
  end loop;

  -- Phase 3: one balance update per user, in user_id order, after every insert.
  for charge in
    select c.user_id, c.currency, sum(c.cost) as total
    from unnest(charged_users, charged_costs, charged_currencies) as c(user_id, cost, currency)
    group by c.user_id, c.currency
    order by c.user_id, c.currency
  loop
    balances := balances || jsonb_build_object(charge.user_id::text,
      private.apply_balance_delta(charge.user_id, -charge.total, charge.currency));
  end loop;

  -- Results: every successful record carries its user's balance after the batch.
  for i in 1 .. n loop
    if (results[i] ->> 'ok') is null then
      if not balances ? (results[i] ->> 'user_id') then
        balances := balances || jsonb_build_object(results[i] ->> 'user_id',
          coalesce((select b.balance from public.user_balances b
                    where b.user_id = (results[i] ->> 'user_id')::uuid), 0));
      end if;
      results[i] := jsonb_build_object('index', i - 1, 'ok', true) || results[i]
        || jsonb_build_object(
             'balance', private.money((balances ->> (results[i] ->> 'user_id'))::numeric),
             'negative_balance', (balances ->> (results[i] ->> 'user_id'))::numeric < 0);
    end if;
  end loop;

  return jsonb_build_object('results', to_jsonb(results), 'recorded', counts[1],
    'replayed', counts[2], 'failed', counts[3]);
end
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function public.record_usage_batch(jsonb) from public, anon, authenticated;
grant execute on function public.record_usage_batch(jsonb) to service_role;
