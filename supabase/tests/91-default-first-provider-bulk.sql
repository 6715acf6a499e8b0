-- 91-default-first-provider-bulk.sql — the first provider of a name becomes its default, decided
-- once per INSERT statement (20261130040003), with the row trigger's rules for statements of many
-- rows: the first row of a new name in the statement (insertion order) is its default, later
-- ones are not; a name that had a row keeps its default, or stays without one; a row inserted
-- with is_default = true keeps it; ON CONFLICT updates are not new rows; the first default is
-- not an audit entry, a later change of default still is.
BEGIN;
SELECT plan(8);

insert into public.models (provider_id, model_id) values ('had-a', 'bulk-had-default');
insert into public.models (provider_id, model_id) values ('amb-a', 'bulk-ambiguous'), ('amb-b', 'bulk-ambiguous');
update public.models set is_default = false where model_id = 'bulk-ambiguous';
create temporary table mark as select coalesce(max(id), 0) as id from public.audit_logs;

-- One statement: two new names (two providers each), a name with a default, an ambiguous one.
insert into public.models (provider_id, model_id) values
  ('second', 'bulk-new-1'), ('first', 'bulk-new-1'),
  ('only', 'bulk-new-2'),
  ('later', 'bulk-had-default'),
  ('amb-c', 'bulk-ambiguous'),
  ('zeta', 'bulk-new-3'), ('alpha', 'bulk-new-3');
select results_eq($$select model_id, provider_id from public.models
                    where model_id like 'bulk-%' and is_default order by 1$$,
  $$values ('bulk-had-default', 'had-a'), ('bulk-new-1', 'second'), ('bulk-new-2', 'only'),
           ('bulk-new-3', 'zeta')$$,
  'a new name''s first row in the statement is its default; a name that had a default keeps it');
select is((select count(*)::int from public.models where model_id like 'bulk-new-%' and is_default),
  3, 'exactly one default per new name');
select is((select count(*)::int from public.models where model_id = 'bulk-ambiguous' and is_default),
  0, 'a name priced before without a default gets none from a new provider');

-- A row inserted as the default keeps it, even when it is not the first of its name.
insert into public.models (provider_id, model_id, is_default) values
  ('plain', 'bulk-explicit', false), ('chosen', 'bulk-explicit', true);
select results_eq($$select provider_id, is_default from public.models
                    where model_id = 'bulk-explicit' order by 1$$,
  $$values ('chosen', true), ('plain', false)$$,
  'an explicit default is kept and no other row of the name is made one');

-- ON CONFLICT … DO UPDATE (the price import's upsert): updated rows are not new providers.
insert into public.models as m (provider_id, model_id, metadata) values
  ('second', 'bulk-new-1', '{"x": 1}'), ('new-up', 'bulk-upsert', '{}')
on conflict (provider_id, model_id) do update set metadata = excluded.metadata;
select results_eq($$select model_id, provider_id from public.models
                    where model_id in ('bulk-new-1', 'bulk-upsert') and is_default order by 1$$,
  $$values ('bulk-new-1', 'second'), ('bulk-upsert', 'new-up')$$,
  'an upsert: the inserted new name gets its default, the updated row''s name keeps its own');

-- The audit trail: no entry for a first default, one for a change of default.
select is((select count(*)::int from public.audit_logs
           where id > (select id from mark) and resource_type = 'models'),
  0, 'the first provider''s default is part of inserting the name: not an audit entry');
update public.models set is_default = false where model_id = 'bulk-new-2';
select results_eq($$select action, before ->> 'is_default', after ->> 'is_default' from public.audit_logs
                    where id > (select id from mark) and resource_type = 'models'$$,
  $$values ('update', 'true', 'false')$$,
  'a change of default made by a statement is audited as before');

-- Many new names in one statement: every one gets its only provider as default.
insert into public.models (provider_id, model_id)
select 'manyco', 'bulk-many-' || g from generate_series(1, 5000) g;
select is((select count(*)::int from public.models where model_id like 'bulk-many-%' and is_default),
  5000, '5,000 new names in one INSERT: each is its own provider''s default');

SELECT * FROM finish();
ROLLBACK;
