-- 20261130040001_quota_suspension_names_key.sql
--
-- A subscription suspended automatically because a quota is used up (issue 12 §5) is audited
-- with the API key whose request used it up (audit_logs.actor_api_key_id), as every change
-- made after authorize_request checked a key already is.
--   * Where it happens: the BEFORE trigger on subscriptions (private.subscription_state)
--     suspends the row when an update of the counters exhausts a quota. Those updates are
--     complete_request's (a successful request counted) and settle_lapsed's (a request that
--     never completed, counted at its hold). Neither ran with a key named in the transaction:
--     complete_request is called by request_id, and the settling authorize_request names its
--     own key, not the lapsed request's. authorize_request itself only resets the counters
--     (that can lift a suspension, and its key is named there already by private.api_key_for).
--   * How: private.audit_as_key(key id) names the key for the audit trail
--     (tokenmeter.api_key_id, transaction-local, read by private.write_audit) and returns the
--     key named before, which the caller puts back right after its update, so that a key named
--     for one request does not leak to the rest of the transaction (a sweep of lapsed requests
--     of several keys, or the authorize_request that settles them).
--   * complete_request and settle_lapsed are their latest bodies (20251130000009,
--     20261129235001) with those two lines added around the counter update; nothing else
--     changes.

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.audit_as_key(api_key_id) → the key id named before ('' when none). Names
-- `api_key_id` as the key the transaction's audited changes are made with. Runs as its
-- caller; no API role may call it. Raises nothing.
create function private.audit_as_key(api_key_id uuid) returns text
language plpgsql set search_path = '' as $$
declare
  previous text := coalesce(current_setting('tokenmeter.api_key_id', true), '');
begin
  perform set_config('tokenmeter.api_key_id', coalesce(audit_as_key.api_key_id::text, ''), true);
  return previous;
end
$$;

