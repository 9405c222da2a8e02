"""An output folder whose files a manifest lists (synth, crop): checked before any work, and with ``--overwrite`` an
earlier run's listed files replaced, never any other file.

A run writes ``PENDING`` (the names it is about to write) before its first file and its manifest after the last;
so a run killed half way leaves a list, and the next ``--overwrite`` removes its files too.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import polars as pl

from faceattr_batch.errors import FaceattrError, first_line
from faceattr_batch.io.atomic import check_writable, write_parquet_atomically

PENDING = ".pending.parquet"


def check_output_folder(out: Path, overwrite: bool, what: str) -> None:
    """``out`` created and writable, and empty unless ``overwrite`` (``what``: what --overwrite replaces)."""
    if out.exists() and not out.is_dir():
        raise FaceattrError(f"-o {out}: exists and is not a folder")
    check_writable(out, "-o", folder=True)  # creates it
    if any(out.iterdir()) and not overwrite:
        raise FaceattrError(f"{out} is not empty: add --overwrite to replace {what}")


def remove_earlier(
    out: Path, manifest: str, column: str, manifest_columns: Collection[str], also: Collection[Path] = ()
) -> None:
    """Remove the files an earlier run listed in ``out / manifest`` (its ``column``), in ``also`` (more Parquet files
    of the manifest's columns: an unfinished run's finished shards) or in its pending list, then those lists. Every
    list is read first: a manifest without all of the command's ``manifest_columns`` (a Parquet of the user's own of
    that name), or a list naming a file outside ``out``, is refused, nothing removed."""
    lists = [path for path in (out / manifest, *also, out / PENDING) if path.is_file()]
    files = []
    for path in lists:
        try:
            expected = [column] if path == out / PENDING else manifest_columns
            missing = [name for name in expected if name not in pl.read_parquet_schema(path)]
            if missing:
                raise ValueError(f"no column {missing[0]!r}")
            names = pl.read_parquet(path, columns=[column])[column].drop_nulls().to_list()
        except Exception as err:
            raise FaceattrError(
                f"{path}: not a manifest this command wrote ({first_line(err)}); move it away or pick another -o"
            ) from None
        strays = [name for name in names if name in ("", ".", "..") or Path(name).name != name]
        if strays:
            raise FaceattrError(f"{path}: lists {strays[0]!r}, not a file of {out}; nothing removed")
        files += [out / name for name in names]
    for path in files + lists:
        path.unlink(missing_ok=True)


def write_pending(out: Path, names: list[str], column: str) -> None:
    """The names a run is about to write, for ``--overwrite`` to find if it is killed before its manifest."""
    write_parquet_atomically(pl.DataFrame({column: names}, schema={column: pl.String}), out / PENDING)


def finish_pending(out: Path) -> None:
    """The manifest is written: the pending list has served."""
    (out / PENDING).unlink(missing_ok=True)
