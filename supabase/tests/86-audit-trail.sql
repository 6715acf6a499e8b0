-- 86-audit-trail.sql — what the audit trail records (20261129230001), per covered change: API
-- keys (a user's own call through the API: their id, role, address and user agent from the
-- request headers), admin balance movements (balance before and after, exact; replays and usage
-- charges are not entries), plans, routes, upstreams, subscriptions and quota changes (not the
-- usage counters), prices (seen through the price_audit view too, same id), re-pricing runs, the
-- API key a transaction authenticated with, and headers that are malformed or absent.
BEGIN;
SELECT plan(27);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('86868686-0000-4000-8000-00000000000a', 'audit-a@example.test'),
  ('86868686-0000-4000-8000-00000000000b', 'audit-b@example.test');
insert into public.plans (name) values ('audit-plan');
create temporary table k (name text primary key, secret text, id uuid);
create temporary table mark (name text primary key, id bigint);
grant select, insert, update on k, mark to anon, authenticated, service_role;
create function pg_temp.entries_since(mark_name text) returns bigint language sql as $$
  select count(*) from public.audit_logs
  where id > (select m.id from mark m where m.name = mark_name) $$;
insert into mark values ('start', (select coalesce(max(id), 0) from public.audit_logs));

-- ── A user creates and revokes their key through the API ──────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"sub":"86868686-0000-4000-8000-00000000000a","role":"authenticated"}';
set local "request.headers" to '{"x-forwarded-for":"198.51.100.4, 10.1.1.1","user-agent":"pgtap-agent/1.0"}';
insert into k select 'a', r ->> 'key', (r ->> 'id')::uuid
from (select public.create_api_key('audited', 'audit-plan') as r) x;
reset role;
select results_eq($$select action, resource_type, actor_role, actor_user_id, user_id, ip_address,
                           user_agent, metadata ->> 'forwarded_for', after ->> 'name'
                    from public.audit_logs where resource_id = (select id::text from k)$$,
  $$values ('insert', 'api_keys', 'authenticated', '86868686-0000-4000-8000-00000000000a'::uuid,
            '86868686-0000-4000-8000-00000000000a'::uuid, '10.1.1.1'::inet, 'pgtap-agent/1.0',
            '198.51.100.4, 10.1.1.1', 'audited')$$,
  'create_api_key: who (user, role), from where (last X-Forwarded-For hop, user agent), what');
select ok((select position((select secret from k) in a.after::text) = 0 from public.audit_logs a
           where a.resource_id = (select id::text from k)),
  'the key''s secret is not in the entry');
insert into mark values ('key', (select max(id) from public.audit_logs));
update public.api_keys set last_used_at = now() where id = (select id from k);
select is(pg_temp.entries_since('key'), 0::bigint, 'last_used_at (authorize_request) is not an entry');
set local role authenticated;
select public.revoke_api_key((select left(secret, 11) from k));
reset role;
select results_eq($$select action, metadata -> 'changed', before ->> 'revoked_at' is null,
                           after ->> 'revoked_at' is not null
                    from public.audit_logs where resource_id = (select id::text from k)
                    order by id desc limit 1$$,
  $$values ('update', '["revoked_at"]'::jsonb, true, true)$$,
  'revoke_api_key: an update entry naming the changed column, before and after');

-- ── Balance movements by the operator ─────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
set local "request.headers" to '{"x-real-ip":"192.0.2.9","user-agent":"tokenmeter-cli"}';
select public.top_up('86868686-0000-4000-8000-00000000000a', 10.5, 'audit-pay-1');
select public.adjust_balance('86868686-0000-4000-8000-00000000000a', -0.25, 'goodwill back',
                             'audit-adj-1');
reset role;
select results_eq($$select action, resource_type, actor_role, actor_user_id, user_id,
                           before ->> 'balance', after ->> 'balance', metadata ->> 'amount',
                           metadata ->> 'reference', ip_address, user_agent
                    from public.audit_logs
                    where user_id = '86868686-0000-4000-8000-00000000000a'
                      and resource_type = 'ledger_entries' order by id$$,
  $$values ('top_up', 'ledger_entries', 'service_role', null::uuid,
            '86868686-0000-4000-8000-00000000000a'::uuid, '0', '10.5', '10.5', 'audit-pay-1',
            '192.0.2.9'::inet, 'tokenmeter-cli'),
           ('adjustment', 'ledger_entries', 'service_role', null::uuid,
            '86868686-0000-4000-8000-00000000000a'::uuid, '10.5', '10.25', '-0.25',
            'audit-adj-1', '192.0.2.9'::inet, 'tokenmeter-cli')$$,
  'top_up and adjust_balance: exact balance before and after, X-Real-IP when no X-Forwarded-For');
insert into mark values ('money', (select max(id) from public.audit_logs));
set local role service_role;
select public.top_up('86868686-0000-4000-8000-00000000000a', 10.5, 'audit-pay-1');
select public.record_usage('86868686-0000-4000-8000-00000000000a', 'gpt-4o-mini', 1000, 100,
                           'audit-usage-1');
