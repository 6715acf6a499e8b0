-- 20251130000004_usage_and_charging.sql
--
-- Metering: one usage record per metered request, charged at its real cost (record_usage), given
-- back (refund_usage) or re-costed after a price correction (reprice_usage). Part of the 0.1.0
-- baseline (CHANGELOG.md); the batch form is 20251130000005, holds before the provider call
-- 20251130000006.
--
-- A usage record is a fact and is never dropped: it is charged at its real cost even if the
-- balance goes negative (the result says so); enforcement happens before the provider call
-- (check_balance / reserve_credit / authorize_request). The record snapshots the prices actually
-- used (long-context tier applied), price_per_image and images, the name the client asked for
-- (requested_model / requested_provider, when an alias or pattern resolved it) and the reprice
-- bookkeeping (original_cost, repriced_at). Write order, for the shortest lock on a busy user's
-- balance row: usage row, ledger row, (reservation), balance row LAST.
--
-- Idempotent on request_id, and a replay must be the same request: a stored request_id is
-- answered from the stored record (replayed = true, no second charge, never re-priced) only when
-- EVERY argument the stored row keeps is the same as the original's (private.usage_mismatch):
--   user_id, input_tokens, output_tokens, cached_input_tokens, status: equal;
--   metadata: equal as JSON (jsonb equality: key order and whitespace do not matter, types do:
--     {"images": 1} and {"images": "1"} are different requests), so metadata.images too;
--   latency_ms: equal, or absent on both;
--   occurred_at: equal; left out (it defaults to now(), the call's transaction time) it means
--     "when the call is recorded", which on a replay is when the original was recorded: it
--     matches a row whose original also left it out (occurred_at = created_at), never one that
--     named another time. A client that sets occurred_at resends the same value;
--   model: the name the original sent or the model it was priced as (requested_model /
--     model_id: an alias retry replays by the alias or by the priced name);
--   provider: likewise when given; left out it matches, because the row does not keep whether
--     the original named one, and the model alone already chose the priced provider.
-- Anything else is PT409 idempotency_conflict naming the first argument that differs, and
-- nothing is written. A left-out argument takes its default (metadata {}, status 'success',
-- latency_ms null, cached_input_tokens 0) and is compared as such.
--
-- Refunds: a ledger entry of kind 'refund' whose reference is the usage's request_id, so a
-- request is refunded at most once and a retried refund is idempotent. Re-pricing:
-- reprice_usage(since, until) recomputes every usage record in [since, until) with the price
-- version in effect at its occurred_at (same lookup and formula as record_usage), records the
-- new cost and prices on the row (the first charge stays in original_cost; the update trigger
-- allows ONLY these columns, and only while reprice_usage runs), writes ONE ledger 'adjustment'
-- per user for the sum of their differences (reference 'reprice:<audit_id>:<user_id>') and one
-- price_audit row (action 'reprice') whose id identifies the run. A refunded record is never
-- re-priced, so a refunded request's net charge (usage entry + adjustments + refund) is what its
-- refund left — 0 for a full refund — whatever order refunds and re-prices come in; the two
-- serialise on the usage row (reprice_usage holds it FOR UPDATE, refund_usage FOR SHARE), lock
-- order usage row → balance row in both.
-- Error codes (catalog: 20251018000003): 22023 invalid_usage / invalid_argument /
-- invalid_amount, PT404 user_not_found / usage_not_found, PT409 idempotency_conflict, PT422
-- unknown_model / ambiguous_model / price_missing / currency_mismatch, 42501 forbidden,
-- 55000 immutable_row.

-- ── usage_records: one row per metered request ──────────────────────────────────────────────
create table public.usage_records (
  id bigint generated always as identity primary key,
  -- An auth.users id: checked per statement by usage_records_user_exists (20251018000003).
  user_id uuid not null,
  -- Client-chosen idempotency key, globally unique (simplest for clients to reason about).
  request_id text not null,
  provider_id text not null,
  model_id text not null,
  -- input_tokens includes cached_input_tokens (OpenAI's usage shape): the uncached part costs
  -- the input price, the cached part the cached price.
  input_tokens bigint not null,
  output_tokens bigint not null,
  cached_input_tokens bigint not null default 0,
  -- Snapshot of the unit prices used (tier applied), so a later price change never re-prices
  -- history.
  price_per_input_token numeric(20,12) not null,
  price_per_output_token numeric(20,12) not null,
  price_per_cached_input_token numeric(20,12) not null,
  price_per_request numeric(20,12) not null,
  pricing_id uuid,
  cost numeric(24,12) not null,
  currency text not null default 'USD',
  latency_ms integer,
  status text not null default 'success',
  metadata jsonb not null default '{}'::jsonb,
  occurred_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  price_per_image numeric(20,12) not null default 0,
  images integer not null default 0,
  long_context boolean not null default false,
  requested_model text,
  requested_provider text,
  original_cost numeric(24,12),
  repriced_at timestamptz,
  constraint usage_records_request_id_key unique (request_id),
  constraint usage_records_request_id_length check (length(request_id) between 1 and 255),
  constraint usage_records_input_tokens_range check (input_tokens between 0 and 10000000),
  constraint usage_records_output_tokens_range check (output_tokens between 0 and 10000000),
  constraint usage_records_cached_input_tokens_range
    check (cached_input_tokens >= 0 and cached_input_tokens <= input_tokens),
  constraint usage_records_cost_range check (cost >= 0 and cost < 1e12),
  constraint usage_records_latency_ms_range check (latency_ms between 0 and 86400000),
  constraint usage_records_status_valid
    check (status in ('success', 'error', 'timeout', 'cancelled')),
  constraint usage_records_metadata_object check (jsonb_typeof(metadata) = 'object'),
  constraint usage_records_currency_iso check (currency ~ '^[A-Z]{3}$'),
  constraint usage_records_images_range check (images between 0 and 100000)
);
create index usage_records_user_id_occurred_at_idx
  on public.usage_records (user_id, occurred_at desc);
comment on column public.usage_records.requested_model is
  'The model name the client sent when it differs from model_id (alias or pattern).';
comment on column public.usage_records.long_context is
  'The long-context tier applied: the price columns hold the above-threshold prices.';
comment on column public.usage_records.original_cost is
  'The cost first charged, kept when reprice_usage() changes cost (NULL = never repriced).';

-- ── Triggers ───────────────────────────────────────────────────────────────────────────────
-- private.guard_usage_update(): BEFORE UPDATE on usage_records. Raises 55000 immutable_row
-- unless the transaction-local flag tokenmeter.repricing is 'on' (set only by reprice_usage)
-- and nothing but the cost / price snapshot columns changes.
create function private.guard_usage_update() returns trigger
language plpgsql set search_path = '' as $$
declare
  reprice_columns constant text[] := array['cost', 'price_per_input_token',
    'price_per_output_token', 'price_per_cached_input_token', 'price_per_request',
    'price_per_image', 'pricing_id', 'long_context', 'original_cost', 'repriced_at'];
begin
  if coalesce(current_setting('tokenmeter.repricing', true), '') <> 'on'
     or (to_jsonb(new) - reprice_columns) <> (to_jsonb(old) - reprice_columns) then
    raise exception using errcode = '55000', message = 'immutable_row',
      detail = format('rows of %I.%I are facts and are never updated', tg_table_schema,
                      tg_table_name);
  end if;
  return new;
end
$$;

create trigger usage_records_forbid_update before update on public.usage_records
  for each row execute function private.guard_usage_update();
create trigger usage_records_user_exists
  after insert on public.usage_records referencing new table as new_rows
  for each statement execute function private.assert_rows_have_users();

-- ── Row level security and policies ───────────────────────────────────────────────────────
alter table public.usage_records enable row level security;
create policy "Users read their own usage records" on public.usage_records
  for select to authenticated using ((select auth.uid()) = user_id);

-- ── Private helpers ───────────────────────────────────────────────────────────────────────
-- private.check_usage(...): every usage field; raises invalid_usage naming the field.
-- Token caps: 0..10,000,000 per request; cached_input_tokens is part of input_tokens.
create function private.check_usage(
  user_id uuid, model text, input_tokens bigint, output_tokens bigint, request_id text,
  cached_input_tokens bigint, metadata jsonb, occurred_at timestamptz, latency_ms integer,
  status text
) returns void
language plpgsql stable set search_path = '' as $$
declare
  bad text;
begin
  bad := case
    when request_id is null or btrim(request_id) = '' or length(request_id) > 255
      then 'request_id must be a non-empty string of at most 255 characters'
    when user_id is null then 'user_id is required'
    when model is null or btrim(model) = '' or length(model) > 255
      then 'model must be a non-empty string of at most 255 characters'
    when input_tokens is null or input_tokens not between 0 and 10000000
      then 'input_tokens must be an integer between 0 and 10000000'
    when output_tokens is null or output_tokens not between 0 and 10000000
      then 'output_tokens must be an integer between 0 and 10000000'
    when cached_input_tokens is null or cached_input_tokens < 0
      or cached_input_tokens > input_tokens
      then 'cached_input_tokens must be between 0 and input_tokens'
    when metadata is null or jsonb_typeof(metadata) <> 'object'
      or pg_column_size(metadata) > 16384
      then 'metadata must be a JSON object of at most 16 kB'
    when occurred_at is null or not isfinite(occurred_at)
      or occurred_at > now() + interval '5 minutes'
      or occurred_at < now() - interval '400 days'
      then 'occurred_at must be a timestamp within the last 400 days, not in the future'
    when latency_ms is not null and latency_ms not between 0 and 86400000
      then 'latency_ms must be between 0 and 86400000'
    when status is null or status not in ('success', 'error', 'timeout', 'cancelled')
      then 'status must be one of success, error, timeout, cancelled'
  end;
  if bad is not null then
    raise exception using errcode = '22023', message = 'invalid_usage', detail = bad;
  end if;
end
$$;

-- private.usage_result(row, balance, replayed) → the JSON returned for a usage record
-- (money as private.money formats it).
create function private.usage_result(
  u public.usage_records, balance numeric, replayed boolean
) returns jsonb
language plpgsql immutable set search_path = '' as $$
begin
  return jsonb_build_object('usage_id', u.id, 'request_id', u.request_id, 'user_id', u.user_id,
    'provider', u.provider_id, 'model', u.model_id, 'input_tokens', u.input_tokens,
    'output_tokens', u.output_tokens, 'cached_input_tokens', u.cached_input_tokens,
    'price_per_input_token', trim_scale(u.price_per_input_token)::text,
    'price_per_output_token', trim_scale(u.price_per_output_token)::text,
    'price_per_cached_input_token', trim_scale(u.price_per_cached_input_token)::text,
    'price_per_request', trim_scale(u.price_per_request)::text,
    'cost', trim_scale(u.cost)::text, 'currency', u.currency, 'status', u.status,
    'occurred_at', u.occurred_at,
    'balance', trim_scale(coalesce(usage_result.balance, 0))::text,
    'negative_balance', coalesce(usage_result.balance, 0) < 0,
    'replayed', usage_result.replayed);
end
$$;

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

-- private.record_one(..., reservation_id) → usage result JSON. The body of record_usage and
-- settle_usage; reservation_id (or null) is the hold to mark settled, whether this call
-- recorded the usage or found it already recorded (replay). It does its work in its own
-- statements (no single-use helpers: every PL/pgSQL call with a SET clause costs a GUC save and
-- restore), and a record that charges nothing takes FOR KEY SHARE on the user's auth.users row
-- (see 20251018000003, 3.).
-- Order: check the input → answer a stored request_id from the stored record (or PT409) → user
-- → metadata.images → price → insert the usage row, then its ledger row → settle the hold →
-- the balance row, last.
-- Raises: 22023 invalid_usage, PT409 idempotency_conflict, PT404 user_not_found,
-- PT422 unknown_model / ambiguous_model / price_missing / currency_mismatch; nothing is
-- written then.
create function private.record_one(
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

-- ── Functions (API) ────────────────────────────────────────────────────────────────────────
-- public.record_usage(...) → {usage_id, request_id, user_id, provider, model, input_tokens,
-- output_tokens, cached_input_tokens, price_per_input_token, price_per_output_token,
-- price_per_cached_input_token, price_per_request, cost, currency, status, occurred_at,
-- balance, negative_balance, replayed}. input_tokens INCLUDES cached_input_tokens.
-- Who may call: service_role. DEFINER: the only writer of usage, ledger and balances.
create function public.record_usage(
  user_id uuid, model text, input_tokens bigint, output_tokens bigint, request_id text,
  provider text default null, cached_input_tokens bigint default 0,
  metadata jsonb default '{}'::jsonb, occurred_at timestamptz default now(),
  latency_ms integer default null, status text default 'success'
) returns jsonb
language plpgsql security definer set search_path = '' as $$
begin
  perform private.assert_service_role();
  return private.record_one(user_id, model, input_tokens, output_tokens, request_id, provider,
    cached_input_tokens, metadata, occurred_at, latency_ms, status, null);
end
$$;

-- public.refund_usage(request_id, reason, amount = null) → top_up's keys (kind 'refund',
-- description = reason) + {usage_id, usage_cost}. amount null = the full cost; otherwise
-- 0 < amount <= the usage's cost (its current cost: after a reprice, the re-priced one).
-- At most one refund per request (ledger unique (kind, reference)); a retry replays it.
-- Who may call: service_role. DEFINER: writes the ledger and balances, which no API role may do.
create function public.refund_usage(
  request_id text, reason text, amount numeric default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  usage public.usage_records;
  refund numeric;
begin
  perform private.assert_service_role();
  perform private.check_text('request_id', refund_usage.request_id);
  perform private.check_text('reason', refund_usage.reason);
  -- FOR SHARE: a reprice_usage run holding this row (FOR UPDATE) finishes first and the refund
  -- reads the cost it wrote; a run that comes after waits for this refund and then skips it.
  select u.* into usage from public.usage_records u where u.request_id = refund_usage.request_id
  for share;
  if not found then
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

-- public.reprice_usage(since, until, model = null, provider = null, dry_run = false) →
-- {records, changed, skipped, total_delta, adjustments: [{user_id, delta}], audit_id, dry_run}.
-- records: usage records in the window (model matches model_id or the name the client sent);
-- changed: those whose cost changes; skipped: those left untouched because they can no longer
-- be priced (no version at occurred_at, price missing, other currency) or because they have a
-- refund (a refunded request is settled by its refund). delta = new cost − old cost (positive =
-- the user is charged more; the ledger adjustment is −delta); total_delta = sum.
-- dry_run: computes everything, writes nothing, audit_id null.
-- Who may call: service_role (DEFINER: the only writer of usage, ledger and balances).
create function public.reprice_usage(
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
      where r.id = u.id;
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

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke all on public.usage_records from public, anon, authenticated, service_role;
grant select on public.usage_records to authenticated, service_role;

revoke execute on function private.guard_usage_update() from public;
revoke execute on function private.check_usage(uuid, text, bigint, bigint, text, bigint, jsonb,
  timestamptz, integer, text) from public;
revoke execute on function private.usage_result(public.usage_records, numeric, boolean)
  from public;
revoke execute on function private.usage_mismatch(public.usage_records, uuid, text, text, bigint,
  bigint, bigint, jsonb, timestamptz, integer, text) from public;
revoke execute on function private.replay_usage(public.usage_records, uuid, text, text, bigint,
  bigint, bigint, jsonb, timestamptz, integer, text) from public;
revoke execute on function private.record_one(uuid, text, bigint, bigint, text, text, bigint,
  jsonb, timestamptz, integer, text, bigint) from public;

revoke execute on function public.record_usage(uuid, text, bigint, bigint, text, text, bigint,
  jsonb, timestamptz, integer, text) from public, anon, authenticated;
revoke execute on function public.refund_usage(text, text, numeric)
  from public, anon, authenticated;
revoke execute on function public.reprice_usage(timestamptz, timestamptz, text, text, boolean)
  from public, anon, authenticated;
grant execute on function public.record_usage(uuid, text, bigint, bigint, text, text, bigint,
  jsonb, timestamptz, integer, text) to service_role;
grant execute on function public.refund_usage(text, text, numeric) to service_role;
grant execute on function public.reprice_usage(timestamptz, timestamptz, text, text, boolean)
  to service_role;
