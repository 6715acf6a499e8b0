-- 10-billing-rls.sql — the full RLS and grant matrix of the billing tables:
-- every table × {anon, authenticated owner, authenticated other user, service_role} ×
-- {select, insert, update, delete}, each cell asserted by actually running the command
-- (42501 for a missing privilege or a failed policy check; rows / no rows for RLS filtering),
-- plus the safe insert policy of user_balances (own row, zero balance only).
BEGIN;
SELECT plan(113);

-- ── Fixtures, as postgres (the migration role) ─────────────────────────────────────────────
insert into auth.users (id, email) values
  ('aaaaaaaa-0000-4000-8000-000000000001', 'rls-owner@example.test'),
  ('aaaaaaaa-0000-4000-8000-000000000002', 'rls-other@example.test'),
  ('aaaaaaaa-0000-4000-8000-000000000003', 'rls-no-balance-1@example.test'),
  ('aaaaaaaa-0000-4000-8000-000000000004', 'rls-no-balance-2@example.test');
-- C and D lost their balance row (as after a failed signup trigger).
delete from public.user_balances where user_id in ('aaaaaaaa-0000-4000-8000-000000000003', 'aaaaaaaa-0000-4000-8000-000000000004');
do $$
begin
  perform public.top_up('aaaaaaaa-0000-4000-8000-000000000001', 10, 'rls-topup-owner');
  perform public.top_up('aaaaaaaa-0000-4000-8000-000000000002', 10, 'rls-topup-other');
  perform public.record_usage('aaaaaaaa-0000-4000-8000-000000000001', 'gpt-4o-mini', 100, 10, 'rls-usage-owner');
  perform public.record_usage('aaaaaaaa-0000-4000-8000-000000000002', 'gpt-4o-mini', 100, 10, 'rls-usage-other');
  perform public.reserve_credit('aaaaaaaa-0000-4000-8000-000000000001', 'rls-hold-owner', 1);
  perform public.reserve_credit('aaaaaaaa-0000-4000-8000-000000000002', 'rls-hold-other', 1);
end
$$;
insert into public.signup_errors (user_id, sqlstate, message) values ('aaaaaaaa-0000-4000-8000-000000000001', 'XX000', 'fixture');

