"""The Typer shell: parse options, call one library function, print a rich summary.

Each command imports its module inside the function, so ``--help`` and ``index`` never pay for torch.
A ``FaceattrError`` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated

import typer

from faceattr_batch import __version__
from faceattr_batch.errors import FaceattrError

app = typer.Typer(
    name="faceattr-batch",
    help="Batch face-attribute tooling: index, predict, fid, synth, train over large face-image folders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Shared options, declared once.
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch.")]
Workers = Annotated[
    int,
    typer.Option("--workers", "-w", min=0, help="Decode worker processes (0 = decode in the main process)."),
]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda (auto picks cuda when present).")]
JsonOut = Annotated[
    bool, typer.Option("--json", help="Print the summary as JSON (for scripts) instead of tables.")
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (results are deterministic given it).")]


def one_line_errors(func):
    """Run a command body; a FaceattrError (or a bad value) becomes one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FaceattrError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"faceattr-batch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Batch face-attribute tooling over large face-image folders."""


def print_json(data: object) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# --- commands are added below, one block each -------------------------------------------------------------
