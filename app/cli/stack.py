"""`tokenmeter stack …`: the local Supabase-compatible stack (no Docker)."""

from __future__ import annotations

import json

import typer

from app.cli.output import console, fail, print_json
from app.stack.manager import Stack, StackError

stack_app = typer.Typer(
    no_args_is_help=True, help="The local Supabase-compatible stack (no Docker)."
)


@stack_app.command("start")
def stack_start() -> None:
    """Start PostgreSQL and the API gateway (idempotent); apply migrations to a new database."""
    from app.migrations import MigrationError, Migrator

    stack = Stack()
    try:
        with console.status("starting stack") as status:
            created = stack.start(progress=lambda msg: status.update(msg))
            if created:
                status.update("applying migrations and seed")
                Migrator.local(stack.paths).push(include_seed=True)
    except (StackError, MigrationError) as exc:
        fail(str(exc), 2)
    _render_status(stack, as_json=False)


@stack_app.command("stop")
def stack_stop() -> None:
    """Stop the API gateway and PostgreSQL (data is kept)."""
    try:
        Stack().stop()
    except StackError as exc:
        fail(str(exc), 2)
    console.print("stack stopped")


@stack_app.command("status")
def stack_status(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show URLs, keys and which parts are running."""
    try:
        _render_status(Stack(), as_json=as_json)
    except StackError as exc:
        fail(str(exc), 2)


@stack_app.command("signing-key")
def stack_signing_key(
    algorithm: str = typer.Option("ES256", "--algorithm", help="ES256 (default) or RS256."),
    append: bool = typer.Option(False, "--append", help="Add the key to the existing file."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Overwrite the file without asking."),
) -> None:
    """Write a JWT signing key as `supabase gen signing-key` does: to `[auth] signing_keys_path`
    when set, else to stdout. The gateway reads it when it starts."""
    from app.stack import signing_keys
    from app.stack.paths import project_root

    config_toml = project_root() / "supabase" / "config.toml"
    try:
        key = signing_keys.generate(algorithm)
        path = signing_keys.configured_path(config_toml)
        if path is None:
            print_json(key)
            console.print(
                "To use it, save it as a JSON array in supabase/signing_keys.json (keep it out "
                'of git) and set [auth] signing_keys_path = "./signing_keys.json".',
                highlight=False,
            )
            return
        keys = [key]
        if append and path.exists():
            existing = json.loads(path.read_text())
            if not isinstance(existing, list):
                fail(f"{path} is not a JSON array of keys", 2)
            keys = [*existing, key]
        elif path.exists() and not yes and not typer.confirm(f"Overwrite {path}?"):
            fail("cancelled", 1)
        signing_keys.write(path, keys)
        signing_keys.load(path)
    except (signing_keys.SigningKeysError, ValueError) as exc:
        fail(str(exc), 2)
    console.print(
        f"JWT signing key written to {path} (now {len(keys)} key(s)); restart the stack "
        "(tokenmeter stack stop && tokenmeter stack start) to sign with it.",
        highlight=False,
    )


@stack_app.command("logs")
def stack_logs(lines: int = typer.Option(50, "--lines", "-n", help="Lines per log.")) -> None:
    """Print the end of each part's log."""
    stack = Stack()
    for name, tail in stack.logs(lines).items():
        console.rule(name)
        for line in tail:
            console.print(line, highlight=False, markup=False)


def _render_status(stack: Stack, as_json: bool) -> None:
    status = stack.status()
    if as_json:
        print_json(status.as_dict())
        return
    for key, value in status.as_dict().items():
        if value is None:  # the dashboard, switched off
            console.print(f"{key:<18} off ([studio] enabled = false in supabase/config.toml)")
        elif isinstance(value, bool):
            shown = "[green]running[/]" if value else "[red]stopped[/]"
            console.print(f"{key:<18} {shown}")
        else:
            # Keys are printed whole (no wrapping or ellipsis) so they can be copied.
            console.print(f"{key:<18} {value}", highlight=False, soft_wrap=True, markup=False)