reset role;
select is(pg_temp.entries_since('money'), 0::bigint,
  'a replayed top-up and a usage charge are not entries');
set local role service_role;
select public.refund_usage('audit-usage-1', 'duplicate answer');
reset role;
select results_eq($$select action, user_id, metadata ->> 'reference'
                    from public.audit_logs where id > (select id from mark where name = 'money')$$,
  $$values ('refund', '86868686-0000-4000-8000-00000000000a'::uuid, 'audit-usage-1')$$,
  'refund_usage is an entry (the movement an operator grants)');

-- ── Plans, routes, upstreams ──────────────────────────────────────────────────────────────
set local role service_role;
insert into public.upstreams (name, base_url, api_key_env) values ('audit-up', 'http://127.0.0.1:9/v1', 'AUDIT_KEY');
insert into public.plans (name, price) values ('audit-plan-2', '10/month');
insert into public.plan_routes (plan_id, upstream_id, model, weight)
select p.id, u.id, 'gpt-4o-mini', 3 from public.plans p, public.upstreams u
where p.name = 'audit-plan-2' and u.name = 'audit-up';
update public.plans set price = '12/month' where name = 'audit-plan-2';
update public.plan_routes set weight = 5 where model = 'gpt-4o-mini'
  and plan_id = (select id from public.plans where name = 'audit-plan-2');
reset role;
select results_eq($$select resource_type, action, coalesce(metadata -> 'changed', '[]'),
                           after ->> 'name'
                    from public.audit_logs where resource_type in ('upstreams', 'plans', 'plan_routes')
                      and id > (select id from mark where name = 'money') order by id$$,
  $$values ('upstreams', 'insert', '[]'::jsonb, 'audit-up'),
           ('plans', 'insert', '[]'::jsonb, 'audit-plan-2'),
           ('plan_routes', 'insert', '[]'::jsonb, null),
           ('plans', 'update', '["price"]'::jsonb, 'audit-plan-2'),
           ('plan_routes', 'update', '["weight"]'::jsonb, null)$$,
  'upstreams, plans and routes: inserts and updates (updated_at is not a change)');
select is((select a.before ->> 'price' || ' -> ' || (a.after ->> 'price')
           from public.audit_logs a where a.resource_type = 'plans' and a.action = 'update'
             and a.after ->> 'name' = 'audit-plan-2'),
  '10/month -> 12/month', 'the plan''s update keeps the row before and after');
set local role service_role;
delete from public.plan_routes where model = 'gpt-4o-mini'
  and plan_id = (select id from public.plans where name = 'audit-plan-2');
reset role;
select is((select a.before ->> 'weight' from public.audit_logs a
           where a.resource_type = 'plan_routes' and a.action = 'delete' order by a.id desc limit 1),
  '5', 'a deleted route: delete entry with the row before');

-- ── Subscriptions and quotas ──────────────────────────────────────────────────────────────
set local role service_role;
insert into public.subscriptions (user_id, plan_id, status, quota_requests, quota_tokens)
select '86868686-0000-4000-8000-00000000000b', p.id, 'active', 3, 1000
from public.plans p where p.name = 'audit-plan';
reset role;
insert into mark values ('sub', (select max(id) from public.audit_logs));
select results_eq($$select action, user_id, after ->> 'quota_requests' from public.audit_logs
                    where resource_type = 'subscriptions'
                      and user_id = '86868686-0000-4000-8000-00000000000b'$$,
  $$values ('insert', '86868686-0000-4000-8000-00000000000b'::uuid, '3')$$,
  'a new subscription is an entry about its user');
update public.subscriptions set used_requests = 1, used_tokens = 10
where user_id = '86868686-0000-4000-8000-00000000000b';
select is(pg_temp.entries_since('sub'), 0::bigint,
  'counting a request on the subscription (complete_request) is not an entry');
set local role service_role;
update public.subscriptions set quota_requests = 5
where user_id = '86868686-0000-4000-8000-00000000000b';
reset role;
select results_eq($$select action, metadata -> 'changed', before ->> 'quota_requests',
                           after ->> 'quota_requests'
                    from public.audit_logs where id > (select id from mark where name = 'sub')$$,
  $$values ('update', '["quota_requests"]'::jsonb, '3', '5')$$,
  'a quota change: before and after, the changed column named');
update public.subscriptions set used_requests = 5
where user_id = '86868686-0000-4000-8000-00000000000b';
select results_eq($$select metadata -> 'changed', after ->> 'status'
                    from public.audit_logs where resource_type = 'subscriptions'
                      and id > (select id from mark where name = 'sub') order by id desc limit 1$$,
  $$values ('["status", "suspension_reason"]'::jsonb, 'suspended')$$,
  'the quota trigger suspending it is an entry (status and reason; not the counter)');

-- ── Prices and re-pricing, through price_audit too ────────────────────────────────────────
set local role service_role;
set local "request.headers" to '{"x-forwarded-for":"203.0.113.50"}';
select public.set_model_price('auditco', 'audit-chat', 0.000001, 0.000002,
                              effective_from => now() - interval '2 days');
