"""`faceattr-batch crop`: photos -> every face aligned as a 200 x 200 chip (UTKFace framing) + ``manifest.parquet``.

For building datasets from raw photos: ``faces.load_faces`` (decode, detect, align) runs in worker processes; the
chips are written as JPEGs named ``{photo stem}_{8 hex of the photo's path}_{face index}.jpg``; the manifest is
written last, atomically, one row per face (source, face_index, box, det_score, landmarks, chip) plus a row with
``error`` for each photo without a face or that could not be read. An output folder that is not empty is refused
unless ``overwrite``, which removes the chips an earlier crop run listed in its manifest and nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch.errors import FaceattrError
from faceattr_batch.faces.align import CHIP_SIZE
from faceattr_batch.faces.load import FaceOptions, face_rows, load_faces
from faceattr_batch.io.atomic import write_parquet_atomically
from faceattr_batch.progress import progress_bar

MANIFEST = "manifest.parquet"
MANIFEST_SCHEMA = {
    "source": pl.String,
    "error": pl.String,
    "face_index": pl.Int16,
    **{name: pl.Float32 for name in ("box_x", "box_y", "box_w", "box_h", "det_score")},
    "landmarks": pl.Array(pl.Float32, 10),
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
    progress: bool = True


def run(options: CropOptions) -> dict:
    """Write the chips and the manifest; returns a summary (photos, faces, errors by reason, paths, seconds)."""

    from faceattr_batch.data.batches import iter_batches
    from faceattr_batch.data.inputs import display_path, list_images
    from faceattr_batch.faces.detect import require_detection
    from faceattr_batch.pipelines.predict import error_kind

    started = time.perf_counter()
    faces = FaceOptions("detect", options.min_face, options.min_score, options.max_faces)
    faces.validate()
    if options.batch_size < 1:
        raise FaceattrError(f"--batch-size {options.batch_size}: must be >= 1")
    require_detection()
    paths = list_images(options.inputs)
    out = Path(options.out_dir)
    _prepare(out, options.overwrite)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = cores if options.workers is None else options.workers
    load = functools.partial(load_faces, options=faces, size=CHIP_SIZE)
    frames = []
    with progress_bar(total=len(paths), unit="img", enabled=options.progress, desc="crop") as bar:
        for batch in iter_batches(paths, load, options.batch_size, workers):
            rows = face_rows(batch, CHIP_SIZE)
            sources = [display_path(batch.paths[i]) for i in rows.image]
            chips: list[str | None] = [None] * len(rows.image)
            for pixels, row in zip(rows.pixels, rows.ok, strict=True):
                chips[row] = _chip_name(batch.paths[rows.image[row]], rows.columns["face_index"][row])
                _write_jpeg(pixels, out / chips[row], options.quality)
            errors = [rows.errors.get(i) for i in range(len(rows.image))]
            columns = {k: v for k, v in rows.columns.items() if k != "framing"}
            frames.append(
                pl.DataFrame({"source": sources, "error": errors, **columns, "chip": chips}, schema=MANIFEST_SCHEMA)
            )
            bar.update(len(batch.paths))
    manifest = pl.concat(frames)
    write_parquet_atomically(manifest, out / MANIFEST)
    errors = manifest.filter(pl.col("error").is_not_null()).group_by(error_kind(pl.col("error")).alias("kind")).len()
    return {
        "photos": len(paths),
        "faces": manifest["chip"].is_not_null().sum(),
        "errors": dict(errors.sort("len", "kind", descending=[True, False]).iter_rows()),
        "out_dir": str(out),
        "manifest": str(out / MANIFEST),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FaceattrError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FaceattrError(f"{out} is not empty: add --overwrite to replace the chips of an earlier crop run")
        manifest = out / MANIFEST
        if manifest.is_file():
            for name in pl.read_parquet(manifest, columns=["chip"])["chip"].drop_nulls():
                (out / name).unlink(missing_ok=True)
            manifest.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FaceattrError(f"cannot create {out}: {err.strerror or err}") from None


def _chip_name(source: str, face: int) -> str:
    from faceattr_batch.data.inputs import display_path

    digest = hashlib.sha1(os.fsencode(source)).hexdigest()[:8]  # photos of the same name in other folders differ
    return f"{display_path(Path(source).stem)}_{digest}_{face}.jpg"


def _write_jpeg(pixels: np.ndarray, path: Path, quality: int) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path, format="JPEG", quality=quality)

