-- 51-plans-routing.sql — upstreams, plans and routes (20251130000007) and the router
-- private.pick_route: seed 002's three plans exactly, every routed model priced; the weighted
-- pick of every seeded plan checked by a chi-square test over 12,000 draws (p = 0.001); a model
-- of the plan → its routes only; 'auto' or another model → the whole plan; what is skipped;
-- who may read and write the tables.
BEGIN;
SELECT plan(35);

-- The draws are random(); a fixed seed makes the run repeatable (the test still fails for a
-- wrong distribution: a uniform pick over cursor-pro-sonnet scores ~3,600 against 16.3).
select setseed(0.1103);

-- ── Seed 002, exactly ──────────────────────────────────────────────────────────────────────
select results_eq($$select p.name, p.price, p.period from public.plans p
                    where p.name like 'cursor-pro-%' order by p.name$$,
  $$values ('cursor-pro-auto', '50K/month', 'month'), ('cursor-pro-opus', 'pending', 'month'),
           ('cursor-pro-sonnet', '75K/month', 'month')$$,
  'the three plans of seed 002 with their prices');
select results_eq($$select p.name, r.model, u.name, r.weight
                    from public.plan_routes r join public.plans p on p.id = r.plan_id
                    join public.upstreams u on u.id = r.upstream_id
                    where p.name like 'cursor-pro-%' order by 1, 2, 3$$,
  $$values ('cursor-pro-auto', 'gemini-3-flash', 'antigravity', 50),
           ('cursor-pro-auto', 'gpt-5-mini', 'ghcp', 50),
           ('cursor-pro-opus', 'claude-opus-4-5-thinking', 'antigravity', 20),
           ('cursor-pro-opus', 'claude-opus-4-6-thinking', 'antigravity', 10),
           ('cursor-pro-opus', 'claude-opus-4-6-thinking', 'ghcp', 10),
           ('cursor-pro-opus', 'claude-sonnet-4.5', 'ghcp', 30),
           ('cursor-pro-opus', 'gemini-3-flash', 'antigravity', 30),
           ('cursor-pro-opus', 'gpt-5-mini', 'ghcp', 30),
           ('cursor-pro-sonnet', 'claude-sonnet-4-5-thinking', 'antigravity', 20),
           ('cursor-pro-sonnet', 'claude-sonnet-4.5', 'ghcp', 10),
           ('cursor-pro-sonnet', 'gemini-3-flash', 'antigravity', 40),
           ('cursor-pro-sonnet', 'gpt-5-mini', 'ghcp', 30)$$,
  'their routes and weights, as seed 002 lists them');
select is((select sum(r.weight)::int from public.plan_routes r join public.plans p on p.id = r.plan_id
           where p.name = 'cursor-pro-opus'), 130, 'cursor-pro-opus totals 130, normalised at run time');
select results_eq($$select name, wire_format, api_key_env, base_url from public.upstreams
                    where name in ('antigravity', 'ghcp') order by name$$,
  $$values ('antigravity', 'openai_chat', 'ANTIGRAVITY_API_KEY', null::text),
           ('ghcp', 'openai_chat', 'GHCP_API_KEY', null::text)$$,
  'the two upstreams name their key''s secret, never hold it; base URLs are the operator''s');
select is_empty($$select r.model from public.plan_routes r
                  where (public.price_for(null, r.model)).pricing_type <> 'paid'$$,
  'every routed model resolves to a paid price');
select results_eq($$select distinct r.model, (public.price_for(null, r.model)).provider_id,
                           (public.price_for(null, r.model)).model_id,
                           (public.price_for(null, r.model)).source_detail is not null
                    from public.plan_routes r join public.plans p on p.id = r.plan_id
                    where p.name like 'cursor-pro-%' order by 1$$,
  $$values ('claude-opus-4-5-thinking', 'anthropic', 'claude-opus-4-5', true),
           ('claude-opus-4-6-thinking', 'anthropic', 'claude-opus-4-6', true),
           ('claude-sonnet-4-5-thinking', 'anthropic', 'claude-sonnet-4-5', true),
           ('claude-sonnet-4.5', 'anthropic', 'claude-sonnet-4-5', true),
           ('gemini-3-flash', 'google', 'gemini-3-flash', true),
           ('gpt-5-mini', 'openai', 'gpt-5-mini', true)$$,
  'each routed model is priced by its provider''s price, whose source is recorded');

