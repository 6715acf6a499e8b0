-- 20261130020000_usage_lookups_read_one_partition.sql
--
-- Every lookup of a usage record by request_id on the charging path reads ONE partition of
-- usage_records, not all of them (issue 12 §2 and §4). usage_records is partitioned by month on
-- created_at (20261129210100), so `where request_id = $1` alone cannot be pruned: each call
-- planned (a new session: ~43 ms with 17 partitions) and executed a probe of every partition's
-- (request_id, created_at) index, and a generic plan locked every partition and its indexes
-- (a charge held ~80 relation locks, most past the 16 fast-path slots, in the shared lock
-- table). The request-id claim (private.usage_request_ids: request_id → created_at, written by
-- the BEFORE INSERT trigger in the same transaction as the row) already knows the partition:
--   * a charge first reads the claim (one primary-key probe of a narrow table). No claim: a new
--     request, and usage_records is not read at all, only inserted into (tuple routing opens
--     the one partition of now()).
--   * a claim: the row is read with `created_at = <the claim's value>` by EXECUTE, planned
--     for the values each time: the plan keeps only that partition (the planner locks no
--     other). Not a static statement: after a few calls PL/pgSQL keeps a generic plan, which
--     locks every partition before it prunes them when it starts. Not one statement with a
--     subquery for the value: that prunes only while running, after every partition was
--     planned, locked and opened.
--   * a claim whose row is gone by the second statement (its user was deleted in between) is
--     a new request, as it was when the row was not found.
-- Replaces (same signatures, results, errors and locks taken on the row):
--   private.record_one (20261129200001)          the replay probe and the re-read after a
--                                                concurrent retry won
--   public.refund_usage (20251130000004)         the usage row it refunds (FOR SHARE)
--   private.queue_refund_adjustment (20261129220001)  the refunded row's periods
--   public.reprice_usage (20251130000004)        each re-priced row's UPDATE (by id: + its
--                                                created_at, which the loop already read)
-- record_usage_batch: 20261130020001, which explains why record_one below clears
-- tokenmeter.usage_claims before its insert. authorize_request's check that a request id is not
-- already recorded usage is 20261130030000's.

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.record_one(..., reservation_id) → usage result JSON, as 20261129200001's: the
-- stored request_id is found through its claim (above). Order: check the input → answer a
-- stored request_id from the stored record (or PT409) → user → metadata.images → price →
-- insert the usage row → settle the hold → the balance row, last. Raises: 22023 invalid_usage,
-- PT409 idempotency_conflict, PT404 user_not_found, PT422 unknown_model / ambiguous_model /
-- price_missing / currency_mismatch; nothing is written then.
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
  claimed_at timestamptz;
begin
  perform private.check_usage(user_id, model, input_tokens, output_tokens, request_id,
    cached_input_tokens, metadata, occurred_at, latency_ms, status);
  -- A retry is answered from the stored record, even if the price list changed since. The
  -- claim says whether there is one and its partition (created_at): a new request reads no
  -- partition, a retry one.
  select r.created_at into claimed_at from private.usage_request_ids r
  where r.request_id = record_one.request_id;
  if found then
    -- The stored row, in its partition. EXECUTE: planned with the values each time, so the
    -- plan holds (and locks) that partition only; PL/pgSQL's cached generic plan, chosen after
    -- a few calls, would lock every partition to prune them when it starts. (A literal, not a
    -- constant: plpgsql_check reads a literal's result type.) No row: it went (its user was
    -- deleted) since the claim was read: a new request.
    execute 'select u.* from public.usage_records u where u.request_id = $1 '
      'and u.created_at = $2'
    into stored using record_one.request_id, claimed_at;
  end if;
  if stored.id is not null then
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

    -- The row trigger claims request_id, whatever the session set (20261130020001).
    perform set_config('tokenmeter.usage_claims', '', true);
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
    if inserted.id is null then  -- a concurrent retry committed first (its claim stopped ours)
      select r.created_at into claimed_at from private.usage_request_ids r
      where r.request_id = record_one.request_id;
      execute 'select u.* from public.usage_records u where u.request_id = $1 '
        'and u.created_at = $2'
      into stored using record_one.request_id, claimed_at;
      replayed := private.replay_usage(stored, user_id, price.provider_id, price.model_id,
        input_tokens, output_tokens, cached_input_tokens, metadata, occurred_at, latency_ms,
        status);
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


