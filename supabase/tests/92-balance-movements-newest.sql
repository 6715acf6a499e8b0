-- 92-balance-movements-newest.sql — a user's newest balance movements (20261130040002): ordered
-- by occurred_at (the ledger entry's created_at, the usage record's occurred_at), the newest 50
-- of a user with thousands of usage records are read from the indexes — a merge stopped after
-- about 50 rows, not a sort of all of them — as `tokenmeter balance history` asks for them; the
-- rows are the same as before (only usage that charged something, amounts exact).
BEGIN;
SELECT plan(4);

insert into auth.users (id, email) values ('92929292-0000-4000-8000-00000000000a', 'newest-a@example.test');
-- 3,000 usage records over 60 days (several monthly partitions where they exist), one free one,
-- and 10 top-ups spread over the same days.
select private.create_usage_partition(date_trunc('month', now() - interval '60 days')::date),
       private.create_usage_partition(date_trunc('month', now() - interval '30 days')::date);
insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
  output_tokens, cached_input_tokens, price_per_input_token, price_per_output_token,
  price_per_cached_input_token, price_per_request, cost, latency_ms, status, occurred_at, created_at)
select '92929292-0000-4000-8000-00000000000a', 'newest-' || g, 'openai', 'gpt-4o-mini', 100, 10, 0,
       0.00000015, 0.0000006, 0.00000015, 0, case when g = 3000 then 0 else 0.000021 end, 50,
       'success', now() - g * interval '29 minutes', now() - g * interval '29 minutes'
from generate_series(1, 3000) g;
insert into public.ledger_entries (user_id, kind, amount, currency, reference, created_at)
select '92929292-0000-4000-8000-00000000000a', 'top_up', 1, 'USD', 'newest-top-' || g,
       now() - g * interval '6 days' - interval '1 minute'
from generate_series(1, 10) g;
analyze public.usage_records;
analyze public.ledger_entries;

create function pg_temp.rows_read(query text) returns bigint language plpgsql as $$
declare
  plan jsonb;
begin
  execute 'explain (analyze, format json) ' || query into plan;
  return (select sum((n ->> 'Actual Rows')::bigint * (n ->> 'Actual Loops')::bigint)
          from jsonb_path_query(plan, 'strict $.**') n
          where jsonb_typeof(n) = 'object' and n ? 'Relation Name');
end
$$;

set local role service_role;
select cmp_ok(pg_temp.rows_read($$select source, id, amount, occurred_at from public.balance_movements
                                  where user_id = '92929292-0000-4000-8000-00000000000a'
                                  order by occurred_at desc, source desc, id desc limit 50$$),
  '<', 100::bigint, 'the newest 50 of 3,010 movements read fewer than 100 rows (index merge, no full sort)');
select results_eq($$select source, reference, amount from public.balance_movements
                    where user_id = '92929292-0000-4000-8000-00000000000a'
                    order by occurred_at desc, source desc, id desc limit 3$$,
  $$values ('usage', 'newest-1', -0.000021::numeric), ('usage', 'newest-2', -0.000021::numeric),
           ('usage', 'newest-3', -0.000021::numeric)$$,
  'newest first, amounts exact');
select is((select count(*)::int from public.balance_movements
           where user_id = '92929292-0000-4000-8000-00000000000a'),
  3009, 'every movement but the usage record that charged nothing');
select is((select occurred_at from public.balance_movements
           where user_id = '92929292-0000-4000-8000-00000000000a' and reference = 'newest-top-1'),
  (select created_at from public.ledger_entries where reference = 'newest-top-1'),
  'a ledger entry occurred when it was made');
reset role;

SELECT * FROM finish();
ROLLBACK;