-- ── anon: no identity ─────────────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select isnt_empty($$select 1 from public.model_pricing$$, 'anon: select model_pricing returns the price list');
select throws_ok($$insert into public.model_pricing (provider_id, model_id, price_per_input_token, price_per_output_token) values ('test', 'rls-test-model', 0.000001, 0.000002)$$, '42501', null, 'anon: insert model_pricing is denied');
select throws_ok($$update public.model_pricing set pricing_source = 'rls test' where provider_id = 'openai' and model_id = 'gpt-4o'$$, '42501', null, 'anon: update model_pricing is denied');
select throws_ok($$delete from public.model_pricing where provider_id = 'google' and model_id = 'gemini-2.0-flash'$$, '42501', null, 'anon: delete model_pricing is denied');
select throws_ok($$select 1 from public.billing_settings$$, '42501', null, 'anon: select billing_settings is denied');
select throws_ok($$insert into public.billing_settings (id) values (true)$$, '42501', null, 'anon: insert billing_settings is denied');
select throws_ok($$update public.billing_settings set signup_grant = 0$$, '42501', null, 'anon: update billing_settings is denied');
select throws_ok($$delete from public.billing_settings$$, '42501', null, 'anon: delete billing_settings is denied');
select throws_ok($$select 1 from public.user_balances$$, '42501', null, 'anon: select user_balances is denied');
select throws_ok($$insert into public.user_balances (user_id) values ('aaaaaaaa-0000-4000-8000-000000000004')$$, '42501', null, 'anon: insert user_balances is denied');
select throws_ok($$update public.user_balances set balance = 1000000$$, '42501', null, 'anon: update user_balances is denied');
select throws_ok($$delete from public.user_balances$$, '42501', null, 'anon: delete user_balances is denied');
select throws_ok($$select 1 from public.ledger_entries$$, '42501', null, 'anon: select ledger_entries is denied');
select throws_ok($$insert into public.ledger_entries (user_id, kind, amount, reference) values ('aaaaaaaa-0000-4000-8000-000000000001', 'top_up', 1000, 'forged')$$, '42501', null, 'anon: insert ledger_entries is denied');
select throws_ok($$update public.ledger_entries set amount = 1000$$, '42501', null, 'anon: update ledger_entries is denied');
select throws_ok($$delete from public.ledger_entries$$, '42501', null, 'anon: delete ledger_entries is denied');
select throws_ok($$select 1 from public.usage_records$$, '42501', null, 'anon: select usage_records is denied');
select throws_ok($$insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens, output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token, price_per_request, cost) values ('aaaaaaaa-0000-4000-8000-000000000001', 'forged', 'openai', 'gpt-4o', 1, 1, 0, 0, 0, 0, 0)$$, '42501', null, 'anon: insert usage_records is denied');
select throws_ok($$update public.usage_records set cost = 0$$, '42501', null, 'anon: update usage_records is denied');
select throws_ok($$delete from public.usage_records$$, '42501', null, 'anon: delete usage_records is denied');
select throws_ok($$select 1 from public.credit_reservations$$, '42501', null, 'anon: select credit_reservations is denied');
select throws_ok($$insert into public.credit_reservations (user_id, request_id, amount, expires_at) values ('aaaaaaaa-0000-4000-8000-000000000001', 'forged', 1, now() + interval '1 hour')$$, '42501', null, 'anon: insert credit_reservations is denied');
select throws_ok($$update public.credit_reservations set status = 'released', closed_at = now()$$, '42501', null, 'anon: update credit_reservations is denied');
select throws_ok($$delete from public.credit_reservations$$, '42501', null, 'anon: delete credit_reservations is denied');
select throws_ok($$select 1 from public.signup_errors$$, '42501', null, 'anon: select signup_errors is denied');
select throws_ok($$insert into public.signup_errors (message) values ('forged')$$, '42501', null, 'anon: insert signup_errors is denied');
select throws_ok($$update public.signup_errors set resolved_at = now()$$, '42501', null, 'anon: update signup_errors is denied');
select throws_ok($$delete from public.signup_errors$$, '42501', null, 'anon: delete signup_errors is denied');
reset role;

