-- 20251130000005_usage_batch.sql
--
-- record_usage_batch: many usage records in one call and one transaction, set-based — a handful
-- of statements over the whole batch instead of ~6 per record — with the contract, checks,
-- identity rule and results of record_usage (20251130000004). Part of the 0.1.0 baseline
-- (CHANGELOG.md).
-- Why set-based: the per-record loop (an exception block, check_usage, a replay probe,
-- assert_user_exists, pricing, an insert and one balance update per user) held the batch to
-- ~6,300 records/s; the issue asked for 20,000 with idempotency and balance effects
-- (docs/benchmarks.md, "Set-based batch" and "Set-based user checks").
--   1. parse    every record in one statement (jsonb_array_elements); only if a cast fails
--               (e.g. "1.5" for a token count) are the records parsed one by one, in an
--               exception block each, to report the same per-record error as record_usage.
--   2. check    check_usage's rules, the replay of stored request_ids (before pricing: a retry
--               whose price has since gone missing or changed is still answered from the stored
--               record), the user, metadata.images and the price, in one statement; the price
--               is looked up once per DISTINCT (provider, model, occurred_at) through
--               private.chargeable_price, the one lookup (price versions are chosen by
--               occurred_at, so a key without it could pick another version).
--   3. insert   ONE insert … select … on conflict (request_id) do nothing of the first record of
--               each new request_id (request_id order), and the ledger rows of the inserted ones
--               in the same statement.
--   4. results  a request_id stored meanwhile (a concurrent batch) or twice in the batch is
--               answered from the stored row (same request: private.usage_mismatch) or PT409;
--               every result's JSON is built here (json_build_object, text: it is parsed into
--               jsonb once at the end), BEFORE any balance row is locked, all but its balance.
--   5. balance  users whose new records all cost nothing get FOR KEY SHARE on their auth.users
--               row (every writer locks a row of the user: 20251018000003, 3.; a user deleted
--               meanwhile fails the batch with PT404 user_not_found); then the charged users'
--               balance rows are locked in user_id order and updated in one statement: the
--               last writes, deadlock-free. A missing balance row (or a currency mismatch) goes
--               through private.apply_balance_delta, which creates it (or raises).
--   6. answer   each ok result gets its user's balance after the batch; one JSON parse.
-- Why 4 before 5: every batch that charges a user waits for the balance-row locks of the
-- batches before it, so the work done between the first lock and the commit bounds the
-- throughput of batches that share users; that part is the update and the final parse only.
-- Error precedence per record: cast → check_usage → replay / PT409 → user_not_found →
-- metadata.images → price. The batch settles no hold. Money stays exact: the cost is
-- private.usage_cost of private.effective_price.
-- Error codes (catalog: 20251018000003): returned per record as record_usage raises them;
-- raised: 42501 forbidden, 22023 invalid_argument (records), PT404 user_not_found (step 5),
-- PT422 currency_mismatch.

-- ── Types ─────────────────────────────────────────────────────────────────────────────────
-- One record of a batch as it moves through the phases.
create type private.usage_batch_item as (
  idx integer,                    -- 0-based position in records
  request_id text,                -- as sent (rec ->> 'request_id'), also for failed records
  user_id uuid,
  provider text,
  model text,
  input_tokens bigint,
  output_tokens bigint,
  cached_input_tokens bigint,
  metadata jsonb,
  occurred_at timestamptz,
  latency_ms integer,
  status text,
  error jsonb,                    -- {code, message, detail} once the record failed
  stored public.usage_records,    -- the usage row that answers it (recorded or replayed)
  replayed boolean,
  price public.model_pricing,     -- the price actually used (long-context tier applied)
  images integer,
  cost numeric
);

-- A price lookup that does not raise: the price, or the per-record error it would have raised.
create type private.price_attempt as (price public.model_pricing, error jsonb);

