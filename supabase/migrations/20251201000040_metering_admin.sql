-- 20251201000040_metering_admin.sql
--
-- The operator's suspend / resume of a subscription (issue 11 §3: `tokenmeter subscriptions
-- suspend|resume ID`). The other admin writes of the CLI (upstreams, plan routes, new
-- subscriptions) are plain table writes service_role is granted (20251201000021/22); this one
-- needs a function because it must write suspension_reason, which no API role may write, and
-- because the allowed changes depend on the row's state, read under its lock:
--   suspend: active → suspended ('operator'); suspended for its quota → suspended by the
--     operator (it then stays suspended when the period rolls over); already suspended by the
--     operator → unchanged.
--   resume: suspended → active, unless a quota is still exhausted in the current period (then
--     409: raise the quota or wait for the reset, as 20251201000022 intends); pending → active
--     (at most one live subscription per user and plan: 409 when another is live); active →
--     unchanged.
--   cancelled or expired → 409 for both.
-- A period that has ended is rolled over first and stored (as authorize_request does), so a
-- quota suspension from a past period never blocks a resume.
-- Error codes: 42501 forbidden, 22023 invalid_argument, PT404 subscription_not_found,
-- PT409 invalid_status_change.

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
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
revoke execute on function public.set_subscription_status(uuid, text)
  from public, anon, authenticated;
grant execute on function public.set_subscription_status(uuid, text) to service_role;
