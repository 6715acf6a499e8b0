-- 20261129230011_alert_functions.sql
--
-- What operators and the delivery worker call (issue 12 §6; tables in 20261129230010):
--   set_low_balance_threshold(user_id, threshold)   a user's own threshold; null removes it
--   set_default_low_balance_threshold(threshold)    everyone else's; null: no default
--   claim_alerts(max_count, lease_seconds)           the worker leases due alerts
--   record_alert_attempt(id, delivered, error, retry_in_seconds)   and records each outcome
--   requeue_alert(id)                                a failed alert is tried again from now
-- Threshold changes are audit entries (audit_logs, 20261129230001). All service_role only.
-- Error codes: 22023 invalid_argument, PT404 user_not_found / alert_not_found, 42501 forbidden.

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.check_threshold(threshold): null or a finite amount in (-1e12, 1e12).
-- Raises 22023 invalid_argument.
create function private.check_threshold(threshold numeric) returns void
language plpgsql immutable set search_path = '' as $$
begin
  if threshold is not null
     and (threshold = 'NaN'::numeric or threshold <= -1e12 or threshold >= 1e12
          or scale(threshold) > 12) then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'threshold must be an amount between -1e12 and 1e12 with at most 12 decimals, '
               'or null';
  end if;
end
$$;

