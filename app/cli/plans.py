"""`tokenmeter plans …`: plans and their weighted routes (logic in app/plans.py)."""

from __future__ import annotations

from decimal import Decimal

import typer
from rich import box
from rich.table import Table

from app.cli.common import JSON_HELP, facade_session
from app.cli.output import console, print_json
from app.models import Plan
from app.plans import Plans

plans_app = typer.Typer(
    no_args_is_help=True, help="Plans and their routes: list, show, route a model."
)


def _percent(part: int, whole: int) -> str:
    if whole == 0:
        return "—"
    return f"{(Decimal(part) * 100 / whole).quantize(Decimal('0.1'))}%"


def routes_table(plan: Plan) -> Table:
    """A plan's routes with the share each gets: of its model's requests, and of `auto`
    (every route of the plan), as private.pick_route draws them (weights of usable routes;
    an upstream without a base URL or inactive is not counted here)."""
    table = Table(title=f"plan {plan.name}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("model", overflow="fold")
    table.add_column("upstream", no_wrap=True)
    for name in ("weight", "of model", "of auto"):
        table.add_column(name, justify="right", no_wrap=True)
    total = sum(r.weight for r in plan.routes)
    per_model: dict[str, int] = {}
    for r in plan.routes:
        per_model[r.model] = per_model.get(r.model, 0) + r.weight
    for r in plan.routes:
        table.add_row(
            r.model,
            r.upstream,
            str(r.weight),
            _percent(r.weight, per_model[r.model]),
            _percent(r.weight, total),
        )
    table.caption = f"price {plan.price or '—'} · quota period {plan.period}" + (
        "" if plan.is_active else " · [red]inactive[/]"
    )
    return table


@plans_app.command("list")
def plans_list(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Every plan with its price text, period, models and total weight."""
    with facade_session(Plans) as plans:
        found = plans.list()
    if as_json:
        print_json(found)
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("plan", no_wrap=True)
    table.add_column("price", overflow="fold")
    table.add_column("period", no_wrap=True)
    table.add_column("active", no_wrap=True)
    table.add_column("models", overflow="fold")
    table.add_column("weight", justify="right", no_wrap=True)
    for p in found:
        models = sorted({r.model for r in p.routes})
        table.add_row(
            p.name,
            p.price or "—",
            p.period,
            "yes" if p.is_active else "[red]no[/]",
            ", ".join(models) or "—",
            str(sum(r.weight for r in p.routes)),
        )
    console.print(table)


@plans_app.command("show")
def plans_show(
    plan: str = typer.Argument(..., help="Plan name."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A plan's routes: model, upstream, weight and the share of requests each gets."""
    with facade_session(Plans) as plans:
        found = plans.get(name=plan)
    if as_json:
        print_json(found)
    else:
        console.print(routes_table(found))


@plans_app.command("route")
def plans_route(
    plan: str = typer.Argument(..., help="Plan name."),
    model: str = typer.Argument(..., help="Model name the upstream is asked for (and priced)."),
    upstream: str = typer.Option(..., "--upstream", help="Upstream name."),
    weight: int = typer.Option(
        ..., "--weight", help="Relative weight (normalised at run time; 0 parks the route)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Route MODEL of PLAN to an upstream with a weight (adds the route or changes its weight)."""
    with facade_session(Plans) as plans:
        route = plans.set_route(plan=plan, model=model, upstream=upstream, weight=weight)
        if not as_json:
            shown = plans.get(name=plan)
    if as_json:
        print_json(route)
    else:
        console.print(routes_table(shown))