-- ── authenticated owner ───────────────────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"aaaaaaaa-0000-4000-8000-000000000001"}';
select isnt_empty($$select 1 from public.model_pricing$$, 'owner: select model_pricing returns the price list');
select throws_ok($$insert into public.model_pricing (provider_id, model_id, price_per_input_token, price_per_output_token) values ('test', 'rls-test-model', 0.000001, 0.000002)$$, '42501', null, 'owner: insert model_pricing is denied');
select throws_ok($$update public.model_pricing set pricing_source = 'rls test' where provider_id = 'openai' and model_id = 'gpt-4o'$$, '42501', null, 'owner: update model_pricing is denied');
select throws_ok($$delete from public.model_pricing where provider_id = 'google' and model_id = 'gemini-2.0-flash'$$, '42501', null, 'owner: delete model_pricing is denied');
select throws_ok($$select 1 from public.billing_settings$$, '42501', null, 'owner: select billing_settings is denied');
select throws_ok($$insert into public.billing_settings (id) values (true)$$, '42501', null, 'owner: insert billing_settings is denied');
select throws_ok($$update public.billing_settings set signup_grant = 0$$, '42501', null, 'owner: update billing_settings is denied');
select throws_ok($$delete from public.billing_settings$$, '42501', null, 'owner: delete billing_settings is denied');
select results_eq($$select user_id from public.user_balances$$, $$values ('aaaaaaaa-0000-4000-8000-000000000001'::uuid)$$, 'owner: select user_balances returns only their own row');
set local "request.jwt.claims" to '{"role":"authenticated","sub":"aaaaaaaa-0000-4000-8000-000000000003"}';
select lives_ok($$insert into public.user_balances (user_id) values ('aaaaaaaa-0000-4000-8000-000000000003')$$, 'owner: insert user_balances of their own zero balance is allowed');
set local "request.jwt.claims" to '{"role":"authenticated","sub":"aaaaaaaa-0000-4000-8000-000000000004"}';
select throws_ok($$insert into public.user_balances (user_id, balance) values ('aaaaaaaa-0000-4000-8000-000000000004', 5)$$, '42501', null, 'owner: insert user_balances with a non-zero balance is denied');
set local "request.jwt.claims" to '{"role":"authenticated","sub":"aaaaaaaa-0000-4000-8000-000000000001"}';
select throws_ok($$update public.user_balances set balance = 1000000$$, '42501', null, 'owner: update user_balances is denied');
select throws_ok($$delete from public.user_balances$$, '42501', null, 'owner: delete user_balances is denied');
select results_eq($$select distinct user_id from public.ledger_entries$$, $$values ('aaaaaaaa-0000-4000-8000-000000000001'::uuid)$$, 'owner: select ledger_entries returns only their own rows');
select throws_ok($$insert into public.ledger_entries (user_id, kind, amount, reference) values ('aaaaaaaa-0000-4000-8000-000000000001', 'top_up', 1000, 'forged')$$, '42501', null, 'owner: insert ledger_entries is denied');
select throws_ok($$update public.ledger_entries set amount = 1000$$, '42501', null, 'owner: update ledger_entries is denied');
select throws_ok($$delete from public.ledger_entries$$, '42501', null, 'owner: delete ledger_entries is denied');
select results_eq($$select distinct user_id from public.usage_records$$, $$values ('aaaaaaaa-0000-4000-8000-000000000001'::uuid)$$, 'owner: select usage_records returns only their own rows');
select throws_ok($$insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens, output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token, price_per_request, cost) values ('aaaaaaaa-0000-4000-8000-000000000001', 'forged', 'openai', 'gpt-4o', 1, 1, 0, 0, 0, 0, 0)$$, '42501', null, 'owner: insert usage_records is denied');
select throws_ok($$update public.usage_records set cost = 0$$, '42501', null, 'owner: update usage_records is denied');
select throws_ok($$delete from public.usage_records$$, '42501', null, 'owner: delete usage_records is denied');
select results_eq($$select distinct user_id from public.credit_reservations$$, $$values ('aaaaaaaa-0000-4000-8000-000000000001'::uuid)$$, 'owner: select credit_reservations returns only their own rows');
select throws_ok($$insert into public.credit_reservations (user_id, request_id, amount, expires_at) values ('aaaaaaaa-0000-4000-8000-000000000001', 'forged', 1, now() + interval '1 hour')$$, '42501', null, 'owner: insert credit_reservations is denied');
select throws_ok($$update public.credit_reservations set status = 'released', closed_at = now()$$, '42501', null, 'owner: update credit_reservations is denied');
select throws_ok($$delete from public.credit_reservations$$, '42501', null, 'owner: delete credit_reservations is denied');
select throws_ok($$select 1 from public.signup_errors$$, '42501', null, 'owner: select signup_errors is denied');
select throws_ok($$insert into public.signup_errors (message) values ('forged')$$, '42501', null, 'owner: insert signup_errors is denied');
select throws_ok($$update public.signup_errors set resolved_at = now()$$, '42501', null, 'owner: update signup_errors is denied');
select throws_ok($$delete from public.signup_errors$$, '42501', null, 'owner: delete signup_errors is denied');
reset role;

