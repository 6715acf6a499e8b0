-- 55-settle-lapsed.sql — metered requests authorized but never completed (20261129235001):
-- once the hold has lapsed they are settled at the hold (charged exactly what was held, the
-- maximum tokens counted on the subscription, flagged usage_estimated / settled_at_hold),
-- by the next authorize_request of the same subscription (before its balance check) or by
-- settle_lapsed_requests(); a hold not yet lapsed and a completed request are left alone; a late
-- complete_request is 409; the ledger stays exact (balance_audit empty).
BEGIN;
SELECT plan(21);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('55555555-0000-4000-8000-00000000000a', 'lapsed-a@example.test'),
  ('55555555-0000-4000-8000-00000000000b', 'lapsed-b@example.test');
insert into public.upstreams (name, base_url, api_key_env) values ('lapsed-up', 'http://127.0.0.1:9/v1', 'LAPSED_KEY');
insert into public.plans (name) values ('lapsed-plan');
insert into public.plan_routes (plan_id, upstream_id, model, weight)
select p.id, u.id, 'gpt-4o-mini', 1 from public.plans p, public.upstreams u
where p.name = 'lapsed-plan' and u.name = 'lapsed-up';
insert into public.subscriptions (user_id, plan_id, status, quota_requests, quota_tokens)
select u, p.id, 'active', 100, 1000000 from public.plans p,
  unnest(array['55555555-0000-4000-8000-00000000000a', '55555555-0000-4000-8000-00000000000b']::uuid[]) u
where p.name = 'lapsed-plan';
create temporary table k (name text primary key, secret text);
grant select on k to service_role;
do $$
begin
  perform public.top_up('55555555-0000-4000-8000-00000000000a', 1, 'lapsed-fixture-a');
  perform public.top_up('55555555-0000-4000-8000-00000000000b', 1, 'lapsed-fixture-b');
  insert into k values
    ('a', public.create_api_key('a', 'lapsed-plan', user_id => '55555555-0000-4000-8000-00000000000a') ->> 'key'),
    ('b', public.create_api_key('b', 'lapsed-plan', user_id => '55555555-0000-4000-8000-00000000000b') ->> 'key');
end
$$;

-- ── Three requests of a, one of b; then a's first two and b's lapse ─────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select lives_ok(format($$select public.authorize_request(%L, 'gpt-4o-mini', 100, 'lapsed-1', 400)$$, (select secret from k where name = 'a')), 'a: lapsed-1 authorized');
select lives_ok(format($$select public.authorize_request(%L, 'gpt-4o-mini', 200, 'lapsed-2', 300)$$, (select secret from k where name = 'a')), 'a: lapsed-2 authorized');
select lives_ok(format($$select public.authorize_request(%L, 'gpt-4o-mini', 50, 'lapsed-3', 10)$$, (select secret from k where name = 'a')), 'a: lapsed-3 authorized (its hold will not lapse)');
select lives_ok(format($$select public.authorize_request(%L, 'gpt-4o-mini', 100, 'lapsed-b1', 400)$$, (select secret from k where name = 'b')), 'b: lapsed-b1 authorized');
reset role;
-- now() is fixed within a transaction, so the lapse is written rather than waited for.
update public.metered_requests set expires_at = now() - interval '1 second'
where request_id in ('lapsed-1', 'lapsed-2', 'lapsed-b1');
update public.credit_reservations set expires_at = now() - interval '1 second'
where request_id in ('lapsed-1', 'lapsed-2', 'lapsed-b1');
create temporary table held as
select request_id, reserved from public.metered_requests where request_id like 'lapsed-%';
grant select on held to service_role;

set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
-- ── The next authorize of a's subscription settles a's lapsed requests, b's stays ─────────
select lives_ok(format($$select public.authorize_request(%L, 'gpt-4o-mini', 10, 'lapsed-4', 10)$$, (select secret from k where name = 'a')), 'a: the next authorize succeeds');
select results_eq($$select request_id, status, http_status, input_tokens, output_tokens, usage_estimated, error
                    from public.metered_requests where request_id in ('lapsed-1', 'lapsed-2') order by request_id$$,
  $$values ('lapsed-1', 'completed', null::integer, 400::bigint, 100::bigint, true, 'never completed: settled at its hold'),
           ('lapsed-2', 'completed', null::integer, 300::bigint, 200::bigint, true, 'never completed: settled at its hold')$$,
  'a''s lapsed requests: completed from their maximum, outcome unknown, flagged');
select results_eq($$select m.request_id, m.cost, u.cost from public.metered_requests m
                    join public.usage_records u on u.request_id = m.request_id
                    where m.request_id in ('lapsed-1', 'lapsed-2') order by 1$$,
  $$select request_id, reserved, reserved from held where request_id in ('lapsed-1', 'lapsed-2') order by 1$$,
  'each is charged exactly what it held, on the request and its usage record');
select is((select u.metadata from public.usage_records u where u.request_id = 'lapsed-1'),
  '{"usage_estimated": true, "settled_at_hold": true}'::jsonb, 'the usage record is flagged');
select is((select balance from public.user_balances where user_id = '55555555-0000-4000-8000-00000000000a'),
  1 - (select sum(reserved) from held where request_id in ('lapsed-1', 'lapsed-2')),
  'a''s balance fell by exactly the two holds');
select is((select (used_requests, used_tokens)::text from public.subscriptions s
           where s.user_id = '55555555-0000-4000-8000-00000000000a'),
  '(2,1000)', 'the subscription counts them: 2 requests, 400 + 100 + 300 + 200 tokens');
select is((select status from public.metered_requests where request_id = 'lapsed-3'), 'authorized',
  'a request whose hold has not lapsed is left alone');
select is((select status from public.metered_requests where request_id = 'lapsed-b1'), 'authorized',
  'another subscription''s lapsed request waits for its own authorize or the sweep');

-- ── A late complete_request is refused; the sweep settles the rest ─────────────────────────
select throws_ok($$select public.complete_request('lapsed-1', '{"prompt_tokens": 5, "completion_tokens": 5}', 200)$$,
  'PT409', 'idempotency_conflict', 'a completion after the settlement is 409');
select is(public.settle_lapsed_requests(),
  jsonb_build_object('settled', 1, 'cost', (select trim_scale(reserved)::text from held where request_id = 'lapsed-b1')),
  'settle_lapsed_requests: settles b''s one lapsed request at its hold');
select is((select (status, cost = (select reserved from held where request_id = 'lapsed-b1'))::text
           from public.metered_requests where request_id = 'lapsed-b1'), '(completed,t)', 'b''s request is charged its hold');
select is(public.settle_lapsed_requests(), '{"settled": 0, "cost": "0"}'::jsonb, 'a second sweep finds nothing');
select throws_ok($$select public.settle_lapsed_requests(0)$$, '22023', 'invalid_argument', 'max_requests must be 1 or more');
select lives_ok($$select public.complete_request('lapsed-3', '{"prompt_tokens": 5, "completion_tokens": 5}', 200)$$,
  'a request in time completes as usual');
select is((select cost < reserved from public.metered_requests where request_id = 'lapsed-3'), true,
  'and is charged its real usage, not its hold');
reset role;

-- ── Only service_role may sweep; the ledger is exact ───────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"55555555-0000-4000-8000-00000000000a"}';
select throws_ok($$select public.settle_lapsed_requests()$$, '42501', null, 'authenticated: settle_lapsed_requests is denied');
reset role;
select is_empty($$select * from public.balance_audit()$$, 'balance_audit() is empty');

SELECT * FROM finish();
ROLLBACK;
