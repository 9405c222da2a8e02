"""`faceattr-batch predict`: the attribute model over any number of images -> one Parquet row per image.

``run(PredictOptions(...))``: inputs.list_images (sorted, the resume key) -> writer.open_workspace /
pending_shards -> batches.iter_batches (decode in worker processes) -> the model (torch in inference mode, or
onnxruntime) -> one Arrow table per batch -> writer shard sinks -> writer.finalize -> summary and metrics read
back from the file -> report.build when asked. A bad image is a row with ``error`` and null predictions.

Faces (``faces``): ``chips`` predicts each image as a chip; ``detect`` finds the faces of every image and predicts
each aligned face (one row per face; an image without one is a ``no face found`` row); ``auto`` takes an image
already framed like a chip as a chip and detects in the others (``faces.load_faces``, in the decode workers).

Output columns (``OUTPUT_COLUMNS``; the README documents them): path, error, pred_gender, p_female, pred_race,
p_white .. p_others, pred_age, age_low, age_high, pred_age_band, model_name, model_version, true_age,
true_gender, true_race, true_age_band, gender_correct, race_correct, age_error, face_index, framing, box_x,
box_y, box_w, box_h, det_score, landmarks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch import __version__
from faceattr_batch.data.batches import iter_batches
from faceattr_batch.data.decode import load_chip
from faceattr_batch.data.inputs import display_path, index_paths, is_index_parquet, list_images
from faceattr_batch.data.labels import GENDERS, RACES, age_band_expr, parse_frame
from faceattr_batch.errors import FaceattrError
from faceattr_batch.faces.load import FACE_COLUMNS, FRAMING_CHIP, FaceOptions, face_rows, load_faces
from faceattr_batch.io import writer
from faceattr_batch.io.atomic import finite
from faceattr_batch.metrics.attributes import RACE_PROB_COLUMNS
from faceattr_batch.progress import progress_bar

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime")
LABEL_COLUMNS = ("true_age", "true_gender", "true_race")
FLOAT_OUTPUTS = ("p_female", *RACE_PROB_COLUMNS, "pred_age", "age_low", "age_high")
OUTPUT_COLUMNS = (
    "path",
    "error",
    "pred_gender",
    "p_female",
    "pred_race",
    *RACE_PROB_COLUMNS,
    "pred_age",
    "age_low",
    "age_high",
    "pred_age_band",
    "model_name",
    "model_version",
    *LABEL_COLUMNS,
    "true_age_band",
    "gender_correct",
    "race_correct",
    "age_error",
    *FACE_COLUMNS,
)
FACE_SCHEMA = {
    "face_index": pl.Int16,
    "framing": pl.String,
    **{name: pl.Float32 for name in ("box_x", "box_y", "box_w", "box_h", "det_score")},
    "landmarks": pl.Array(pl.Float32, 10),
}


@dataclass(frozen=True)
class PredictOptions:
    inputs: tuple[str, ...]
    output: Path
    model: str | None = None  # None = the shipped weights; a RUN_DIR, a .pt or an .onnx file
    labels: Path | None = None  # an index Parquet; default: the index given as input, else UTKFace-style names
    device: str = "auto"
    batch_size: int = 256
    workers: int | None = None  # decode processes; None = chosen for the device (see split_cores)
    threads: int | None = None  # model threads on the CPU; None = chosen with workers
    runtime: str = "auto"  # auto = onnxruntime on the CPU when installed (measured faster), torch otherwise
    shard_size: int = 4096  # rounded up to a multiple of batch_size
    resume: bool = False
    report_dir: Path | None = None
    progress: bool = True
    engine: str = "local"  # local | ray (ray_engine.py: Ray Data, the same output file)
    ray_address: str | None = None  # ray: a running cluster (auto | HOST:PORT); None = a local instance
    concurrency: int | None = None  # ray: model actors; None = one per GPU, or half the CPUs
    faces: str = "chips"  # chips | detect | auto (the CLI's default: auto); see the module doc
    min_face: int = 20  # detect/auto: smallest face box side, in the photo's pixels
    min_score: float = 0.9  # detect/auto: the detector's confidence
    max_faces: int = 50  # detect/auto: faces kept per image, the best scores


@dataclass(frozen=True)
class PredictResult:
    output: Path
    images: int
    predicted: int  # rows with predictions
    errors: dict[str, int]  # error kind -> rows
    labelled: int  # rows with at least one true label
    metrics: dict | None
    model: dict
    seconds: float
    processed: int  # images this run decoded and predicted (less than ``images`` after --resume)
    shards_skipped: int
    report: Path | None = None
    settings: dict = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "output": str(self.output), "images_per_second": round(self.images_per_second, 1)}


def output_schema():
    import pyarrow as pa

    f32 = pa.float32()
    return pa.schema(
        [
            ("path", pa.string()),
            ("error", pa.string()),
            ("pred_gender", pa.string()),
            ("p_female", f32),
            ("pred_race", pa.string()),
            *[(name, f32) for name in RACE_PROB_COLUMNS],
            ("pred_age", f32),
            ("age_low", f32),
            ("age_high", f32),
            ("pred_age_band", pa.string()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("true_age", pa.int16()),
            ("true_gender", pa.string()),
            ("true_race", pa.string()),
            ("true_age_band", pa.string()),
            ("gender_correct", pa.bool_()),
            ("race_correct", pa.bool_()),
            ("age_error", f32),
            ("face_index", pa.int16()),
            ("framing", pa.string()),
            *[(name, f32) for name in ("box_x", "box_y", "box_w", "box_h", "det_score")],
            ("landmarks", pa.list_(f32, 10)),
        ]
    )


def run(options: PredictOptions) -> PredictResult:
    """Predict every image of ``options.inputs`` into ``options.output`` (see the module doc)."""
    from faceattr_batch.models.device import resolve_device

    started = time.perf_counter()
    _validate(options)
    faces = _face_options(options)
    paths = list_images(options.inputs)
    keys = [display_path(p) for p in paths]
    device = resolve_device(options.device)
    workers, threads = split_cores(device.type, options.workers, options.threads)
    runner = ModelRunner.load(options.model, device, options.runtime, threads)
    label_source, truth = _true_labels(options, paths)
    value_options = {
        "model": runner.meta["name"],
        "model_version": runner.meta["version"],
        "runtime": runner.runtime,
        "device": device.type,
        "labels": label_source,
        "faces": faces.mode,
    }
    if faces.mode != "chips":
        from faceattr_batch.faces.detect import MtcnnDetector

        value_options |= {
            "detector": MtcnnDetector.name,
            "min_face": faces.min_face,
            "min_score": faces.min_score,
            "max_faces": faces.max_faces,
        }
    # Whole batches per shard, cut at the same places in a resumed run as in an uninterrupted one: the model
    # then sees identical batches and gives bit-identical values.
    shard_size = -(-options.shard_size // options.batch_size) * options.batch_size
    processed, skipped = 0, 0
    if options.resume and writer.is_complete(options.output, value_options, keys, shard_size):
        skipped = -(-len(keys) // shard_size)
    else:
        space = writer.open_workspace(options.output, value_options, keys, shard_size, options.resume)
        pending = writer.pending_shards(space)
        skipped = len(space.shards) - len(pending)
        predict_shards = _predict_shards
        if options.engine == "ray":
            from faceattr_batch.engines.ray import predict_shards
        if faces.mode != "chips":
            predict_shards = functools.partial(_predict_shards, faces=faces)
        processed = predict_shards(space, pending, paths, keys, truth, runner, options, workers)
        metadata = {
            "faceattr_batch.version": __version__,
            "faceattr_batch.options": json.dumps(
                {**asdict(options), "workers": workers, "threads": threads}, default=str
            ),
            "faceattr_batch.model": json.dumps(runner.meta, default=str),
        }
        writer.finalize(space, output_schema(), metadata)
    seconds = time.perf_counter() - started
    summary = summarize(options.output)
    report_path = None
    if options.report_dir is not None:
        from faceattr_batch.pipelines import report

        report_path = report.build(options.output, options.report_dir)
    settings = {
        "workers": workers,
        "threads": threads,
        "device": device.type,
        "labels": label_source,
        "shard_size": shard_size,
        "engine": options.engine,
        "faces": faces.mode,
    }
    return PredictResult(
        output=Path(options.output),
        model={k: runner.meta[k] for k in ("name", "version", "source")} | {"runtime": runner.runtime},
        seconds=seconds,
        processed=processed,
        shards_skipped=skipped,
        report=report_path,
        settings=settings,
        **summary,
    )


def _validate(options: PredictOptions) -> None:
    from faceattr_batch.engines import check_options

    check_options(options.engine, options.ray_address, options.concurrency)
    if options.runtime not in RUNTIMES:
        raise FaceattrError(f"--runtime {options.runtime!r}: use {', '.join(RUNTIMES)}")
    if options.batch_size < 1:
        raise FaceattrError(f"--batch-size {options.batch_size}: must be >= 1")
    if options.shard_size < 1:
        raise FaceattrError(f"--shard-size {options.shard_size}: must be >= 1")
    if not str(options.output).lower().endswith(".parquet"):
        raise FaceattrError(f"-o {options.output}: the output must be a .parquet file")
    if options.labels is not None and not is_index_parquet(options.labels):
        raise FaceattrError(f"--labels {options.labels}: not an index Parquet written by `faceattr-batch index`")
    if options.engine == "ray" and options.faces != "chips":
        raise FaceattrError("--engine ray predicts chips only (detection runs on the local engine): add --faces chips")


def _face_options(options: PredictOptions) -> FaceOptions:
    """The face options to run with: ``auto`` without the detect extra runs as ``chips`` (said in a warning)."""
    from faceattr_batch.faces.detect import EXTRA_HINT, detection_available, require_detection

    faces = FaceOptions(options.faces, options.min_face, options.min_score, options.max_faces)
    faces.validate()
    if faces.mode == "detect":
        require_detection()
    if faces.mode == "auto" and not detection_available():
        log.warning("--faces auto: every image is taken as a chip (%s)", EXTRA_HINT)
        faces = FaceOptions("chips", faces.min_face, faces.min_score, faces.max_faces)
    return faces


def split_cores(device_type: str, workers: int | None, threads: int | None) -> tuple[int, int]:
    """Decode workers and model threads. On a GPU decoding is the ceiling: every core decodes. On the CPU the
    two share the cores; half each measured best on 2 cores (see benchmarks/bench_predict.py)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers is None:
        workers = cores if device_type == "cuda" else max(1, cores // 2)
    if threads is None:
        threads = max(1, cores - workers) if device_type == "cpu" else 1
    return workers, threads


# --- the model --------------------------------------------------------------------------------------------


@dataclass
class ModelRunner:
    """A loaded model and how to feed it: uint8 N x S x S x 3 batches in, numpy outputs out."""

    model: object
    meta: dict
    runtime: str
    device: object  # torch.device

    @property
    def input_size(self) -> int:
        return self.model.config.input_size

    @classmethod
    def load(cls, source: str | None, device, runtime: str, threads: int) -> ModelRunner:
        import torch

        from faceattr_batch.models import registry

        path = registry.resolve_attr_source(source)
        is_onnx = path.suffix.lower() == ".onnx"
        if is_onnx and runtime == "torch":
            raise FaceattrError(f"{path}: an ONNX model runs with onnxruntime, not --runtime torch")
        if is_onnx and device.type != "cpu":
            raise FaceattrError(f"{path}: ONNX models run on the CPU here; use a .pt model for --device cuda")
        if runtime == "onnxruntime" and device.type != "cpu":
            raise FaceattrError("--runtime onnxruntime runs on the CPU; use --device cpu or --runtime torch")
        version = _file_digest(path)
        if is_onnx:
            model, meta = registry.load_onnx_model(path, threads)
            chosen = "onnxruntime"
        else:
            model, meta = registry.load_attr_model(path)
            chosen = runtime
            if runtime == "auto":
                chosen = "onnxruntime" if device.type == "cpu" and registry.onnxruntime_available() else "torch"
            if chosen == "onnxruntime":
                model = _as_onnx(path, threads, version)
        meta = {**meta, "version": str(meta.get("version") or version), "source": str(path)}
        if chosen == "torch":
            if device.type == "cpu":
                torch.set_num_threads(threads)
            # channels_last: the N x S x S x 3 batches are already in that layout, and convolutions run faster
            model = model.to(device=device, memory_format=torch.channels_last)
        return cls(model, meta, chosen, device)

    def infer(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """``pixels``: N x S x S x 3 uint8 -> p_female, race_probs, age_mean, age_low, age_high as numpy."""
        import torch

        if self.runtime == "onnxruntime":
            outputs = self.model.infer(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
        else:
            batch = torch.from_numpy(pixels)
            with torch.inference_mode():
                if self.device.type == "cuda":
                    batch = batch.pin_memory().to(self.device, non_blocking=True)
                    with torch.autocast("cuda", dtype=torch.float16):
                        outputs = self.model.infer(batch.permute(0, 3, 1, 2))
                else:
                    outputs = self.model.infer(batch.permute(0, 3, 1, 2))  # a channels_last view, no copy
        return {name: value.float().cpu().numpy() for name, value in outputs._asdict().items()}


def _as_onnx(path: Path, threads: int, digest: str):
    """The checkpoint as ONNX: the export beside it when it was made from these very weights (the shipped model
    has one), else exported now (models/export.py) in a temporary folder."""
    from faceattr_batch.models.export import SOURCE_DIGEST, export_onnx
    from faceattr_batch.models.registry import OnnxAttrModel

    beside = path.with_suffix(".onnx")
    if beside.is_file():
        model = OnnxAttrModel(beside, threads)
        if model.properties.get(SOURCE_DIGEST, "")[:12] == digest:
            return model

    with tempfile.TemporaryDirectory(prefix="faceattr-onnx-") as folder:
        onnx_path = Path(folder) / "model.onnx"
        export_onnx(path, onnx_path)
        return OnnxAttrModel(onnx_path.read_bytes(), threads)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


# --- labels -----------------------------------------------------------------------------------------------


def _true_labels(options: PredictOptions, paths: list[str]) -> tuple[str, pl.DataFrame]:
    """(where the labels come from, a frame of true_age/true_gender/true_race aligned with ``paths``)."""
    index = options.labels
    if index is None and len(options.inputs) == 1 and is_index_parquet(options.inputs[0]):
        index = Path(options.inputs[0])
    if index is not None:
        return f"index:{Path(index).resolve()}", labels_from_index(Path(index), paths)
    return "names", labels_from_names(paths)


def labels_from_names(paths: list[str]) -> pl.DataFrame:
    """True labels parsed from UTKFace-style file names (nulls where a name does not say)."""
    names = pl.DataFrame({"name": [os.path.basename(display_path(p)) for p in paths]}, schema={"name": pl.String})
    return _readable(parse_frame(names, "name"))


def labels_from_index(index: Path, paths: list[str]) -> pl.DataFrame:
    """True labels from an index Parquet, matched on the real path (symlinked folders match their target)."""
    table = pl.read_parquet(index, columns=["path", "age", "gender", "race"])
    keys = pl.Series("key", [os.path.realpath(p) for p in index_paths(index)], dtype=pl.String)
    table = table.drop("path").with_columns(keys).unique("key", keep="first")
    wanted = pl.DataFrame({"key": _real_paths(paths)}, schema={"key": pl.String})
    return _readable(wanted.join(table, on="key", how="left", maintain_order="left"))


def _real_paths(paths: list[str]) -> list[str]:
    """realpath of each file's folder (cached: few folders, many files) joined with the file name."""
    real_dir = functools.lru_cache(maxsize=4096)(os.path.realpath)
    return [os.path.join(real_dir(os.path.dirname(p)), os.path.basename(p)) for p in paths]


def _readable(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        pl.col("age").cast(pl.Int16).alias("true_age"),
        pl.col("gender")
        .replace_strict(dict(enumerate(GENDERS)), default=None, return_dtype=pl.String)
        .alias("true_gender"),
        pl.col("race").replace_strict(dict(enumerate(RACES)), default=None, return_dtype=pl.String).alias("true_race"),
    )


# --- the loop ---------------------------------------------------------------------------------------------


def _predict_shards(space, pending, paths, keys, truth, runner, options, workers, faces=None) -> int:
    """Decode and predict the pending shards in input order, streaming each batch into its shard's part.
    ``faces``: detect faces (FaceOptions) and predict one row per face; None predicts each image as a chip."""

    if not pending:
        return 0
    positions = np.concatenate([np.arange(s.start, s.stop) for s in pending])
    todo = [paths[i] for i in positions]
    load = functools.partial(load_chip, size=runner.input_size)
    if faces is not None:
        load = functools.partial(load_faces, options=faces, size=runner.input_size)
    name, version = runner.meta["name"], runner.meta["version"]

    def tables():
        for batch in iter_batches(todo, load, options.batch_size, workers):
            where = positions[batch.start : batch.start + len(batch.paths)]
            if faces is not None:
                yield _face_table(batch, where, keys, truth, runner, options.batch_size)
            else:
                outputs = runner.infer(batch.pixels) if batch.ok else None
                yield batch_table(batch, outputs, [keys[i] for i in where], truth[where], name, version)
            bar.update(len(batch.paths))

    with progress_bar(total=len(todo), unit="img", enabled=options.progress, desc="predict", smoothing=0.1) as bar:
        writer.write_shards(space, pending, output_schema(), tables())
    return len(todo)


def _face_table(batch, where: np.ndarray, keys: list[str], truth: pl.DataFrame, runner, chunk: int):
    """A batch of FoundFaces records -> one output row per face (the model runs ``chunk`` faces at a time)."""
    from faceattr_batch.data.batches import Batch

    rows = face_rows(batch, runner.input_size)
    outputs = None
    if rows.ok:
        parts = [runner.infer(rows.pixels[i : i + chunk]) for i in range(0, len(rows.pixels), chunk)]
        outputs = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    images = where[rows.image]
    # a file name's label describes one person: the faces of a photo with several get no label
    labelled = np.where(rows.faces_in_image > 1, len(images), np.arange(len(images)))
    row_truth = pl.concat([truth[images], truth.clear(1)])[labelled]
    per_face = Batch(batch.start, [batch.paths[i] for i in rows.image], rows.pixels, rows.ok, rows.errors)
    name, version = runner.meta["name"], runner.meta["version"]
    return batch_table(per_face, outputs, [keys[i] for i in images], row_truth, name, version, rows.columns)


def batch_table(
    batch,
    outputs: dict | None,
    keys: list[str],
    truth: pl.DataFrame,
    model_name: str,
    version: str,
    faces: dict[str, list] | None = None,
):
    """One batch's rows as an Arrow table in ``OUTPUT_COLUMNS`` order (null predictions where decode failed).
    ``faces``: the face columns (``FACE_COLUMNS``), a value per row; None for chips (face 0, framing ``chip``)."""
    n = len(batch.paths)
    rows = pl.DataFrame(
        {
            "_row": np.arange(n, dtype=np.int32),
            "path": keys,
            "error": [batch.errors.get(i) for i in range(n)],
        },
        schema_overrides={"path": pl.String, "error": pl.String},
    ).hstack(truth)
    if outputs is not None:
        races = outputs["race_probs"]
        preds = pl.DataFrame(
            {
                "_row": np.asarray(batch.ok, dtype=np.int32),
                "p_female": outputs["p_female"],
                "_race": races.argmax(axis=1).astype(np.int8),
                **{column: races[:, i] for i, column in enumerate(RACE_PROB_COLUMNS)},
                "pred_age": outputs["age_mean"],
                "age_low": outputs["age_low"],
                "age_high": outputs["age_high"],
            }
        )
        rows = rows.join(preds, on="_row", how="left", maintain_order="left")
    else:
        nulls = {column: pl.lit(None, pl.Float32) for column in FLOAT_OUTPUTS}
        rows = rows.with_columns(_race=pl.lit(None, pl.Int8), **nulls)
    p_female, pred_age = pl.col("p_female"), pl.col("pred_age")
    rows = rows.with_columns(
        pred_gender=pl.when(p_female.is_not_null()).then(
            pl.when(p_female >= 0.5).then(pl.lit(GENDERS[1])).otherwise(pl.lit(GENDERS[0]))
        ),
        pred_race=pl.col("_race").replace_strict(dict(enumerate(RACES)), default=None, return_dtype=pl.String),
        pred_age_band=age_band_expr(pred_age).cast(pl.String),
        model_name=pl.lit(model_name),
        model_version=pl.lit(version),
        true_age_band=age_band_expr(pl.col("true_age")).cast(pl.String),
    ).with_columns(
        gender_correct=pl.col("pred_gender") == pl.col("true_gender"),
        race_correct=pl.col("pred_race") == pl.col("true_race"),
        age_error=(pred_age - pl.col("true_age").cast(pl.Float32)),
    )
    if faces is not None:
        rows = rows.hstack(pl.DataFrame(faces, schema=FACE_SCHEMA))
    else:
        decoded = pl.col("error").is_null()
        rows = rows.with_columns(
            face_index=pl.when(decoded).then(pl.lit(0, pl.Int16)),
            framing=pl.when(decoded).then(pl.lit(FRAMING_CHIP)),
            **{name: pl.lit(None, dtype) for name, dtype in FACE_SCHEMA.items() if name not in FACE_COLUMNS[:2]},
        )
    return rows.select(OUTPUT_COLUMNS).to_arrow()


# --- summary ----------------------------------------------------------------------------------------------


def error_kind(error: pl.Expr) -> pl.Expr:
    """The reason without its details ("unreadable image: image file is truncated" -> "unreadable image")."""
    return error.str.split(": ").list.first()


def summarize(output: Path | str) -> dict:
    """Counts, errors by kind and headline metrics, read back from a predictions Parquet."""
    from faceattr_batch.metrics import attributes as metrics

    frame = pl.scan_parquet(output)
    counts = frame.select(
        pl.col("path").n_unique().alias("images"),
        pl.col("error").is_null().sum().alias("predicted"),
        pl.any_horizontal([pl.col(c).is_not_null() for c in LABEL_COLUMNS]).sum().alias("labelled"),
    ).collect()
    errors = (
        frame.filter(pl.col("error").is_not_null())
        .group_by(error_kind(pl.col("error")).alias("kind"))
        .len()
        .sort("len", "kind", descending=[True, False])
        .collect()
    )
    summary = counts.row(0, named=True)
    summary["errors"] = dict(errors.iter_rows())
    overall = metrics.overall(metrics.from_predictions(frame).collect()) if summary["labelled"] else None
    summary["metrics"] = finite(overall)
    return summary
