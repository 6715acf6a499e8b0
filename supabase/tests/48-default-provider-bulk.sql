-- One transaction adding 100,000 new model names (a bulk INSERT into models): the first-provider
-- lock of 20251201000011 was one advisory lock per new name, held to commit, and ran out of the
-- shared lock table ("out of shared memory"); 20251201000070 takes it in 1,024 buckets.
BEGIN;
SELECT plan(2);

SELECT lives_ok(
  $$insert into public.models (provider_id, model_id)
    select 'bulk-test', 'bulk-test-m' || g from generate_series(1, 100000) g$$,
  'one statement adds 100,000 new names within the lock table');

SELECT is(
  (select count(*) filter (where is_default) from public.models where provider_id = 'bulk-test'),
  100000::bigint,
  'each new name has its first provider as default');

SELECT * FROM finish();
ROLLBACK;
