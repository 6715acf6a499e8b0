-- 20251130000010_reporting.sql — usage_report(): spend and tokens per day, model, user or API
-- key over a time range, aggregated in SQL (`tokenmeter usage report`, issue 13). Part of the
-- 0.1.0 baseline (CHANGELOG.md).
--
-- SECURITY INVOKER on purpose: the caller's RLS decides what is summed. service_role (which
-- bypasses RLS) sees every user; a signed-in user (authenticated) sees only their own
-- usage_records, metered_requests and api_keys, so `--me` needs no check of its own and cannot
-- read anyone else's numbers even by naming them. anon may not call it.
--
-- The API key of a usage record is the one of its metered_requests row (same request_id) when
-- the request came through the metered endpoint; usage recorded directly (record_usage,
-- settle_usage) has none and reports as key NULL ("direct").
--
-- No rollup tables exist yet (issue 12): this reads usage_records in the range, using
-- usage_records_user_id_occurred_at_idx when a user is named.
--
-- Raises: 22023 invalid_argument (group_by, an empty or inverted range), PT404 user_not_found
-- (the user has no balance row the caller can see: unknown, or not the caller under RLS),
-- PT404 api_key_not_found (no such key id or prefix visible to the caller).

create function public.usage_report(
  since timestamptz default null,
  until timestamptz default null,
  for_user uuid default null,
  for_key text default null,
  group_by text default 'day'
) returns table (
  day date,
  model text,
  user_id uuid,
  api_key_id uuid,
  api_key_name text,
  currency text,
  requests bigint,
  input_tokens bigint,
  cached_input_tokens bigint,
  output_tokens bigint,
  cost numeric
)
language plpgsql stable security invoker set search_path = '' as $$
#variable_conflict use_column
declare
  key_id uuid;
begin
  if group_by is null or group_by not in ('day', 'model', 'user', 'key', 'day_model') then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = format('group_by must be one of day, model, user, key, day_model; got %s',
                      coalesce(group_by, 'null'));
  end if;
  if since is not null and until is not null and until <= since then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = format('until must be after since (%s .. %s)', since, until);
  end if;
  -- A balance row exists for every user (signup trigger) and RLS shows a user only their own.
  if for_user is not null
     and not exists (select 1 from public.user_balances b where b.user_id = for_user) then
    raise exception using errcode = 'PT404', message = 'user_not_found',
      detail = format('no user %s (or not yours to see)', for_user);
  end if;
  if for_key is not null then
    -- Cast only what looks like a uuid: a prefix given to ::uuid would raise 22P02.
    if for_key ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
      select k.id into key_id from public.api_keys k where k.id = for_key::uuid;
    else
      select k.id into key_id from public.api_keys k where k.prefix = for_key;
    end if;
    if key_id is null then
      raise exception using errcode = 'PT404', message = 'api_key_not_found',
        detail = format('no API key %s (give its id or its tm_ prefix)', for_key);
    end if;
  end if;

  return query
  with picked as (
    select (u.occurred_at at time zone 'UTC')::date as day, u.model_id, u.user_id,
           m.api_key_id, u.currency, u.input_tokens, u.cached_input_tokens, u.output_tokens,
           u.cost
    from public.usage_records u
    left join public.metered_requests m on m.request_id = u.request_id
    where (since is null or u.occurred_at >= since)
      and (until is null or u.occurred_at < until)
      and (for_user is null or u.user_id = for_user)
      and (key_id is null or m.api_key_id = key_id)
  ), grouped as (
    -- Dimensions not asked for are NULL, so one GROUP BY serves every group_by.
    select case when group_by in ('day', 'day_model') then p.day end as day,
           case when group_by in ('model', 'day_model') then p.model_id end as model,
           case when group_by = 'user' then p.user_id end as user_id,
           case when group_by = 'key' then p.api_key_id end as api_key_id,
           p.currency,
           count(*) as requests,
           sum(p.input_tokens)::bigint as input_tokens,
           sum(p.cached_input_tokens)::bigint as cached_input_tokens,
           sum(p.output_tokens)::bigint as output_tokens,
           sum(p.cost) as cost
    from picked p
    group by 1, 2, 3, 4, 5
  )
  select g.day, g.model, g.user_id, g.api_key_id, k.name, g.currency, g.requests,
         g.input_tokens, g.cached_input_tokens, g.output_tokens, g.cost
  from grouped g
  left join public.api_keys k on k.id = g.api_key_id
  order by g.day nulls first, g.cost desc, g.model, g.user_id, g.api_key_id, g.currency;
end
$$;

comment on function public.usage_report(timestamptz, timestamptz, uuid, text, text) is
  'Usage totals per day/model/user/key in [since, until) under the caller''s RLS (issue 13).';

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke execute on function public.usage_report(timestamptz, timestamptz, uuid, text, text)
  from public, anon;
grant execute on function public.usage_report(timestamptz, timestamptz, uuid, text, text)
  to authenticated, service_role;
