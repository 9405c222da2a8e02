"""A loaded attribute model and how to feed it: ``ModelRunner`` runs uint8 N x S x S x 3 batches through torch or
onnxruntime; ``OnnxAttrModel`` is an exported model with ``AttrNet``'s ``infer``/``config``. A ``.pt`` model run by
onnxruntime uses the export beside it when made from the same weights, else its export in the user's cache folder
(``onnx_cache_dir``), made on first use (``_as_onnx``).

Used by predict (local loop and Ray actors), train-gen's evaluation and the benchmarks. onnxruntime is optional and
imported only when an ONNX model is run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import platformdirs
import torch

from faceattr_batch import __version__
from faceattr_batch.data.labels import RACES
from faceattr_batch.errors import FaceattrError, first_line
from faceattr_batch.io.digest import file_digest
from faceattr_batch.models import registry
from faceattr_batch.models.attr_net import AttrNetConfig, AttrOutputs
from faceattr_batch.models.device import available_cores, lacks_vnni
from faceattr_batch.models.export import (
    EXPORTED_BY,
    QUANTIZATION,
    SEVEN_BIT_WEIGHTS,
    SOURCE_DIGEST,
    export_onnx,
)

ONNX_HINT = "pip install 'faceattr-batch[onnx]' (or onnxruntime)"
CACHE_ENV = "FACEATTR_CACHE_DIR"  # overrides the platform's cache folder (tests, shared machines)
log = logging.getLogger(__name__)


def split_cores(device_type: str, workers: int | None, threads: int | None) -> tuple[int, int]:
    """Decode workers and model threads. On a GPU decoding is the ceiling: every core decodes. On the CPU half the
    cores decode and the model's threads take them all: decoding a chip costs far less than the model does, so
    the decode workers sleep most of the time and the model runs on every core they leave idle (2 cores, whole
    predict against 1 worker + 1 thread: the default ensemble +45%, a two-network ensemble +9%; see
    benchmarks/bench_predict.py --splits)."""
    cores = available_cores()
    if workers is None:
        workers = cores if device_type == "cuda" else max(1, cores // 2)
    if threads is None:
        threads = cores if device_type == "cpu" else 1
    return workers, threads


def onnxruntime_available() -> bool:
    return find_spec("onnxruntime") is not None


@dataclass
class ModelRunner:
    """A loaded model and how to feed it: uint8 N x S x S x 3 batches in, numpy outputs out."""

    model: object
    meta: dict  # name, version (12 hex of the file unless the file names one), source, ...
    runtime: str  # torch | onnxruntime
    device: object  # torch.device

    @property
    def input_size(self) -> int:
        return self.model.config.input_size

    @classmethod
    def load(cls, source: str | None, device, runtime: str, threads: int) -> ModelRunner:
        """``source``: None (the shipped default), a shipped name, a RUN_DIR, a .pt or an .onnx file; ``runtime``:
        auto (onnxruntime on the CPU when installed, torch otherwise), torch or onnxruntime."""
        path = registry.resolve_attr_source(source)
        is_onnx = path.suffix.lower() == ".onnx"
        if is_onnx and runtime == "torch":
            raise FaceattrError(f"{path}: an ONNX model runs with onnxruntime, not --runtime torch")
        if is_onnx and device.type != "cpu":
            raise FaceattrError(f"{path}: ONNX models run on the CPU here; use a .pt model for --device cuda")
        if runtime == "onnxruntime" and device.type != "cpu":
            raise FaceattrError("--runtime onnxruntime runs on the CPU; use --device cpu or --runtime torch")
        version = file_digest(path)
        if is_onnx:
            model, meta = load_onnx_model(path, threads)
            chosen = "onnxruntime"
        else:
            model, meta = registry.load_attr_model(path)
            chosen = runtime
            if runtime == "auto":
                chosen = "onnxruntime" if device.type == "cpu" and onnxruntime_available() else "torch"
            if chosen == "onnxruntime":
                model = _as_onnx(path, threads, version)
        # the file's digest beside the version it names: two trainings of one version are two models (resume)
        meta = {**meta, "version": str(meta.get("version") or version), "digest": version, "source": str(path)}
        # an int8 graph (an .onnx file, or the one beside the .pt) gives slightly other values: the summary and the
        # resume check say which ran
        if QUANTIZATION in getattr(model, "properties", {}):
            meta["precision"] = "int8"
        else:
            meta["precision"] = "fp16" if chosen == "torch" and device.type == "cuda" else "fp32"
        if chosen == "torch":
            if device.type == "cpu":
                torch.set_num_threads(threads)
            # channels_last: the N x S x S x 3 batches are already in that layout, and convolutions run faster
            model = model.to(device=device, memory_format=torch.channels_last)
        return cls(model, meta, chosen, device)

    def infer(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """``pixels``: N x S x S x 3 uint8 -> p_female, race_probs, age_median, age_low, age_high as numpy."""
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


def onnx_cache_dir() -> Path:
    """Where exports of ``.pt`` models are kept: ``$FACEATTR_CACHE_DIR``, else the platform's user cache folder
    (``$XDG_CACHE_HOME/faceattr-batch/onnx`` on Linux, ``~/.cache/...`` without it)."""
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("faceattr-batch")) / "onnx"


def _as_onnx(path: Path, threads: int, digest: str) -> OnnxAttrModel:
    """The checkpoint as ONNX: the export beside it when it was made from these very weights, else the cached one,
    else exported now into the cache (4.8 s for the default ensemble; the next run loads it in a fraction).

    The cache file is keyed by the weights' digest and the package version (a new exporter makes a new file),
    written atomically (two processes starting at once each write their own temporary file and the last rename
    wins, both whole), and checked on load: a corrupt or foreign file is exported again, never trusted. Where the
    cache cannot be written the export goes to a temporary folder, as every run did before the cache."""
    cached = onnx_cache_dir() / f"{path.stem}-{digest}-{__version__}.onnx"
    for candidate in (path.with_suffix(".onnx"), cached):
        model = _matching_export(candidate, threads, digest)
        if model is not None:
            return model
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(path, cached)
        return OnnxAttrModel(cached, threads)
    except (OSError, FaceattrError) as err:
        log.warning("ONNX cache not written (%s): exporting to a temporary folder", first_line(err, 160))
    with tempfile.TemporaryDirectory(prefix="faceattr-onnx-") as folder:
        onnx_path = Path(folder) / "model.onnx"
        export_onnx(path, onnx_path)
        return OnnxAttrModel(onnx_path.read_bytes(), threads)


def _matching_export(candidate: Path, threads: int, digest: str) -> OnnxAttrModel | None:
    """The export at ``candidate`` when it loads and was made from the weights with this ``digest``; else None."""
    if not candidate.is_file():
        return None
    try:
        model = OnnxAttrModel(candidate, threads)
    except FaceattrError:  # truncated or not ONNX at all: made again
        return None
    return model if model.properties.get(SOURCE_DIGEST, "")[:12] == digest else None


class OnnxAttrModel:
    """An exported attribute model run by onnxruntime, with ``AttrNet``'s ``infer`` and ``config`` interface.

    The graph takes uint8 N x 3 x S x S and returns the calibrated outputs named like ``AttrOutputs``'s fields
    (``models/export.py`` writes such files); ``config`` comes from the file's metadata, or its input shape.
    """

    def __init__(self, path: str | Path | bytes, threads: int = 0):
        try:
            import onnxruntime as ort  # optional dependency
        except ImportError:
            raise FaceattrError(f"an .onnx model needs onnxruntime: {ONNX_HINT}") from None

        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads  # 0 = onnxruntime's own choice
        session_options.inter_op_num_threads = 1
        # threads that spin while waiting take the cores the decode workers share with them (2 cores, J's int8
        # graph, a decode load beside it: 410 -> 452 images/s)
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        shown = "<bytes>" if isinstance(path, bytes) else str(path)
        try:
            source = path if isinstance(path, bytes) else str(path)
            self.session = ort.InferenceSession(source, session_options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            raise FaceattrError(f"{shown}: not a loadable ONNX model ({first_line(err, 160)})") from None
        names = [o.name for o in self.session.get_outputs()]
        if "age_mean" in names:  # exports before the age became the distribution's median
            raise FaceattrError(f"{shown}: exported by an older faceattr-batch (age_mean output): export it again")
        if sorted(names) != sorted(AttrOutputs._fields):
            raise FaceattrError(f"{shown}: ONNX outputs {names} are not {list(AttrOutputs._fields)}")
        inputs = self.session.get_inputs()
        if not inputs:
            raise FaceattrError(f"{shown}: an ONNX graph without an input")
        shape = inputs[0].shape if len(inputs) == 1 else []
        side = shape[-1] if len(shape) == 4 and shape[1] == 3 and shape[2] == shape[-1] else None
        if inputs[0].type != "tensor(uint8)" or not isinstance(side, int):
            found = ", ".join(f"{i.name}: {i.type} {i.shape}" for i in inputs)
            raise FaceattrError(f"{shown}: ONNX input {found} is not one uint8 N x 3 x S x S (S fixed), as exported")
        self.input_name = inputs[0].name
        races = {o.name: o.shape for o in self.session.get_outputs()}["race_probs"]
        if len(races) != 2 or races[1] != len(RACES):
            raise FaceattrError(f"{shown}: ONNX output race_probs is {races}, not N x {len(RACES)} (our five races)")
        self.properties = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            config = json.loads(self.properties["config"]) if "config" in self.properties else {"input_size": side}
            self.config = AttrNetConfig.from_dict(config)
        except (ValueError, TypeError, AttributeError) as err:
            raise FaceattrError(f"{shown}: its config property is no model config ({first_line(err, 120)})") from None
        if self.config.input_size != side:
            raise FaceattrError(f"{shown}: its metadata says {self.config.input_size} px, its graph takes {side}")
        quantization = self.properties.get(QUANTIZATION, "")
        if quantization and SEVEN_BIT_WEIGHTS not in quantization and lacks_vnni():
            log.warning(
                "%s: int8 with full-range weights, which saturate on this CPU (no VNNI) and read faces wrong "
                "(ages years young): export it again with export-onnx --int8",
                shown,
            )

    def eval(self) -> OnnxAttrModel:
        return self

    def infer(self, pixels):
        """``pixels``: uint8 N x 3 x S x S (torch tensor or numpy array) -> ``AttrOutputs`` of torch tensors."""
        array = pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels
        feeds = {self.input_name: np.ascontiguousarray(array, dtype=np.uint8)}
        values = dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds), strict=True))
        return AttrOutputs(*(torch.from_numpy(values[name]) for name in AttrOutputs._fields))


def load_onnx_model(path: str | Path, threads: int = 0) -> tuple[OnnxAttrModel, dict]:
    """An ``OnnxAttrModel`` and its metadata (name from the file's ``model_name`` property, or its stem)."""
    path = Path(path)
    if not path.is_file():
        raise FaceattrError(f"{path}: no such ONNX file")
    model = OnnxAttrModel(path, threads)
    meta = {"name": model.properties.get("model_name", path.stem), "source": str(path), "runtime": "onnxruntime"}
    if EXPORTED_BY in model.properties:
        meta["exported_by"] = model.properties[EXPORTED_BY]
    return model, meta
