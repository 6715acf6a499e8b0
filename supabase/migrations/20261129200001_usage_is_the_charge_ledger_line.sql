-- 20261129200001_usage_is_the_charge_ledger_line.sql
--
-- A charge is written once: its usage record IS its ledger line (issue 12, 4.). record_usage,
-- settle_usage, complete_request (through record_usage / settle_usage) and record_usage_batch
-- no longer write a 'usage' ledger entry next to each usage record; the ledger keeps every
-- other movement (signup grants, top-ups, adjustments — re-pricing's among them — and refunds).
-- Why: the second row, its three indexes, five CHECKs and its per-statement user check were
-- about a third of record_usage's server time, for a copy of an amount the usage row already
-- holds (docs/benchmarks.md, "The charge is its own ledger line"). Lago and OpenMeter derive
-- usage debits from usage the same way.
--
-- The identity (checked by balance_audit(), exactly):
--   balance = Σ ledger_entries.amount − Σ charged(usage record)
--   charged(u) = coalesce(u.original_cost, u.cost): the amount the record charged when it was
--   recorded. Re-pricing changes cost and keeps the first charge in original_cost (20251101000007);
--   its difference is the 'adjustment' ledger entry it writes per user and run, as before, so a
--   re-priced request's net charge = charged − adjustment = its new cost, and the adjustment
--   stays a visible, referenced movement. A refund stays a 'refund' ledger entry referencing the
--   request_id (at most one per request, at most the current cost: unchanged).
-- charged(u) can never change once written: usage_records allows an UPDATE only inside
-- reprice_usage, and now only if original_cost keeps the first charge (guard below). Changing a
-- stored cost behind the functions' back (triggers disabled) shows in balance_audit().
-- Users still see every movement: public.balance_movements lists ledger entries and usage
-- charges together, as ledger_entries used to (security_invoker: RLS of both tables applies).
--
-- Data: each existing 'usage' ledger entry equals its record's charge (the two were written in
-- one statement or transaction); those entries are deleted, which leaves every balance's
-- identity as it was. An entry that does not match (none can, short of a manual edit) stops the
-- migration rather than changing what anyone was charged. 'usage' is no longer a ledger kind.
--
-- Replaces: private.record_one and public.record_usage_batch (20251201000007),
-- public.balance_audit (20251018000006), private.guard_usage_update (20251101000007): same
-- signatures, results and error codes. usage_records gains no column; no signature changes.
-- Adds: view public.balance_movements.

-- ── Tables ────────────────────────────────────────────────────────────────────────────────
do $$
declare
  unmatched bigint;
