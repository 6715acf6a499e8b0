-- 84-consolidation-usage-gaps.sql — pricing_consolidation_report()'s usage_without_price
-- (20261130010002, counted from the rollups) equals the record-by-record check it replaces
-- (the version in effect at each record's occurred_at is missing or 'missing'), for usage
-- before a model's first price version, under a 'missing' version (a gap starting and ending
-- inside a UTC day, whole days between), a model never priced, usage occurred before the
-- summaries' settled range, records not rolled up yet, and after an archived (dropped) month
-- whose summaries stay. Fixture times are anchored at UTC day starts.
BEGIN;
SELECT plan(12);

-- ── Fixtures, as postgres ──────────────────────────────────────────────────────────────────
insert into auth.users (id, email) values
  ('84848484-0000-4000-8000-00000000000a', 'gaps-a@example.test'),
  ('84848484-0000-4000-8000-00000000000b', 'gaps-b@example.test');
-- d0: the start of the UTC day 6 days ago. old: 7 months ago, gone: 9 months ago.
create temporary table t as
select date_trunc('day', now() - interval '6 days', 'UTC') as d0,
       date_trunc('day', now() - interval '7 months', 'UTC') + interval '3 hours' as old,
       date_trunc('month', now() - interval '9 months', 'UTC') + interval '2 days 4 hours' as gone;
-- The months from 3 months ago on are partitions (one run up to now and ahead), 9 months ago is
-- one apart (to be archived): the summaries are settled from 3 months ago on, d0 lies in that
-- range and `old` before it, whatever the date.
select private.create_usage_partition((date_trunc('month', now(), 'UTC') - make_interval(months => m))::date)
from generate_series(0, 3) m;
select private.create_usage_partition((select gone from t)::date);

-- Everything earlier (other files, the suite's API tests) is rolled up first.
select public.rollup_usage();

-- Versions: gap-model paid from 60 days before d0 (after `old`), 'missing' from d0 + 10:30 to
-- d0 + 2 days 12:00, then paid; late-model first priced at d0 + 1 day 12:15; never-model never
-- priced; ok-model priced. The cuts inside an hour make the report read that hour per user.
insert into public.model_pricing (provider_id, model_id, price_per_input_token,
  price_per_output_token, pricing_type, effective_from)
select 'gap-co', v.model, v.price, v.price, v.kind, (select d0 from t) + v.since
from (values ('gap-model', 0.000001, 'paid', interval '-60 days'),
             ('gap-model', null, 'missing', interval '10 hours 30 minutes'),
             ('gap-model', 0.000002, 'paid', interval '2 days 12 hours'),
             ('late-model', 0.000001, 'paid', interval '1 day 12 hours 15 minutes'),
             ('ok-model', 0.000001, 'paid', interval '-400 days')) as v (model, price, kind, since);

-- Usage written directly (as a legacy import would: no charge), by two users.
create function pg_temp.usage(who text, model text, request text, at timestamptz,
  created timestamptz default now()) returns void language sql as $$
  insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
    output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token,
    price_per_request, cost, occurred_at, created_at)
  values (('84848484-0000-4000-8000-00000000000' || who)::uuid, request, 'gap-co', model, 10, 1,
          0, 0, 0, 0, 0, at, created)
$$;
select pg_temp.usage(u.who, u.model, 'gap-' || u.n, (select d0 from t) + u.at)
from (values (1, 'a', 'gap-model', interval '2 hours'),           -- priced
             (2, 'a', 'gap-model', interval '11 hours'),          -- missing: first, cut day
             (3, 'b', 'gap-model', interval '10 hours 29 minutes'),-- priced, same hour
             (14, 'a', 'gap-model', interval '10 hours 40 minutes'),-- missing: its cut hour
             (15, 'b', 'gap-model', interval '13 hours'),         -- missing: a whole hour
             (4, 'a', 'gap-model', interval '1 day 5 hours'),     -- missing: a whole day
             (5, 'b', 'gap-model', interval '1 day 23 hours'),    -- missing: a whole day
             (6, 'b', 'gap-model', interval '2 days 1 hour'),     -- missing: last, cut day
             (18, 'a', 'gap-model', interval '2 days 30 minutes'),-- missing: its first hour
             (7, 'a', 'gap-model', interval '2 days 12 hours'),   -- priced from this instant
             (8, 'a', 'gap-model', interval '4 days'),            -- priced
             (9, 'a', 'late-model', interval '2 hours'),          -- before the first version
             (10, 'b', 'late-model', interval '1 day 5 hours'),   -- before it, its cut day
             (11, 'a', 'late-model', interval '1 day 18 hours'),  -- priced
             (16, 'b', 'late-model', interval '1 day 12 hours 5 minutes'),  -- before: cut hour
             (17, 'a', 'late-model', interval '1 day 12 hours 15 minutes'), -- priced (instant)
             (12, 'b', 'never-model', interval '3 hours'),        -- never priced
             (13, 'a', 'ok-model', interval '3 hours'))           -- priced
  as u (n, who, model, at);
