-- 20251130000009_metered_requests.sql
--
-- The two calls around every metered LLM request (issue 11 §1), each one transaction, for an
-- edge function calling as service_role (supabase-js rpc, or SQL over a pooled connection in
-- transaction mode: they keep no session state and need no prepared statement). Part of the
-- 0.1.0 baseline (CHANGELOG.md); keys, plans and subscriptions are 20251130000007…08.
--   authorize_request(key, model, max_tokens, request_id, input_tokens, ttl_seconds)
--     key valid → model allowed → the key's live subscription (row locked) active, unexpired,
--     within its quotas → route → the most the call can cost (input_tokens + max_tokens at the
--     routed model's price, by the charging formula) within the key's spend limit → a credit
--     hold (reserve_credit, 402 when the balance cannot cover it) → a metered_requests row.
--   complete_request(request_id, usage, status, latency_ms, error)
--     2xx: counts the request and its tokens on the subscription (which suspends it when a
--     quota is reached), charges the real usage through settle_usage (record_usage when nothing
--     was held) and so releases the rest of the hold; any other status charges nothing, releases
--     the hold and logs the status and error. Either way the metered_requests row keeps key,
--     subscription, route, upstream, HTTP status, latency, error, tokens and cost (seed 003's
--     usage_logs; the view usage_logs joins it to the usage record).
-- Quotas never overshoot: requests in flight (authorized, hold unexpired) count against the
-- quotas, and every authorize of a subscription runs under its row lock. Token quotas admit a
-- request only if input_tokens + max_tokens still fit. An abandoned request stops counting when
-- its hold expires (ttl_seconds), like the hold itself. Lock order, every path: metered_requests
-- row → subscription row → balance row (reserve_credit / settle_usage, last) → api_key_spend.
-- Idempotent: a request_id authorizes once (a retry gets the stored authorization and route,
-- replayed = true) and completes once (the stored result, replayed = true); a retry that
-- differs in any argument the row keeps is 409, naming it (record_usage's rule, 20251130000004).
-- Error codes → HTTP (PostgREST: PTnnn → nnn; 22023 → 400):
--   22023 invalid_argument 400 · PT401 invalid_api_key / expired_api_key / revoked_api_key 401 ·
--   PT403 model_not_allowed / subscription_inactive 403 · PT402 insufficient_balance 402 ·
--   PT404 request_not_found 404 · PT409 idempotency_conflict 409 · PT422 unknown_model /
--   price_missing 422 (the routed model is not priced: the operator's fix) ·
--   PT429 quota_exceeded / spend_limit_exceeded 429, hint = when to retry (ISO 8601, UTC, for
--   Retry-After: the period's reset, or the first in-flight request's expiry when requests in
--   flight fill the quota) · PT503 no_route 503 (no active, configured route) · 42501 forbidden.

-- ── Tables ────────────────────────────────────────────────────────────────────────────────
create table public.metered_requests (
  id bigint generated always as identity primary key,
  -- Same namespace as usage_records.request_id and credit_reservations.request_id.
  request_id text not null,
  user_id uuid not null,
  api_key_id uuid not null references public.api_keys (id) on delete cascade,
  subscription_id uuid not null references public.subscriptions (id) on delete cascade,
  -- Snapshots of the route taken; the ids go null when the operator deletes the route.
  route_id uuid references public.plan_routes (id) on delete set null,
  upstream_id uuid references public.upstreams (id) on delete set null,
  upstream text not null,
  requested_model text not null,
  model text not null,
  max_tokens bigint not null,
  -- The caller's upper bound of the prompt's tokens, used for the estimate and the token quota.
  max_input_tokens bigint not null,
  reserved numeric(24,12) not null,
  currency text not null,
  status text not null default 'authorized',
  http_status integer,
  input_tokens bigint,
  output_tokens bigint,
  cached_input_tokens bigint,
  cost numeric(24,12),
  -- The usage was counted by the caller (a stream cut before its usage chunk), not reported.
  usage_estimated boolean not null default false,
  latency_ms integer,
  error text,
  -- When the hold (and the request's claim on the quotas) lapses.
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  completed_at timestamptz,
  constraint metered_requests_request_id_key unique (request_id),
  constraint metered_requests_request_id_length check (length(request_id) between 1 and 255),
  constraint metered_requests_status_valid check (status in ('authorized', 'completed', 'failed')),
  constraint metered_requests_completed_at_set
    check ((status = 'authorized') = (completed_at is null)),
  constraint metered_requests_http_status_range check (http_status between 100 and 599),
  constraint metered_requests_max_tokens_range check (max_tokens between 1 and 10000000),
  constraint metered_requests_max_input_tokens_range
    check (max_input_tokens between 0 and 10000000),
  constraint metered_requests_reserved_range check (reserved >= 0 and reserved < 1e12),
  constraint metered_requests_tokens_range check (input_tokens between 0 and 10000000
    and output_tokens between 0 and 10000000 and cached_input_tokens between 0 and input_tokens),
  constraint metered_requests_cost_range check (cost >= 0 and cost < 1e12),
  constraint metered_requests_latency_ms_range check (latency_ms between 0 and 86400000),
  constraint metered_requests_error_length check (length(error) <= 2000)
);
-- The quota and spend checks read only the requests in flight.
create index metered_requests_subscription_in_flight_idx
  on public.metered_requests (subscription_id, expires_at) where status = 'authorized';
create index metered_requests_api_key_in_flight_idx
  on public.metered_requests (api_key_id, expires_at) where status = 'authorized';
create index metered_requests_user_id_created_at_idx
  on public.metered_requests (user_id, created_at desc);
create index metered_requests_api_key_id_created_at_idx
  on public.metered_requests (api_key_id, created_at desc);
comment on table public.metered_requests is
  'One row per request through authorize_request: route, hold, outcome (seed 003 usage_logs).';

-- What a spend-limited key spent per calendar UTC period (completed requests); written by
-- complete_request only for keys with a spend_limit, under their subscription's row lock.
create table public.api_key_spend (
  api_key_id uuid not null references public.api_keys (id) on delete cascade,
  period_start timestamptz not null,
  spent numeric(24,12) not null default 0,
  constraint api_key_spend_pkey primary key (api_key_id, period_start),
  constraint api_key_spend_spent_range check (spent >= 0 and spent < 1e12)
);

-- ── Row level security, policies ──────────────────────────────────────────────────────────
alter table public.metered_requests enable row level security;
alter table public.api_key_spend enable row level security;
create policy "Users read their own metered requests" on public.metered_requests
  for select to authenticated using ((select auth.uid()) = user_id);
-- api_key_spend: service_role only (list_api_keys is how a user sees their keys).

-- usage_logs: each metered request with the usage record it produced (RLS of both applies).
create view public.usage_logs with (security_invoker = true) as
select m.request_id, m.user_id, m.api_key_id, m.subscription_id, m.route_id, m.upstream_id,
       m.upstream, m.requested_model, m.model, m.status, m.http_status, m.input_tokens,
       m.output_tokens, m.cached_input_tokens, m.input_tokens + m.output_tokens as total_tokens,
       m.cost, m.currency, m.usage_estimated, m.latency_ms, m.error, m.created_at,
       m.completed_at, u.id as usage_id, u.provider_id, u.model_id as priced_model
from public.metered_requests m
left join public.usage_records u on u.request_id = m.request_id;

-- ── Private helpers ───────────────────────────────────────────────────────────────────────
-- private.api_key_for(secret) → the key, valid now. Raises PT401 invalid_api_key (malformed or
-- unknown), revoked_api_key, expired_api_key. The hash is looked up by its primary key.
create function private.api_key_for(secret text) returns public.api_keys
language plpgsql stable set search_path = '' as $$
declare
  found_key public.api_keys;
begin
  if secret is null or secret !~ '^tm_[A-Za-z0-9_-]{43}$' then
    raise exception using errcode = 'PT401', message = 'invalid_api_key',
      detail = 'the API key is missing or malformed';
  end if;
  select k.* into found_key
  from private.api_key_hashes h join public.api_keys k on k.id = h.api_key_id
  where h.key_hash = sha256(convert_to(api_key_for.secret, 'UTF8'));
  if not found then
    raise exception using errcode = 'PT401', message = 'invalid_api_key',
      detail = 'the API key is not known';
  end if;
  if found_key.revoked_at is not null then
    raise exception using errcode = 'PT401', message = 'revoked_api_key',
      detail = format('API key %s was revoked at %s', found_key.prefix, found_key.revoked_at);
  end if;
  if found_key.expires_at <= now() then
    raise exception using errcode = 'PT401', message = 'expired_api_key',
      detail = format('API key %s expired at %s', found_key.prefix, found_key.expires_at);
  end if;
  return found_key;
end
$$;

-- private.utc_iso(t) → '2026-12-01T00:00:00Z': the reset times in 429 hints and results.
create function private.utc_iso(t timestamptz) returns text
language plpgsql immutable set search_path = '' as $$
begin
  return to_char(t at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
end
$$;

-- private.quota_json(subscription_id) → {remaining_requests, remaining_tokens, reset_at} as of
-- now: the period rolled over if due, requests in flight deducted; NULL remaining = unlimited.
create function private.quota_json(subscription_id uuid) returns jsonb
language plpgsql stable set search_path = '' as $$
declare
  s public.subscriptions;
  flying bigint;
  flying_tokens bigint;
begin
  select * into s from public.subscriptions x where x.id = quota_json.subscription_id;
  s := private.subscription_now(s);
  select count(*), coalesce(sum(m.max_input_tokens + m.max_tokens), 0)
  into flying, flying_tokens from public.metered_requests m
  where m.subscription_id = s.id and m.status = 'authorized' and m.expires_at > now();
  return jsonb_build_object(
    'remaining_requests', greatest(s.quota_requests - s.used_requests - flying, 0),
    'remaining_tokens', greatest(s.quota_tokens - s.used_tokens - flying_tokens, 0),
    'reset_at', private.utc_iso(s.reset_at), 'subscription_status', s.status);
end
$$;

-- private.metered_json(m, replayed) → what authorize_request and complete_request return.
create function private.metered_json(m public.metered_requests, replayed boolean) returns jsonb
language plpgsql stable set search_path = '' as $$
declare
  u public.upstreams;
begin
  select x.* into u from public.upstreams x where x.id = m.upstream_id;
  return jsonb_build_object('request_id', m.request_id, 'status', m.status,
    'replayed', metered_json.replayed, 'user_id', m.user_id, 'api_key_id', m.api_key_id,
    'subscription_id', m.subscription_id, 'route_id', m.route_id,
    'upstream', jsonb_build_object('name', m.upstream, 'base_url', u.base_url,
                                   'wire_format', u.wire_format, 'api_key_env', u.api_key_env),
    'model', m.model, 'requested_model', m.requested_model, 'max_tokens', m.max_tokens,
    'max_input_tokens', m.max_input_tokens, 'reserved', trim_scale(m.reserved)::text,
    'currency', m.currency, 'expires_at', m.expires_at, 'http_status', m.http_status,
    'input_tokens', m.input_tokens, 'output_tokens', m.output_tokens,
    'cached_input_tokens', m.cached_input_tokens, 'cost', trim_scale(m.cost)::text,
    'usage_estimated', m.usage_estimated, 'latency_ms', m.latency_ms, 'error', m.error)
    || private.quota_json(m.subscription_id);
end
$$;

-- ── Functions (API) ───────────────────────────────────────────────────────────────────────
-- public.authorize_request(key, model, max_tokens, request_id, input_tokens = 0,
-- ttl_seconds = 600) → metered_json: the upstream to call (name, base_url, wire_format,
-- api_key_env), the model to ask it for, the amount held, the quotas left, replayed.
-- model: a model of the key's plan, or 'auto' / any other name for the plan's mix.
-- input_tokens: an upper bound of the prompt's tokens (the body's byte length is one).
-- ttl_seconds: how long the hold and the quota claim last without complete_request.
-- Who may call: service_role. DEFINER: reads key hashes and writes holds, requests, keys.
-- Raises: see the header (400, 401, 402, 403, 409, 422, 429, 503).
create function public.authorize_request(
  key text, model text, max_tokens bigint, request_id text, input_tokens bigint default 0,
  ttl_seconds integer default 600
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  found_key public.api_keys;
  stored public.metered_requests;
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
  -- metering would be answered by settle_usage as that usage, so it is refused here.
  if exists (select 1 from public.usage_records u
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

-- public.complete_request(request_id, usage, status, latency_ms = null, error = null) →
-- metered_json (+ balance). usage: the upstream's usage object — OpenAI's prompt_tokens,
-- completion_tokens, prompt_tokens_details.cached_tokens (or input_tokens, output_tokens,
-- input_tokens_details.cached_tokens), plus "estimated": true when the caller counted the
-- tokens itself; required for a 2xx status, ignored otherwise. status: the upstream's HTTP
-- status. error: the upstream's error text (kept to 2000 characters).
-- Who may call: service_role. DEFINER: the money functions' path, and writes subscriptions.
-- Raises: 22023 invalid_argument, PT404 request_not_found, PT409 idempotency_conflict, and
-- what settle_usage raises.
create function public.complete_request(
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
    update public.subscriptions s
    set used_requests = rolled.used_requests + 1,
        used_tokens = rolled.used_tokens + input_text::bigint + output_text::bigint,
        reset_at = rolled.reset_at
    where s.id = sub.id;
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

-- public.list_key_models(key) → {api_key_id, plan, models}: the models the key may ask for by
-- name (its plan's models with a usable route, within allowed_models), sorted; what
-- GET /v1/models answers. 'auto' is always accepted and not listed.
-- Who may call: service_role. DEFINER: looks the key up by its hash.
-- Raises: PT401 invalid_api_key / revoked_api_key / expired_api_key, 42501 forbidden.
create function public.list_key_models(key text) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  found_key public.api_keys;
begin
  perform private.assert_service_role();
  found_key := private.api_key_for(list_key_models.key);
  return jsonb_build_object('api_key_id', found_key.id,
    'plan', (select p.name from public.plans p where p.id = found_key.plan_id),
    'models', coalesce((
      select jsonb_agg(distinct r.model order by r.model)
      from public.plan_routes r join public.upstreams u on u.id = r.upstream_id
      where r.plan_id = found_key.plan_id and r.weight > 0 and u.is_active
        and u.base_url is not null
        and (found_key.allowed_models is null or r.model = any (found_key.allowed_models))),
      '[]'::jsonb));
end
$$;

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke all on public.metered_requests, public.api_key_spend, public.usage_logs
  from public, anon, authenticated, service_role;
grant select on public.metered_requests to authenticated, service_role;
grant select on public.api_key_spend to service_role;
grant select on public.usage_logs to authenticated, service_role;

revoke execute on function private.api_key_for(text) from public;
revoke execute on function private.utc_iso(timestamptz) from public;
revoke execute on function private.quota_json(uuid) from public;
revoke execute on function private.metered_json(public.metered_requests, boolean) from public;
revoke execute on function public.authorize_request(text, text, bigint, text, bigint, integer)
  from public, anon, authenticated;
revoke execute on function public.complete_request(text, jsonb, integer, integer, text)
  from public, anon, authenticated;
revoke execute on function public.list_key_models(text) from public, anon, authenticated;
grant execute on function public.authorize_request(text, text, bigint, text, bigint, integer)
  to service_role;
grant execute on function public.complete_request(text, jsonb, integer, integer, text)
  to service_role;
grant execute on function public.list_key_models(text) to service_role;
