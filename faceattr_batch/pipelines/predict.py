"""`faceattr-batch predict`: the attribute model over any number of images -> one Parquet row per image.

``run(PredictOptions(...))``: inputs.list_images (sorted, the resume key) -> writer.open_workspace /
pending_shards -> decode (``batches.iter_batches`` in worker processes, or Ray decode tasks with ``engine="ray"``)
-> ``models.batch_rows.BatchRows`` (the model, torch in inference mode or onnxruntime; one Arrow table per batch)
-> writer shard sinks -> writer.finalize -> the file read back once for the summary (``reporting.summary``) and,
when asked, the report folder (``reporting.folder``). A bad image is a row with ``error`` and null predictions.

Faces (``faces``): ``chips`` predicts each image as a chip; ``detect`` finds the faces of every image and predicts
each aligned face (one row per face; an image without one is a ``no face found`` row); ``auto`` takes an image
already framed like a chip as a chip and detects in the others (``faces.load.load_faces``, in the decode workers).
Both engines run every mode with the same defaults.

Images the model saw: with a model's seen-images file (``models.seen_images``) the decode workers also hash each
file; rows it lists get ``in_training`` and their ``training_role``, and the metrics leave the train-role ones out.

Output columns and the label convention: ``schema.py`` (``OUTPUT_COLUMNS``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch import __version__
from faceattr_batch.data.batches import iter_batches
from faceattr_batch.data.decode import load_chip
from faceattr_batch.data.inputs import display_path, is_index_parquet, list_images, sample_positions
from faceattr_batch.data.label_files import MatchedLabels, attach_labels, load_labels
from faceattr_batch.data.name_labels import labels_from_names
from faceattr_batch.engines import check_options
from faceattr_batch.engines import ray as ray_engine
from faceattr_batch.errors import FaceattrError, require_file
from faceattr_batch.faces.detect import EXTRA_HINT, MtcnnDetector, detection_available, require_detection
from faceattr_batch.faces.load import FaceOptions, load_faces
from faceattr_batch.io import writer
from faceattr_batch.io.atomic import check_writable, refuse_overlap
from faceattr_batch.metrics.slicing import slice_frame
from faceattr_batch.models.batch_rows import KEY, BatchRows, PredictActor
from faceattr_batch.models.device import resolve_device
from faceattr_batch.models.registry import seen_images_path
from faceattr_batch.models.runtime import ModelRunner, split_cores
from faceattr_batch.models.seen_images import SeenImages
from faceattr_batch.progress import progress_bar
from faceattr_batch.reporting.folder import write_report, writes_file
from faceattr_batch.reporting.summary import read_predictions, summarize
from faceattr_batch.schema import (
    LABEL_COLUMNS,
    MODEL_KEY,
    OPTIONS_KEY,
    OUTPUT_COLUMNS,
    VERSION_KEY,
    output_schema,
)

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime")


@dataclass(frozen=True)
class PredictOptions:
    inputs: tuple[str, ...]
    output: Path
    model: str | None = None  # None = the shipped weights; a RUN_DIR, a .pt or an .onnx file
    labels: Path | None = None  # a labels file (data.label_files); default: an index input, else UTKFace names
    device: str = "auto"
    batch_size: int = 256
    workers: int | None = None  # decode processes; None = chosen for the device (see split_cores)
    threads: int | None = None  # model threads on the CPU; None = chosen with workers
    runtime: str = "auto"  # auto = onnxruntime on the CPU when installed (measured faster), torch otherwise
    shard_size: int = 4096  # rounded up to a multiple of batch_size
    resume: bool = False
    report_dir: Path | None = None
    slice_by: tuple[str, ...] = ()  # the report's extra slicing columns of the labels file (metrics.slicing)
    min_group: int = 30  # the report's fewest images of a compared group
    progress: bool = True
    engine: str = "local"  # local | ray (engines/ray.py: Ray Data, the same output file)
    ray_address: str | None = None  # ray: a running cluster (auto | HOST:PORT); None = a local instance
    concurrency: int | None = None  # ray: model actors; None = one per GPU, or half the CPUs
    faces: str = "chips"  # chips | detect | auto (the CLI's default: auto); see the module doc
    min_face: int = 20  # detect/auto: smallest face box side, in the photo's pixels
    min_score: float = 0.9  # detect/auto: the detector's confidence
    max_faces: int = 50  # detect/auto: faces kept per image, the best scores
    include_training: bool = False  # keep the rows of images the model was trained on in the metrics
    sample: int | None = None  # predict a seeded random sample of this many images (inputs.sample_positions)
    sample_seed: int = 0


@dataclass(frozen=True)
class PredictResult:
    output: Path
    images: int
    predicted: int  # rows with predictions
    errors: dict[str, int]  # error kind -> rows
    labelled: int  # rows with at least one true label
    metrics: dict | None  # overall metrics with 95% intervals (``*_low``/``*_high``)
    model: dict
    seconds: float
    processed: int  # images this run decoded and predicted (less than ``images`` after --resume)
    shards_skipped: int
    report: Path | None = None
    settings: dict = field(default_factory=dict)
    labels: dict | None = None  # the labels file's counts and first problems (``data.label_files``); None: names
    training: dict | None = None  # rows of images the model saw, by role (``reporting.summary.training_summary``)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "output": str(self.output), "images_per_second": round(self.images_per_second, 1)}


def run(options: PredictOptions) -> PredictResult:
    """Predict every image of ``options.inputs`` into ``options.output`` (see the module doc)."""
    started = time.perf_counter()
    _validate(options)
    faces = _face_options(options)
    paths = list_images(options.inputs)
    keys = _output_paths(paths)
    label_source, truth, labels = _true_labels(options, (paths, keys))
    sample = None
    if options.sample is not None:  # labels matched to every listed image above: their summary is the folder's
        chosen = sample_positions(keys, options.sample, options.sample_seed)
        sample = {"images": len(chosen), "of": len(keys), "seed": options.sample_seed}
        paths, keys, truth = [paths[i] for i in chosen], [keys[i] for i in chosen], truth[chosen]
    if options.slice_by:  # a misspelt or unfit column fails now, not after predicting
        columns = pl.DataFrame() if labels is None else labels.frame
        slice_frame(columns, options.slice_by, known=[c for c in columns.columns if c not in OUTPUT_COLUMNS])
    device = resolve_device(options.device)
    workers, threads = split_cores(device.type, options.workers, options.threads)
    runner = ModelRunner.load(options.model, device, options.runtime, threads)
    seen = seen_images(runner)
    # whole batches per shard, cut at the same places in a resumed run as in an uninterrupted one: the model then
    # sees identical batches and gives bit-identical values
    shard_size = -(-options.shard_size // options.batch_size) * options.batch_size
    fingerprint = resume_fingerprint(runner, label_source, faces, seen)
    settings = {"workers": workers, "threads": threads, "device": device.type, "labels": label_source}
    settings |= {"shard_size": shard_size, "engine": options.engine, "faces": faces.mode}
    settings["seen_images"] = None if seen is None else str(seen.path)
    settings["sample"] = sample
    processed, skipped = _write_output(options, (paths, keys), truth, (runner, seen), faces, fingerprint, settings)
    seconds = time.perf_counter() - started
    frame = read_predictions(options.output)  # once, for the summary and the report
    if labels is not None:  # the labels file's other columns, which the Parquet does not hold, for the report
        frame = attach_labels(frame, labels)
    summary = summarize(frame, None if labels is None else labels.summary, options.include_training)
    report = None
    if options.report_dir is not None:
        report = write_report(
            frame, summary | {"sample": sample}, Path(options.output), Path(options.report_dir),
            slice_by=options.slice_by, min_group=options.min_group, progress=options.progress,
        )  # fmt: skip
    return PredictResult(
        output=Path(options.output),
        model={k: runner.meta[k] for k in ("name", "version", "source", "precision")} | {"runtime": runner.runtime},
        seconds=seconds,
        processed=processed,
        shards_skipped=skipped,
        report=report,
        settings=settings,
        **summary,
    )


def _validate(options: PredictOptions) -> None:
    """Every option and output place checked before any work."""
    check_options(options.engine, options.ray_address, options.concurrency)
    if options.runtime not in RUNTIMES:
        raise FaceattrError(f"--runtime {options.runtime!r}: use {', '.join(RUNTIMES)}")
    if options.batch_size < 1:
        raise FaceattrError(f"--batch-size {options.batch_size}: must be >= 1")
    if options.shard_size < 1:
        raise FaceattrError(f"--shard-size {options.shard_size}: must be >= 1")
    if options.sample is not None and options.sample < 1:
        raise FaceattrError(f"--sample {options.sample}: must be >= 1")
    if not str(options.output).lower().endswith(".parquet"):
        raise FaceattrError(f"-o {options.output}: the output must be a .parquet file")
    if options.slice_by and options.report_dir is None:
        raise FaceattrError("--slice-by shapes the report: add --report DIR")
    if options.min_group < 2:
        raise FaceattrError(f"--min-group must be at least 2, not {options.min_group}")
    if options.labels is not None:
        require_file(options.labels, "--labels", "labels file")
    named = {f"the input {source}": source for source in options.inputs}
    refuse_overlap(options.output, "-o", {**named, "--labels": options.labels})
    if options.report_dir is not None:
        report_inputs = {**named, "-o": options.output, "--labels": options.labels}
        refuse_overlap(options.report_dir, "--report", report_inputs, folder=True, writes=writes_file)
    check_writable(options.output, "-o")
    if options.report_dir is not None:
        check_writable(options.report_dir, "--report", folder=True)


def _face_options(options: PredictOptions) -> FaceOptions:
    """The face options to run with: ``auto`` without the detect extra runs as ``chips`` (said in a warning)."""
    faces = FaceOptions(options.faces, options.min_face, options.min_score, options.max_faces)
    faces.validate()
    if faces.mode == "detect":  # not auto, the CLI's default: the probe costs a second; a failing cv2 stops the run
        require_detection()
    if faces.mode == "auto" and not detection_available():
        log.warning("--faces auto: every image is taken as a chip (%s)", EXTRA_HINT)
        faces = FaceOptions("chips", faces.min_face, faces.min_score, faces.max_faces)
    return faces


def seen_images(runner: ModelRunner) -> SeenImages | None:
    """The images the model saw (``registry.seen_images_path``), or None when it records none."""
    path = seen_images_path(Path(runner.meta["source"]))
    return None if path is None else SeenImages.load(path)


def resume_fingerprint(runner: ModelRunner, label_source: str, faces: FaceOptions, seen: SeenImages | None) -> dict:
    """What changes the values written: a resumed run must match it (``writer.open_workspace``); the seen-images
    file's digest only when the model has one, so other runs resume as before."""
    fingerprint = {
        "model": runner.meta["name"],
        "model_version": runner.meta["version"],
        "model_digest": runner.meta["digest"],  # two trainings of one name and version are two models
        "runtime": runner.runtime,
        "precision": runner.meta["precision"],
        "device": runner.device.type,
        "labels": label_source,
        "faces": faces.mode,
        "columns": list(OUTPUT_COLUMNS),  # parts written with other columns cannot join this run's
    }
    if faces.mode != "chips":
        fingerprint |= {
            "detector": MtcnnDetector.name,
            "min_face": faces.min_face,
            "min_score": faces.min_score,
            "max_faces": faces.max_faces,
        }
    if seen is not None:
        fingerprint["seen_images"] = seen.digest
    return fingerprint


