"""`faceattr-batch crop`: photos -> every face aligned as a 200 x 200 chip (UTKFace framing) + ``manifest.parquet``.

For building datasets from raw photos: ``faces.load_faces`` (decode, detect, align) runs in worker processes; the
chips are written as JPEGs named ``{photo stem}_{16 hex of the photo's path}_{face index}.jpg``; the manifest is
written last, atomically, one row per face (source, face_index, box, det_score, landmarks, chip) plus a row with
``error`` for each photo without a face or that could not be read. The manifest's rows go through ``io.writer``'s
shards (``manifest.parquet.parts`` in the output folder), so a killed run goes on with ``resume`` where it stopped:
chips are named by their photo's path and face, so the one unfinished shard's are written again over themselves.
An output folder that is not empty is refused unless ``overwrite``, which removes the chips an earlier crop run
listed in its manifest or its finished shards and nothing else. Images inside the output folder are never inputs
(an earlier run's chips, when ``-o`` lies in an input folder).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from faceattr_batch.data.batches import iter_batches
from faceattr_batch.data.inputs import display_path, list_images
from faceattr_batch.errors import FaceattrError
from faceattr_batch.faces.align import CHIP_SIZE
from faceattr_batch.faces.detect import MtcnnDetector, require_detection
from faceattr_batch.faces.load import FaceOptions, face_rows, load_faces
from faceattr_batch.io import writer
from faceattr_batch.io.manifest_folder import check_output_folder, remove_earlier
from faceattr_batch.models.device import available_cores
from faceattr_batch.progress import progress_bar
from faceattr_batch.schema import FACE_FIELDS, error_counts

log = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
PHOTO = "__photo__"  # the shards' input key (a photo's position), not written
# the predictions' face fields (schema.py) less ``framing`` (every chip here is aligned), between source and chip
MANIFEST_SCHEMA = {
    "source": pl.String,
    "error": pl.String,
    **{name: dtype for name, dtype in FACE_FIELDS.items() if name != "framing"},
    "chip": pl.String,
}


@dataclass(frozen=True)
class CropOptions:
    inputs: tuple[str, ...]
    out_dir: Path
    min_face: int = 20
    min_score: float = 0.9
    max_faces: int = 50
    quality: int = 95  # JPEG quality of the chips
    batch_size: int = 32  # photos per worker task
    workers: int | None = None  # detection processes; None = one per core, 0 = in this process
    overwrite: bool = False
    resume: bool = False  # go on with a killed run of the same photos and options in ``out_dir``
    shard_size: int = 1024  # photos per resumable shard
    progress: bool = True


def run(options: CropOptions) -> dict:
    """Write the chips and the manifest; returns a summary (photos, faces, errors by reason, shards resumed, paths,
    seconds)."""
    started = time.perf_counter()
    faces = FaceOptions("detect", options.min_face, options.min_score, options.max_faces)
    faces.validate()
    for name in ("batch_size", "shard_size"):
        if getattr(options, name) < 1:
            raise FaceattrError(f"--{name.replace('_', '-')} {getattr(options, name)}: must be >= 1")
    if options.resume and options.overwrite:
        raise FaceattrError("--resume goes on with a run, --overwrite replaces it: give one of them")
    require_detection()
    out = Path(options.out_dir)
    paths = _outside(list_images(options.inputs), out)
    manifest = out / MANIFEST
    keys = [display_path(path) for path in paths]
    shard_size = options.shard_size  # not rounded to batches: a finished folder stays finished whatever -b
    fingerprint = {
        "detector": MtcnnDetector.name,
        **{name: getattr(options, name) for name in ("min_face", "min_score", "max_faces", "quality")},
    }
    unfinished = writer.parts_dir(manifest).is_dir()
    resuming = options.resume and unfinished
    if options.resume and not resuming:
        if writer.is_complete(manifest, fingerprint, keys, shard_size):
            return _summary(options, manifest, len(paths), -(-len(paths) // shard_size), started)
        if manifest.is_file():
            raise FaceattrError(
                f"--resume: {manifest} is a finished run of other photos or options (or of an earlier version of "
                "crop); --overwrite replaces it"
            )
        log.warning("--resume: nothing to resume in %s; starting afresh", out)
    if not resuming:
        if unfinished and not options.overwrite:
            raise FaceattrError(
                f"{out} holds an unfinished crop run: add --resume to finish it or --overwrite to replace it"
            )
        check_output_folder(out, options.overwrite, "the chips of an earlier crop run")
        if options.overwrite:
            # no longer resumable before its chips go: a --resume after a stopped --overwrite would skip shards whose
            # chips are gone; the parts still list them for the next --overwrite
            (writer.parts_dir(manifest) / writer.MANIFEST_NAME).unlink(missing_ok=True)
            remove_earlier(out, MANIFEST, "chip", MANIFEST_SCHEMA, also=_parts(out))
    restart = "add --overwrite instead of --resume to start over"
    space = writer.open_workspace(manifest, fingerprint, keys, shard_size, resuming, restart)
    pending = writer.pending_shards(space)
    todo = [paths[i] for shard in pending for i in range(shard.start, shard.stop)]
    schema = pl.DataFrame(schema=MANIFEST_SCHEMA).to_arrow().schema
    if todo:
        tables = _manifest_tables(todo, faces, out, options)
        writer.write_shards(space, pending, schema, tables, key=PHOTO)
    writer.finalize(space, schema)
    return _summary(options, manifest, len(paths), len(space.shards) - len(pending), started)


def _manifest_tables(paths: list[str], faces: FaceOptions, out: Path, options: CropOptions):
    """Detect and align the faces of ``paths``, write their chips; yields each batch's manifest rows (Arrow)."""
    workers = available_cores() if options.workers is None else options.workers
    load = functools.partial(load_faces, options=faces, size=CHIP_SIZE)
    with progress_bar(total=len(paths), unit="img", enabled=options.progress, desc="crop") as bar:
        for batch in iter_batches(paths, load, options.batch_size, workers):
            rows = face_rows(batch, CHIP_SIZE)
            sources = [display_path(batch.paths[i]) for i in rows.image]
            chips: list[str | None] = [None] * len(rows.image)
            for pixels, row in zip(rows.pixels, rows.ok, strict=True):
                chips[row] = _chip_name(batch.paths[rows.image[row]], rows.columns["face_index"][row])
                _write_jpeg(pixels, out / chips[row], options.quality)
            errors = [rows.errors.get(i) for i in range(len(rows.image))]
            columns = {k: v for k, v in rows.columns.items() if k in MANIFEST_SCHEMA}
            frame = pl.DataFrame({"source": sources, "error": errors, **columns, "chip": chips}, schema=MANIFEST_SCHEMA)
            # each row's photo by position: two photos' display paths can be one text (a \xff byte; a literal \xff)
            yield frame.with_columns(pl.Series(PHOTO, batch.start + rows.image, pl.Int64)).to_arrow()
            bar.update(len(batch.paths))