-- Occurred long before the settled range (created now, a back-dated import).
select pg_temp.usage('b', 'never-model', 'gap-old-1', (select old from t));
select pg_temp.usage('a', 'gap-model', 'gap-old-2', (select old from t));

-- The report's items for this file's models, and the record-by-record truth (the check as it
-- was before 20261130010002).
create function pg_temp.reported() returns table (provider text, model text, records bigint)
language sql as $$
  select i ->> 'provider', i ->> 'model', (i ->> 'records')::bigint
  from jsonb_array_elements(public.pricing_consolidation_report() -> 'checks') c,
       jsonb_array_elements(c -> 'items') i
  where c ->> 'name' = 'usage_without_price' and i ->> 'provider' = 'gap-co'
$$;
create function pg_temp.truth() returns table (provider text, model text, records bigint)
language sql as $$
  select r.provider_id, r.model_id, count(*)
  from public.usage_records r
  where r.provider_id = 'gap-co'
    and not exists (
      select 1 from (select p.pricing_type from public.model_pricing p
                     where p.provider_id = r.provider_id and p.model_id = r.model_id
                       and p.effective_from <= r.occurred_at
                     order by p.effective_from desc limit 1) v
      where v.pricing_type <> 'missing')
  group by 1, 2
$$;

-- ── Not rolled up yet ─────────────────────────────────────────────────────────────────────
select set_eq($$select * from pg_temp.reported()$$, $$select * from pg_temp.truth()$$,
  'records not rolled up yet: the report = the record-by-record check');
select set_eq($$select * from pg_temp.truth()$$,
  $$values ('gap-co', 'gap-model', 8::bigint), ('gap-co', 'late-model', 3), ('gap-co', 'never-model', 2)$$,
  'the truth: 7 under the missing version + 1 before any, 3 before late-model''s first, 2 never priced');

-- ── Rolled up: whole days from the model totals, cut days and the old part per user ─────
select public.rollup_usage();
select is((select count(*)::int from public.usage_records
           where provider_id = 'gap-co' and id > public.usage_rolled_up_to()), 0,
  'every fixture record is rolled up');
select set_eq($$select * from pg_temp.reported()$$, $$select * from pg_temp.truth()$$,
  'rolled up: the report = the record-by-record check');

-- ── Some rolled up, some not ─────────────────────────────────────────────────────────────
select pg_temp.usage('b', 'gap-model', 'gap-late-1', (select d0 from t) + interval '1 day 1 hour');
select pg_temp.usage('a', 'late-model', 'gap-late-2', (select d0 from t) + interval '1 day 11 hours');
select set_eq($$select * from pg_temp.reported()$$, $$select * from pg_temp.truth()$$,
  'rolled up and new records: the report = the record-by-record check');
select is((select records from pg_temp.reported() where model = 'gap-model'), 9::bigint,
  'gap-model: the new record under the missing version is counted once');

-- ── A version changes the gaps: the summaries need no update ────────────────────────────
-- late-model's first version moves back before all its usage: nothing of it is unpriced.
insert into public.model_pricing (provider_id, model_id, price_per_input_token,
  price_per_output_token, effective_from)
values ('gap-co', 'late-model', 0.000001, 0.000001, (select d0 from t) - interval '1 day');
-- gap-model: a second 'missing' span from d0 + 4 days on (its record at exactly d0 + 4 days).
insert into public.model_pricing (provider_id, model_id, pricing_type, effective_from)
values ('gap-co', 'gap-model', 'missing', (select d0 from t) + interval '4 days');
select set_eq($$select * from pg_temp.reported()$$, $$select * from pg_temp.truth()$$,
  'after new versions: the report = the record-by-record check');
select is((select records from pg_temp.reported() where model = 'gap-model'), 10::bigint,
  'gap-model: the record at the instant a missing version starts is unpriced');
select is_empty($$select 1 from pg_temp.reported() where model = 'late-model'$$,
  'late-model is priced before all its usage now');

-- ── An archived month: its summaries stay, its records are gone ─────────────────────────
select pg_temp.usage('a', 'never-model', 'gap-gone-1', (select gone from t), (select gone from t));
select public.rollup_usage();
select is((select records from pg_temp.reported() where model = 'never-model'), 3::bigint,
  'the record in the month about to be archived is counted');
do $$
declare
  part text := 'usage_records_' || to_char((select gone from t), 'YYYY_MM');
begin
  -- What tokenmeter usage archive does once the file verifies (app/partitions.py).
  delete from private.usage_request_ids where request_id = 'gap-gone-1';
  execute format('alter table public.usage_records detach partition private.%I', part);
  execute format('drop table private.%I', part);
end
$$;
select isnt_empty($$select 1 from public.usage_summaries where model_id = 'never-model'
                    and period = 'day' and period_start = date_trunc('day', (select gone from t), 'UTC')$$,
  'the archived month''s summaries stay');
select set_eq($$select * from pg_temp.reported()$$, $$select * from pg_temp.truth()$$,
  'after the archive: the report = the record-by-record check (the archived record is gone)');

SELECT * FROM finish();
ROLLBACK;
