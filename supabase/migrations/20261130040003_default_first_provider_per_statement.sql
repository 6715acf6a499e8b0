-- 20261130040003_default_first_provider_per_statement.sql
--
-- The first provider of a model name becomes its default (20251018000001) — now decided once
-- per INSERT statement over its new rows, not by a BEFORE INSERT trigger per row.
--   * Why: the row trigger probed `models` by model_id for every inserted row. Its cached
--     plan is made when the table is small (a seq scan of a page or two is cheapest) and kept
--     while the statement fills the table, so one INSERT of many new names scanned ever more
--     rows per row: 10,000 names 6.5 s, 20,000 26 s, 100,000 in one INSERT minutes
--     (docs/benchmarks.md). The statement trigger reads the new rows once (a transition table)
--     and joins them to `models` in one query.
--   * Same rule as before: a row becomes its name's default when no row of that name existed
--     before it — the name had no row before the statement, and the row is the first of its
--     name in the statement (insertion order, as the row trigger saw them). A name that has a
--     row but no default (an ambiguous name) gets none. A statement that inserts a row with
--     is_default = true itself for a new name keeps that one (the row trigger failed on the
--     unique index if an earlier row of the name came first).
--   * Concurrency as before: each new name's bucket lock (the key set_default_provider takes)
--     is held before its default is written, taken in bucket order (two statements never wait
--     on each other in a cycle), and the UPDATE checks under the locks that the name still has
--     no default: of two transactions pricing a new name first, the second waits for the first
--     and leaves its own row without default.
--   * The default is written by an UPDATE after the insert. It is part of inserting the name,
--     which was never an audit entry: the audit trigger on is_default now skips changes made
--     by a trigger (pg_trigger_depth() > 0; only this one changes is_default from a trigger).
--     A change by set_default_provider, the price import or a direct UPDATE is audited as
--     before.

-- ── Functions ─────────────────────────────────────────────────────────────────────────────
-- private.default_first_providers(): AFTER INSERT FOR EACH STATEMENT on models, the new rows
-- as new_models. Runs as the inserting role (service_role, postgres), which may not call
-- private functions: the lock key is written out as in set_default_provider. Both queries are
-- EXECUTEd, so planned for each statement with the table's current size (a plan cached while
-- the table was small is what made the row trigger quadratic). Raises nothing of its own.
create function private.default_first_providers() returns trigger
language plpgsql set search_path = '' as $$
declare
  firsts uuid[];
  buckets integer[];
  bucket integer;
begin
  -- The statement's new names — none of its rows a default, and every row of the name in the
  -- table one of the statement's (counted: a name has few rows) — and each one's first row.
  execute $q$
    with names as (
      select n.model_id, count(*) as rows_here from new_models n
      group by n.model_id having not bool_or(n.is_default)),
    fresh as (
      select x.model_id from names x join public.models m on m.model_id = x.model_id
      group by x.model_id, x.rows_here having count(*) = x.rows_here),
    firsts as (
      select distinct on (n.model_id) n.id, n.model_id
      from (select n.id, n.model_id, row_number() over () as pos from new_models n) n
      join fresh f on f.model_id = n.model_id
      order by n.model_id, n.pos)
    select array_agg(f.id),
           array_agg(distinct abs(hashtext(f.model_id) % 1024)::integer
                     order by abs(hashtext(f.model_id) % 1024)::integer)
    from firsts f $q$
  into firsts, buckets;
  if firsts is null then
    return null;  -- no new name (a re-import, an upsert of known rows)
  end if;
  foreach bucket in array buckets loop
    perform pg_advisory_xact_lock(hashtext('tokenmeter.default_provider'), bucket);
  end loop;
  -- Under the locks, with a new snapshot: a first provider of the same name that another
  -- transaction committed meanwhile is its default now, and this statement's row is not.
  execute $q$
    update public.models m set is_default = true
    from unnest($1) f (id)
    where m.id = f.id
      and not exists (select 1 from public.models d where d.model_id = m.model_id and d.is_default) $q$
  using firsts;
  return null;
end
$$;

-- ── Triggers ──────────────────────────────────────────────────────────────────────────────
drop trigger models_default_first_provider on public.models;
drop function private.default_first_provider();
create trigger models_default_first_provider after insert on public.models
  referencing new table as new_models
  for each statement execute function private.default_first_providers();

-- Only a change of the default is a price decision (20251130000002); the first provider's,
-- made by the trigger above as part of the insert, is not one.
drop trigger models_default_audit on public.models;
create trigger models_default_audit after update of is_default on public.models
  for each row when (old.is_default is distinct from new.is_default and pg_trigger_depth() = 0)
  execute function private.audit_price_change();

-- ── Grants ────────────────────────────────────────────────────────────────────────────────
revoke execute on function private.default_first_providers() from public;
