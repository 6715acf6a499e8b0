"""`tokenmeter upstreams …`: the OpenAI-compatible endpoints plans route to (app/upstreams.py)."""

from __future__ import annotations

import typer
from rich import box
from rich.table import Table

from app.cli.common import JSON_HELP, facade_session
from app.cli.output import console, print_json
from app.models import Upstream
from app.upstreams import Upstreams

upstreams_app = typer.Typer(
    no_args_is_help=True, help="Upstream LLM endpoints: set (create or update) and list."
)


def upstreams_table(upstreams: list[Upstream]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("base url", overflow="fold")
    table.add_column("api key env", overflow="fold")
    table.add_column("format", no_wrap=True)
    table.add_column("active", no_wrap=True)
    for u in upstreams:
        table.add_row(
            u.name,
            u.base_url or "[yellow]not set: never routed to[/]",
            u.api_key_env or "—",
            u.wire_format,
            "yes" if u.is_active else "[red]no[/]",
        )
    return table


@upstreams_app.command("set")
def upstreams_set(
    name: str = typer.Argument(..., help="Upstream name (lowercase, e.g. openai)."),
    base_url: str = typer.Option(
        ..., "--base-url", help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1."
    ),
    api_key_env: str | None = typer.Option(
        None,
        "--api-key-env",
        help="NAME of the edge-function secret holding its API key (e.g. OPENAI_API_KEY); "
        "never the key itself. Kept as is when not given.",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Create an upstream or update its base URL (and secret's name)."""
    with facade_session(Upstreams) as upstreams:
        made = upstreams.set(name=name, base_url=base_url, api_key_env=api_key_env)
    if as_json:
        print_json(made)
    else:
        console.print(upstreams_table([made]))


@upstreams_app.command("list")
def upstreams_list(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Every upstream: base URL, the secret's variable name, format, whether active."""
    with facade_session(Upstreams) as upstreams:
        found = upstreams.list()
    if as_json:
        print_json(found)
    else:
        console.print(upstreams_table(found))
