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
RUN_KIND = "run_kind"  # options.json's key for the command's kind of run (training, generator, cross-fitting)


def append_metrics(path: Path, row: dict, key: str = "epoch") -> None:
    """Add a row to a small metrics table, replacing rows a resumed run redoes (``key`` >= this row's)."""
    frame = pl.DataFrame([row])
    if path.is_file():
        frame = pl.concat([pl.read_parquet(path).filter(pl.col(key) < row[key]), frame], how="diagonal_relaxed")
    write_parquet_atomically(frame, path)


def start_run(options, checkpoint: str, kind: str, resume: bool, overrides: dict | None = None):
    """The options a run goes on with: ``options`` for a new run, the saved ones for ``--resume``, with
    ``overrides`` applied (e.g. a new iteration count to extend or end a run) and the given ``MACHINE_FIELDS``
    (where it runs, not what it computes). Another value given for a saved option is ignored, with a warning; an
    option the run's file predates takes this command's value (today's default unless given), with a warning.

    Refuses to start over an existing run, and to resume another kind's run (``kind``, kept in the file); writes
    ``options.json`` into ``options.out_dir`` either way, paths made absolute (a resume from another folder).
    """
    out = Path(options.out_dir)
    if out.exists() and not out.is_dir():
        raise FaceattrError(f"-o {out}: a file; name a folder for the run")
    if resume:
        if not (out / checkpoint).is_file():
            raise FaceattrError(f"{out}: nothing to resume (no {checkpoint}); run the command without --resume")
        try:
            stored = json.loads((out / "options.json").read_text())
            if not isinstance(stored, dict):
                raise ValueError(f"a JSON {type(stored).__name__}, not an object")
            saved = _from_json(options, stored)
        except (OSError, ValueError) as err:
            raise FaceattrError(f"{out / 'options.json'}: cannot read the run's options ({first_line(err)})") from None
        _check_kind(out, stored, options, kind)
        kept = {**{name: getattr(options, name) for name in MACHINE_FIELDS if name in saved}, **(overrides or {})}
        _warn_ignored(options, saved, kept)
        options = dataclasses.replace(options, **{**saved, "out_dir": out, **kept})
    elif (out / checkpoint).is_file():
        raise FaceattrError(f"{out} already holds a {kind} run: add --resume to continue it, or pick another -o")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "options.json", {RUN_KIND: kind, **{key: _to_json(value) for key, value in vars(options).items()}})
    return options


def _check_kind(out: Path, stored: dict, options, kind: str) -> None:
    """A resume reads the run's own kind of options: another kind's run (an attribute run for train-gen) is refused
    before its options.json is written over. Files from before the kind was kept: by their option names."""
    stored_kind = stored.get(RUN_KIND)
    foreign = sorted(set(stored) - {RUN_KIND} - {field.name for field in dataclasses.fields(options)})
    if (stored_kind or kind) != kind or (stored_kind is None and foreign):
        what = f"a {stored_kind} run" if stored_kind else f"another kind of run (options {', '.join(foreign[:4])})"
        raise FaceattrError(f"{out} holds {what}, not a {kind} run: resume it with its own command")


def _warn_ignored(options, saved: dict, kept: dict) -> None:
    """Say which options given (other than their defaults; the source always) differ from the run's own and so are
    not used, and which ones the run's file predates (they take this command's values)."""
    ignored, missing = [], []
    for field in dataclasses.fields(options):
        given = getattr(options, field.name)
        if field.name in kept or field.name == "out_dir":
            continue
        if field.name not in saved:
            missing.append(f"{field.name} {_shown(given)}")
        elif _same(given, saved[field.name]):
            continue
        elif field.default is dataclasses.MISSING or given != field.default:
            ignored.append(f"{field.name} {_shown(given)} (the run's: {_shown(saved[field.name])})")
    if ignored:
        log.warning("--resume goes on with the run's own options; ignored: %s", "; ".join(ignored))
    if missing:
        predates = "the run's options.json predates some options; they take this command's values: %s"
        log.warning(predates, "; ".join(missing))


def _shown(value) -> str:
    """An option's value as the user typed it: a path as text (not PosixPath('faces')), else its repr."""
    return str(value) if isinstance(value, Path) else repr(value)


def _same(given, saved) -> bool:
    """The same value, a path whatever folder it was given from."""
    if isinstance(given, Path) and isinstance(saved, Path):
        return given.resolve() == saved.resolve()
    return given == saved


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
    """An option's value as JSON: paths as absolute strings, in tuples too."""
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    return str(value.resolve()) if isinstance(value, Path) else value