-- ── Helpers ───────────────────────────────────────────────────────────────────────────────
-- private.batch_error(state, message, detail) → the error object of a failed batch record.
-- A state other than 22023 / PTnnn is a failed cast and is reported as invalid_usage (as
-- record_usage reports a field of the wrong type). Raises nothing.
create function private.batch_error(state text, message text, detail text) returns jsonb
language plpgsql immutable set search_path = '' as $$
begin
  if state not in ('22023') and state not like 'PT%' then
    return jsonb_build_object('code', '22023', 'message', 'invalid_usage',
      'detail', 'a field has the wrong type: ' || message);
  end if;
  return jsonb_build_object('code', state, 'message', message, 'detail', nullif(detail, ''));
end
$$;

-- private.parse_usage_record(rec, idx) → the record's fields, cast in the order record_usage's
-- arguments are, or its error. The slow path of record_usage_batch, used only when a cast of
-- the set-based parse failed. Raises nothing.
create function private.parse_usage_record(rec jsonb, idx integer)
returns private.usage_batch_item
language plpgsql stable set search_path = '' as $$
declare
  item private.usage_batch_item;
  err_state text;
  err_message text;
  err_detail text;
begin
  item.idx := parse_usage_record.idx;
  item.request_id := rec ->> 'request_id';
  if jsonb_typeof(rec) <> 'object' then
    item.error := private.batch_error('22023', 'invalid_usage',
                                      'each record must be a JSON object');
    return item;
  end if;
  begin
    item.user_id := (rec ->> 'user_id')::uuid;
    item.model := rec ->> 'model';
    item.input_tokens := (rec ->> 'input_tokens')::bigint;
    item.output_tokens := (rec ->> 'output_tokens')::bigint;
    item.cached_input_tokens := coalesce((rec ->> 'cached_input_tokens')::bigint, 0);
    item.metadata := coalesce(rec -> 'metadata', '{}'::jsonb);
    item.occurred_at := coalesce((rec ->> 'occurred_at')::timestamptz, now());
    item.latency_ms := (rec ->> 'latency_ms')::integer;
    item.status := coalesce(rec ->> 'status', 'success');
    item.provider := rec ->> 'provider';
  exception when others then
    get stacked diagnostics err_state = returned_sqlstate, err_message = message_text,
      err_detail = pg_exception_detail;
    item.error := private.batch_error(err_state, err_message, err_detail);
  end;
  return item;
end
$$;

-- private.try_chargeable_price(provider, model, at) → (price, null), or (null, the error
-- private.chargeable_price raised, as a batch record reports it). Raises nothing.
create function private.try_chargeable_price(provider text, model text, at timestamptz)
returns private.price_attempt
language plpgsql stable set search_path = '' as $$
declare
  attempt private.price_attempt;
  err_state text;
  err_message text;
  err_detail text;
begin
  attempt.price := private.chargeable_price(provider, model, at);
  return attempt;
exception when others then
  get stacked diagnostics err_state = returned_sqlstate, err_message = message_text,
    err_detail = pg_exception_detail;
  attempt.error := private.batch_error(err_state, err_message, err_detail);
  return attempt;
end
$$;

