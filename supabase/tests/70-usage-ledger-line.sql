-- 70-usage-ledger-line.sql — the usage record is its charge's ledger line (20261129200001):
-- record_usage, settle_usage, record_usage_batch and complete_request write no 'usage' ledger
-- entry; public.balance_movements shows each charge once (amount = −cost, reference =
-- request_id), replays and free models add none, and every balance equals the sum of its
-- movements. 'usage' is no longer a kind the ledger accepts.
BEGIN;
SELECT plan(26);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('70707070-0000-4000-8000-00000000000a', 'line-a@example.test'),
  ('70707070-0000-4000-8000-00000000000b', 'line-b@example.test');
-- line-model: 1e-6 per input token, 2e-6 per output token; line-free costs nothing.
insert into public.model_pricing (provider_id, model_id, price_per_input_token, price_per_output_token, pricing_type)
values ('line-co', 'line-model', 0.000001, 0.000002, 'paid'),
       ('line-co', 'line-free', 0, 0, 'free');
insert into public.upstreams (name, base_url, api_key_env) values ('line-up', 'http://127.0.0.1:9/v1', 'LINE_KEY');
insert into public.plans (name) values ('line-plan');
insert into public.plan_routes (plan_id, upstream_id, model, weight)
select p.id, u.id, 'line-model', 1 from public.plans p, public.upstreams u
where p.name = 'line-plan' and u.name = 'line-up';
insert into public.subscriptions (user_id, plan_id, status)
select '70707070-0000-4000-8000-00000000000b', p.id, 'active' from public.plans p where p.name = 'line-plan';
create temporary table k (secret text);
grant select on k to service_role;
do $$
begin
  perform public.top_up('70707070-0000-4000-8000-00000000000a', 10, 'line-fixture-a');
  perform public.top_up('70707070-0000-4000-8000-00000000000b', 10, 'line-fixture-b');
  insert into k select public.create_api_key('line', 'line-plan', user_id => '70707070-0000-4000-8000-00000000000b') ->> 'key';
end
$$;

set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';

-- ── record_usage ──────────────────────────────────────────────────────────────────────────
-- 1000 × 0.000001 + 500 × 0.000002 = 0.002
select is(public.record_usage('70707070-0000-4000-8000-00000000000a', 'line-model', 1000, 500, 'line-r1') ->> 'cost', '0.002', 'record_usage charges 0.002');
select is_empty($$select 1 from public.ledger_entries where reference = 'line-r1'$$, 'record_usage writes no ledger entry: the usage record is the line');
select results_eq($$select source, kind, amount, reference, id from public.balance_movements where reference = 'line-r1'$$,
  $$select 'usage'::text, 'usage'::text, -0.002::numeric, 'line-r1'::text, u.id from public.usage_records u where u.request_id = 'line-r1'$$,
  'balance_movements shows the charge once: source usage, amount −cost, the usage record''s id');
select is(public.record_usage('70707070-0000-4000-8000-00000000000a', 'line-model', 1000, 500, 'line-r1') ->> 'replayed', 'true', 'the same request again is a replay');
select is((select count(*)::int from public.balance_movements where reference = 'line-r1'), 1, 'a replay adds no line');
select is(public.record_usage('70707070-0000-4000-8000-00000000000a', 'line-free', 1000, 500, 'line-free-1') ->> 'cost', '0', 'a free model costs 0');
select is_empty($$select 1 from public.balance_movements where reference = 'line-free-1'$$, 'a free charge moves no money and shows no line');

-- ── settle_usage ──────────────────────────────────────────────────────────────────────────
select is(public.reserve_credit('70707070-0000-4000-8000-00000000000a', 'line-s1', 1, model => 'line-model') ->> 'status', 'held', 'a hold');
select is(public.settle_usage('line-s1', 2000, 0) ->> 'cost', '0.002', 'settle_usage charges the real usage');
select is_empty($$select 1 from public.ledger_entries where reference = 'line-s1'$$, 'settle_usage writes no ledger entry');
select is((select amount from public.balance_movements where reference = 'line-s1'), -0.002::numeric, 'the settled charge is one usage line');

