-- Schedule public.ensure_usage_partitions() daily with pg_cron where the database has it
-- (Supabase does: Database → Extensions → pg_cron; issue 12 §2). The job keeps this month and
-- the next three partitioned, so the default partition stays empty; it is idempotent, so the
-- schedule is a safety margin of months, not a deadline of hours.
-- Without pg_cron (the local stack, a plain PostgreSQL) nothing is scheduled: `tokenmeter stack
-- start` and `tokenmeter usage partitions ensure` run the same function. Enabling pg_cron later:
--   select cron.schedule('tokenmeter-usage-partitions', '17 3 * * *',
--                        'select public.ensure_usage_partitions()');
do $$
begin
  if not exists (select 1 from pg_extension where extname = 'pg_cron') then
    raise notice 'pg_cron is not installed: run `tokenmeter usage partitions ensure` (or '
      'select public.ensure_usage_partitions()) at least once every three months';
    return;
  end if;
  -- Same name again replaces the job (cron.schedule upserts by name).
  perform cron.schedule('tokenmeter-usage-partitions', '17 3 * * *',
    'select public.ensure_usage_partitions()');
end
$$;
