-- 20261130030000_async_hold_commit.sql
--
-- authorize_request(..., answer_after_charge boolean default false): when the caller says the
-- answer will be withheld until complete_request has succeeded (the openai function's
-- non-streamed chat completions and embeddings), the hold's transaction commits with
-- synchronous_commit = off — set for that transaction only — and so does not wait for its WAL
-- flush (~0.6 ms at one client, and the subscription's row lock is released that much sooner).
--
-- Why no money guarantee is lost (docs/metering.md, "Durability of the two calls"):
--   - WAL is flushed in order: any later durable commit — the request's own complete_request,
--     or anyone else's — makes the hold durable too. A crash can lose only the holds of
--     requests not yet completed, and loses each whole (no hold, no quota claim, no row):
--     complete_request then answers 404 request_not_found, and the function withholds the
--     answer (503 billing_unavailable). Nothing was charged and nothing relied on the hold.
--   - Streams deliver content before complete_request, so they never pass the flag: their hold
--     stays durable (a lost hold would be content that can no longer be charged).
--   - Everything else this transaction writes (the lapsed requests it settles, last_used_at)
--     is redone by the next authorize_request if lost.
-- Also: the check that the request id is not already recorded usage reads the request-id claim
-- (private.usage_request_ids, 20261129210000) instead of probing every usage_records partition.
-- The default (false) keeps the previous behaviour for every other caller. The old six-argument
-- function is dropped, not overloaded: a call naming its first five or six arguments would
-- otherwise be ambiguous.

drop function public.authorize_request(text, text, bigint, text, bigint, integer);

create function public.authorize_request(
  key text, model text, max_tokens bigint, request_id text, input_tokens bigint default 0,
  ttl_seconds integer default 600, answer_after_charge boolean default false
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  found_key public.api_keys;
  stored public.metered_requests;
  lapsed public.metered_requests;
  sub public.subscriptions;
  rolled public.subscriptions;
  route public.plan_routes;
  price public.model_pricing;
  estimate numeric;
  flying bigint;
  flying_tokens bigint;
  retry_at timestamptz;
  spent numeric;
  held numeric;
  spend_start timestamptz;
  hold jsonb;
  mismatch text;
begin
  perform private.assert_service_role();
  perform private.check_text('request_id', authorize_request.request_id);
  perform private.check_text('model', authorize_request.model);
  if authorize_request.max_tokens is null
     or authorize_request.max_tokens not between 1 and 10000000 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'max_tokens must be an integer between 1 and 10000000';
  end if;
  if authorize_request.input_tokens is null
     or authorize_request.input_tokens not between 0 and 10000000 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'input_tokens must be an integer between 0 and 10000000';
  end if;
  if authorize_request.ttl_seconds is null
     or authorize_request.ttl_seconds not between 1 and 86400 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'ttl_seconds must be between 1 and 86400';
  end if;
  if authorize_request.answer_after_charge is null then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'answer_after_charge must be true or false';
  end if;
  -- The caller hands out nothing before complete_request has committed durably, and WAL is
  -- flushed in order, so this commit need not wait for its own flush: a crash can lose only
  -- the hold of a request whose answer is then withheld (header above). Local to this
  -- transaction (a later statement on the same connection is durable again).
  if authorize_request.answer_after_charge then
    perform set_config('synchronous_commit', 'off', true);
  end if;
  found_key := private.api_key_for(authorize_request.key);
  if found_key.allowed_models is not null and authorize_request.model <> 'auto'
     and not authorize_request.model = any (found_key.allowed_models) then
    raise exception using errcode = 'PT403', message = 'model_not_allowed',
      detail = format('API key %s may not use model %s', found_key.prefix,
                      authorize_request.model);
  end if;

  -- Every authorize of this subscription waits here: quotas and spend are checked and claimed
  -- one request at a time.
  select s.* into sub from public.subscriptions s
  where s.user_id = found_key.user_id and s.plan_id = found_key.plan_id
    and s.status in ('active', 'suspended')
  for no key update;
  if not found then
    raise exception using errcode = 'PT403', message = 'subscription_inactive',
      detail = format('no active subscription to plan %s',
                      (select p.name from public.plans p where p.id = found_key.plan_id));
  end if;
  -- A retry is answered from what was stored (looked up after the lock: a concurrent original
  -- has committed by now).
  select m.* into stored from public.metered_requests m
  where m.request_id = authorize_request.request_id;
  if found then
    mismatch := case when stored.api_key_id <> found_key.id then 'key'
                     when stored.requested_model <> authorize_request.model then 'model'
                     when stored.max_tokens <> authorize_request.max_tokens then 'max_tokens'
                     when stored.max_input_tokens <> authorize_request.input_tokens
                       then 'input_tokens' end;
    if mismatch is not null then
      raise exception using errcode = 'PT409', message = 'idempotency_conflict',
        detail = format('request_id %s was already authorized; %s differs',
                        authorize_request.request_id, mismatch);
    end if;
    return private.metered_json(stored, true);
  end if;

  -- Requests of this subscription whose hold lapsed without complete_request are settled at
  -- their hold first (20261129235001), so what they held is charged before this request's
  -- quota and balance checks can hand it out again.
  if exists (select 1 from public.metered_requests m
             where m.subscription_id = sub.id and m.status = 'authorized'
               and m.expires_at <= now()) then
    for lapsed in select m.* from public.metered_requests m
                  where m.subscription_id = sub.id and m.status = 'authorized'
                    and m.expires_at <= now()
                  order by m.id
                  for update of m skip locked
    loop
      perform private.settle_lapsed(lapsed);
    end loop;
    select s.* into sub from public.subscriptions s where s.id = sub.id;
  end if;

  rolled := private.subscription_now(sub);
  if rolled.reset_at <> sub.reset_at then
    update public.subscriptions s set used_requests = 0, used_tokens = 0,
      reset_at = rolled.reset_at
    where s.id = sub.id returning s.* into sub;
  end if;
  if sub.expires_at <= now() then
    raise exception using errcode = 'PT403', message = 'subscription_inactive',
      detail = format('the subscription expired at %s', sub.expires_at);
  elsif sub.status = 'suspended' and sub.suspension_reason = 'operator' then
    raise exception using errcode = 'PT403', message = 'subscription_inactive',
      detail = 'the subscription is suspended';
  end if;
  select count(*), coalesce(sum(m.max_input_tokens + m.max_tokens), 0), min(m.expires_at)
  into flying, flying_tokens, retry_at from public.metered_requests m
  where m.subscription_id = sub.id and m.status = 'authorized' and m.expires_at > now();
  if sub.status = 'suspended'
     or sub.used_requests + flying + 1 > sub.quota_requests
     or sub.used_tokens + flying_tokens + authorize_request.input_tokens
        + authorize_request.max_tokens > sub.quota_tokens then
    -- Retry at the reset when completed requests alone use the quota up; when requests in
    -- flight do, as soon as the first of them must have completed or lapsed.
    if sub.status = 'suspended' or sub.used_requests + 1 > sub.quota_requests
       or sub.used_tokens + authorize_request.input_tokens + authorize_request.max_tokens
          > sub.quota_tokens then
      retry_at := sub.reset_at;
    else
      retry_at := least(retry_at, sub.reset_at);
    end if;
    raise exception using errcode = 'PT429', message = 'quota_exceeded',
      detail = format('quota of %s requests and %s tokens per %s reached (%s and %s used, '
                      '%s requests in flight); retry at %s, the period resets at %s',
                      coalesce(sub.quota_requests::text, 'unlimited'),
                      coalesce(sub.quota_tokens::text, 'unlimited'), sub.period,
                      sub.used_requests, sub.used_tokens, flying, private.utc_iso(retry_at),
                      private.utc_iso(sub.reset_at)),
      hint = private.utc_iso(retry_at);
  end if;

  route := private.pick_route(found_key.plan_id, authorize_request.model,
                              found_key.allowed_models);
  if route.id is null then
    raise exception using errcode = 'PT503', message = 'no_route',
      detail = format('plan %s has no active route with a configured upstream for model %s',
                      (select p.name from public.plans p where p.id = found_key.plan_id),
                      authorize_request.model);
  end if;
  price := private.chargeable_price(null, route.model, now());
  estimate := private.usage_cost(price, authorize_request.input_tokens,
                                 authorize_request.max_tokens, 0);

  if found_key.spend_limit is not null then
    spend_start := date_trunc(found_key.spend_limit_period, now(), 'UTC');
    select coalesce((select x.spent from public.api_key_spend x
                     where x.api_key_id = found_key.id and x.period_start = spend_start), 0)
    into spent;
    select coalesce(sum(m.reserved), 0), min(m.expires_at) into held, retry_at
    from public.metered_requests m
    where m.api_key_id = found_key.id and m.status = 'authorized' and m.expires_at > now();
    if spent + held + estimate > found_key.spend_limit then
      -- As for quotas: retry at the period's end, or when the first hold in flight lapses if
      -- the holds are what fills the limit.
      if spent + estimate > found_key.spend_limit then
        retry_at := spend_start + ('1 ' || found_key.spend_limit_period)::interval;
      end if;
      raise exception using errcode = 'PT429', message = 'spend_limit_exceeded',
        detail = format('API key %s may spend %s per %s; %s is spent, %s held, and this request '
                        'may cost %s; retry at %s', found_key.prefix,
                        trim_scale(found_key.spend_limit), found_key.spend_limit_period,
                        trim_scale(spent), trim_scale(held), trim_scale(estimate),
                        private.utc_iso(retry_at)),
        hint = private.utc_iso(retry_at);
    end if;
  end if;

  -- The request_id namespace is shared with record_usage: a request_id already charged outside
  -- metering would be answered by settle_usage as that usage, so it is refused here. Looked up
  -- in the request-id claims (one primary-key probe; a request id has a claim exactly while a
  -- usage record holds it), not usage_records, whose month partitions a lookup by request_id
  -- cannot prune (every partition's index probed and, with a generic plan, locked per call).
  if exists (select 1 from private.usage_request_ids u
             where u.request_id = authorize_request.request_id) then
    raise exception using errcode = 'PT409', message = 'idempotency_conflict',
      detail = format('request_id %s is already recorded usage outside metered requests',
                      authorize_request.request_id);
  end if;
  if estimate > 0 then
    -- Without the model: it is priced above already (reserve_credit would look it up again,
    -- ~1 ms for an alias); metered_requests keeps it and complete_request passes it to
    -- settle_usage.
    hold := public.reserve_credit(found_key.user_id, authorize_request.request_id, estimate,
                                  authorize_request.ttl_seconds);
    if (hold ->> 'replayed')::boolean then
      raise exception using errcode = 'PT409', message = 'idempotency_conflict',
        detail = format('request_id %s already holds credit outside metered requests',
                        authorize_request.request_id);
    end if;
  end if;
  insert into public.metered_requests (request_id, user_id, api_key_id, subscription_id,
    route_id, upstream_id, upstream, requested_model, model, max_tokens, max_input_tokens,
    reserved, currency, expires_at)
  values (authorize_request.request_id, found_key.user_id, found_key.id, sub.id, route.id,
    route.upstream_id, (select u.name from public.upstreams u where u.id = route.upstream_id),
    authorize_request.model, route.model, authorize_request.max_tokens,
    authorize_request.input_tokens, estimate, price.currency,
    coalesce((hold ->> 'expires_at')::timestamptz,
             now() + make_interval(secs => authorize_request.ttl_seconds)))
  returning * into stored;

  -- last_used_at at most once a minute, and never waiting for a concurrent request's lock.
  update public.api_keys k set last_used_at = now()
  where k.id = (select x.id from public.api_keys x
                where x.id = found_key.id
                  and (x.last_used_at is null or x.last_used_at < now() - interval '1 minute')
                for no key update skip locked);
  return private.metered_json(stored, false);
end
$$;

revoke execute on function public.authorize_request(text, text, bigint, text, bigint, integer, boolean)
  from public, anon, authenticated;
grant execute on function public.authorize_request(text, text, bigint, text, bigint, integer, boolean)
  to service_role;