reset role;
select results_eq($$select action, resource_type, actor_role, ip_address,
                           metadata ->> 'provider_id', metadata ->> 'model_id'
                    from public.audit_logs where metadata ->> 'model_id' = 'audit-chat'$$,
  $$values ('insert', 'model_pricing', 'service_role', '203.0.113.50'::inet, 'auditco',
            'audit-chat')$$,
  'a new price is an entry (resource model_pricing) with the caller''s address');
select results_eq($$select a.id, a.action, a.provider_id, a.model_id, a.new ->> 'price_per_input_token'
                    from public.price_audit a where a.model_id = 'audit-chat'$$,
  $$select l.id, 'insert', 'auditco', 'audit-chat', l.after ->> 'price_per_input_token'
    from public.audit_logs l where l.metadata ->> 'model_id' = 'audit-chat'$$,
  'price_audit shows the same entry, same id, in its former columns');
set local role service_role;
select public.record_usage('86868686-0000-4000-8000-00000000000a', 'audit-chat', 1000, 1000,
                           'audit-usage-2', provider => 'auditco',
                           occurred_at => now() - interval '1 day');
select public.set_model_price('auditco', 'audit-chat', 0.000002, 0.000002,
                              effective_from => now() - interval '2 days');
create temporary table rp as
  select public.reprice_usage(now() - interval '3 days', now(), 'audit-chat', 'auditco') as r;
reset role;
select results_eq($$select a.action, a.resource_type, a.after ->> 'changed', a.before ? 'since'
                    from public.audit_logs a where a.id = (select (r ->> 'audit_id')::bigint from rp)$$,
  $$values ('reprice', 'usage_records', '1', true)$$,
  'reprice_usage: its run is the entry its audit_id names (window before, result after)');
select is((select p.action from public.price_audit p where p.id = (select (r ->> 'audit_id')::bigint from rp)),
  'reprice', 'price_audit lists the run, as before');
select results_eq($$select action, user_id, after ->> 'balance' is not null
                    from public.audit_logs where resource_type = 'ledger_entries'
                      and metadata ->> 'reference' like 'reprice:%'
                      and user_id = '86868686-0000-4000-8000-00000000000a'$$,
  $$values ('adjustment', '86868686-0000-4000-8000-00000000000a'::uuid, true)$$,
  'the run''s balance adjustment is an entry about the user');
set local role service_role;
select throws_ok($$insert into public.price_audit (actor_role, action) values ('x', 'reprice')$$,
  '42501', null, 'service_role cannot write through price_audit');
reset role;

-- ── The API key the transaction authenticated with ────────────────────────────────────────
insert into k select 'live', r ->> 'key', (r ->> 'id')::uuid
from (select public.create_api_key('live', 'audit-plan',
        user_id => '86868686-0000-4000-8000-00000000000a') as r) x;
select is((private.api_key_for((select secret from k where name = 'live'))).id,
  (select id from k where name = 'live'), 'the key is valid');
set local role service_role;
select public.top_up('86868686-0000-4000-8000-00000000000a', 1, 'audit-pay-key');
reset role;
select is((select actor_api_key_id from public.audit_logs
           where metadata ->> 'reference' = 'audit-pay-key'),
  (select id from k where name = 'live'),
  'a change made after the key was checked (authorize_request) names the key');

-- ── Headers and claims that are malformed or absent ───────────────────────────────────────
set local "request.headers" to '{"x-forwarded-for":"not-an-address","user-agent":"odd"}';
set local "request.jwt.claims" to '{"sub":"not-a-uuid","role":"service_role"}';
set local role service_role;
select lives_ok($$select public.top_up('86868686-0000-4000-8000-00000000000a', 1, 'audit-pay-odd')$$,
  'a malformed address or sub does not block the change');
reset role;
select results_eq($$select ip_address, actor_user_id, metadata ->> 'invalid_address', user_agent
                    from public.audit_logs where metadata ->> 'reference' = 'audit-pay-odd'$$,
  $$values (null::inet, null::uuid, 'not-an-address', 'odd')$$,
  'they are left out (the unreadable address kept as text)');
set local "request.headers" to 'this is not json';
set local role service_role;
select lives_ok($$select public.top_up('86868686-0000-4000-8000-00000000000a', 1, 'audit-pay-bad')$$,
  'unreadable request.headers do not block the change');
reset role;
set local "request.headers" to '';
select public.top_up('86868686-0000-4000-8000-00000000000a', 1, 'audit-pay-sql');
select results_eq($$select ip_address is not distinct from inet_client_addr(), actor_role,
                           user_agent is null
                    from public.audit_logs where metadata ->> 'reference' in ('audit-pay-bad', 'audit-pay-sql')
                    order by id$$,
  $$values (true, 'service_role', true), (true, 'postgres', true)$$,
  'without request headers (SQL run directly) the address is the connection''s peer');
select is((select count(*)::int from public.audit_logs where id > (select id from mark where name = 'start')
           and (actor_role is null or action is null or resource_type is null or created_at is null)),
  0, 'every entry has who, what and when');

SELECT * FROM finish();
ROLLBACK;