begin
  delete from public.ledger_entries l
  using public.usage_records u
  where l.kind = 'usage' and u.request_id = l.reference and u.user_id = l.user_id
    and u.currency = l.currency and l.amount = -coalesce(u.original_cost, u.cost);
  select count(*) into unmatched from public.ledger_entries l where l.kind = 'usage';
  -- A plain message: this stops a migration run by an operator and never reaches an API client
  -- (so it is not one of the API's error codes).
  if unmatched > 0 then
    raise exception '% usage ledger entries differ from their usage record''s charge', unmatched
      using errcode = '23514',
      hint = 'fix them (or turn them into adjustments) before this migration';
  end if;
end
$$;

alter table public.ledger_entries
  drop constraint ledger_entries_kind_valid,
  drop constraint ledger_entries_amount_sign,
  add constraint ledger_entries_kind_valid
    check (kind in ('signup_grant', 'top_up', 'adjustment', 'refund')),
  add constraint ledger_entries_amount_sign
    check (case kind when 'adjustment' then true else amount > 0 end);

comment on table public.ledger_entries is
  'Every balance movement but usage charges (each usage record is its own charge''s line): '
  'balance = sum(amount) - sum(coalesce(usage_records.original_cost, usage_records.cost)). '
  'public.balance_movements lists both.';
comment on column public.user_balances.balance is
  'Exact prepaid balance; may go negative (usage is a fact). Always = sum(ledger_entries.amount) '
  '- sum of the user''s usage charges (coalesce(original_cost, cost)): balance_audit() checks it.';
comment on column public.usage_records.original_cost is
  'The amount this record charged when recorded, kept here once reprice_usage changes cost '
  '(null until then). coalesce(original_cost, cost) is the record''s ledger line; it never changes.';

-- ── Views ─────────────────────────────────────────────────────────────────────────────────
-- balance_movements: every movement of a balance: the ledger entries, and one 'usage' line per
-- usage record that charged something (amount = −charged, reference = request_id), as
-- ledger_entries listed them before this migration; Σ amount of a user = their balance.
-- id is the row's id within its source. security_invoker: a user reads their own rows only
-- (the policies of ledger_entries and usage_records).
create view public.balance_movements with (security_invoker = true) as
select 'ledger'::text as source, l.id, l.user_id, l.kind, l.amount, l.currency, l.reference,
       l.description, l.created_at
from public.ledger_entries l
union all
select 'usage'::text, u.id, u.user_id, 'usage'::text, -coalesce(u.original_cost, u.cost),
       u.currency, u.request_id, null::text, u.created_at
from public.usage_records u
where coalesce(u.original_cost, u.cost) > 0;
comment on view public.balance_movements is
  'Every balance movement: ledger entries and usage charges (balance = sum(amount)). '
  'Rows are those of the caller (RLS of ledger_entries and usage_records).';

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.guard_usage_update(): BEFORE UPDATE on usage_records. Raises 55000 immutable_row
-- unless the transaction-local flag tokenmeter.repricing is 'on' (set only by reprice_usage),
-- nothing but the cost / price snapshot columns changes, and original_cost holds the record's
-- first charge (this migration: the charge is the record's ledger line and never moves).
create or replace function private.guard_usage_update() returns trigger
language plpgsql set search_path = '' as $$
declare
  reprice_columns constant text[] := array['cost', 'price_per_input_token',
    'price_per_output_token', 'price_per_cached_input_token', 'price_per_request',
    'price_per_image', 'pricing_id', 'long_context', 'original_cost', 'repriced_at'];
begin
  if coalesce(current_setting('tokenmeter.repricing', true), '') <> 'on'
     or (to_jsonb(new) - reprice_columns) <> (to_jsonb(old) - reprice_columns)
     or new.original_cost is distinct from coalesce(old.original_cost, old.cost) then
    raise exception using errcode = '55000', message = 'immutable_row',
      detail = format('rows of %I.%I are facts and are never updated', tg_table_schema,
                      tg_table_name);
  end if;
  return new;
end
$$;

-- public.balance_audit() → rows (user_id, balance, ledger_total, difference) for every user
-- whose balance differs from the sum of their ledger lines: ledger_total = Σ ledger entries −
-- Σ usage charges (coalesce(original_cost, cost)). Always empty.
-- Who may call: service_role. SECURITY INVOKER (service_role reads the three tables).
create or replace function public.balance_audit()
returns table (user_id uuid, balance numeric, ledger_total numeric, difference numeric)
language sql stable set search_path = '' as $$
  select coalesce(b.user_id, l.user_id), coalesce(b.balance, 0), coalesce(l.total, 0),
         coalesce(b.balance, 0) - coalesce(l.total, 0)
  from public.user_balances b
  full join (select m.user_id, sum(m.amount) as total
             from (select e.user_id, e.amount from public.ledger_entries e
                   union all
                   select u.user_id, -coalesce(u.original_cost, u.cost)
                   from public.usage_records u) m
             group by m.user_id) l on l.user_id = b.user_id
  where coalesce(b.balance, 0) <> coalesce(l.total, 0)
  order by 1
$$;

-- ── record_one (record_usage, settle_usage; complete_request through them) ────────────────
-- private.record_one(..., reservation_id) → usage result JSON, as 20251201000007's, which it
-- restates without the 'usage' ledger entry: the usage record is the charge's ledger line.
-- Order: check the input → answer a stored request_id from the stored record (or PT409) →
-- user → metadata.images → price → insert the usage row → settle the hold → the balance row,
-- last. Raises: 22023 invalid_usage, PT409 idempotency_conflict, PT404 user_not_found,
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
-- public.record_usage_batch(records) → {results: [...], recorded, replayed, failed}: contract,
-- results, error codes and the order of writes as 20251201000007's body, which this restates
-- without the 'usage' ledger entries (step 3 inserted them with the usage rows).
-- Who may call: service_role. DEFINER: the only writer of usage, ledger and balances.
-- Raises: 42501 forbidden, 22023 invalid_argument (records); PT422 currency_mismatch and
-- constraint violations abort the whole batch; per-record errors are returned.
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

  -- 3. Insert the first record of each new request_id, in request_id order (as before); each
  -- is its charge's ledger line (20261129200001). A request_id a concurrent call committed
  -- meanwhile is skipped here and answered in step 4.
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


-- ── Grants ────────────────────────────────────────────────────────────────────────────────
-- CREATE OR REPLACE kept the functions' grants. The view: read by users (their own rows) and
-- service_role, like the two tables it lists.
revoke all on public.balance_movements from public, anon, authenticated, service_role;
grant select on public.balance_movements to authenticated, service_role;
