-- 20251101000007_reprice_usage.sql
--
-- Re-cost a window of past usage after a price correction (Langfuse cannot, #12184):
-- reprice_usage(since, until) recomputes every usage record in [since, until) with the price
-- version in effect at its occurred_at (same lookup and formula as record_usage), then
--   * records the new cost and prices on the usage record, keeping the first charge in
--     original_cost (usage_records stay immutable otherwise: the trigger below allows ONLY these
--     columns, and only while reprice_usage runs);
--   * writes ONE ledger 'adjustment' per user for the sum of their differences, reference
--     'reprice:<audit_id>:<user_id>', through private.post_ledger_entry (balance row updated in
--     the same transaction, so balance = sum(ledger) and balance_audit() stays empty);
--   * writes one price_audit row (action 'reprice') whose id identifies the run.
-- Error codes (catalog: 20251018000005): 42501 forbidden, 22023 invalid_argument.

-- ── usage_records: immutable except for a reprice ──────────────────────────────────────────
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

drop trigger usage_records_forbid_update on public.usage_records;
create trigger usage_records_forbid_update before update on public.usage_records
  for each row execute function private.guard_usage_update();

-- ── public.reprice_usage(...) → jsonb ──────────────────────────────────────────────────────
-- reprice_usage(since, until, model = null, provider = null, dry_run = false) →
-- {records, changed, skipped, total_delta, adjustments: [{user_id, delta}], audit_id, dry_run}.
-- records: usage records in the window (model matches model_id or the name the client sent);
-- changed: those whose cost changes; skipped: those that can no longer be priced (no version at
-- occurred_at, price missing, other currency) — left untouched. delta = new cost − old cost
-- (positive = the user is charged more; the ledger adjustment is −delta). total_delta = sum.
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
revoke execute on function private.guard_usage_update() from public;
revoke execute on function public.reprice_usage(timestamptz, timestamptz, text, text, boolean)
  from public, anon, authenticated;
grant execute on function public.reprice_usage(timestamptz, timestamptz, text, text, boolean)
  to service_role;