def _parts(out: Path) -> list[Path]:
    """The finished shards of an unfinished run in ``out`` (their rows list chips written)."""
    return sorted(writer.parts_dir(out / MANIFEST).glob("part-*.parquet"))


def _summary(options: CropOptions, manifest: Path, photos: int, shards_skipped: int, started: float) -> dict:
    rows = pl.read_parquet(manifest)
    return {
        "photos": photos,
        "faces": rows["chip"].is_not_null().sum(),
        "errors": error_counts(rows),
        "shards_skipped": shards_skipped,
        "out_dir": str(options.out_dir),
        "manifest": str(manifest),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _outside(paths: list[str], out: Path) -> list[str]:
    """``paths`` less those inside ``out``: with ``--overwrite`` they are the files about to be removed. Path by
    path, whatever named them (a folder, a glob, an index Parquet); as text, without a system call per path."""
    inside = tuple({os.path.abspath(out) + os.sep, os.path.realpath(out) + os.sep})
    kept = [path for path in paths if not os.path.abspath(path).startswith(inside)]
    if not kept:
        raise FaceattrError(f"-o {out}: every input image lies in the output folder; crop photos from outside it")
    return kept


def _chip_name(source: str, face: int) -> str:
    # 64 bits of the path: photos of the same name in other folders differ, with no collision in any real tree
    digest = hashlib.sha1(os.fsencode(source)).hexdigest()[:16]
    # the stem cut to 200 bytes keeps the name under most file systems' 255; no leading dot (a hidden file that
    # list_images, and so index and predict, would skip)
    stem = display_path(Path(source).stem).encode()[:200].decode("utf-8", errors="ignore").lstrip(".")
    return f"{stem}_{digest}_{face}.jpg"


def _write_jpeg(pixels: np.ndarray, path: Path, quality: int) -> None:
    Image.fromarray(pixels).save(path, format="JPEG", quality=quality)
