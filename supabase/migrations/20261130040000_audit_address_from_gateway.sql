-- 20261130040000_audit_address_from_gateway.sql
--
-- The audit trail's address (issue 12 §5): X-Real-IP first, else the LAST hop of
-- X-Forwarded-For — no longer the first one, which is whatever the client put there.
--   * The gateway in front of the API (Supabase's; the local one, app/stack/gateway/
--     forwarded.py) sets X-Real-IP to the connection's peer, replacing a client's, and appends
--     the peer to X-Forwarded-For. So X-Real-IP is the address the gateway saw; a proxy that
--     only appends to X-Forwarded-For leaves its peer as the last hop. The first hop is what the
--     client (or a proxy before it) claims: trusting it let any caller write any address into
--     the trail by sending the header.
--   * The whole chain is still kept, as sent, in metadata.forwarded_for.
--   * Unchanged otherwise: malformed values are left out (invalid_address keeps the text), SQL
--     run directly records the connection's peer.

-- private.write_audit(action, resource_type, resource_id, user_id, before, after, metadata)
-- → the entry's id (20261129230001's, with the address rule above). Runs as its caller: the
-- SECURITY DEFINER trigger functions and the admin functions. No API role may call it.
create or replace function private.write_audit(
  action text, resource_type text, resource_id text, user_id uuid, before jsonb, after jsonb,
  metadata jsonb default '{}'
) returns bigint
language plpgsql set search_path = '' as $$
declare
  uuid_pattern constant text := '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$';
  headers jsonb;
  claims_sub text := current_setting('request.jwt.claim.sub', true);
  key_id text := current_setting('tokenmeter.api_key_id', true);
  forwarded text;
  address text;
  ip inet;
  agent text;
  extra jsonb := coalesce(write_audit.metadata, '{}');
  entry_id bigint;
begin
  begin
    headers := nullif(current_setting('request.headers', true), '')::jsonb;
    claims_sub := coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb
                           ->> 'sub', claims_sub);
  exception when others then
    headers := null;  -- a malformed setting must not block the change
  end;
  if jsonb_typeof(headers) = 'object' then
    forwarded := left(headers ->> 'x-forwarded-for', 1000);
    -- The last hop: the text after the last comma (the whole value when there is none), of
    -- the whole header: a long claimed chain must not push the proxy's entry out.
    address := btrim(coalesce(nullif(btrim(headers ->> 'x-real-ip'), ''),
                              nullif(btrim(substring(headers ->> 'x-forwarded-for'
                                                     from '[^,]*$')), '')));
    agent := left(headers ->> 'user-agent', 1000);
    if address is not null then
      begin
        ip := address::inet;
      exception when others then
        ip := null;
        extra := extra || jsonb_build_object('invalid_address', left(address, 100));
      end;
    end if;
    if forwarded is not null then
      extra := extra || jsonb_build_object('forwarded_for', forwarded);
    end if;
  else
    ip := inet_client_addr();  -- SQL run directly: the connection's peer (null on a socket)
  end if;
  insert into public.audit_logs (actor_role, actor_user_id, actor_api_key_id, action,
                                 resource_type, resource_id, user_id, before, after, ip_address,
                                 user_agent, metadata)
  values (coalesce(nullif(current_setting('role', true), 'none'), session_user::text),
          case when claims_sub ~ uuid_pattern then claims_sub::uuid end,
          case when key_id ~ uuid_pattern then key_id::uuid end,
          write_audit.action, write_audit.resource_type, left(write_audit.resource_id, 255),
          write_audit.user_id, write_audit.before, write_audit.after, ip, agent, extra)
  returning id into entry_id;
  return entry_id;
end
$$;

comment on column public.audit_logs.ip_address is
  'X-Real-IP of the API request (the gateway''s peer), else the last X-Forwarded-For hop; the '
  'connection''s peer for SQL run directly. The whole chain, as sent, is metadata.forwarded_for.';

revoke execute on function private.write_audit(text, text, text, uuid, jsonb, jsonb, jsonb)
  from public;
