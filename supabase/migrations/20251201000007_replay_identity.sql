-- 20251201000007_replay_identity.sql
--
-- A replay must be the same request. record_usage, settle_usage and record_usage_batch answer
-- a stored request_id from the stored record only when the call carries the same request;
-- anything else is PT409 idempotency_conflict, and nothing is written.
-- Why: the identity compared only the user, the model, the provider and the token counts, so a
-- retry with another metadata.images (which the cost depends on), status, occurred_at or
-- latency_ms was answered as a replay of the original: {"images":"1"} recorded at $0.01, then
-- {"images":"500"} under the same request_id answered 200 replayed at $0.01 (issue 9, 1.).
--
-- The identity rule (one function, private.usage_mismatch, for all three callers): EVERY
-- argument the stored row keeps must be the same as the original's —
--   user_id, input_tokens, output_tokens, cached_input_tokens, status: equal;
--   metadata: equal as JSON (jsonb equality: key order and whitespace do not matter, types do:
--     {"images": 1} and {"images": "1"} are different requests), so metadata.images too;
--   latency_ms: equal, or absent on both;
--   occurred_at: equal; left out (it defaults to now(), the call's transaction time) it means
--     "when the call is recorded", which on a replay is when the original was recorded: it
--     matches a row whose original also left it out (occurred_at = created_at), never one that
--     named another time. A client that sets occurred_at resends the same value (the result's
--     occurred_at is exact to the microsecond);
--   model: the name the original sent or the model it was priced as (requested_model /
--     model_id: an alias retry replays by the alias or by the priced name, 20251201000001);
--   provider: likewise when given; left out it matches, because the row does not keep whether
--     the original named one (requested_provider is NULL both for "none" and for the priced
--     name), and the model alone already chose the priced provider.
-- A left-out argument takes its default (metadata {}, status 'success', latency_ms null,
-- cached_input_tokens 0) and is compared as such. The derived columns (prices, cost, currency,
-- pricing_id, images, long_context) follow from these and the price in effect, and a replay
-- never re-prices: it answers from the stored row.
-- The PT409 detail names the first argument that differs ("metadata differs"), in the order
-- above, so a client can see what its retry changed.
--
-- Replaces: private.record_one (the body of record_usage and settle_usage) and
-- public.record_usage_batch, same signatures, contracts and error precedence; only the identity
-- changes. private.same_usage(7 args) and private.replay_usage(7 args) are dropped for
-- private.usage_mismatch / private.replay_usage (11 args). The insert path of record_usage is
-- unchanged statement for statement: the new comparisons run only when a stored row answers.
-- Error codes: unchanged (PT409 idempotency_conflict; catalog in 20251018000005).

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.usage_mismatch(stored, <record_usage's arguments but request_id>) → the name of the
-- first argument that makes this call another request than the stored one, or NULL when it is
-- the same request (the rule above). Never NULL for a NULL stored row ('user_id'). STABLE:
-- reads now(). Raises nothing.
create function private.usage_mismatch(
  stored public.usage_records, user_id uuid, provider text, model text, input_tokens bigint,
  output_tokens bigint, cached_input_tokens bigint, metadata jsonb, occurred_at timestamptz,
  latency_ms integer, status text
) returns text
language plpgsql stable set search_path = '' as $$
begin
  return case
    when stored.user_id is distinct from usage_mismatch.user_id then 'user_id'
    when not coalesce(stored.model_id = usage_mismatch.model
                      or stored.requested_model = usage_mismatch.model, false) then 'model'
    when usage_mismatch.provider is not null
         and not coalesce(stored.provider_id = usage_mismatch.provider
                          or stored.requested_provider = usage_mismatch.provider, false)
      then 'provider'
    when stored.input_tokens is distinct from usage_mismatch.input_tokens then 'input_tokens'
    when stored.output_tokens is distinct from usage_mismatch.output_tokens then 'output_tokens'
    when stored.cached_input_tokens is distinct from usage_mismatch.cached_input_tokens
      then 'cached_input_tokens'
    when stored.metadata is distinct from usage_mismatch.metadata then 'metadata'
    -- now() = the argument's default: "when recorded", i.e. the original's created_at
    when stored.occurred_at is distinct from
         case when usage_mismatch.occurred_at = now() then stored.created_at
              else usage_mismatch.occurred_at end then 'occurred_at'
    when stored.latency_ms is distinct from usage_mismatch.latency_ms then 'latency_ms'
    when stored.status is distinct from usage_mismatch.status then 'status'
  end;
end
$$;

-- private.replay_usage(stored, <record_usage's arguments but request_id>) → the stored
-- record's result (replayed = true, the user's current balance), or PT409
-- idempotency_conflict naming the first argument that differs.
create function private.replay_usage(
  stored public.usage_records, user_id uuid, provider text, model text, input_tokens bigint,
  output_tokens bigint, cached_input_tokens bigint, metadata jsonb, occurred_at timestamptz,
  latency_ms integer, status text
) returns jsonb
language plpgsql stable set search_path = '' as $$
declare
  mismatch text := private.usage_mismatch(stored, user_id, provider, model, input_tokens,
    output_tokens, cached_input_tokens, metadata, occurred_at, latency_ms, status);
begin
  if mismatch is not null then
    raise exception using errcode = 'PT409', message = 'idempotency_conflict',
      detail = format('request_id %s was already recorded with another payload (%s differs)',
                      stored.request_id, mismatch);
  end if;
  return private.usage_result(stored,
    (select b.balance from public.user_balances b where b.user_id = stored.user_id), true);
end
$$;

-- ── record_one (record_usage, settle_usage) ───────────────────────────────────────────────
-- private.record_one(..., reservation_id) → usage result JSON. The body of record_usage and
-- settle_usage; reservation_id (or null) is the hold to mark settled, whether this call
-- recorded the usage or found it already recorded (replay).
-- A stored request_id is a replay only when private.usage_mismatch finds no difference (this
-- migration); the rest is 20251201000005's body, statement for statement.
-- Order (unchanged): check the input → answer a stored request_id from the stored record (or
-- PT409) → user → metadata.images → price → insert the usage row, then its ledger row → settle
-- the hold → the balance row, last.
-- Raises: 22023 invalid_usage, PT409 idempotency_conflict, PT404 user_not_found,
-- PT422 unknown_model / ambiguous_model / price_missing / currency_mismatch; nothing is
-- written then.
create or replace function private.record_one(
  user_id uuid, model text, input_tokens bigint, output_tokens bigint, request_id text,
  provider text, cached_input_tokens bigint, metadata jsonb, occurred_at timestamptz,
  latency_ms integer, status text, reservation_id bigint
) returns jsonb
language plpgsql set search_path = '' as $$
declare
  stored public.usage_records;
  inserted public.usage_records;
  price public.model_pricing;
  images_text text := record_one.metadata ->> 'images';
  images integer;
  cost numeric(24,12);
  replayed jsonb;
  new_balance numeric(24,12);
begin
  perform private.check_usage(user_id, model, input_tokens, output_tokens, request_id,
    cached_input_tokens, metadata, occurred_at, latency_ms, status);
  -- A retry is answered from the stored record, even if the price list changed since.
  select u.* into stored from public.usage_records u where u.request_id = record_one.request_id;
  if found then
    replayed := private.replay_usage(stored, user_id, provider, model, input_tokens,
      output_tokens, cached_input_tokens, metadata, occurred_at, latency_ms, status);
  else
    if not exists (select 1 from auth.users u where u.id = record_one.user_id) then
      raise exception using errcode = 'PT404', message = 'user_not_found',
        detail = format('no user %s', record_one.user_id);
    end if;
    if images_text is not null and (images_text !~ '^[0-9]{1,6}$' or images_text::int > 100000)
    then
      raise exception using errcode = '22023', message = 'invalid_usage',
        detail = 'metadata.images must be an integer between 0 and 100000';
    end if;
    images := coalesce(images_text::int, 0);
    price := private.chargeable_price(provider, model, occurred_at);
    if price.long_context_threshold is not null
       and record_one.input_tokens > price.long_context_threshold then
      price := private.effective_price(price, record_one.input_tokens);  -- the prices used
    end if;
    cost := private.usage_cost(price, input_tokens, output_tokens, cached_input_tokens, images);

    insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
      output_tokens, cached_input_tokens, price_per_input_token, price_per_output_token,
      price_per_cached_input_token, price_per_request, price_per_image, images, long_context,
      requested_model, requested_provider, pricing_id, cost, currency, latency_ms, status,
      metadata, occurred_at)
    values (record_one.user_id, record_one.request_id, price.provider_id, price.model_id,
      record_one.input_tokens, record_one.output_tokens, record_one.cached_input_tokens,
      price.price_per_input_token, price.price_per_output_token,
      coalesce(price.price_per_cached_input_token, price.price_per_input_token),
      price.price_per_request, price.price_per_image, images,
      price.long_context_threshold is not null
        and record_one.input_tokens > price.long_context_threshold,
      nullif(record_one.model, price.model_id), nullif(record_one.provider, price.provider_id),
      price.id, cost, price.currency, record_one.latency_ms, record_one.status,
      record_one.metadata, record_one.occurred_at)
    on conflict on constraint usage_records_request_id_key do nothing
    returning * into inserted;
    if inserted.id is null then  -- a concurrent retry committed first
      select u.* into stored from public.usage_records u
      where u.request_id = record_one.request_id;
      replayed := private.replay_usage(stored, user_id, price.provider_id, price.model_id,
        input_tokens, output_tokens, cached_input_tokens, metadata, occurred_at, latency_ms,
        status);
    elsif cost > 0 then
      insert into public.ledger_entries (user_id, kind, amount, currency, reference)
      values (record_one.user_id, 'usage', -cost, price.currency, record_one.request_id);
    end if;
  end if;
  -- Settling closes the hold however the usage came to be recorded (before the balance row,
  -- which stays the last lock taken).
  if reservation_id is not null then
    update public.credit_reservations r set status = 'settled', closed_at = now()
    where r.id = record_one.reservation_id and r.status = 'held';
  end if;
  if replayed is not null then
    return replayed;
  end if;
  if cost > 0 then
    new_balance := private.apply_balance_delta(user_id, -cost, price.currency);
  else
    -- Nothing to charge, so no balance row is locked: lock the user instead (20251201000004).
    perform 1 from auth.users u where u.id = record_one.user_id for key share of u;
    if not found then
      raise exception using errcode = 'PT404', message = 'user_not_found',
        detail = format('no user %s', record_one.user_id);
    end if;
    select b.balance into new_balance from public.user_balances b
    where b.user_id = record_one.user_id;
  end if;
  return private.usage_result(inserted, new_balance, false);
end
$$;

-- ── record_usage_batch ────────────────────────────────────────────────────────────────────
-- public.record_usage_batch(records) → {results: [...], recorded, replayed, failed}.
-- Contract unchanged (20251018000008). records: JSON array of 1 to 1000 objects
-- with record_usage's parameter names as keys (user_id, model, input_tokens, output_tokens,
-- request_id, provider, cached_input_tokens, metadata, occurred_at, latency_ms, status).
-- results[i] (same order as records):
--   ok:    {index, ok: true, ...record_usage's keys}; balance = the user's balance after the batch
--   error: {index, ok: false, request_id, error: {code, message, detail}}
-- A stored request_id is answered from the stored record before pricing (or PT409); the same
-- request_id twice in the batch is recorded once (the first) and replayed (or PT409) after.
-- Same request = private.usage_mismatch finds no difference (this migration), in step 2 for a
-- row stored before the batch and in step 4 for one stored meanwhile or earlier in the batch;
-- the PT409 detail names the argument that differs. Otherwise 20251201000006's body.
-- Who may call: service_role. DEFINER: the only writer of usage, ledger and balances.
-- Raises: 42501 forbidden, 22023 invalid_argument (records); PT422 currency_mismatch and
-- constraint violations abort the whole batch, as before; per-record errors are returned.
create or replace function public.record_usage_batch(records jsonb) returns jsonb
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

-- ── The 7-argument identity, replaced ─────────────────────────────────────────────────────
drop function private.replay_usage(public.usage_records, uuid, text, text, bigint, bigint,
                                   bigint);
drop function private.same_usage(public.usage_records, uuid, text, text, bigint, bigint, bigint);

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.usage_mismatch(public.usage_records, uuid, text, text, bigint,
  bigint, bigint, jsonb, timestamptz, integer, text) from public;
revoke execute on function private.replay_usage(public.usage_records, uuid, text, text, bigint,
  bigint, bigint, jsonb, timestamptz, integer, text) from public;