-- ── authenticated other user ──────────────────────────────────────────────────────────────────
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"aaaaaaaa-0000-4000-8000-000000000002"}';
select isnt_empty($$select 1 from public.model_pricing$$, 'other user: select model_pricing returns the price list');
select throws_ok($$insert into public.model_pricing (provider_id, model_id, price_per_input_token, price_per_output_token) values ('test', 'rls-test-model', 0.000001, 0.000002)$$, '42501', null, 'other user: insert model_pricing is denied');
select throws_ok($$update public.model_pricing set pricing_source = 'rls test' where provider_id = 'openai' and model_id = 'gpt-4o'$$, '42501', null, 'other user: update model_pricing is denied');
select throws_ok($$delete from public.model_pricing where provider_id = 'google' and model_id = 'gemini-2.0-flash'$$, '42501', null, 'other user: delete model_pricing is denied');
select throws_ok($$select 1 from public.billing_settings$$, '42501', null, 'other user: select billing_settings is denied');
select throws_ok($$insert into public.billing_settings (id) values (true)$$, '42501', null, 'other user: insert billing_settings is denied');
select throws_ok($$update public.billing_settings set signup_grant = 0$$, '42501', null, 'other user: update billing_settings is denied');
select throws_ok($$delete from public.billing_settings$$, '42501', null, 'other user: delete billing_settings is denied');
select is_empty($$select 1 from public.user_balances where user_id = 'aaaaaaaa-0000-4000-8000-000000000001'$$, 'other user: select user_balances hides the owner''s rows');
select throws_ok($$insert into public.user_balances (user_id) values ('aaaaaaaa-0000-4000-8000-000000000004')$$, '42501', null, 'other user: insert user_balances for someone else is denied');
select throws_ok($$update public.user_balances set balance = 1000000$$, '42501', null, 'other user: update user_balances is denied');
select throws_ok($$delete from public.user_balances$$, '42501', null, 'other user: delete user_balances is denied');
select is_empty($$select 1 from public.ledger_entries where user_id = 'aaaaaaaa-0000-4000-8000-000000000001'$$, 'other user: select ledger_entries hides the owner''s rows');
select throws_ok($$insert into public.ledger_entries (user_id, kind, amount, reference) values ('aaaaaaaa-0000-4000-8000-000000000001', 'top_up', 1000, 'forged')$$, '42501', null, 'other user: insert ledger_entries is denied');
select throws_ok($$update public.ledger_entries set amount = 1000$$, '42501', null, 'other user: update ledger_entries is denied');
select throws_ok($$delete from public.ledger_entries$$, '42501', null, 'other user: delete ledger_entries is denied');
select is_empty($$select 1 from public.usage_records where user_id = 'aaaaaaaa-0000-4000-8000-000000000001'$$, 'other user: select usage_records hides the owner''s rows');
select throws_ok($$insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens, output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token, price_per_request, cost) values ('aaaaaaaa-0000-4000-8000-000000000001', 'forged', 'openai', 'gpt-4o', 1, 1, 0, 0, 0, 0, 0)$$, '42501', null, 'other user: insert usage_records is denied');
select throws_ok($$update public.usage_records set cost = 0$$, '42501', null, 'other user: update usage_records is denied');
select throws_ok($$delete from public.usage_records$$, '42501', null, 'other user: delete usage_records is denied');
select is_empty($$select 1 from public.credit_reservations where user_id = 'aaaaaaaa-0000-4000-8000-000000000001'$$, 'other user: select credit_reservations hides the owner''s rows');
select throws_ok($$insert into public.credit_reservations (user_id, request_id, amount, expires_at) values ('aaaaaaaa-0000-4000-8000-000000000001', 'forged', 1, now() + interval '1 hour')$$, '42501', null, 'other user: insert credit_reservations is denied');
select throws_ok($$update public.credit_reservations set status = 'released', closed_at = now()$$, '42501', null, 'other user: update credit_reservations is denied');
select throws_ok($$delete from public.credit_reservations$$, '42501', null, 'other user: delete credit_reservations is denied');
select throws_ok($$select 1 from public.signup_errors$$, '42501', null, 'other user: select signup_errors is denied');
select throws_ok($$insert into public.signup_errors (message) values ('forged')$$, '42501', null, 'other user: insert signup_errors is denied');
select throws_ok($$update public.signup_errors set resolved_at = now()$$, '42501', null, 'other user: update signup_errors is denied');
select throws_ok($$delete from public.signup_errors$$, '42501', null, 'other user: delete signup_errors is denied');
reset role;

