-- 20261129230010_alerts.sql
--
-- Low-balance and quota alerts (issue 12 §6), written to an outbox that a worker delivers to a
-- webhook (app/alerts.py: `tokenmeter alerts run`; the local stack runs it).
--   * alert_outbox: generic — kind, user_id (null for an alert about no user), payload, and an
--     optional dedupe_key (unique: a second alert with the same key is not written). Delivery
--     state: status pending | delivered | failed, attempts, next_attempt_at, last_error.
--     claim_alerts() leases due rows (SKIP LOCKED; next_attempt_at moves past the lease, so a
--     worker that dies mid-delivery leaves them to be retried); record_alert_attempt() records
--     the outcome. At least once: the receiver dedupes on the alert id.
--   * Low balance: a threshold per user (low_balance_thresholds) or, for everyone else, the
--     default (alert_settings). The effective one is copied onto the user's balance row
--     (user_balances.low_balance_threshold), so the check in the charging transaction is a
--     trigger WHEN clause comparing columns of the row being updated: no function call, no
--     lookup, unless an alert is due (an AFTER trigger: private.low_balance_alert says why).
--     low_balance_alerted remembers that this descent has alerted: a balance going below the
--     threshold alerts once (not once per request below it), and again only after it has been
--     back at or above the threshold. Concurrent charges of
--     one user update the same row one after another (row lock), each trigger seeing the
--     previous one's flag: exactly one of them alerts. Changing a user's effective threshold
--     re-arms the alert (the next charge below the new threshold alerts).
--   * Quotas: each subscription keeps the highest level (0, 80, 100 %) alerted for requests and
--     for tokens in the current period; reaching 80 % and 100 % of a quota alerts once each per
--     period (both when one request crosses both), and a new period (reset_at moves) starts
--     from 0. The dedupe_key (subscription, period end, quota, level) backs it.
-- Also: private.enqueue_alert(kind, user_id, payload, dedupe_key) for other alerts.
-- Error codes: 22023 invalid_argument, PT404 user_not_found / alert_not_found, 42501 forbidden.

-- ── Tables ────────────────────────────────────────────────────────────────────────────────
create table public.alert_outbox (
  id uuid primary key default gen_random_uuid(),
  kind text not null,
  user_id uuid references auth.users (id) on delete cascade,
  payload jsonb not null default '{}',
  dedupe_key text,
  status text not null default 'pending',
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  last_error text,
  created_at timestamptz not null default now(),
  delivered_at timestamptz,
  constraint alert_outbox_kind_format check (kind ~ '^[a-z][a-z0-9_.]{0,62}$'),
  constraint alert_outbox_dedupe_key_key unique (dedupe_key),
  constraint alert_outbox_dedupe_key_length check (length(dedupe_key) between 1 and 255),
  constraint alert_outbox_status_valid check (status in ('pending', 'delivered', 'failed')),
  constraint alert_outbox_delivered_at_set
    check ((status = 'delivered') = (delivered_at is not null)),
  constraint alert_outbox_attempts_range check (attempts between 0 and 1000),
  constraint alert_outbox_last_error_length check (length(last_error) <= 2000),
  constraint alert_outbox_payload_object check (jsonb_typeof(payload) = 'object')
);
create index alert_outbox_due_idx on public.alert_outbox (next_attempt_at)
  where status = 'pending';
create index alert_outbox_user_id_created_at_idx on public.alert_outbox (user_id, created_at desc);
create index alert_outbox_created_at_idx on public.alert_outbox (created_at desc);
comment on table public.alert_outbox is
  'Alerts waiting for (or done with) webhook delivery; delivered at least once, by id.';

create table public.alert_settings (
  id boolean primary key default true,
  -- Low-balance threshold of every user without their own; null: none.
  default_low_balance_threshold numeric(24,12),
  updated_at timestamptz not null default now(),
  constraint alert_settings_id_single_row check (id),
  constraint alert_settings_default_low_balance_threshold_range
    check (default_low_balance_threshold > -1e12 and default_low_balance_threshold < 1e12)
);
insert into public.alert_settings (id) values (true) on conflict (id) do nothing;

create table public.low_balance_thresholds (
  user_id uuid primary key references auth.users (id) on delete cascade,
  threshold numeric(24,12) not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint low_balance_thresholds_threshold_range
    check (threshold > -1e12 and threshold < 1e12)
);

alter table public.user_balances
  add column low_balance_threshold numeric(24,12),
  add column low_balance_alerted boolean not null default false;
comment on column public.user_balances.low_balance_threshold is
  'Effective low-balance threshold (the user''s own, else the default): a copy, kept by '
  'set_low_balance_threshold / set_default_low_balance_threshold, so the charge checks it cheaply.';
