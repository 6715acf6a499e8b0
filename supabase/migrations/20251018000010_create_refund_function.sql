-- 20251018000010_create_refund_function.sql
--
-- Refunds: give back all or part of what a usage record cost (a failed completion the provider
-- did not bill, a support gesture). A refund is a ledger entry of kind 'refund' whose reference
-- is the usage's request_id, so a request can be refunded at most once and a retried refund is
-- idempotent. The usage record itself is a fact and stays untouched.
-- Error codes: see the catalog at the top of 20251018000005_create_pricing_functions.sql.
-- This file raises: 42501 forbidden, 22023 invalid_argument / invalid_amount,
-- PT404 usage_not_found, PT409 idempotency_conflict.

-- public.refund_usage(request_id, reason, amount = null) → top_up's keys (kind 'refund',
-- description = reason) + {usage_id, usage_cost}. amount null = the full cost; otherwise
-- 0 < amount <= the usage's cost. Who may call: service_role. DEFINER: writes the ledger and
-- balances, which no API role may do.
create function public.refund_usage(request_id text, reason text, amount numeric default null)
returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  usage public.usage_records;
  refund numeric;
begin
  perform private.assert_service_role();
  perform private.check_text('request_id', refund_usage.request_id);
  perform private.check_text('reason', refund_usage.reason);
  select u.* into usage from public.usage_records u where u.request_id = refund_usage.request_id;
  if not found then
    raise exception using errcode = 'PT404', message = 'usage_not_found',
      detail = format('no usage record for request_id %s', refund_usage.request_id);
  end if;
  refund := coalesce(refund_usage.amount, usage.cost);
  perform private.check_amount('amount', refund);
  if refund > usage.cost then
    raise exception using errcode = '22023', message = 'invalid_amount',
      detail = format('amount must not exceed the usage cost %s', trim_scale(usage.cost));
  end if;
  return private.post_ledger_entry('refund', usage.user_id, refund, usage.request_id,
                                   refund_usage.reason)
    || jsonb_build_object('usage_id', usage.id, 'usage_cost', private.money(usage.cost));
end
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function public.refund_usage(text, text, numeric)
  from public, anon, authenticated;
grant execute on function public.refund_usage(text, text, numeric) to service_role;