-- ── service_role ──────────────────────────────────────────────────────────────────────────────
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select isnt_empty($$select 1 from public.model_pricing$$, 'service_role: select model_pricing returns rows');
select lives_ok($$insert into public.model_pricing (provider_id, model_id, price_per_input_token, price_per_output_token) values ('test', 'rls-test-model', 0.000001, 0.000002)$$, 'service_role: insert model_pricing is allowed');
select lives_ok($$update public.model_pricing set pricing_source = 'rls test' where provider_id = 'openai' and model_id = 'gpt-4o'$$, 'service_role: update model_pricing is allowed');
select lives_ok($$delete from public.model_pricing where provider_id = 'google' and model_id = 'gemini-2.0-flash'$$, 'service_role: delete model_pricing is allowed');
select isnt_empty($$select 1 from public.billing_settings$$, 'service_role: select billing_settings returns rows');
select throws_ok($$insert into public.billing_settings (id) values (true)$$, '42501', null, 'service_role: insert billing_settings is denied');
select lives_ok($$update public.billing_settings set signup_grant = 0$$, 'service_role: update billing_settings is allowed');
select throws_ok($$delete from public.billing_settings$$, '42501', null, 'service_role: delete billing_settings is denied');
select isnt_empty($$select 1 from public.user_balances$$, 'service_role: select user_balances returns rows');
select throws_ok($$insert into public.user_balances (user_id) values ('aaaaaaaa-0000-4000-8000-000000000004')$$, '42501', null, 'service_role: insert user_balances is denied');
select throws_ok($$update public.user_balances set balance = 1000000$$, '42501', null, 'service_role: update user_balances is denied');
select throws_ok($$delete from public.user_balances$$, '42501', null, 'service_role: delete user_balances is denied');
select isnt_empty($$select 1 from public.ledger_entries$$, 'service_role: select ledger_entries returns rows');
select throws_ok($$insert into public.ledger_entries (user_id, kind, amount, reference) values ('aaaaaaaa-0000-4000-8000-000000000001', 'top_up', 1000, 'forged')$$, '42501', null, 'service_role: insert ledger_entries is denied');
select throws_ok($$update public.ledger_entries set amount = 1000$$, '42501', null, 'service_role: update ledger_entries is denied');
select throws_ok($$delete from public.ledger_entries$$, '42501', null, 'service_role: delete ledger_entries is denied');
select isnt_empty($$select 1 from public.usage_records$$, 'service_role: select usage_records returns rows');
select throws_ok($$insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens, output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token, price_per_request, cost) values ('aaaaaaaa-0000-4000-8000-000000000001', 'forged', 'openai', 'gpt-4o', 1, 1, 0, 0, 0, 0, 0)$$, '42501', null, 'service_role: insert usage_records is denied');
select throws_ok($$update public.usage_records set cost = 0$$, '42501', null, 'service_role: update usage_records is denied');
select throws_ok($$delete from public.usage_records$$, '42501', null, 'service_role: delete usage_records is denied');
select isnt_empty($$select 1 from public.credit_reservations$$, 'service_role: select credit_reservations returns rows');
select throws_ok($$insert into public.credit_reservations (user_id, request_id, amount, expires_at) values ('aaaaaaaa-0000-4000-8000-000000000001', 'forged', 1, now() + interval '1 hour')$$, '42501', null, 'service_role: insert credit_reservations is denied');
select throws_ok($$update public.credit_reservations set status = 'released', closed_at = now()$$, '42501', null, 'service_role: update credit_reservations is denied');
select throws_ok($$delete from public.credit_reservations$$, '42501', null, 'service_role: delete credit_reservations is denied');
select isnt_empty($$select 1 from public.signup_errors$$, 'service_role: select signup_errors returns rows');
select throws_ok($$insert into public.signup_errors (message) values ('forged')$$, '42501', null, 'service_role: insert signup_errors is denied');
select lives_ok($$update public.signup_errors set resolved_at = now()$$, 'service_role: update signup_errors is allowed');
select throws_ok($$delete from public.signup_errors$$, '42501', null, 'service_role: delete signup_errors is denied');
reset role;
SELECT * FROM finish();
ROLLBACK;