-- public.set_low_balance_threshold(user_id, threshold) → {user_id, threshold, default_threshold,
-- effective}. threshold null: the user's own is removed and the default applies. A change of
-- the effective threshold re-arms the alert. Who may call: service_role (DEFINER: writes the
-- balance row's copy and the audit log, which no API role may write).
-- Raises 42501 forbidden, 22023 invalid_argument, PT404 user_not_found.
create function public.set_low_balance_threshold(user_id uuid, threshold numeric)
returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  previous numeric;
  default_threshold numeric;
  effective numeric;
begin
  perform private.assert_service_role();
  perform private.assert_user_exists(set_low_balance_threshold.user_id);
  perform private.check_threshold(set_low_balance_threshold.threshold);
  select t.threshold into previous from public.low_balance_thresholds t
  where t.user_id = set_low_balance_threshold.user_id for update;
  if set_low_balance_threshold.threshold is null then
    delete from public.low_balance_thresholds t
    where t.user_id = set_low_balance_threshold.user_id;
  else
    insert into public.low_balance_thresholds as t (user_id, threshold)
    values (set_low_balance_threshold.user_id, set_low_balance_threshold.threshold)
    on conflict on constraint low_balance_thresholds_pkey
    do update set threshold = excluded.threshold;
  end if;
  select s.default_low_balance_threshold into default_threshold from public.alert_settings s;
  effective := coalesce(set_low_balance_threshold.threshold, default_threshold);
  update public.user_balances b
  set low_balance_threshold = effective, low_balance_alerted = false
  where b.user_id = set_low_balance_threshold.user_id
    and b.low_balance_threshold is distinct from effective;
  if previous is distinct from set_low_balance_threshold.threshold then
    perform private.write_audit('set_low_balance_threshold', 'low_balance_thresholds',
      set_low_balance_threshold.user_id::text, set_low_balance_threshold.user_id,
      jsonb_build_object('threshold', trim_scale(previous)::text),
      jsonb_build_object('threshold', trim_scale(set_low_balance_threshold.threshold)::text));
  end if;
  return jsonb_build_object('user_id', set_low_balance_threshold.user_id,
    'threshold', trim_scale(set_low_balance_threshold.threshold)::text,
    'default_threshold', trim_scale(default_threshold)::text,
    'effective', trim_scale(effective)::text);
end
$$;

-- public.set_default_low_balance_threshold(threshold) → {default_threshold, users}: the
-- threshold of every user without their own (null: none), and how many balance rows took it
-- (their alerts re-armed). One statement over those rows: it waits for their charges in flight.
-- Who may call: service_role (DEFINER: as set_low_balance_threshold).
-- Raises 42501 forbidden, 22023 invalid_argument.
create function public.set_default_low_balance_threshold(threshold numeric) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  previous numeric;
  touched bigint;
begin
  perform private.assert_service_role();
  perform private.check_threshold(set_default_low_balance_threshold.threshold);
  select s.default_low_balance_threshold into previous from public.alert_settings s for update;
  update public.alert_settings s
  set default_low_balance_threshold = set_default_low_balance_threshold.threshold,
      updated_at = now();
  update public.user_balances b
  set low_balance_threshold = set_default_low_balance_threshold.threshold,
      low_balance_alerted = false
  where not exists (select 1 from public.low_balance_thresholds t where t.user_id = b.user_id)
    and b.low_balance_threshold is distinct from set_default_low_balance_threshold.threshold;
  get diagnostics touched = row_count;
  if previous is distinct from set_default_low_balance_threshold.threshold then
    perform private.write_audit('set_default_low_balance_threshold', 'alert_settings', null,
      null, jsonb_build_object('default_low_balance_threshold', trim_scale(previous)::text),
      jsonb_build_object('default_low_balance_threshold',
                         trim_scale(set_default_low_balance_threshold.threshold)::text),
      jsonb_build_object('users', touched));
  end if;
  return jsonb_build_object(
    'default_threshold', trim_scale(set_default_low_balance_threshold.threshold)::text,
    'users', touched);
end
$$;

-- public.claim_alerts(max_count = 10, lease_seconds = 60) → the due pending alerts (at most
-- max_count, oldest due first), each with attempts counted and next_attempt_at moved
-- lease_seconds ahead: no other worker takes them meanwhile, and if this one dies they are due
-- again after the lease. Concurrent workers skip each other's rows (SKIP LOCKED).
-- Who may call: service_role (DEFINER: alert_outbox is written by no API role).
-- Raises 42501 forbidden, 22023 invalid_argument.
create function public.claim_alerts(max_count integer default 10,
                                    lease_seconds integer default 60)
returns setof public.alert_outbox
language plpgsql security definer set search_path = '' as $$
begin
  perform private.assert_service_role();
  if max_count is null or max_count not between 1 and 1000 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'max_count must be between 1 and 1000';
  end if;
  if lease_seconds is null or lease_seconds not between 1 and 86400 then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'lease_seconds must be between 1 and 86400';
  end if;
  return query
  update public.alert_outbox o
  set attempts = o.attempts + 1,
      next_attempt_at = now() + make_interval(secs => claim_alerts.lease_seconds)
  where o.id in (select x.id from public.alert_outbox x
                 where x.status = 'pending' and x.next_attempt_at <= now()
                 order by x.next_attempt_at, x.created_at
                 limit claim_alerts.max_count
                 for update skip locked)
  returning o.*;
end
$$;

-- public.record_alert_attempt(id, delivered, error = null, retry_in_seconds = null) → the
-- alert. delivered: status delivered. Otherwise last_error = error, and the alert is due again
-- in retry_in_seconds, or, when that is null, failed for good. An alert no longer pending
-- (another worker finished it after this one's lease ran out) is returned unchanged.
-- Who may call: service_role (DEFINER: as claim_alerts).
-- Raises 42501 forbidden, 22023 invalid_argument, PT404 alert_not_found.
create function public.record_alert_attempt(id uuid, delivered boolean, error text default null,
                                            retry_in_seconds numeric default null)
returns public.alert_outbox
language plpgsql security definer set search_path = '' as $$
declare
  alert public.alert_outbox;
begin
  perform private.assert_service_role();
  if delivered is null then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'delivered must be true or false';
  end if;
  if retry_in_seconds is not null
     and (retry_in_seconds = 'NaN'::numeric or retry_in_seconds not between 0 and 31536000) then
    raise exception using errcode = '22023', message = 'invalid_argument',
      detail = 'retry_in_seconds must be between 0 and 31536000, or null to give up';
  end if;
  select o.* into alert from public.alert_outbox o
  where o.id = record_alert_attempt.id for update;
  if not found then
    raise exception using errcode = 'PT404', message = 'alert_not_found',
      detail = format('no alert %s', record_alert_attempt.id);
  end if;
  if alert.status <> 'pending' then
    return alert;
  end if;
  if delivered then
    update public.alert_outbox o set status = 'delivered', delivered_at = now()
    where o.id = alert.id returning o.* into alert;
  else
    update public.alert_outbox o
    set last_error = left(coalesce(record_alert_attempt.error, 'unknown error'), 2000),
        status = case when record_alert_attempt.retry_in_seconds is null then 'failed'
                      else 'pending' end,
        next_attempt_at = case when record_alert_attempt.retry_in_seconds is null
                               then o.next_attempt_at
                               else now() + make_interval(
                                 secs => record_alert_attempt.retry_in_seconds::double precision)
                          end
    where o.id = alert.id returning o.* into alert;
  end if;
  return alert;
end
$$;

-- public.requeue_alert(id) → the alert, pending and due now (its attempts kept). For a failed
-- alert once the receiver is fixed. Who may call: service_role (DEFINER: as claim_alerts).
-- Raises 42501 forbidden, PT404 alert_not_found.
create function public.requeue_alert(id uuid) returns public.alert_outbox
language plpgsql security definer set search_path = '' as $$
declare
  alert public.alert_outbox;
begin
  perform private.assert_service_role();
  update public.alert_outbox o set status = 'pending', next_attempt_at = now()
  where o.id = requeue_alert.id and o.status <> 'delivered'
  returning o.* into alert;
  if not found then
    select o.* into alert from public.alert_outbox o where o.id = requeue_alert.id;
    if not found then
      raise exception using errcode = 'PT404', message = 'alert_not_found',
        detail = format('no alert %s', requeue_alert.id);
    end if;
  end if;
  return alert;
end
$$;

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.check_threshold(numeric) from public;
revoke execute on function public.set_low_balance_threshold(uuid, numeric)
  from public, anon, authenticated;
revoke execute on function public.set_default_low_balance_threshold(numeric)
  from public, anon, authenticated;
revoke execute on function public.claim_alerts(integer, integer) from public, anon, authenticated;
revoke execute on function public.record_alert_attempt(uuid, boolean, text, numeric)
  from public, anon, authenticated;
revoke execute on function public.requeue_alert(uuid) from public, anon, authenticated;

grant execute on function public.set_low_balance_threshold(uuid, numeric) to service_role;
grant execute on function public.set_default_low_balance_threshold(numeric) to service_role;
grant execute on function public.claim_alerts(integer, integer) to service_role;
grant execute on function public.record_alert_attempt(uuid, boolean, text, numeric)
  to service_role;
grant execute on function public.requeue_alert(uuid) to service_role;
