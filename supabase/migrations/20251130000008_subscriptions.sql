-- 20251130000008_subscriptions.sql
--
-- Subscriptions (issue 11 §1, seed 003): a user's right to use a plan, with request and token
-- quotas per period, and the operator's suspend / resume. Part of the 0.1.0 baseline
-- (CHANGELOG.md).
--   * status pending | active | suspended | cancelled | expired. At most one LIVE (active or
--     suspended) subscription per user and plan (partial unique index): a key names a plan, and
--     authorize_request must find exactly one subscription for it. Suspended counts as live
--     because a subscription suspended for its quota becomes active again by itself when the
--     period rolls over, and must not collide with a second one then.
--   * suspension_reason: 'quota' (set by the trigger below when a quota is exhausted) or
--     'operator' (anyone else suspending). Seed 003's trigger compared the new usage with the
--     OLD quota and suspended only beyond it; here a quota is exhausted when used >= quota of
--     the same row, so raising the quota (or the period rolling over) lifts a quota suspension,
--     and an operator cannot resume a subscription whose quota is still exhausted.
--   * quota_requests / quota_tokens: NULL = unlimited. used_* count completed requests of the
--     current period (complete_request); requests in flight are counted from metered_requests.
--   * Periods roll over by themselves, no cron: reset_at is the end of the current period,
--     started_at + n * period (UTC calendar arithmetic, so a month stays anchored to its day).
--     Every reader and writer treats used_* as 0 once reset_at has passed
--     (private.subscription_now); the functions that lock the row also store the rollover.
--   * expires_at: NULL = never. Past it, the subscription admits nothing (status is left as is;
--     active_subscriptions hides it).
--   * active_subscriptions (security_invoker, so RLS applies): the live-and-active ones with
--     remaining requests and tokens as of now, and their plan's name.
-- Writers: service_role inserts and updates the operator columns (status, quotas, period,
-- expires_at); used_*, reset_at and suspension_reason are written by the trigger and by the
-- metering functions (20251130000009) only, and by set_subscription_status below.
-- set_subscription_status: the operator's suspend / resume (issue 11 §3: `tokenmeter
-- subscriptions suspend|resume ID`). The other admin writes of the CLI (upstreams, plan routes,
-- new subscriptions) are plain table writes service_role is granted; this one needs a function
-- because it must write suspension_reason, which no API role may write, and because the allowed
-- changes depend on the row's state, read under its lock:
--   suspend: active → suspended ('operator'); suspended for its quota → suspended by the
--     operator (it then stays suspended when the period rolls over); already suspended by the
--     operator → unchanged.
--   resume: suspended → active, unless a quota is still exhausted in the current period (then
--     409: raise the quota or wait for the reset, as the quota rule above intends); pending →
--     active (at most one live subscription per user and plan: 409 when another is live);
--     active → unchanged.
--   cancelled or expired → 409 for both.
-- A period that has ended is rolled over first and stored (as authorize_request does), so a
-- quota suspension from a past period never blocks a resume.
-- Error codes: 42501 forbidden, 22023 invalid_argument, PT404 subscription_not_found,
-- PT409 invalid_status_change.

-- ── Tables ────────────────────────────────────────────────────────────────────────────────
create table public.subscriptions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  plan_id uuid not null references public.plans (id) on delete restrict,
  status text not null default 'pending',
  suspension_reason text,
  quota_requests bigint default 10000,
  quota_tokens bigint default 1000000,
  used_requests bigint not null default 0,
  used_tokens bigint not null default 0,
  period text not null default 'month',
  started_at timestamptz not null default now(),
  -- End of the current period; filled from started_at and period when left null.
  reset_at timestamptz not null,
  expires_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint subscriptions_status_valid
    check (status in ('pending', 'active', 'suspended', 'cancelled', 'expired')),
  constraint subscriptions_suspension_reason_valid check (
    (status = 'suspended') = (suspension_reason is not null)
    and suspension_reason in ('quota', 'operator')),
  constraint subscriptions_quota_requests_range
    check (quota_requests between 0 and 1000000000000),
  constraint subscriptions_quota_tokens_range check (quota_tokens between 0 and 1000000000000000),
  constraint subscriptions_used_requests_range check (used_requests >= 0),
  constraint subscriptions_used_tokens_range check (used_tokens >= 0),
  constraint subscriptions_period_valid check (period in ('day', 'week', 'month', 'year')),
  constraint subscriptions_started_at_finite check (isfinite(started_at)),
  constraint subscriptions_reset_at_after_start check (reset_at > started_at),
  constraint subscriptions_expires_at_finite check (isfinite(expires_at))
);
create unique index subscriptions_user_plan_live_key on public.subscriptions (user_id, plan_id)
  where status in ('active', 'suspended');
create index subscriptions_user_id_idx on public.subscriptions (user_id, created_at desc);
create index subscriptions_plan_id_idx on public.subscriptions (plan_id);
comment on column public.subscriptions.used_requests is
  'Completed requests this period; 0 once reset_at has passed, whatever is stored.';
comment on column public.subscriptions.reset_at is
  'End of the current quota period (started_at + n * period); the period rolls over by itself.';

-- ── Functions used by the trigger and the view ────────────────────────────────────────────
-- private.period_end(anchor, period, at) → the first anchor + n * period (n >= 1) after `at`,
-- computed in UTC so months keep their day (Jan 31 → Feb 28 → Mar 31). Raises nothing.
create function private.period_end(anchor timestamptz, period text, at timestamptz)
returns timestamptz
language plpgsql immutable set search_path = '' as $$
declare
  step interval := case period_end.period when 'day' then interval '1 day'
                     when 'week' then interval '7 days' when 'month' then interval '1 month'
                     else interval '1 year' end;
  base timestamp := anchor at time zone 'UTC';
  n bigint;
begin
  -- An estimate from the average length, then exact steps (months and years vary in length).
  n := greatest(1, floor(extract(epoch from (period_end.at - anchor))
                         / extract(epoch from step))::bigint);
  while n > 1 and (base + (n - 1) * step) at time zone 'UTC' > period_end.at loop
    n := n - 1;
  end loop;
  while (base + n * step) at time zone 'UTC' <= period_end.at loop
    n := n + 1;
  end loop;
  return (base + n * step) at time zone 'UTC';
end
$$;

-- private.subscription_now(s) → s as of now: when its period has ended, used_* are 0 and
-- reset_at is the end of the current period, and a quota suspension is lifted (the quota is
-- no longer exhausted). The stored row is not changed. Raises nothing.
create function private.subscription_now(s public.subscriptions)
returns public.subscriptions
language plpgsql stable set search_path = '' as $$
begin
  if s.reset_at <= now() then
    s.used_requests := 0;
    s.used_tokens := 0;
    s.reset_at := private.period_end(s.started_at, s.period, now());
    if s.status = 'suspended' and s.suspension_reason = 'quota' then
      s.status := 'active';
      s.suspension_reason := null;
    end if;
  end if;
  return s;
end
$$;

-- ── Triggers ──────────────────────────────────────────────────────────────────────────────
-- private.subscription_state(): BEFORE INSERT OR UPDATE on subscriptions. Fills reset_at on
-- insert; keeps suspension_reason consistent with status ('operator' for a suspension nobody
-- explained); suspends an active subscription whose quota is exhausted (used >= quota of this
-- very row) and re-activates a quota-suspended one whose quota no longer is.
create function private.subscription_state() returns trigger
language plpgsql set search_path = '' as $$
declare
  exhausted boolean := coalesce(new.used_requests >= new.quota_requests, false)
                       or coalesce(new.used_tokens >= new.quota_tokens, false);
begin
  -- The first period's end, written out: the trigger runs as the writer (service_role), which
  -- may not call private functions. Same arithmetic as private.period_end with n = 1.
  if tg_op = 'INSERT' and new.reset_at is null then
    new.reset_at := ((new.started_at at time zone 'UTC')
                     + case new.period when 'day' then interval '1 day'
                         when 'week' then interval '7 days' when 'month' then interval '1 month'
                         else interval '1 year' end) at time zone 'UTC';
  end if;
  if new.status <> 'suspended' then
    new.suspension_reason := null;
  elsif new.suspension_reason is null then
    new.suspension_reason := 'operator';
  end if;
  if new.status = 'active' and exhausted then
    new.status := 'suspended';
    new.suspension_reason := 'quota';
  elsif new.status = 'suspended' and new.suspension_reason = 'quota' and not exhausted then
    new.status := 'active';
    new.suspension_reason := null;
  end if;
  new.updated_at := now();
  return new;
end
$$;

create trigger subscriptions_state before insert or update on public.subscriptions
  for each row execute function private.subscription_state();

-- ── Row level security and policies ───────────────────────────────────────────────────────
alter table public.subscriptions enable row level security;
create policy "Users read their own subscriptions" on public.subscriptions
  for select to authenticated using ((select auth.uid()) = user_id);

-- ── Views ─────────────────────────────────────────────────────────────────────────────────
-- Seed 003's active_subscriptions, as of now: remaining_* NULL = unlimited. The rollover is
-- written out in SQL (no private helper: a security_invoker view runs as the API role, which
-- may not use schema private); reset_at is the first started_at + k * period after now, k
-- searched around the estimate from the period's average length (exact for any age: the
-- calendar drifts less than one period from the average). 52-subscriptions.sql checks it
-- against private.subscription_now.
create view public.active_subscriptions with (security_invoker = true) as
select s.id, s.user_id, s.plan_id, p.name as plan, s.quota_requests, s.quota_tokens,
       r.used_requests, r.used_tokens,
       greatest(s.quota_requests - r.used_requests, 0) as remaining_requests,
       greatest(s.quota_tokens - r.used_tokens, 0) as remaining_tokens,
       s.period, s.started_at, r.reset_at, s.expires_at, s.created_at
from public.subscriptions s
join public.plans p on p.id = s.plan_id
cross join lateral (
  select case when s.reset_at > now() then s.used_requests else 0 end as used_requests,
         case when s.reset_at > now() then s.used_tokens else 0 end as used_tokens,
         case when s.reset_at > now() then s.reset_at else (
           select min(c.t) from (
             select ((s.started_at at time zone 'UTC') + k * st.step) at time zone 'UTC' as t
             from (select case s.period when 'day' then interval '1 day'
                                        when 'week' then interval '7 days'
                                        when 'month' then interval '1 month'
                                        else interval '1 year' end as step,
                          floor(extract(epoch from now() - s.started_at)
                                / case s.period when 'day' then 86400 when 'week' then 604800
                                                when 'month' then 2629746 else 31556952 end
                               )::bigint as n0) st
             cross join lateral generate_series(greatest(1, st.n0 - 1), st.n0 + 2) k) c
           where c.t > now()) end as reset_at) r
where (s.status = 'active'
       or (s.status = 'suspended' and s.suspension_reason = 'quota' and s.reset_at <= now()))
  and (s.expires_at is null or s.expires_at > now());
comment on view public.active_subscriptions is
  'Active, unexpired subscriptions with what is left of this period''s quotas (RLS applies).';

-- ── Operator actions ─────────────────────────────────────────────────────────────────────
-- public.set_subscription_status(subscription_id, status) → the subscription as stored (as of
-- now) + {plan, changed}. status: 'suspended' or 'active'.
-- Who may call: service_role. DEFINER: writes suspension_reason and the rollover, which
-- service_role's column grants exclude.
-- Raises: 42501 forbidden, 22023 invalid_argument, PT404 subscription_not_found,
-- PT409 invalid_status_change.
create function public.set_subscription_status(subscription_id uuid, status text)
returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  sub public.subscriptions;
  rolled public.subscriptions;
  before text;
  exhausted boolean;
begin
  perform private.assert_service_role();
  if set_subscription_status.subscription_id is null then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'subscription_id must be a subscription id';
  end if;
  if set_subscription_status.status is null
     or set_subscription_status.status not in ('active', 'suspended') then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'status must be active or suspended';
  end if;

  select s.* into sub from public.subscriptions s
  where s.id = set_subscription_status.subscription_id
  for no key update;
  if not found then
    raise exception using errcode = 'PT404', message = 'subscription_not_found',
      detail = format('no subscription %s', set_subscription_status.subscription_id);
  end if;
  rolled := private.subscription_now(sub);
  if rolled.reset_at <> sub.reset_at then
    update public.subscriptions s set used_requests = 0, used_tokens = 0,
      reset_at = rolled.reset_at
    where s.id = sub.id returning s.* into sub;
  end if;
  before := sub.status || coalesce('/' || sub.suspension_reason, '');

  if sub.status in ('cancelled', 'expired') then
    raise exception using errcode = 'PT409', message = 'invalid_status_change',
      detail = format('the subscription is %s; it cannot become %s', sub.status,
                      set_subscription_status.status);
  end if;

  if set_subscription_status.status = 'suspended' then
    if sub.status = 'pending' then
      raise exception using errcode = 'PT409', message = 'invalid_status_change',
        detail = 'the subscription is pending; only an active one can be suspended';
    end if;
    if before <> 'suspended/operator' then
      update public.subscriptions s set status = 'suspended', suspension_reason = 'operator'
      where s.id = sub.id returning s.* into sub;
    end if;
  elsif sub.status <> 'active' then
    exhausted := coalesce(sub.used_requests >= sub.quota_requests, false)
                 or coalesce(sub.used_tokens >= sub.quota_tokens, false);
    if exhausted then
      raise exception using errcode = 'PT409', message = 'invalid_status_change',
        detail = format('a quota of the subscription is used up until %s; raise the quota or '
                        'wait for the reset', private.utc_iso(sub.reset_at));
    end if;
    if sub.status = 'pending' and exists (
         select 1 from public.subscriptions o
         where o.user_id = sub.user_id and o.plan_id = sub.plan_id and o.id <> sub.id
           and o.status in ('active', 'suspended')) then
      raise exception using errcode = 'PT409', message = 'invalid_status_change',
        detail = 'the user has another live subscription to this plan';
    end if;
    update public.subscriptions s set status = 'active', suspension_reason = null
    where s.id = sub.id returning s.* into sub;
  end if;

  return to_jsonb(sub) || jsonb_build_object(
    'plan', (select p.name from public.plans p where p.id = sub.plan_id),
    'changed', before <> sub.status || coalesce('/' || sub.suspension_reason, ''));
end
$$;

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke all on public.subscriptions, public.active_subscriptions
  from public, anon, authenticated, service_role;
grant select on public.subscriptions to authenticated, service_role;
grant insert (user_id, plan_id, status, quota_requests, quota_tokens, period, started_at,
              expires_at) on public.subscriptions to service_role;
grant update (status, quota_requests, quota_tokens, expires_at) on public.subscriptions
  to service_role;
grant select on public.active_subscriptions to authenticated, service_role;

revoke execute on function private.period_end(timestamptz, text, timestamptz) from public;
revoke execute on function private.subscription_now(public.subscriptions) from public;
revoke execute on function private.subscription_state() from public;

revoke execute on function public.set_subscription_status(uuid, text)
  from public, anon, authenticated;
grant execute on function public.set_subscription_status(uuid, text) to service_role;
