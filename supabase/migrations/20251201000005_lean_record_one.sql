-- 20251201000005_lean_record_one.sql
--
-- private.record_one (the body of record_usage and settle_usage) does its work in its own
-- statements instead of through three single-use helpers, and locks the user of a zero-cost
-- record. Same contract, results, error codes and precedence.
-- Why: every PL/pgSQL call with a SET clause costs a GUC save and restore and a search-path
-- recomputation; prepare_usage and insert_usage ran once per record_usage, only from here.
-- The zero-cost lock: 20251201000004 replaced the foreign keys to auth.users by set-based
-- checks; a usage record that charges nothing updates no balance row, so it takes FOR KEY
-- SHARE on the user's auth.users row (what the foreign key did), which makes a concurrent
-- deletion of the user wait for this transaction (see 20251201000004, 3.).
-- Drops: private.prepare_usage, private.insert_usage, type private.usage_item (no other user).

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.record_one(..., reservation_id) → usage result JSON. The body of record_usage and
-- settle_usage; reservation_id (or null) is the hold to mark settled, whether this call
-- recorded the usage or found it already recorded (replay).
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
                                     output_tokens, cached_input_tokens);
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
                                       input_tokens, output_tokens, cached_input_tokens);
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

drop function private.prepare_usage(uuid, text, bigint, bigint, text, text, bigint, jsonb,
                                    timestamptz, integer, text);
drop function private.insert_usage(private.usage_item);
drop type private.usage_item;
