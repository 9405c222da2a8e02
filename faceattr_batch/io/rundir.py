"""A RUN_DIR (train, train-gen): the rule for starting or resuming one, and its small metrics table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl

from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import write_json, write_parquet_atomically


def append_metrics(path: Path, row: dict, key: str = "epoch") -> None:
    """Add a row to a small metrics table, replacing rows a resumed run redoes (``key`` >= this row's)."""
    frame = pl.DataFrame([row])
    if path.is_file():
        frame = pl.concat([pl.read_parquet(path).filter(pl.col(key) < row[key]), frame], how="diagonal_relaxed")
    write_parquet_atomically(frame, path)


def start_run(options, checkpoint: str, kind: str, resume: bool, overrides: dict | None = None):
    """The options a run goes on with: ``options`` for a new run, the saved ones for ``--resume`` (with
    ``overrides`` applied, e.g. a new iteration count to extend or end a run).

    Refuses to start over an existing run; writes ``options.json`` into ``options.out_dir`` either way.
    """
    out = Path(options.out_dir)
    if resume:
        if not (out / checkpoint).is_file():
            raise FaceattrError(f"{out}: nothing to resume (no {checkpoint})")
        saved = json.loads((out / "options.json").read_text())
        options = dataclasses.replace(options, **{**_from_json(options, saved), "out_dir": out, **(overrides or {})})
    elif (out / checkpoint).is_file():
        raise FaceattrError(f"{out} already holds a {kind} run: add --resume to continue it, or pick another -o")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "options.json", {key: _to_json(value) for key, value in vars(options).items()})
    return options


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