def _output_paths(paths: list[str]) -> list[str]:
    """The ``path`` column's text of each input (``display_path``), each one a different text: the resume shards are
    keyed by it, so two files shown alike (a name with the byte 0xff and one with the four characters ``\xff``)
    would merge into one input and cost the whole run."""
    keys = [display_path(p) for p in paths]
    if len(set(keys)) < len(keys):
        seen: dict[str, str] = {}
        first, second = next((seen[k], p) for k, p in zip(keys, paths, strict=True) if seen.setdefault(k, p) != p)
        raise FaceattrError(
            f"the inputs {os.fsencode(first)!r} and {os.fsencode(second)!r} would both be written as "
            f"{display_path(first)} (bytes that are not UTF-8 are written as \\xNN): rename one"
        )
    return keys


def _write_output(options, inputs, truth, model, faces, fingerprint, settings) -> tuple[int, int]:
    """Predict the shards not yet done into the output file: (images processed, shards skipped). ``inputs``: the
    paths and their ``_output_paths``; ``model``: the runner and its ``SeenImages`` (or None)."""
    runner = model[0]
    paths, keys = inputs
    shard_size = settings["shard_size"]
    if options.resume and writer.is_complete(options.output, fingerprint, keys, shard_size):
        return 0, -(-len(keys) // shard_size)
    space = writer.open_workspace(options.output, fingerprint, keys, shard_size, options.resume)
    pending = writer.pending_shards(space)
    processed = 0
    if pending:
        positions = np.concatenate([np.arange(s.start, s.stop) for s in pending])
        todo = [paths[i] for i in positions]
        columns = truth[positions].with_columns(pl.Series(KEY, [keys[i] for i in positions], pl.String))
        predict = _predict_on_ray if options.engine == "ray" else _predict_locally
        tables = predict(todo, columns, model, faces, options, settings)
        writer.write_shards(space, pending, output_schema(), tables)
        processed = len(todo)
    metadata = {
        VERSION_KEY: __version__,
        OPTIONS_KEY: json.dumps({**asdict(options), **settings}, default=str),
        MODEL_KEY: json.dumps(runner.meta, default=str),
    }
    writer.finalize(space, output_schema(), metadata)
    return processed, len(space.shards) - len(pending)


# --- labels -----------------------------------------------------------------------------------------------


def _true_labels(options: PredictOptions, inputs: tuple) -> tuple[str, pl.DataFrame, MatchedLabels | None]:
    """(where the labels come from, a frame of the ``LABEL_COLUMNS`` codes aligned with the paths, the labels file
    matched to them: None when the labels come from the names); ``inputs``: the paths and their ``_output_paths``."""
    paths, keys = inputs
    source = options.labels
    if source is None and len(options.inputs) == 1 and is_index_parquet(options.inputs[0]):
        source = Path(options.inputs[0])
    if source is None:
        return "names", labels_from_names(keys), None
    labels = load_labels(source, paths)
    return labels.source, labels.frame.select(LABEL_COLUMNS), labels


# --- the engines ------------------------------------------------------------------------------------------


def _load(runner: ModelRunner, faces: FaceOptions):
    """One path -> what the batch worker takes: the chip's pixels, or the image's faces."""
    if faces.mode == "chips":
        return functools.partial(load_chip, size=runner.input_size)
    return functools.partial(load_faces, options=faces, size=runner.input_size)


def _predict_locally(paths, columns: pl.DataFrame, model, faces, options, settings):
    """The output tables of ``paths``, in order: decode (and hash) in worker processes, the model in this one."""
    runner, seen = model
    rows = BatchRows(runner, faces.mode != "chips", options.batch_size, seen)
    values = columns.to_dict(as_series=False)
    hashed = seen is not None
    batches = iter_batches(paths, _load(runner, faces), options.batch_size, settings["workers"], digests=hashed)
    with progress_bar(total=len(paths), unit="img", enabled=options.progress, desc="predict", smoothing=0.1) as bar:
        for batch in batches:
            span = slice(batch.start, batch.start + len(batch.paths))
            yield rows(batch, {name: column[span] for name, column in values.items()})
            bar.update(len(batch.paths))


def _predict_on_ray(paths, columns: pl.DataFrame, model, faces, options, settings):
    """The output tables of ``paths``, in order, from Ray: decode tasks, ``PredictActor`` model actors."""
    runner, seen = model
    seen_path = None if seen is None else seen.path
    oldest = pl.CompatLevel.oldest()  # large_string, not string_view: Arrow list arrays take it as values
    arrays = {name: column.to_arrow(compat_level=oldest) for name, column in columns.to_dict().items()}
    threads = options.threads or 1
    detect = faces.mode != "chips"
    # a chip's pixels; a photo's faces are a few of them (the photo itself is decoded and freed in the task)
    item_bytes = runner.input_size**2 * 3 * (4 if detect else 1)
    return ray_engine.run_in_order(
        paths,
        _load(runner, faces),
        options.batch_size,
        PredictActor,
        (runner.meta["source"], runner.device, runner.runtime, threads, detect, options.batch_size, seen_path),
        columns=arrays,
        device_type=runner.device.type,
        threads=threads,
        decode_share=0.5,  # on CPUs half the cores decode, as split_cores gives the local decode workers
        item_bytes=item_bytes,
        address=options.ray_address,
        concurrency=options.concurrency,
        progress=options.progress,
        digests=seen is not None,
    )
