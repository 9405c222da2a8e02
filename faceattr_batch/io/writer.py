"""Resumable sharded Parquet output: shards as they finish, one atomic file at the end.

A run over N sorted inputs is cut into fixed shards (``shard_size`` consecutive inputs). Each shard streams its
row groups into ``<out>.parts/part-NNNNN.parquet.tmp``; when the shard is complete the file is renamed with
``os.replace`` and a ``part-NNNNN.done.json`` marker is written last, so a marker always means a whole part.
A rerun with ``resume=True`` checks ``manifest.json`` (inputs and value-affecting options) and skips marked
shards; ``finalize`` copies the parts, in order, one at a time, into a temporary file (``atomic.replacing``),
which fsyncs it and renames it onto the output name. Whatever kills the process (even ``kill -9``), the output name
holds either nothing, the previous file, or the complete new one, and memory never holds more than one shard.

Test hook: ``FACEATTR_BATCH_TEST_KILL=shard:K`` SIGKILLs the process after shard K's marker, ``part:K`` after the
first row group of shard K, ``finalize`` after the first part is copied into the final tmp file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from faceattr_batch.errors import FaceattrError, first_line
from faceattr_batch.io.atomic import fsync, replacing, write_json

log = logging.getLogger(__name__)

PARTS_FORMAT = "faceattr-parts-v1"
MANIFEST_NAME = "manifest.json"
MANIFEST_KEY = "faceattr_batch.manifest"  # the manifest, copied into the final file's key-value metadata
KILL_HOOK = "FACEATTR_BATCH_TEST_KILL"


@dataclass(frozen=True)
class Shard:
    index: int
    start: int  # first input position (inclusive)
    stop: int  # last input position (exclusive)

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Workspace:
    output: Path
    parts: Path
    manifest: dict
    shards: tuple[Shard, ...]

    def part_path(self, shard: Shard) -> Path:
        return self.parts / f"part-{shard.index:05d}.parquet"

    def marker_path(self, shard: Shard) -> Path:
        return self.parts / f"part-{shard.index:05d}.done.json"


def inputs_digest(keys: Sequence[str]) -> str:
    """sha256 of the sorted input keys: a resumed run must cover exactly the same list."""
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode("utf-8", errors="surrogateescape") + b"\0")
    return digest.hexdigest()


def build_manifest(options: dict, keys: Sequence[str], shard_size: int) -> dict:
    """What a resumed run must match: the inputs, the shard cut and the value-affecting ``options``."""
    manifest = {
        "format": PARTS_FORMAT,
        "n_inputs": len(keys),
        "inputs_sha256": inputs_digest(keys),
        "shard_size": shard_size,
        **options,
    }
    return json.loads(json.dumps(manifest, default=str))  # as it reads back from JSON


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def open_workspace(
    output: Path,
    options: dict,
    keys: Sequence[str],
    shard_size: int,
    resume: bool,
    restart: str = "rerun without --resume to start over",
) -> Workspace:
    """Prepare ``<output>.parts``: fresh (a previous partial run is discarded) or, with ``resume``, checked.

    ``options`` holds everything that changes the values written (model, labels, device...); a resume with
    different inputs or options is refused with the differing keys named, and ``restart``: how to start over.
    """
    if shard_size < 1:
        raise FaceattrError(f"shard size {shard_size} must be >= 1")
    output = Path(output)
    manifest = build_manifest(options, keys, shard_size)
    parts = parts_dir(output)
    if resume and (parts / MANIFEST_NAME).is_file():
        try:
            saved = json.loads((parts / MANIFEST_NAME).read_text())
        except (OSError, ValueError) as err:  # damaged outside this tool (an atomic write leaves none half-written)
            raise FaceattrError(
                f"--resume: {parts / MANIFEST_NAME} is unreadable ({first_line(err)}); rerun without --resume"
            ) from None
        differ = sorted(k for k in set(saved) | set(manifest) if saved.get(k) != manifest.get(k))
        if differ:
            named = [
                f"{k} (--shard-size, rounded up to --batch-size's multiple)" if k == "shard_size" else k for k in differ
            ]
            raise FaceattrError(
                f"--resume: {parts} was started with different inputs or options ({', '.join(named)}); {restart}"
            )
    else:
        if resume:
            log.warning("--resume: nothing to resume at %s; starting afresh", parts)
        if parts.exists():
            log.info("discarding the unfinished parts in %s", parts)
            shutil.rmtree(parts)
        try:
            parts.mkdir(parents=True)
        except OSError as err:
            raise FaceattrError(f"cannot create {parts}: {err.strerror or err}") from None
        write_json(parts / MANIFEST_NAME, manifest)
    shards = tuple(
        Shard(i, start, min(start + shard_size, len(keys))) for i, start in enumerate(range(0, len(keys), shard_size))
    )
    return Workspace(output, parts, manifest, shards)


def pending_shards(space: Workspace) -> list[Shard]:
    """Shards without a marker, or whose part is gone (a run killed while ``finalize`` removed the parts, after the
    output was written) or damaged since; stale ``.tmp`` files of a killed run are removed."""
    for stale in space.parts.glob("*.tmp"):
        stale.unlink()
    pending = []
    for shard in space.shards:
        if not (space.marker_path(shard).is_file() and space.part_path(shard).is_file()):
            space.marker_path(shard).unlink(missing_ok=True)
            pending.append(shard)
        elif not _part_is_whole(space, shard):  # else finalize failed on it, after every other shard was done
            log.warning("%s: damaged since it was written; its shard is done again", space.part_path(shard))
            space.marker_path(shard).unlink()
            pending.append(shard)
    return pending


def _part_is_whole(space: Workspace, shard: Shard) -> bool:
    """The part's footer reads and holds the rows its marker counted."""
    try:
        rows = json.loads(space.marker_path(shard).read_text())["rows"]
        return pq.read_metadata(space.part_path(shard)).num_rows == rows
    except Exception:  # an unreadable marker or part, whatever pyarrow or json raise
        return False


