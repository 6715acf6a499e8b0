-- 90-audit-gaps.sql — the audit trail's address and key where 86-audit-trail.sql leaves gaps:
-- X-Real-IP (the gateway's peer) is recorded over a claimed X-Forwarded-For (20261130040000);
-- a subscription suspended automatically because a request used its quota up names that
-- request's API key, whether complete_request counts it or a lapsed hold is settled, and the
-- key named before is put back (20261130040001).
BEGIN;
SELECT plan(8);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('90909090-0000-4000-8000-00000000000a', 'gaps-a@example.test'),
  ('90909090-0000-4000-8000-00000000000b', 'gaps-b@example.test');
insert into public.upstreams (name, base_url) values ('gaps-up', 'http://127.0.0.1:9/v1');
insert into public.plans (name) values ('gaps-plan');
insert into public.plan_routes (plan_id, upstream_id, model, weight)
select p.id, u.id, 'gpt-4o-mini', 1 from public.plans p, public.upstreams u
where p.name = 'gaps-plan' and u.name = 'gaps-up';
insert into public.subscriptions (user_id, plan_id, status, quota_requests)
select u, p.id, 'active', 1 from public.plans p,
  unnest(array['90909090-0000-4000-8000-00000000000a', '90909090-0000-4000-8000-00000000000b']::uuid[]) u
where p.name = 'gaps-plan';
create temporary table k (name text primary key, secret text, id uuid);
grant select on k to service_role;
do $$
declare
  made jsonb;
  who text;
begin
  perform public.top_up('90909090-0000-4000-8000-00000000000a', 1, 'gaps-fixture-a');
  perform public.top_up('90909090-0000-4000-8000-00000000000b', 1, 'gaps-fixture-b');
  foreach who in array array['a', 'b1', 'b2'] loop
    made := public.create_api_key(who, 'gaps-plan',
      user_id => ('90909090-0000-4000-8000-00000000000' || left(who, 1))::uuid);
    insert into k values (who, made ->> 'key', (made ->> 'id')::uuid);
  end loop;
end
$$;
create function pg_temp.suspension_key(user_id uuid) returns uuid language sql as $$
  select a.actor_api_key_id from public.audit_logs a
  join public.subscriptions s on a.resource_id = s.id::text
  where a.resource_type = 'subscriptions' and s.user_id = suspension_key.user_id
    and a.after ->> 'status' = 'suspended' and a.after ->> 'suspension_reason' = 'quota'
  order by a.id desc limit 1 $$;

-- ── The address: X-Real-IP over whatever X-Forwarded-For claims ────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
set local "request.headers" to '{"x-forwarded-for":"203.0.113.9, 127.0.0.1","x-real-ip":"127.0.0.1","user-agent":"gaps/1"}';
select public.top_up('90909090-0000-4000-8000-00000000000a', 1, 'gaps-real-ip');
reset role;
select results_eq($$select ip_address, user_agent, metadata ->> 'forwarded_for' from public.audit_logs
                    where metadata ->> 'reference' = 'gaps-real-ip'$$,
  $$values ('127.0.0.1'::inet, 'gaps/1', '203.0.113.9, 127.0.0.1')$$,
  'X-Real-IP is the recorded address; the claimed chain is kept in metadata');
set local "request.headers" to '{}';
-- Without X-Real-IP, the last hop — of the whole chain, however long what the client claimed.
select set_config('request.headers', jsonb_build_object('x-forwarded-for',
  repeat('203.0.113.1, ', 200) || '192.0.2.44')::text, true);
set local role service_role;
select public.top_up('90909090-0000-4000-8000-00000000000a', 1, 'gaps-long-chain');
reset role;
select results_eq($$select ip_address, length(metadata ->> 'forwarded_for') from public.audit_logs
                    where metadata ->> 'reference' = 'gaps-long-chain'$$,
  $$values ('192.0.2.44'::inet, 1000)$$,
  'a long claimed chain cannot push the last hop out (the chain is kept to 1,000 characters)');
set local "request.headers" to '{}';

-- ── complete_request uses the quota up: the suspension names the request's key ─────────────
set local role service_role;
select lives_ok(format($$select public.authorize_request(%L, 'gpt-4o-mini', 10, 'gaps-1', 10)$$,
  (select secret from k where name = 'a')), 'a: the request is authorized');
-- complete_request comes in a transaction of its own: no key is named there.
select set_config('tokenmeter.api_key_id', '', true);
select lives_ok($$select public.complete_request('gaps-1', '{"prompt_tokens": 5, "completion_tokens": 5}', 200)$$,
  'a: it completes, using the one-request quota up');
reset role;
select is(pg_temp.suspension_key('90909090-0000-4000-8000-00000000000a'),
  (select id from k where name = 'a'),
  'the automatic quota suspension is audited with the key of the request that used the quota up');

-- ── A lapsed hold settled while another key is named: the lapsed request's key ─────────────
set local role service_role;
select lives_ok(format($$select public.authorize_request(%L, 'gpt-4o-mini', 10, 'gaps-2', 10)$$,
  (select secret from k where name = 'b1')), 'b: the request of key b1 is authorized');
reset role;
update public.metered_requests set expires_at = now() - interval '1 second' where request_id = 'gaps-2';
update public.credit_reservations set expires_at = now() - interval '1 second' where request_id = 'gaps-2';
-- As when an authorize_request with key b2 settles it.
select set_config('tokenmeter.api_key_id', (select id::text from k where name = 'b2'), true);
set local role service_role;
select public.settle_lapsed_requests();
reset role;
select is(pg_temp.suspension_key('90909090-0000-4000-8000-00000000000b'),
  (select id from k where name = 'b1'),
  'settling the lapsed hold suspends the subscription in the name of the lapsed request''s key');
select is(current_setting('tokenmeter.api_key_id', true), (select id::text from k where name = 'b2'),
  'the key named before is named again afterwards');

SELECT * FROM finish();
ROLLBACK;