-- ── Nothing routes until an upstream has a base URL ───────────────────────────────────────
select ok((private.pick_route(p.id, 'auto')).id is null, p.name || ': no route while the upstreams have no base URL')
from public.plans p where p.name = 'cursor-pro-auto';
update public.upstreams set base_url = 'http://127.0.0.1:9/v1' where name in ('antigravity', 'ghcp');

-- ── Chi-square, 12,000 draws per case, critical values at p = 0.001 ───────────────────────
create temporary table draws (label text, route_id uuid);
insert into draws
select c.label, (private.pick_route(p.id, c.model)).id
from (values ('cursor-pro-auto', 'auto', 'auto'), ('cursor-pro-sonnet', 'auto', 'sonnet'),
             ('cursor-pro-opus', 'auto', 'opus'),
             ('cursor-pro-opus', 'claude-opus-4-6-thinking', 'opus-4-6'),
             ('cursor-pro-opus', 'gpt-4o', 'opus-unknown')) as c (plan, model, label)
join public.plans p on p.name = c.plan
cross join generate_series(1, 12000);
create temporary table expected (label text, plan text, model text, critical numeric);
insert into expected values ('auto', 'cursor-pro-auto', null, 10.828),
  ('sonnet', 'cursor-pro-sonnet', null, 16.266), ('opus', 'cursor-pro-opus', null, 20.515),
  ('opus-4-6', 'cursor-pro-opus', 'claude-opus-4-6-thinking', 10.828),
  ('opus-unknown', 'cursor-pro-opus', null, 20.515);
create temporary table chi as
select e.label, e.critical, count(*) as routes,
       sum((x.observed - x.expected) ^ 2 / x.expected) as score
from expected e
cross join lateral (
  select r.id, (select count(*) from draws d where d.label = e.label and d.route_id = r.id) as observed,
         12000.0 * r.weight / sum(r.weight) over () as expected
  from public.plan_routes r join public.plans p on p.id = r.plan_id
  where p.name = e.plan and (e.model is null or r.model = e.model)) x
group by e.label, e.critical;
select is((select count(*)::int from draws where route_id is null), 0, 'every draw picked a route');
select ok(c.score < c.critical, format('%s: chi-square %s < %s (%s routes, weights normalised)',
                                       c.label, round(c.score, 3), c.critical, c.routes))
from chi c order by c.label;
select is((select count(distinct d.route_id)::int from draws d where d.label = 'opus-4-6'), 2,
  'a model of the plan at two upstreams: both of its routes, and only them, are drawn');
select is((select count(distinct d.route_id)::int from draws d where d.label = 'opus-unknown'), 6,
  'a model the plan does not route: the whole plan is drawn from');

-- ── What is left out of a pick ────────────────────────────────────────────────────────────
select is((select r.model from public.plans p, private.pick_route(p.id, 'gpt-5-mini') r where p.name = 'cursor-pro-sonnet'),
  'gpt-5-mini', 'a model routed once is always its one route');
select is((select count(distinct (private.pick_route(p.id, 'auto', array['gpt-5-mini', 'claude-sonnet-4.5'])).model)::int
           from public.plans p, generate_series(1, 200) where p.name = 'cursor-pro-opus'), 2,
  'allowed_models: auto picks only among the allowed models');
select ok((select (private.pick_route(p.id, 'gemini-3-flash', array['gpt-5-mini'])).id is null
           from public.plans p where p.name = 'cursor-pro-opus'),
  'allowed_models: a model of the plan outside the list gets no route (authorize_request refuses it first, 403)');
