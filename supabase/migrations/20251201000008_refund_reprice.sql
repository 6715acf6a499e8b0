-- 20251201000008_refund_reprice.sql
--
-- Re-pricing no longer credits (or charges) refunded usage. A refunded request's net charge
-- (its usage entry + reprice adjustments + its refund) is what its refund left — 0 for a full
-- refund — before and after any number of re-prices, in either order.
-- Why: reprice_usage re-costed every record in its window, refunded or not, so record → full
-- refund → lower back-dated price → reprice_usage credited the user the difference again: net
-- −$0.00175 on a $0.0035 request (issue 9, 1.).
-- The rule:
--   * reprice_usage leaves a record that has a refund untouched (cost, prices, no adjustment)
--     and counts it in `skipped`. A partial refund too: it was computed against the cost at
--     the time, and re-pricing the rest would need a rule for a refund larger than the new
--     cost; a price correction for such a request is a manual adjust_balance.
--   * refund_usage refunds the CURRENT cost (at most): repriced first, a full refund gives back
--     exactly what the user was charged in total (first charge + adjustment). Unchanged.
--   * the two serialise on the usage row: reprice_usage holds it FOR UPDATE (as before);
--     refund_usage now takes it FOR SHARE before reading the cost. A refund waiting for a
--     reprice reads the re-priced cost; a reprice waiting for a refund sees the refund (its
--     check is a new statement, after the lock) and skips the record. Lock order stays usage
--     row → balance row in both (no deadlock).
-- Replaces: public.refund_usage (20251018000010) and public.reprice_usage (20251101000007),
-- same signatures, grants, result keys and error codes.

-- ── refund_usage ──────────────────────────────────────────────────────────────────────────
-- public.refund_usage(request_id, reason, amount = null) → top_up's keys (kind 'refund',
-- description = reason) + {usage_id, usage_cost}. amount null = the full cost; otherwise
-- 0 < amount <= the usage's cost (its current cost: after a reprice, the re-priced one).
-- At most one refund per request (ledger unique (kind, reference)); a retry replays it.
-- Who may call: service_role. DEFINER: writes the ledger and balances, which no API role may do.
create or replace function public.refund_usage(
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

-- ── reprice_usage ─────────────────────────────────────────────────────────────────────────
-- reprice_usage(since, until, model = null, provider = null, dry_run = false) →
-- {records, changed, skipped, total_delta, adjustments: [{user_id, delta}], audit_id, dry_run}.
-- records: usage records in the window (model matches model_id or the name the client sent);
-- changed: those whose cost changes; skipped: those left untouched because they can no longer
-- be priced (no version at occurred_at, price missing, other currency) or because they have a
-- refund (this migration: a refunded request is settled by its refund). delta = new cost − old
-- cost (positive = the user is charged more; the ledger adjustment is −delta); total_delta = sum.
-- dry_run: computes everything, writes nothing, audit_id null.
-- Who may call: service_role (DEFINER: the only writer of usage, ledger and balances).
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
  user_ids uuid[] := '{}';
  deltas numeric[] := '{}';
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
