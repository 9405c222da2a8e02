"""What every command shares apart from its flags: help that reads like any CLI's, one-line errors, and the
options dataclass built from a command's parameters."""

from __future__ import annotations

import dataclasses
import functools
import logging

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

from faceattr_batch import progress
from faceattr_batch.errors import FaceattrError, first_line

# --- help that reads like any CLI's ------------------------------------------------------------------------------

# typer 0.29 names a value by its Python type (<int range>, <str>, <list[str]>) and a required argument {folder}
PLAIN_TYPES = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "path": "PATH"}


class PlainHelpCommand(TyperCommand):
    """A command whose help shows arguments by name (FOLDER, INPUTS...), values by kind (PATH, INTEGER, TEXT) and
    flags bare. typer's plain formatter already leaves flags bare; this names the rest."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is not None:
                continue
            if isinstance(param, TyperArgument):
                param.metavar = param.name.upper()  # also in errors: "Missing argument 'FOLDER'"
            elif isinstance(param, TyperOption) and not param.is_flag:
                kind = param.display_type(None).strip("<>").removesuffix(" range")
                param.metavar = PLAIN_TYPES.get(kind, kind.upper())

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        arguments = [p for p in self.get_params(ctx) if isinstance(p, TyperArgument)]
        return [
            self.options_metavar,
            *(_argument_name(p) if p.required else f"[{_argument_name(p)}]" for p in arguments),
        ]

    def format_options(self, ctx: typer.Context, formatter) -> None:
        params = self.get_params(ctx)
        arguments = [(_argument_name(p), p.help or "") for p in params if isinstance(p, TyperArgument)]
        options = [record for p in params if isinstance(p, TyperOption) and (record := p.get_help_record(ctx))]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _argument_name(argument: TyperArgument) -> str:
    return argument.metavar + ("..." if argument.nargs != 1 else "")


# --- errors ------------------------------------------------------------------------------------------------


def os_error_line(err: OSError) -> str:
    """'FILE: reason' for an OSError (no such file, permission denied, no space left on device, read-only ...)."""
    if err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename is not None else err.strerror
    return first_line(err)


def command_registrar(app: typer.Typer):
    """The decorator that registers a function as one of ``app``'s commands, with the plain help and one-line
    errors: ``command = command_registrar(app)``, then ``@command("index")``."""

    def command(name: str):
        def register(func):
            return app.command(name, cls=PlainHelpCommand)(one_line_errors(func))

        return register

    return command


def one_line_errors(func):
    """Run a command body; a user error becomes one line on stderr and exit code 2, Ctrl-C exit code 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FaceattrError as err:
            message = str(err)
        except OSError as err:
            message = os_error_line(err)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)

    return wrapper


def options_of(cls, params: dict, **given):
    """The pipeline's options dataclass from a command's parameters (``locals()``): those named like its fields,
    then ``given`` (renamed or converted ones) over them."""
    fields = {field.name for field in dataclasses.fields(cls)}
    return cls(**{**{name: value for name, value in params.items() if name in fields}, **given})


def int_tuple(text: str, option: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers (``--widths 32,64,128``)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise FaceattrError(f"{option} {text!r}: use comma-separated integers, e.g. 32,64,128,256") from None
    if min(values) < 1:
        raise FaceattrError(f"{option} {text!r}: values must be positive")
    return values


def log_progress() -> None:
    """train and train-gen report epochs and evaluations through logging, on stderr; --quiet keeps warnings only."""
    logging.basicConfig(level=logging.WARNING if progress.is_quiet() else logging.INFO, format="%(message)s")