-- public.complete_request: 20251130000009's, naming the request's key for the counter update.
create or replace function public.complete_request(
  request_id text, usage jsonb, status integer, latency_ms integer default null,
  error text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  ok boolean := complete_request.status between 200 and 299;
  token_pattern constant text := '^[0-9]{1,8}$';
  input_text text;
  output_text text;
  cached_text text;
  estimated boolean := false;
  req public.metered_requests;
  sub public.subscriptions;
  rolled public.subscriptions;
  charged jsonb;
  spend_period text;
  mismatch text;
  previous_key text;
begin
  perform private.assert_service_role();
  perform private.check_text('request_id', complete_request.request_id);
  if complete_request.status is null or complete_request.status not between 100 and 599 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'status must be the upstream''s HTTP status, 100 to 599';
  end if;
  if complete_request.latency_ms is not null
     and complete_request.latency_ms not between 0 and 86400000 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'latency_ms must be between 0 and 86400000';
  end if;
  if ok then
    if complete_request.usage is null or jsonb_typeof(complete_request.usage) <> 'object' then
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = 'usage must be the upstream''s usage object for a successful call';
    end if;
    input_text := coalesce(complete_request.usage ->> 'prompt_tokens',
                           complete_request.usage ->> 'input_tokens');
    output_text := coalesce(complete_request.usage ->> 'completion_tokens',
                            complete_request.usage ->> 'output_tokens');
    cached_text := coalesce(complete_request.usage #>> '{prompt_tokens_details,cached_tokens}',
                            complete_request.usage #>> '{input_tokens_details,cached_tokens}',
                            '0');
    -- Two steps: SQL does not promise to evaluate OR left to right, and the casts must only
    -- see digits.
    if coalesce(input_text !~ token_pattern or output_text !~ token_pattern
                or cached_text !~ token_pattern, true) then
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = 'usage must give prompt_tokens and completion_tokens as integers from 0 to '
                 '10000000, and cached_tokens at most prompt_tokens';
    end if;
    if input_text::bigint > 10000000 or output_text::bigint > 10000000
       or cached_text::bigint > input_text::bigint then
      raise exception using errcode = '22023', message = 'invalid_argument',
        detail = 'usage must give prompt_tokens and completion_tokens as integers from 0 to '
                 '10000000, and cached_tokens at most prompt_tokens';
    end if;
    if complete_request.usage ? 'estimated' then
      if jsonb_typeof(complete_request.usage -> 'estimated') <> 'boolean' then
        raise exception using errcode = '22023', message = 'invalid_argument',
          detail = 'usage.estimated must be true or false';
      end if;
      estimated := (complete_request.usage ->> 'estimated')::boolean;
    end if;
  end if;

  select m.* into req from public.metered_requests m
  where m.request_id = complete_request.request_id for update;
  if not found then
    raise exception using errcode = 'PT404', message = 'request_not_found',
      detail = format('no authorized request %s', complete_request.request_id);
  end if;
  if req.status <> 'authorized' then
    -- A retry is answered from the stored row when it is the same call, every argument the row
    -- keeps equal (the identity rule of record_usage, 20251201000007); else 409 naming the
    -- first argument that differs.
    mismatch := case
      when req.http_status <> complete_request.status then 'status'
      when ok and (req.input_tokens, req.output_tokens, req.cached_input_tokens)
                  <> (input_text::bigint, output_text::bigint, cached_text::bigint) then 'usage'
      when req.usage_estimated <> estimated then 'usage'
      when req.latency_ms is distinct from complete_request.latency_ms then 'latency_ms'
      when req.error is distinct from left(complete_request.error, 2000) then 'error' end;
    if mismatch is not null then
      raise exception using errcode = 'PT409', message = 'idempotency_conflict',
        detail = format('request_id %s was already completed; %s differs',
                        complete_request.request_id, mismatch);
    end if;
    return private.metered_json(req, true) || jsonb_build_object('balance',
      (select trim_scale(b.balance)::text from public.user_balances b
       where b.user_id = req.user_id));
  end if;

  -- The subscription before the balance row (settle_usage locks it last): authorize's order.
  select s.* into sub from public.subscriptions s where s.id = req.subscription_id
  for no key update;
  rolled := private.subscription_now(sub);
  if ok then
    -- The count this adds may exhaust a quota, and the subscription trigger then suspends it:
    -- an audited change, made by this request's key.
    previous_key := private.audit_as_key(req.api_key_id);
    update public.subscriptions s
    set used_requests = rolled.used_requests + 1,
        used_tokens = rolled.used_tokens + input_text::bigint + output_text::bigint,
        reset_at = rolled.reset_at
    where s.id = sub.id;
    perform set_config('tokenmeter.api_key_id', previous_key, true);
    if req.reserved > 0 then
      charged := public.settle_usage(req.request_id, input_text::bigint, output_text::bigint,
        cached_text::bigint, model => req.model,
        metadata => case when estimated then '{"usage_estimated": true}'::jsonb
                         else '{}'::jsonb end,
        latency_ms => complete_request.latency_ms);
    else
      charged := public.record_usage(req.user_id, req.model, input_text::bigint,
        output_text::bigint, req.request_id, null, cached_text::bigint,
        case when estimated then '{"usage_estimated": true}'::jsonb else '{}'::jsonb end,
        now(), complete_request.latency_ms, 'success');
    end if;
    if (charged ->> 'cost')::numeric > 0 then
      select k.spend_limit_period into spend_period from public.api_keys k
      where k.id = req.api_key_id and k.spend_limit is not null;
      if spend_period is not null then
        insert into public.api_key_spend as x (api_key_id, period_start, spent)
        values (req.api_key_id, date_trunc(spend_period, now(), 'UTC'),
                (charged ->> 'cost')::numeric)
        on conflict on constraint api_key_spend_pkey
        do update set spent = x.spent + excluded.spent;
      end if;
    end if;
  else
    if rolled.reset_at <> sub.reset_at then
      update public.subscriptions s set used_requests = 0, used_tokens = 0,
        reset_at = rolled.reset_at
      where s.id = sub.id;
    end if;
    if req.reserved > 0 then
      perform public.release_reservation(req.request_id);
    end if;
  end if;

  update public.metered_requests m
  set status = case when ok then 'completed' else 'failed' end,
      http_status = complete_request.status,
      input_tokens = case when ok then input_text::bigint end,
      output_tokens = case when ok then output_text::bigint end,
      cached_input_tokens = case when ok then cached_text::bigint end,
      cost = case when ok then (charged ->> 'cost')::numeric else 0 end,
      usage_estimated = estimated, latency_ms = complete_request.latency_ms,
      error = left(complete_request.error, 2000), completed_at = now()
  where m.id = req.id
  returning m.* into req;
  return private.metered_json(req, false) || jsonb_build_object('balance',
    coalesce(charged ->> 'balance', (select trim_scale(b.balance)::text
                                     from public.user_balances b
                                     where b.user_id = req.user_id)));
end
$$;

-- private.settle_lapsed: 20261129235001's, naming the lapsed request's key for the counter update.
create or replace function private.settle_lapsed(m public.metered_requests) returns numeric
language plpgsql set search_path = '' as $$
declare
  sub public.subscriptions;
  rolled public.subscriptions;
  charged jsonb;
  spend_period text;
  previous_key text;
  flags constant jsonb := '{"usage_estimated": true, "settled_at_hold": true}'::jsonb;
begin
  if m.status <> 'authorized' or m.expires_at > now() then
    return 0;
  end if;
  select s.* into sub from public.subscriptions s where s.id = m.subscription_id
  for no key update;
  rolled := private.subscription_now(sub);
  -- As in complete_request: a suspension this count causes is the lapsed request's key's (not
  -- the key of the authorize_request that settles it).
  previous_key := private.audit_as_key(m.api_key_id);
  update public.subscriptions s
  set used_requests = rolled.used_requests + 1,
      used_tokens = rolled.used_tokens + m.max_input_tokens + m.max_tokens,
      reset_at = rolled.reset_at
  where s.id = sub.id;
  perform set_config('tokenmeter.api_key_id', previous_key, true);
  -- Priced as at the authorization: the charge is the hold, to the digit.
  if m.reserved > 0 then
    charged := public.settle_usage(m.request_id, m.max_input_tokens, m.max_tokens, 0,
      model => m.model, metadata => flags, occurred_at => m.created_at);
  else
    charged := public.record_usage(m.user_id, m.model, m.max_input_tokens, m.max_tokens,
      m.request_id, null, 0, flags, m.created_at, null, 'success');
  end if;
  if (charged ->> 'cost')::numeric > 0 then
    select k.spend_limit_period into spend_period from public.api_keys k
    where k.id = m.api_key_id and k.spend_limit is not null;
    if spend_period is not null then
      insert into public.api_key_spend as x (api_key_id, period_start, spent)
      values (m.api_key_id, date_trunc(spend_period, now(), 'UTC'), (charged ->> 'cost')::numeric)
      on conflict on constraint api_key_spend_pkey
      do update set spent = x.spent + excluded.spent;
    end if;
  end if;
  update public.metered_requests r
  set status = 'completed', http_status = null, input_tokens = m.max_input_tokens,
      output_tokens = m.max_tokens, cached_input_tokens = 0,
      cost = (charged ->> 'cost')::numeric, usage_estimated = true,
      error = 'never completed: settled at its hold', completed_at = now()
  where r.id = m.id;
  return (charged ->> 'cost')::numeric;
end
$$;

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.audit_as_key(uuid) from public;
-- complete_request and settle_lapsed keep their privileges (create or replace).