-- public.refund_usage(request_id, reason, amount = null) → top_up's keys (kind 'refund',
-- description = reason) + {usage_id, usage_cost}, as 20251130000004's: the usage row is read
-- in the partition its claim names. amount null = the full cost; otherwise 0 < amount <= the
-- usage's current cost. At most one refund per request (ledger unique (kind, reference)).
-- Who may call: service_role. DEFINER: writes the ledger and balances, which no API role may do.
-- Raises: 42501, 22023 invalid_argument / invalid_amount, PT404 usage_not_found.
create or replace function public.refund_usage(
  request_id text, reason text, amount numeric default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  usage public.usage_records;
  refund numeric;
  claimed_at timestamptz;
begin
  perform private.assert_service_role();
  perform private.check_text('request_id', refund_usage.request_id);
  perform private.check_text('reason', refund_usage.reason);
  -- FOR SHARE: a reprice_usage run holding this row (FOR UPDATE) finishes first and the refund
  -- reads the cost it wrote; a run that comes after waits for this refund and then skips it.
  -- The claim gives the row's partition (created_at); no claim: no record (null matches none).
  -- EXECUTE: planned with the values, so only that partition is locked (as record_one).
  select r.created_at into claimed_at from private.usage_request_ids r
  where r.request_id = refund_usage.request_id;
  execute 'select u.* from public.usage_records u where u.request_id = $1 '
    'and u.created_at = $2 for share'
  into usage using refund_usage.request_id, claimed_at;
  if usage.id is null then
    raise exception using errcode = 'PT404', message = 'usage_not_found',
      detail = format('no usage record for request_id %s', refund_usage.request_id);
  end if;
  refund := coalesce(refund_usage.amount, usage.cost);
  perform private.check_amount('amount', refund);
  if refund > usage.cost then
    raise exception using errcode = '22023', message = 'invalid_amount',
      detail = format('amount must not exceed the usage cost %s', trim_scale(usage.cost));
  end if;
  return private.post_ledger_entry('refund', usage.user_id, refund, usage.request_id,
                                   refund_usage.reason)
    || jsonb_build_object('usage_id', usage.id, 'usage_cost', private.money(usage.cost));
end
$$;

-- private.queue_refund_adjustment(): AFTER INSERT of a 'refund' ledger entry, as
-- 20261129220001's: the refunded amount in the periods of the usage record it refunds
-- (reference = request_id), read in the partition its claim names.
create or replace function private.queue_refund_adjustment() returns trigger
language plpgsql set search_path = '' as $$
declare
  claimed_at timestamptz;
begin
  select r.created_at into claimed_at from private.usage_request_ids r
  where r.request_id = new.reference;
  -- EXECUTE: planned with the values, so only the row's partition is locked (as record_one).
  execute 'insert into public.usage_summary_adjustments (kind, occurred_at, user_id, '
    'provider_id, model_id, api_key_id, subscription_id, currency, refunded) '
    'select ''refund'', u.occurred_at, u.user_id, u.provider_id, u.model_id, m.api_key_id, '
    'm.subscription_id, u.currency, $3 from public.usage_records u '
    'left join public.metered_requests m on m.request_id = u.request_id '
    'where u.request_id = $1 and u.created_at = $2'
  using new.reference, claimed_at, new.amount;
  return null;
end
$$;

-- public.reprice_usage(since, until, model = null, provider = null, dry_run = false) →
-- {records, changed, skipped, total_delta, adjustments: [{user_id, delta}], audit_id, dry_run},
-- as 20251130000004's; each row's UPDATE names its partition (created_at) besides its id.
-- Who may call: service_role (DEFINER: the only writer of usage, ledger and balances).
-- Raises: 42501, 22023 invalid_argument.
create or replace function public.reprice_usage(
  since timestamptz, until timestamptz, model text default null, provider text default null,
  dry_run boolean default false
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  u public.usage_records;
  price public.model_pricing;
  new_cost numeric;
  counts integer[] := array[0, 0, 0];  -- records, changed, skipped
  user_ids uuid[] := '{}'::uuid[];
  deltas numeric[] := '{}'::numeric[];
  adjustments jsonb := '[]'::jsonb;
  total numeric := 0;
  run_id bigint;
  adj record;
begin
  perform private.assert_service_role();
  if since is null or until is null or not isfinite(since) or not isfinite(until)
     or since >= until then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'since and until must be finite timestamps with since < until';
  end if;

  for u in
    select r.* from public.usage_records r
    where r.occurred_at >= reprice_usage.since and r.occurred_at < reprice_usage.until
      and (reprice_usage.model is null or r.model_id = reprice_usage.model
           or r.requested_model = reprice_usage.model)
      and (reprice_usage.provider is null or r.provider_id = reprice_usage.provider)
    order by r.id
    -- Two runs over the same window serialise here (in id order: no deadlock); the second
    -- re-reads the costs the first wrote and finds nothing left to adjust.
    for update
  loop
    counts[1] := counts[1] + 1;
    -- A refunded request keeps the cost its refund was computed from: re-pricing it would
    -- credit (or charge) the user again for a request already given back. Looked up after the
    -- row lock, by a new statement: it sees a refund that committed while this run waited
    -- (refund_usage locks the usage row too).
    if exists (select 1 from public.ledger_entries l
               where l.kind = 'refund' and l.reference = u.request_id) then
      counts[3] := counts[3] + 1;
      continue;
    end if;
    begin
      price := private.chargeable_price(u.provider_id, u.model_id, u.occurred_at);
    exception when sqlstate 'PT422' then
      counts[3] := counts[3] + 1;
      continue;
    end;
    if price.currency <> u.currency then
      counts[3] := counts[3] + 1;
      continue;
    end if;
    price := private.effective_price(price, u.input_tokens);
    new_cost := private.usage_cost(price, u.input_tokens, u.output_tokens,
                                   u.cached_input_tokens, u.images);
    if new_cost = u.cost and price.id is not distinct from u.pricing_id then
      continue;
    end if;
    if new_cost <> u.cost then
      counts[2] := counts[2] + 1;
      user_ids := user_ids || u.user_id;
      deltas := deltas || (new_cost - u.cost);
    end if;
    if not dry_run then
      perform set_config('tokenmeter.repricing', 'on', true);
      update public.usage_records r set
        cost = new_cost, price_per_input_token = price.price_per_input_token,
        price_per_output_token = price.price_per_output_token,
        price_per_cached_input_token = coalesce(price.price_per_cached_input_token,
                                                price.price_per_input_token),
        price_per_request = price.price_per_request, price_per_image = price.price_per_image,
        pricing_id = price.id,
        long_context = price.long_context_threshold is not null
                       and u.input_tokens > price.long_context_threshold,
        original_cost = coalesce(r.original_cost, r.cost), repriced_at = now()
      where r.id = u.id and r.created_at = u.created_at;  -- its partition only
      perform set_config('tokenmeter.repricing', 'off', true);
    end if;
  end loop;

  for adj in
    select d.user_id, sum(d.delta) as delta
    from unnest(user_ids, deltas) as d(user_id, delta)
    group by d.user_id having sum(d.delta) <> 0 order by d.user_id
  loop
    adjustments := adjustments || jsonb_build_object('user_id', adj.user_id,
                                                     'delta', private.money(adj.delta));
    total := total + adj.delta;
  end loop;

  if not dry_run then
    insert into public.price_audit (actor_role, actor_user_id, provider_id, model_id, action,
                                    old, new)
    values (coalesce(nullif(current_setting('role', true), 'none'), session_user::text),
            null, reprice_usage.provider, reprice_usage.model, 'reprice',
            jsonb_build_object('since', since, 'until', until),
            jsonb_build_object('records', counts[1], 'changed', counts[2],
                               'skipped', counts[3], 'total_delta', private.money(total),
                               'adjustments', adjustments))
    returning id into run_id;
    for adj in select (a ->> 'user_id')::uuid as user_id, (a ->> 'delta')::numeric as delta
               from jsonb_array_elements(adjustments) a loop
      perform private.post_ledger_entry('adjustment', adj.user_id, -adj.delta,
        format('reprice:%s:%s', run_id, adj.user_id),
        format('reprice of usage %s .. %s', since, until));
    end loop;
  end if;

  return jsonb_build_object('records', counts[1], 'changed', counts[2], 'skipped', counts[3],
    'total_delta', private.money(total), 'adjustments', adjustments, 'audit_id', run_id,
    'dry_run', dry_run);
end
$$;

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
-- CREATE OR REPLACE keeps each function's grants (refund_usage, reprice_usage: service_role).