-- ── record_usage_batch ────────────────────────────────────────────────────────────────────
-- public.record_usage_batch(records) → {results: [...], recorded, replayed, failed}.
-- records: JSON array of 1 to 1000 objects with record_usage's parameter names as keys
-- (user_id, model, input_tokens, output_tokens, request_id, provider, cached_input_tokens,
-- metadata, occurred_at, latency_ms, status).
-- results[i] (same order as records):
--   ok:    {index, ok: true, ...record_usage's keys}; balance = the user's balance after the batch
--   error: {index, ok: false, request_id, error: {code, message, detail}}
-- A stored request_id is answered from the stored record before pricing (or PT409); the same
-- request_id twice in the batch is recorded once (the first) and replayed (or PT409) after.
-- Same request = private.usage_mismatch finds no difference, in step 2 for a row stored before
-- the batch and in step 4 for one stored meanwhile or earlier in the batch; the PT409 detail
-- names the argument that differs.
-- Who may call: service_role. DEFINER: the only writer of usage, ledger and balances.
-- Raises: 42501 forbidden, 22023 invalid_argument (records); PT422 currency_mismatch and
-- constraint violations abort the whole batch; per-record errors are returned.
create function public.record_usage_batch(records jsonb) returns jsonb
language plpgsql security definer set search_path = ''
-- Plan each statement for the batch at hand: a generic plan sees the arrays below as ~10 rows
-- and picks nested loops that cost 1000 x 1000 row visits (~0.4 s) on a full batch.
set plan_cache_mode = force_custom_plan as $$
declare
  items private.usage_batch_item[];
  inserted public.usage_records[];
  result_texts text[];                -- per record: its JSON, open when ok (no balance yet)
  result_users uuid[];                -- per record: the user whose balance completes it
  recorded bigint;
  replayed bigint;
  failed bigint;
  charged_users uuid[];               -- per (user, currency) charged, in user_id order
  charged_currencies text[];
  charged_totals numeric[];
  free_users uuid[];                  -- users with only zero-cost new records, in order
  locked bigint;
  charge record;
  answer jsonb;
begin
  perform private.assert_service_role();
  if records is null or jsonb_typeof(records) <> 'array'
     or jsonb_array_length(records) not between 1 and 1000 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'records must be a JSON array of 1 to 1000 usage objects';
  end if;

  -- 1. Parse: every record at once; if any cast fails, record by record for its exact error.
  begin
    select array_agg(row(e.n::integer - 1, e.r ->> 'request_id', (e.r ->> 'user_id')::uuid,
        e.r ->> 'provider', e.r ->> 'model', (e.r ->> 'input_tokens')::bigint,
        (e.r ->> 'output_tokens')::bigint, coalesce((e.r ->> 'cached_input_tokens')::bigint, 0),
        coalesce(e.r -> 'metadata', '{}'::jsonb),
        coalesce((e.r ->> 'occurred_at')::timestamptz, now()), (e.r ->> 'latency_ms')::integer,
        coalesce(e.r ->> 'status', 'success'),
        case when jsonb_typeof(e.r) <> 'object' then private.batch_error('22023',
          'invalid_usage', 'each record must be a JSON object') end,
        null, null, null, null, null)::private.usage_batch_item order by e.n)
    into items
    from jsonb_array_elements(records) with ordinality as e(r, n);
  exception when others then
    select array_agg(private.parse_usage_record(e.r, e.n::integer - 1) order by e.n)
    into items
    from jsonb_array_elements(records) with ordinality as e(r, n);
  end;

  -- 2. Check (check_usage's rules), replay stored request_ids, check the user and
  -- metadata.images, and price: once per distinct (provider, model, occurred_at). Writes nothing.
  with checked as (
    select i.*, case when i.error is null then case
      when i.request_id is null or btrim(i.request_id) = '' or length(i.request_id) > 255
        then 'request_id must be a non-empty string of at most 255 characters'
      when i.user_id is null then 'user_id is required'
      when i.model is null or btrim(i.model) = '' or length(i.model) > 255
        then 'model must be a non-empty string of at most 255 characters'
      when i.input_tokens is null or i.input_tokens not between 0 and 10000000
        then 'input_tokens must be an integer between 0 and 10000000'
      when i.output_tokens is null or i.output_tokens not between 0 and 10000000
        then 'output_tokens must be an integer between 0 and 10000000'
      when i.cached_input_tokens is null or i.cached_input_tokens < 0
        or i.cached_input_tokens > i.input_tokens
        then 'cached_input_tokens must be between 0 and input_tokens'
      when i.metadata is null or jsonb_typeof(i.metadata) <> 'object'
        or pg_column_size(i.metadata) > 16384
        then 'metadata must be a JSON object of at most 16 kB'
      when i.occurred_at is null or not isfinite(i.occurred_at)
        or i.occurred_at > now() + interval '5 minutes'
        or i.occurred_at < now() - interval '400 days'
        then 'occurred_at must be a timestamp within the last 400 days, not in the future'
      when i.latency_ms is not null and i.latency_ms not between 0 and 86400000
        then 'latency_ms must be between 0 and 86400000'
      when i.status is null or i.status not in ('success', 'error', 'timeout', 'cancelled')
        then 'status must be one of success, error, timeout, cancelled'
    end end as bad
    from unnest(items) as i
  ), probed as (
    select c.*, u as existing,
      case when u.id is not null then private.usage_mismatch(u, c.user_id, c.provider, c.model,
        c.input_tokens, c.output_tokens, c.cached_input_tokens, c.metadata, c.occurred_at,
        c.latency_ms, c.status) end as mismatch,
      c.error is null and c.bad is null and u.id is null as fresh
    from checked c
    left join public.usage_records u
      on c.error is null and c.bad is null and u.request_id = c.request_id
  ), judged as (
    select p.*, (p.existing).id is not null and p.mismatch is null as same,
      case when not p.fresh then null
      when not exists (select 1 from auth.users x where x.id = p.user_id)
        then private.batch_error('PT404', 'user_not_found', format('no user %s', p.user_id))
      when p.metadata ->> 'images' is not null
        and case when (p.metadata ->> 'images') !~ '^[0-9]{1,6}$' then true
                 else (p.metadata ->> 'images')::integer > 100000 end
        then private.batch_error('22023', 'invalid_usage',
               'metadata.images must be an integer between 0 and 100000')
    end as fresh_error
    from probed p
  ), prices as materialized (
    select k.provider, k.model, k.occurred_at, t.price, t.error
    from (select distinct j.provider, j.model, j.occurred_at from judged j
          where j.fresh and j.fresh_error is null) k
    cross join lateral private.try_chargeable_price(k.provider, k.model, k.occurred_at) t
  ), priced as (
    select j.*, k.error as price_error,
      case when k.error is not null then null
           when (k.price).long_context_threshold is not null
                and j.input_tokens > (k.price).long_context_threshold
             then private.effective_price(k.price, j.input_tokens)  -- as prepare_usage
           else k.price end as used_price,
      case when (k.price).id is not null
           then coalesce((j.metadata ->> 'images')::integer, 0) end as used_images
    from judged j
    left join prices k on j.fresh and j.fresh_error is null
      and k.provider is not distinct from j.provider and k.model = j.model
      and k.occurred_at = j.occurred_at
  )
  select array_agg(row(p.idx, p.request_id, p.user_id, p.provider, p.model, p.input_tokens,
      p.output_tokens, p.cached_input_tokens, p.metadata, p.occurred_at, p.latency_ms, p.status,
      case when p.error is not null then p.error
           when p.bad is not null then private.batch_error('22023', 'invalid_usage', p.bad)
           when p.same then null
           when not p.fresh then private.batch_error('PT409', 'idempotency_conflict',
             format('request_id %s was already recorded with another payload (%s differs)',
                    p.request_id, p.mismatch))
           when p.fresh_error is not null then p.fresh_error
           else p.price_error end,
      case when p.same then p.existing end,
      case when p.same then true end,
      p.used_price, p.used_images,
      case when (p.used_price).id is not null then private.usage_cost(p.used_price,
        p.input_tokens, p.output_tokens, p.cached_input_tokens, p.used_images) end
    )::private.usage_batch_item order by p.idx)
  into items
  from priced p;

  -- 3. Insert the first record of each new request_id, in request_id order (as before), and
  -- the ledger rows of those inserted, in one statement. A request_id a concurrent call
  -- committed meanwhile is skipped here and answered in step 4.
  with ins as (
    insert into public.usage_records as u (user_id, request_id, provider_id, model_id,
      input_tokens, output_tokens, cached_input_tokens, price_per_input_token,
      price_per_output_token, price_per_cached_input_token, price_per_request, price_per_image,
      images, long_context, requested_model, requested_provider, pricing_id, cost, currency,
      latency_ms, status, metadata, occurred_at)
    select l.user_id, l.request_id, (l.price).provider_id, (l.price).model_id, l.input_tokens,
      l.output_tokens, l.cached_input_tokens, (l.price).price_per_input_token,
      (l.price).price_per_output_token,
      coalesce((l.price).price_per_cached_input_token, (l.price).price_per_input_token),
      (l.price).price_per_request, (l.price).price_per_image, coalesce(l.images, 0),
      (l.price).long_context_threshold is not null
        and l.input_tokens > (l.price).long_context_threshold,
      nullif(l.model, (l.price).model_id), nullif(l.provider, (l.price).provider_id),
      (l.price).id, l.cost, (l.price).currency, l.latency_ms, l.status, l.metadata,
      l.occurred_at
    from (select distinct on (i.request_id) i.* from unnest(items) as i
          where i.error is null and (i.price).id is not null
          order by i.request_id, i.idx) l
    order by l.request_id
    on conflict on constraint usage_records_request_id_key do nothing
    returning u.*
  ), ledger as (
    insert into public.ledger_entries (user_id, kind, amount, currency, reference)
    select ins.user_id, 'usage', -ins.cost, ins.currency, ins.request_id
    from ins where ins.cost > 0
    order by ins.request_id
  )
  select coalesce(array_agg(row(ins.*)::public.usage_records), '{}') into inserted from ins;

  -- 4. Results, in order, before any balance row is locked: a candidate not inserted was
  -- stored meanwhile (a concurrent call) or earlier in this batch: replayed when the payload is
  -- the same (as priced), else PT409. An ok result is kept as its JSON text without the closing
  -- brace, to be completed with its user's balance after the batch (step 6).
  with cands as (
    select i.idx, i.request_id, min(i.idx) over (partition by i.request_id) as leader
    from unnest(items) as i where i.error is null and (i.price).id is not null
  ), outcomes as (
    select c.idx, r as ins,
      -- looked up only for a candidate not inserted (a CASE evaluates its branch lazily)
      case when r.id is null then (select s from public.usage_records s
                                   where s.request_id = c.request_id) end as stored_now
    from cands c
    left join unnest(inserted) as r on c.idx = c.leader and r.request_id = c.request_id
  ), settled as (
    select i.idx, i.request_id, y.kind, y.row,
      case when y.kind = 'failed' then coalesce(i.error, private.batch_error('PT409',
        'idempotency_conflict',
        format('request_id %s was already recorded with another payload (%s differs)',
               i.request_id, m.mismatch))) end as error
    from unnest(items) as i
    left join outcomes o on o.idx = i.idx
    -- compared only for a candidate not inserted (its row was stored by someone else)
    cross join lateral (
      select case when i.error is null and i.replayed is null and (o.ins).id is null
        then private.usage_mismatch(o.stored_now, i.user_id, (i.price).provider_id,
               (i.price).model_id, i.input_tokens, i.output_tokens, i.cached_input_tokens,
               i.metadata, i.occurred_at, i.latency_ms, i.status) end as mismatch
    ) m
    cross join lateral (
      select case when i.error is not null then 'failed'
                  when i.replayed then 'replayed'
                  when (o.ins).id is not null then 'recorded'
                  when m.mismatch is null then 'replayed'
                  else 'failed' end as kind,
             case when i.error is not null then null
                  when i.replayed then i.stored
                  when (o.ins).id is not null then o.ins
                  else o.stored_now end as row
    ) y
  )
  select array_agg(case when s.kind = 'failed'
        then json_build_object('index', s.idx, 'ok', false, 'request_id', s.request_id,
                                'error', s.error)::text
        -- the keys of private.usage_result(row, balance, replayed) but balance and
        -- negative_balance, built inline (a call per record cost ~15 µs)
        else left(json_build_object('index', s.idx, 'ok', true, 'usage_id', (s.row).id,
          'request_id', (s.row).request_id, 'user_id', (s.row).user_id,
          'provider', (s.row).provider_id, 'model', (s.row).model_id,
          'input_tokens', (s.row).input_tokens, 'output_tokens', (s.row).output_tokens,
          'cached_input_tokens', (s.row).cached_input_tokens,
          'price_per_input_token', trim_scale((s.row).price_per_input_token)::text,
          'price_per_output_token', trim_scale((s.row).price_per_output_token)::text,
          'price_per_cached_input_token',
            trim_scale((s.row).price_per_cached_input_token)::text,
          'price_per_request', trim_scale((s.row).price_per_request)::text,
          'cost', trim_scale((s.row).cost)::text, 'currency', (s.row).currency,
          'status', (s.row).status, 'occurred_at', (s.row).occurred_at,
          'replayed', s.kind = 'replayed')::text, -1)
      end order by s.idx),
    array_agg(case when s.kind <> 'failed' then (s.row).user_id end order by s.idx),
    count(*) filter (where s.kind = 'recorded'),
    count(*) filter (where s.kind = 'replayed'),
    count(*) filter (where s.kind = 'failed')
  into result_texts, result_users, recorded, replayed, failed
  from settled s;

  select coalesce(array_agg(c.user_id order by c.user_id, c.currency), '{}'),
         coalesce(array_agg(c.currency order by c.user_id, c.currency), '{}'),
         coalesce(array_agg(c.total order by c.user_id, c.currency), '{}')
  into charged_users, charged_currencies, charged_totals
  from (select r.user_id, r.currency, sum(r.cost) as total from unnest(inserted) as r
        where r.cost > 0 group by r.user_id, r.currency) c;

  select coalesce(array_agg(f.user_id order by f.user_id), '{}') into free_users
  from (select r.user_id from unnest(inserted) as r group by r.user_id
        having not bool_or(r.cost > 0)) f;

  -- 5. Balances, LAST: lock the charged users' rows in user_id order, then one update. A user
  -- without a balance row (or in another currency) goes through apply_balance_delta, which
  -- creates the row with its signup grant (or raises currency_mismatch), as before.
  -- The lowest user's row first, alone: waiting for it happens before the snapshot of the
  -- statement that locks the others, so their rows, updated by the transaction waited for, need
  -- no EvalPlanQual recheck each (rechecking all of them slowed the locking pass, which the
  -- other batches wait on).
  -- Users charged nothing have no balance row locked: lock their auth.users row instead
  -- (20251201000004, 3.). Key-share locks do not block one another, only a deletion.
  -- A user deleted since step 2 is not there to lock: the batch fails (nothing is written) and
  -- its retry reports user_not_found for that user's records.
  if cardinality(free_users) > 0 then
    select count(*) into locked from (select 1 from auth.users u where u.id = any (free_users)
                                      order by u.id for key share of u) l;
    if locked < cardinality(free_users) then
      raise exception using errcode = 'PT404', message = 'user_not_found',
        detail = 'a user of this batch was deleted while it was recorded';
    end if;
  end if;
  if cardinality(charged_users) > 0 then
    perform 1 from public.user_balances b where b.user_id = charged_users[1] for update of b;
    perform 1 from public.user_balances b where b.user_id = any (charged_users)
    order by b.user_id
    for update of b;
    for charge in
      with updated as (
        update public.user_balances b
        set balance = b.balance + (-c.total), updated_at = now()
        from unnest(charged_users, charged_currencies, charged_totals) as c(user_id, currency,
                                                                           total)
        where b.user_id = c.user_id and b.currency = c.currency
        returning b.user_id, b.currency
      )
      select c.user_id, c.currency, c.total
      from unnest(charged_users, charged_currencies, charged_totals) as c(user_id, currency,
                                                                          total)
      where not exists (select 1 from updated d
                        where d.user_id = c.user_id and d.currency = c.currency)
      order by c.user_id, c.currency
    loop
      perform private.apply_balance_delta(charge.user_id, -charge.total, charge.currency);
    end loop;
  end if;

  -- 6. Every ok result gets its user's balance after the batch; the JSON is parsed once.
  select ('{"recorded": ' || recorded || ', "replayed": ' || replayed || ', "failed": ' || failed
          || ', "results": [' || string_agg(case when f.user_id is null then f.result
             else f.result || ', "balance": "' || trim_scale(coalesce(b.balance, 0))::text
                  || '", "negative_balance": ' || (coalesce(b.balance, 0) < 0)::text || '}'
             end, ', ' order by f.n) || ']}')::jsonb
  into answer
  from unnest(result_texts, result_users) with ordinality as f(result, user_id, n)
  left join public.user_balances b on b.user_id = f.user_id;
  return answer;
end
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.batch_error(text, text, text) from public;
revoke execute on function private.parse_usage_record(jsonb, integer) from public;
revoke execute on function private.try_chargeable_price(text, text, timestamptz) from public;
revoke execute on function public.record_usage_batch(jsonb) from public, anon, authenticated;
grant execute on function public.record_usage_batch(jsonb) to service_role;