def is_complete(output: Path, options: dict, keys: Sequence[str], shard_size: int) -> bool:
    """True when ``output`` exists and was finished from these inputs and options (resume has nothing to do)."""
    output = Path(output)
    if not output.is_file() or parts_dir(output).exists():
        return False
    try:
        saved = (pq.read_metadata(output).metadata or {}).get(MANIFEST_KEY.encode())
    except Exception:  # not a Parquet file: it will simply be replaced
        return False
    return saved is not None and json.loads(saved) == build_manifest(options, keys, shard_size)


class ShardSink:
    """Row groups of one shard -> ``part-NNNNN.parquet.tmp``; ``commit`` renames it and writes the marker."""

    def __init__(self, space: Workspace, shard: Shard, schema):
        self.space, self.shard, self.schema = space, shard, schema
        self.tmp = space.part_path(shard).with_name(space.part_path(shard).name + ".tmp")
        self.writer = pq.ParquetWriter(self.tmp, schema)
        self.rows = 0
        self.inputs = 0

    def write(self, table, inputs: int | None = None) -> None:
        """``inputs``: how many inputs these rows cover (default: one per row; a photo's faces are one input)."""
        self.writer.write_table(table.cast(self.schema))
        self.rows += table.num_rows
        self.inputs += table.num_rows if inputs is None else inputs
        if self.inputs < self.shard.rows:
            _kill_hook(f"part:{self.shard.index}")

    def commit(self) -> Path:
        self.writer.close()
        if self.inputs != self.shard.rows:
            raise FaceattrError(f"shard {self.shard.index}: wrote {self.inputs} inputs, expected {self.shard.rows}")
        fsync(self.tmp)
        part = self.space.part_path(self.shard)
        os.replace(self.tmp, part)
        write_json(self.space.marker_path(self.shard), {"shard": self.shard.index, "rows": self.rows})
        _kill_hook(f"shard:{self.shard.index}")
        return part

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def open_shard(space: Workspace, shard: Shard, schema) -> ShardSink:
    return ShardSink(space, shard, schema)


def write_shards(space: Workspace, pending: Sequence[Shard], schema, tables: Iterable, key: str = "path") -> None:
    """Stream ``tables`` (the rows of the ``pending`` shards, in input order, cut anywhere between inputs) into
    their parts, committing each shard as it fills. Consecutive rows with the same ``key`` are one input (a photo's
    faces) and stay in one shard; a ``key`` column the schema lacks (an input's position) is not written. A shard
    left unfinished by an error is removed; a resume redoes it."""
    shards = iter(pending)
    shard = next(shards)
    sink, left = open_shard(space, shard, schema), shard.rows
    try:
        for table in tables:
            starts = _input_starts(table.column(key).to_pylist())
            if key not in schema.names:
                table = table.drop_columns([key])
            done = 0
            while done < len(starts) - 1:
                take = min(left, len(starts) - 1 - done)
                first, stop = starts[done], starts[done + take]
                sink.write(table.slice(first, stop - first), inputs=take)
                done, left = done + take, left - take
                if left == 0:
                    sink.commit()
                    shard = next(shards, None)
                    if shard is not None:
                        sink, left = open_shard(space, shard, schema), shard.rows
    except BaseException:
        if left:
            sink.abort()
        raise


def _input_starts(keys: list) -> list[int]:
    """The row where each input begins, then the row count."""
    return [i for i, value in enumerate(keys) if i == 0 or value != keys[i - 1]] + [len(keys)]


def finalize(space: Workspace, schema, metadata: dict[str, str] | None = None) -> Path:
    """Merge the parts in shard order into the output file atomically, then remove the parts folder."""
    missing = [s.index for s in space.shards if not space.marker_path(s).is_file()]
    if missing:
        raise FaceattrError(f"cannot finalize {space.output}: shards {missing[:5]} are not finished")
    kv = {**(metadata or {}), MANIFEST_KEY: json.dumps(space.manifest)}
    schema = schema.with_metadata({**(schema.metadata or {}), **{k.encode(): v.encode() for k, v in kv.items()}})
    output = space.output
    for stale in output.parent.glob(f".{output.stem}.*.tmp{output.suffix}"):
        stale.unlink()  # a finalize that was killed (``replacing``'s name)
    try:
        with replacing(output) as tmp, pq.ParquetWriter(tmp, schema) as out:
            for shard in space.shards:
                out.write_table(pq.read_table(space.part_path(shard)).cast(schema))  # one shard = one row group
                if shard.index == 0:
                    _kill_hook("finalize")
    except OSError as err:
        raise FaceattrError(f"cannot write {output}: {err.strerror or err}") from None
    shutil.rmtree(space.parts)
    return space.output


def _kill_hook(point: str) -> None:
    if os.environ.get(KILL_HOOK) == point:
        os.kill(os.getpid(), signal.SIGKILL)
