-- 20261130020001_usage_batch_reads_claimed_partitions.sql
--
-- record_usage_batch reads usage_records only in the partitions its request ids are stored in
-- (issue 12 §2 and §4; the single-record path is 20261130020000, which says why). Its two
-- lookups by request_id joined every partition: step 2's probe of the batch's request ids and
-- step 4's re-read of a candidate that step 3 did not insert. Now:
--   * step 2 first reads the batch's claims (private.usage_request_ids, one primary-key probe
--     per record) for the range of created_at they hold; the probe is planned (the function's
--     custom plans) with that range, so it reads those partitions only, and none when no
--     request id of the batch is stored (a batch of new requests);
--   * step 4 reads back only when step 3 inserted fewer rows than there are candidates (a
--     concurrent call stored one meanwhile, or a request id repeats within the batch), in the
--     range of those candidates' claims; otherwise nothing.
-- A request id stored by a concurrent call after its claim was read is found as before: step
-- 3 skips it and step 4 reads it back.
--
-- Step 3 also claims its request ids in ONE statement (insert into private.usage_request_ids
-- ... on conflict do nothing returning, in request_id order) and inserts the usage rows of the
-- ids it claimed, instead of the BEFORE INSERT trigger claiming row by row: the trigger's
-- PL/pgSQL call and its one-row INSERT per record were ~40 % of the insert step (a quarter of
-- the whole call; docs/benchmarks.md, "After partition pruning"). The claims mean the same:
-- taken in the same order, each waits for a concurrent holder to commit or abort, a held id
-- is skipped. The trigger gets a WHEN: it does not fire while tokenmeter.usage_claims is
-- 'batch', which record_usage_batch sets (transaction-local) for its step 3 statement only
-- and clears after it (an error in between aborts the transaction, or the subtransaction
-- that set it, which undoes the setting). The other writer of usage_records, record_one
-- (record_usage, settle_usage, complete_request), clears it before its insert
-- (20261130020000), so a session that sets it cannot carry it into a charge; no API role may
-- insert into usage_records, and the owner, who may, can disable the trigger anyway. (A SET
-- clause on the functions would scope it better, but setting a placeholder parameter there
-- needs a privilege the migrations' role does not have on Supabase.)
-- Replaces public.record_usage_batch (20261129200001): same signature, results, error codes
-- and order of writes; and the trigger usage_records_claim_request_id (20261129210100).

-- ── Triggers ──────────────────────────────────────────────────────────────────────────────
drop trigger usage_records_claim_request_id on public.usage_records;
create trigger usage_records_claim_request_id
  before insert on public.usage_records
  for each row
  when (coalesce(current_setting('tokenmeter.usage_claims', true), '') <> 'batch')
  execute function private.claim_usage_request_id();

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- public.record_usage_batch(records) → {results: [...], recorded, replayed, failed}, as
-- 20261129200001's but for the two lookups above.
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
  -- created_at range of the usage rows this batch's request ids are stored in (their claims);
  -- 'infinity' .. '-infinity' when none is: an empty range, which the planner prunes to no
  -- partition at all (NULL bounds would not prune: the comparison folds to a constant).
  claimed_from timestamptz;
  claimed_to timestamptz;
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
  -- Which request ids are stored, and in which partitions, comes from their claims
  -- (private.usage_request_ids): the probe of usage_records below is planned (custom plans)
  -- with that range of created_at, the partition key, so it reads only those partitions
  -- (none for a batch of new requests) instead of every month's.
  select coalesce(min(r.created_at), 'infinity'), coalesce(max(r.created_at), '-infinity')
  into claimed_from, claimed_to
  from unnest(items) as i join private.usage_request_ids r on r.request_id = i.request_id;
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
        and u.created_at between claimed_from and claimed_to
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

  -- 3. Claim, then insert, the first record of each new request_id, in request_id order (as
  -- before); each is its charge's ledger line (20261129200001). The claims are one statement
  -- (the per-row claim trigger skips this function's rows, see the header); only the request
  -- ids claimed are inserted. A request_id another call holds is skipped here (the claim waits
  -- for that call to commit, as the trigger's did) and answered in step 4. Both rows get this
  -- transaction's now(), so the claim names the row's partition.
  perform set_config('tokenmeter.usage_claims', 'batch', true);
  with leaders as materialized (
    select distinct on (i.request_id) i.* from unnest(items) as i
    where i.error is null and (i.price).id is not null
    order by i.request_id, i.idx
  ), claimed as (
    insert into private.usage_request_ids as r (request_id, created_at)
    select l.request_id, now() from leaders l
    order by l.request_id
    on conflict (request_id) do nothing
    returning r.request_id
  ), ins as (
    insert into public.usage_records as u (user_id, request_id, provider_id, model_id,
      input_tokens, output_tokens, cached_input_tokens, price_per_input_token,
      price_per_output_token, price_per_cached_input_token, price_per_request, price_per_image,
      images, long_context, requested_model, requested_provider, pricing_id, cost, currency,
      latency_ms, status, metadata, occurred_at, created_at)
    select l.user_id, l.request_id, (l.price).provider_id, (l.price).model_id, l.input_tokens,
      l.output_tokens, l.cached_input_tokens, (l.price).price_per_input_token,
      (l.price).price_per_output_token,
      coalesce((l.price).price_per_cached_input_token, (l.price).price_per_input_token),
      (l.price).price_per_request, (l.price).price_per_image, coalesce(l.images, 0),
      (l.price).long_context_threshold is not null
        and l.input_tokens > (l.price).long_context_threshold,
      nullif(l.model, (l.price).model_id), nullif(l.provider, (l.price).provider_id),
      (l.price).id, l.cost, (l.price).currency, l.latency_ms, l.status, l.metadata,
      l.occurred_at, now()
    from leaders l join claimed c on c.request_id = l.request_id
    order by l.request_id
    on conflict on constraint usage_records_request_id_key do nothing
    returning u.*
  )
  select coalesce(array_agg(row(ins.*)::public.usage_records), '{}') into inserted from ins;
  perform set_config('tokenmeter.usage_claims', '', true);

  -- 4. Results, in order, before any balance row is locked: a candidate not inserted was
  -- stored meanwhile (a concurrent call) or earlier in this batch: replayed when the payload is
  -- the same (as priced), else PT409. An ok result is kept as its JSON text without the closing
  -- brace, to be completed with its user's balance after the batch (step 6).
  -- Such candidates are read back from usage_records, in the partitions of their claims; when
  -- step 3 inserted every candidate (the usual batch) there are none and no partition is read.
  if cardinality(inserted) < (select count(*) from unnest(items) as i
                              where i.error is null and (i.price).id is not null) then
    select coalesce(min(r.created_at), 'infinity'), coalesce(max(r.created_at), '-infinity')
    into claimed_from, claimed_to
    from unnest(items) as i join private.usage_request_ids r on r.request_id = i.request_id
    where i.error is null and (i.price).id is not null;
  else
    claimed_from := 'infinity';
    claimed_to := '-infinity';
  end if;
  with cands as (
    select i.idx, i.request_id, min(i.idx) over (partition by i.request_id) as leader
    from unnest(items) as i where i.error is null and (i.price).id is not null
  ), outcomes as (
    select c.idx, r as ins,
      -- looked up only for a candidate not inserted (a CASE evaluates its branch lazily)
      case when r.id is null then (select s from public.usage_records s
                                   where s.request_id = c.request_id
                                     and s.created_at between claimed_from and claimed_to)
      end as stored_now
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
-- CREATE OR REPLACE keeps the function's grants (service_role).