update public.upstreams set is_active = false where name = 'ghcp';
select is((select count(*)::int from public.plans p, generate_series(1, 200)
           where p.name = 'cursor-pro-auto' and (private.pick_route(p.id, 'auto')).model <> 'gemini-3-flash'), 0,
  'an inactive upstream is skipped: its routes are never picked');
select ok((select (private.pick_route(p.id, 'gpt-5-mini')).id is null from public.plans p where p.name = 'cursor-pro-auto'),
  'a model of the plan whose only upstream is inactive gets no route, not another model');
update public.upstreams set is_active = true where name = 'ghcp';
update public.plan_routes set weight = 0
where model = 'gpt-5-mini' and plan_id = (select id from public.plans where name = 'cursor-pro-auto');
select is((select count(*)::int from public.plans p, generate_series(1, 200)
           where p.name = 'cursor-pro-auto' and (private.pick_route(p.id, 'auto')).model = 'gpt-5-mini'), 0,
  'weight 0 parks a route');
select ok((select (private.pick_route(p.id, 'auto', array['no-such-model'])).id is null from public.plans p where p.name = 'cursor-pro-auto'),
  'no qualifying route: NULL (authorize_request answers 503 no_route)');

-- ── Constraints ───────────────────────────────────────────────────────────────────────────
select throws_ok($$insert into public.upstreams (name, api_key_env) values ('bad-env', 'sk-live-123')$$, '23514', null,
  'api_key_env is a variable name, so a secret pasted there is refused');
select throws_ok($$insert into public.upstreams (name, wire_format) values ('bad-wire', 'anthropic')$$, '23514', null,
  'only the openai_chat wire format exists');
select throws_ok($$insert into public.upstreams (name, base_url) values ('bad-url', 'ftp://x')$$, '23514', null,
  'base_url must be http(s)');
select throws_ok($$insert into public.plan_routes (plan_id, upstream_id, model, weight) select p.id, u.id, 'x', -1 from public.plans p, public.upstreams u limit 1$$,
  '23514', null, 'a negative weight is refused');
select throws_ok($$insert into public.plans (name) values ('cursor-pro-auto')$$, '23505', null, 'plan names are unique');

-- ── Who may read and write ────────────────────────────────────────────────────────────────
set local role anon;
set local "request.jwt.claims" to '{"role":"anon"}';
select is((select count(*)::int from public.plans where name like 'cursor-pro-%'), 3, 'anon reads the plans');
select isnt_empty($$select 1 from public.plan_routes$$, 'anon reads the plan routes');
select throws_ok($$select 1 from public.upstreams$$, '42501', null, 'anon cannot read upstreams');
select throws_ok($$update public.plans set price = 'free'$$, '42501', null, 'anon cannot change plans');
reset role;
set local role authenticated;
set local "request.jwt.claims" to '{"role":"authenticated","sub":"51515151-0000-4000-8000-00000000000a"}';
select throws_ok($$select 1 from public.upstreams$$, '42501', null, 'authenticated cannot read upstreams (base URLs, secret names)');
select throws_ok($$insert into public.plan_routes (plan_id, upstream_id, model, weight) select plan_id, upstream_id, 'mine', 1000 from public.plan_routes limit 1$$,
  '42501', null, 'authenticated cannot add routes');
reset role;
set local role service_role;
set local "request.jwt.claims" to '{"role":"service_role"}';
select lives_ok($$update public.upstreams set base_url = 'https://example.test/v1' where name = 'ghcp'$$, 'service_role sets an upstream''s base URL');
select lives_ok($$insert into public.plan_routes (plan_id, upstream_id, model, weight) select p.id, u.id, 'gpt-4o', 5 from public.plans p, public.upstreams u where p.name = 'cursor-pro-auto' and u.name = 'ghcp'$$,
  'service_role adds a route');
reset role;

SELECT * FROM finish();
ROLLBACK;
