"""A RUN_DIR (train, train-gen): the rule for starting or resuming one, and its small metrics table."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import polars as pl

from faceattr_batch.errors import FaceattrError, first_line
from faceattr_batch.io.atomic import write_json, write_parquet_atomically

log = logging.getLogger(__name__)
# where a run runs, not what it computes: a resume takes these as given (a run moved to another machine)
MACHINE_FIELDS = ("device", "threads", "workers", "progress")


def append_metrics(path: Path, row: dict, key: str = "epoch") -> None:
    """Add a row to a small metrics table, replacing rows a resumed run redoes (``key`` >= this row's)."""
    frame = pl.DataFrame([row])
    if path.is_file():
        frame = pl.concat([pl.read_parquet(path).filter(pl.col(key) < row[key]), frame], how="diagonal_relaxed")
    write_parquet_atomically(frame, path)


def start_run(options, checkpoint: str, kind: str, resume: bool, overrides: dict | None = None):
    """The options a run goes on with: ``options`` for a new run, the saved ones for ``--resume``, with
    ``overrides`` applied (e.g. a new iteration count to extend or end a run) and the given ``MACHINE_FIELDS``
    (where it runs, not what it computes). Another value given for a saved option is ignored, with a warning.

    Refuses to start over an existing run; writes ``options.json`` into ``options.out_dir`` either way.
    """
    out = Path(options.out_dir)
    if resume:
        if not (out / checkpoint).is_file():
            raise FaceattrError(f"{out}: nothing to resume (no {checkpoint})")
        try:
            saved = _from_json(options, json.loads((out / "options.json").read_text()))
        except (OSError, ValueError) as err:
            raise FaceattrError(f"{out / 'options.json'}: cannot read the run's options ({first_line(err)})") from None
        kept = {**{name: getattr(options, name) for name in MACHINE_FIELDS if name in saved}, **(overrides or {})}
        _warn_ignored(options, saved, kept)
        options = dataclasses.replace(options, **{**saved, "out_dir": out, **kept})
    elif (out / checkpoint).is_file():
        raise FaceattrError(f"{out} already holds a {kind} run: add --resume to continue it, or pick another -o")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "options.json", {key: _to_json(value) for key, value in vars(options).items()})
    return options


def _warn_ignored(options, saved: dict, kept: dict) -> None:
    """Say which options given (other than their defaults) differ from the run's own and so are not used."""
    ignored = [
        f"{field.name} {getattr(options, field.name)!r} (the run's: {saved[field.name]!r})"
        for field in dataclasses.fields(options)
        if field.name in saved
        and field.name not in kept
        and field.default is not dataclasses.MISSING
        and getattr(options, field.name) not in (field.default, saved[field.name])
    ]
    if ignored:
        log.warning("--resume goes on with the run's own options; ignored: %s", "; ".join(ignored))


def _from_json(options, saved: dict) -> dict:
    """JSON values back to the options' field types (paths, tuples), for the fields the dataclass has."""
    restored = {}
    for field in dataclasses.fields(options):
        if field.name not in saved:
            continue
        value = saved[field.name]
        is_path = "Path" in str(field.type)
        if isinstance(value, list):
            value = tuple(Path(item) for item in value) if is_path else tuple(value)
        elif value is not None and is_path:
            value = Path(value)
        restored[field.name] = value
    return restored


def _to_json(value):
    """An option's value as JSON: paths as strings, in tuples too."""
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    return str(value) if isinstance(value, Path) else value