comment on column public.user_balances.low_balance_alerted is
  'The balance went below the threshold and that was alerted; cleared when it is back above.';

alter table public.subscriptions
  add column requests_alert_level smallint not null default 0,
  add column tokens_alert_level smallint not null default 0,
  add constraint subscriptions_requests_alert_level_valid
    check (requests_alert_level in (0, 80, 100)),
  add constraint subscriptions_tokens_alert_level_valid check (tokens_alert_level in (0, 80, 100));
comment on column public.subscriptions.requests_alert_level is
  'Highest share of quota_requests (80 or 100 %) alerted in the current period; 0: none.';

-- ── Functions used by the triggers ────────────────────────────────────────────────────────
-- private.enqueue_alert(kind, user_id, payload, dedupe_key = null) → the alert's id, or null
-- when an alert with that dedupe_key exists already. Runs as its caller (the SECURITY DEFINER
-- trigger functions below, or another migration's). Raises 23514 on a malformed kind.
create function private.enqueue_alert(kind text, user_id uuid, payload jsonb,
                                      dedupe_key text default null)
returns uuid
language sql set search_path = '' as $$
  insert into public.alert_outbox (kind, user_id, payload, dedupe_key)
  values (enqueue_alert.kind, enqueue_alert.user_id, coalesce(enqueue_alert.payload, '{}'),
          enqueue_alert.dedupe_key)
  on conflict on constraint alert_outbox_dedupe_key_key do nothing
  returning id
$$;

-- private.quota_level(used, quota) → 100 when used >= quota, 80 when used >= 80 % of it, else
-- 0; 0 for no quota (null) or a zero quota (nothing to warn about).
create function private.quota_level(used bigint, quota bigint) returns smallint
language sql immutable set search_path = '' as $$
  select (case when quota_level.quota > 0 then
            case when quota_level.used >= quota_level.quota then 100
                 when quota_level.used * 5 >= quota_level.quota * 4 then 80 else 0 end
          else 0 end)::smallint
$$;

-- ── Trigger functions ─────────────────────────────────────────────────────────────────────
-- private.low_balance_alert(): AFTER UPDATE OF balance on user_balances, only when the WHEN
-- clause sees a balance below the threshold not yet alerted, or a recovery to re-arm: it
-- records that on the row (an UPDATE of low_balance_alerted alone, which does not fire it
-- again) and, for a descent, writes the alert. The row is still locked by the charge, so the
-- next charge of the user sees the flag. When its WHEN clause is false an AFTER trigger queues
-- nothing; measured, it costs a charge the same as a BEFORE trigger with the same clause
-- (bench/alert_trigger_cost.py, docs/benchmarks.md), and it leaves NEW to the charge.
-- SECURITY DEFINER: alert_outbox is writable by no API role. Refuses to run outside it.
create function private.low_balance_alert() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_level <> 'ROW' or tg_when <> 'AFTER' or tg_op <> 'UPDATE'
     or tg_table_schema <> 'public' or tg_table_name <> 'user_balances' then
    raise exception using errcode = '42501', message = 'forbidden',
      detail = 'low_balance_alert runs only as the trigger of user_balances';
  end if;
  if new.balance >= new.low_balance_threshold then
    update public.user_balances b set low_balance_alerted = false
    where b.user_id = new.user_id;
  elsif new.balance < old.balance then
    -- A top-up that leaves a re-armed balance below its threshold is no descent: the next
    -- charge alerts.
    update public.user_balances b set low_balance_alerted = true
    where b.user_id = new.user_id;
    perform private.enqueue_alert('low_balance', new.user_id, jsonb_build_object(
      'user_id', new.user_id, 'threshold', trim_scale(new.low_balance_threshold)::text,
      'balance', trim_scale(new.balance)::text,
      'previous_balance', trim_scale(old.balance)::text, 'currency', new.currency));
  end if;
  return null;
end
$$;

-- private.fill_low_balance_threshold(): BEFORE INSERT on user_balances: a new balance row gets
-- the user's effective threshold. SECURITY DEFINER: a user creating their own zero balance
-- (policy "Users create their own zero balance") may not read the thresholds.
create function private.fill_low_balance_threshold() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_level <> 'ROW' or tg_when <> 'BEFORE' or tg_op <> 'INSERT'
     or tg_table_schema <> 'public' or tg_table_name <> 'user_balances' then
    raise exception using errcode = '42501', message = 'forbidden',
      detail = 'fill_low_balance_threshold runs only as the trigger of user_balances';
  end if;
  new.low_balance_threshold := coalesce(
    (select t.threshold from public.low_balance_thresholds t where t.user_id = new.user_id),
    (select s.default_low_balance_threshold from public.alert_settings s));
  new.low_balance_alerted := false;
  return new;
end
$$;

-- private.quota_alert(): BEFORE UPDATE on subscriptions (after subscriptions_state, by name),
-- only when the WHEN clause sees a new period or a quota level above the one alerted.
-- SECURITY DEFINER: alert_outbox is writable by no API role. Refuses to run outside it.
create function private.quota_alert() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  step smallint;
  quota_name text;
  stored smallint;
  used bigint;
  quota bigint;
  level smallint;
begin
  if tg_level <> 'ROW' or tg_when <> 'BEFORE' or tg_op <> 'UPDATE'
     or tg_table_schema <> 'public' or tg_table_name <> 'subscriptions' then
    raise exception using errcode = '42501', message = 'forbidden',
      detail = 'quota_alert runs only as the trigger of subscriptions';
  end if;
  if new.reset_at is distinct from old.reset_at then
    new.requests_alert_level := 0;  -- a new period: its levels are still to be reached
    new.tokens_alert_level := 0;
  end if;
  foreach quota_name in array array['requests', 'tokens'] loop
    if quota_name = 'requests' then
      used := new.used_requests; quota := new.quota_requests; stored := new.requests_alert_level;
    else
      used := new.used_tokens; quota := new.quota_tokens; stored := new.tokens_alert_level;
    end if;
    level := private.quota_level(used, quota);
    if level > stored then
      foreach step in array array[80, 100]::smallint[] loop
        if step > stored and step <= level then
          perform private.enqueue_alert('quota', new.user_id, jsonb_build_object(
              'user_id', new.user_id, 'subscription_id', new.id, 'plan_id', new.plan_id,
              'plan', (select p.name from public.plans p where p.id = new.plan_id),
              'quota', quota_name, 'level', step, 'used', used, 'limit', quota,
              'period_end', new.reset_at),
            format('quota:%s:%s:%s:%s', new.id, extract(epoch from new.reset_at)::bigint,
                   quota_name, step));
        end if;
      end loop;
      if quota_name = 'requests' then
        new.requests_alert_level := level;
      else
        new.tokens_alert_level := level;
      end if;
    end if;
  end loop;
  return new;
end
$$;

-- ── Triggers ──────────────────────────────────────────────────────────────────────────────
-- The charge's cost: evaluating this WHEN clause on the balance row's old and new versions.
-- Fires only when the flag disagrees with the balance: below and not alerted yet, or alerted
-- and back at or above (a NULL threshold never). The clause reads only the new row: with OLD in
-- it, each UPDATE paid ~4 µs more (bench/alert_trigger_cost.py).
create trigger user_balances_low_balance_alert after update of balance on public.user_balances
  for each row
  when (new.low_balance_alerted <> (new.balance < new.low_balance_threshold))
  execute function private.low_balance_alert();
create trigger user_balances_fill_low_balance_threshold before insert on public.user_balances
  for each row execute function private.fill_low_balance_threshold();
create trigger subscriptions_usage_alert before update on public.subscriptions
  for each row
  when (new.reset_at is distinct from old.reset_at
        or (case when new.quota_requests > 0 then
              case when new.used_requests >= new.quota_requests then 100
                   when new.used_requests * 5 >= new.quota_requests * 4 then 80 else 0 end
            else 0 end) > new.requests_alert_level
        or (case when new.quota_tokens > 0 then
              case when new.used_tokens >= new.quota_tokens then 100
                   when new.used_tokens * 5 >= new.quota_tokens * 4 then 80 else 0 end
            else 0 end) > new.tokens_alert_level)
  execute function private.quota_alert();
create trigger low_balance_thresholds_touch before update on public.low_balance_thresholds
  for each row execute function private.touch_updated_at();

-- ── Row level security and policies ───────────────────────────────────────────────────────
alter table public.alert_outbox enable row level security;
alter table public.alert_settings enable row level security;
alter table public.low_balance_thresholds enable row level security;
create policy "Users read their own alerts" on public.alert_outbox
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "Users read their own low-balance threshold" on public.low_balance_thresholds
  for select to authenticated using ((select auth.uid()) = user_id);
-- alert_settings: no policy; service_role only.

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke all on public.alert_outbox, public.alert_settings, public.low_balance_thresholds
  from public, anon, authenticated, service_role;
grant select on public.alert_outbox, public.low_balance_thresholds to authenticated, service_role;
grant select on public.alert_settings to service_role;

revoke execute on function private.enqueue_alert(text, uuid, jsonb, text) from public;
revoke execute on function private.quota_level(bigint, bigint) from public;
revoke execute on function private.low_balance_alert() from public;
revoke execute on function private.fill_low_balance_threshold() from public;
revoke execute on function private.quota_alert() from public;
