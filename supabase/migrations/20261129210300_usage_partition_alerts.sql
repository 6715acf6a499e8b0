-- The default partition's alert reaches the alerts outbox (issue 12 §2 → §6).
-- private.usage_outside_partitions() (20261129210000) raised a WARNING only; now it also
-- enqueues an alert `usage_outside_partitions` (no user: it is the operator's) through
-- private.enqueue_alert() of the alerts migrations (20261129230010), at most one a day
-- (dedupe_key), for the webhook worker to deliver. Those migrations come after this one, so the
-- call is looked up when a row arrives, not when this is created: before they are applied the
-- WARNING is the whole alert. A failing enqueue never costs the row: the charge commits, with
-- the WARNING.
create or replace function private.usage_outside_partitions(created_at timestamptz,
  request_id text)
returns void
language plpgsql set search_path = '' as $$
declare
  month text := to_char(created_at at time zone 'UTC', 'YYYY-MM');
begin
  raise warning 'usage_outside_partitions' using
    detail = format('usage %s (created %s) was stored in private.usage_records_default: no '
      'partition covers %s', request_id, created_at, month),
    hint = 'run `tokenmeter usage partitions ensure` (or select public.ensure_usage_partitions())';
  if to_regprocedure('private.enqueue_alert(text, uuid, jsonb, text)') is not null then
    begin
      perform private.enqueue_alert('usage_outside_partitions', null,
        jsonb_build_object('month', month, 'request_id', request_id, 'created_at', created_at,
          'partition', 'private.usage_records_default',
          'action', 'tokenmeter usage partitions ensure'),
        format('usage_outside_partitions:%s', to_char(now() at time zone 'UTC', 'YYYY-MM-DD')));
    exception when others then
      raise warning 'usage_outside_partitions_not_enqueued' using detail = sqlerrm;
    end;
  end if;
end
$$;
revoke execute on function private.usage_outside_partitions(timestamptz, text) from public;