-- ── record_usage_batch ────────────────────────────────────────────────────────────────────
select is(public.record_usage_batch(jsonb_build_array(
    jsonb_build_object('user_id', '70707070-0000-4000-8000-00000000000a', 'model', 'line-model', 'input_tokens', 100, 'output_tokens', 0, 'request_id', 'line-b1'),
    jsonb_build_object('user_id', '70707070-0000-4000-8000-00000000000b', 'model', 'line-model', 'input_tokens', 200, 'output_tokens', 0, 'request_id', 'line-b2'),
    jsonb_build_object('user_id', '70707070-0000-4000-8000-00000000000b', 'model', 'line-model', 'input_tokens', 200, 'output_tokens', 0, 'request_id', 'line-b2'),
    jsonb_build_object('user_id', '70707070-0000-4000-8000-00000000000b', 'model', 'line-free', 'input_tokens', 200, 'output_tokens', 0, 'request_id', 'line-b3'))) - 'results',
  '{"recorded": 3, "replayed": 1, "failed": 0}'::jsonb, 'a batch records three, replays its duplicate');
select is_empty($$select 1 from public.ledger_entries where reference like 'line-b%'$$, 'the batch writes no ledger entry');
select results_eq($$select reference, amount from public.balance_movements where reference like 'line-b%' order by reference$$,
  $$values ('line-b1'::text, -0.0001::numeric), ('line-b2', -0.0002)$$, 'each charged record of the batch is one line; the free one none');

-- ── complete_request (the metered endpoint charges through record_usage) ──────────────────
select is(public.authorize_request((select secret from k), 'line-model', 100, 'line-m1', 1000) ->> 'status', 'authorized', 'a metered request is authorized');
select is(public.complete_request('line-m1', '{"prompt_tokens": 300, "completion_tokens": 100}', 200, 50) ->> 'cost', '0.0005', 'complete_request charges 300 × 0.000001 + 100 × 0.000002');
select is_empty($$select 1 from public.ledger_entries where reference = 'line-m1'$$, 'complete_request writes no ledger entry');
select is((select amount from public.balance_movements where reference = 'line-m1'), -0.0005::numeric, 'the metered charge is one usage line');

-- ── The identity, through the movements ───────────────────────────────────────────────────
select results_eq($$select b.user_id, b.balance from public.user_balances b where b.user_id::text like '70707070%' order by 1$$,
  $$select m.user_id, sum(m.amount) from public.balance_movements m where m.user_id::text like '70707070%' group by 1 order by 1$$,
  'each balance is the sum of its movements');
select results_eq($$select balance from public.user_balances where user_id = '70707070-0000-4000-8000-00000000000a'$$,
  $$values (10 - 0.002 - 0.002 - 0.0001)$$, 'user a: 10 − two charges of 0.002 − 0.0001, exactly');
select is_empty($$select * from public.balance_audit()$$, 'balance_audit is empty');
reset role;

-- ── The ledger no longer takes usage ──────────────────────────────────────────────────────
select throws_ok($$insert into public.ledger_entries (user_id, kind, amount, reference) values ('70707070-0000-4000-8000-00000000000a', 'usage', -1, 'line-forged')$$,
  '23514', null, 'a usage ledger entry is refused, even for the owner (check ledger_entries_kind_valid)');
select ok(exists (select 1 from pg_constraint where conname = 'ledger_entries_kind_valid'
  and pg_get_constraintdef(oid) not like '%''usage''%'), 'the ledger''s kinds leave usage out');
select is((select count(*)::int from public.ledger_entries where kind = 'usage'), 0, 'no usage ledger entry is left anywhere');
select is(obj_description('public.ledger_entries'::regclass, 'pg_class') like '%balance_movements%', true, 'the ledger''s comment says where charges are');
select is((select count(*)::int from public.balance_movements m join public.usage_records u on u.request_id = m.reference and m.source = 'usage'
           where u.user_id::text like '70707070%'), 5, 'five charged records, five usage lines');

SELECT * FROM finish();
ROLLBACK;
