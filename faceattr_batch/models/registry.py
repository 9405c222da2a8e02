"""The one place that turns a model source into a ready model: the package default, a RUN_DIR, or a file.

Weights are only ever read with ``torch.load(..., weights_only=True)``: a checkpoint is a dict of tensors and
plain values, never a pickle of arbitrary objects. A file that is not such a checkpoint gives one line naming it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from faceattr_batch.errors import FaceattrError

ATTR_FORMAT = "faceattr-attr-v1"  # a shippable model: config + state_dict + meta
TRAIN_FORMAT = "faceattr-attr-train-v1"  # a training checkpoint (also holds optimizer state)
DEFAULT_ATTR_WEIGHTS = "attr_default.pt"
# shipped attribute models by name: --model fast trades accuracy for speed (MODEL_CARD.md)
SHIPPED_ATTR_MODELS = {"default": DEFAULT_ATTR_WEIGHTS, "fast": "attr_fast.pt"}
GEN_FORMAT = "faceattr-gen-v1"  # a shippable generator: config + EMA state_dict + meta
GEN_TRAIN_FORMAT = "faceattr-gen-train-v1"  # a train-gen checkpoint (G, D, EMA, optimizers)
DEFAULT_GEN_WEIGHTS = "gen_default.pt"
ENSEMBLE_FORMAT = "faceattr-attr-ensemble-v1"  # members (config + state_dict each) + temperatures + meta
HALF_STORAGE_MIN_ELEMENTS = 1024  # float tensors at least this large are stored in half precision
INT8_SCALE_SUFFIX = ":int8_scale"  # beside an int8-stored weight: its per-output-channel scale


def default_weights_path(name: str = DEFAULT_ATTR_WEIGHTS) -> Path:
    return Path(str(resources.files("faceattr_batch") / "weights" / name))


def read_checkpoint(path: Path, formats: tuple[str, ...] = (ATTR_FORMAT, TRAIN_FORMAT), kind="attribute-model") -> dict:
    import torch

    if not path.is_file():
        raise FaceattrError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FaceattrError(f"{path}: not a readable faceattr checkpoint ({first[:160]})") from None
    if not isinstance(data, dict) or data.get("format") not in formats:
        raise FaceattrError(f"{path}: not a faceattr {kind} checkpoint (no known 'format' key)")
    return data


def read_generator_checkpoint(path: Path) -> dict:
    return read_checkpoint(Path(path), (GEN_FORMAT, GEN_TRAIN_FORMAT), "generator")


def save_generator(generator, path: Path, meta: dict) -> Path:
    """Write a shippable generator (config + state dict + meta) atomically."""
    return save_atomically(
        path,
        {
            "format": GEN_FORMAT,
            "config": generator.config.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
            "meta": meta,
        },
    )


def load_generator(source: str | Path | None = None):
    """A ready ``Generator`` (eval mode, CPU) and its meta: the shipped one, a train-gen RUN_DIR, or a file."""
    from faceattr_batch.models.generator import Generator, GeneratorConfig

    if source is None:
        path = default_weights_path(DEFAULT_GEN_WEIGHTS)
        if not path.is_file():
            raise FaceattrError(f"the default generator weights are missing from the installed package ({path})")
    else:
        path = Path(source)
        if path.is_dir():
            found = [path / n for n in ("generator.pt", "last.pt") if (path / n).is_file()]
            if not found:
                raise FaceattrError(f"{path}: a folder without generator.pt or last.pt (not a train-gen RUN_DIR)")
            path = found[0]
    data = read_generator_checkpoint(path)
    generator = Generator(GeneratorConfig.from_dict(data["config"]))
    try:
        generator.load_state_dict(data["state_dict"] if data["format"] == GEN_FORMAT else data["ema"])
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0]
        raise FaceattrError(f"{path}: weights do not match the generator config ({first[:160]})") from None
    meta = dict(data.get("meta", {}))
    meta.setdefault("name", path.stem)
    meta["source"] = str(path)
    return generator.eval(), meta


def save_atomically(path: Path, payload: dict) -> Path:
    """``torch.save`` atomically (a model file, or a train / train-gen checkpoint)."""
    import torch

    from faceattr_batch.io.atomic import replacing

    with replacing(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def resolve_attr_source(source: str | Path | None) -> Path:
    """None -> the shipped default; a shipped model's name (``fast``) -> its file, unless a path of that name
    exists; a RUN_DIR -> its model.pt (finished run) or best.pt/last.pt; else the file."""
    name = "default" if source is None else str(source)
    path = Path(name)
    if source is None or (name in SHIPPED_ATTR_MODELS and not path.exists()):
        path = default_weights_path(SHIPPED_ATTR_MODELS[name])
        if not path.is_file():
            raise FaceattrError(f"the {name} weights are missing from the installed package ({path})")
        return path
    if path.is_dir():
        for file_name in ("model.pt", "best.pt", "last.pt"):
            if (path / file_name).is_file():
                return path / file_name
        raise FaceattrError(f"{path}: a folder without model.pt, best.pt or last.pt (not a train RUN_DIR)")
    return path


def storage_state(model, int8: bool = False) -> dict:
    """The state dict as a model file keeps it: the large float tensors (convolution and linear weights) in half
    precision, which halves the file, and the small ones (batch-norm statistics, biases) in full. Loading casts
    back to float32; train evaluates the rounded weights, so reported figures are those of the file.

    ``int8``: the large weight matrices instead as int8 with a float32 scale per output channel (symmetric), a
    quarter of float32; ``restore_state`` turns them back into floats."""
    import torch

    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point() and tensor.numel() >= HALF_STORAGE_MIN_ELEMENTS:
            if int8 and tensor.ndim >= 2:
                scale = tensor.float().abs().amax(dim=tuple(range(1, tensor.ndim)), keepdim=True).clamp_min(1e-12)
                scale = scale / 127
                state[name + INT8_SCALE_SUFFIX] = scale
                tensor = torch.round(tensor.float() / scale).clamp(-127, 127).to(torch.int8)
            else:
                tensor = tensor.to(torch.float16)
        state[name] = tensor
    return state


def restore_state(stored: dict) -> dict:
    """A stored state dict (``storage_state``) back to float32 tensors that ``load_state_dict`` takes."""
    state = {}
    for name, tensor in stored.items():
        if name.endswith(INT8_SCALE_SUFFIX):
            continue
        scale = stored.get(name + INT8_SCALE_SUFFIX)
        if scale is not None:
            tensor = tensor.float() * scale
        elif tensor.is_floating_point():
            tensor = tensor.float()
        state[name] = tensor
    return state


def save_attr_model(model, path: Path, meta: dict) -> Path:
    """Write a shippable model file (config + state dict + meta) atomically; meta values must be plain."""
    return save_atomically(
        path,
        {"format": ATTR_FORMAT, "config": model.config.to_dict(), "state_dict": storage_state(model), "meta": meta},
    )


def save_attr_ensemble(ensemble, path: Path, meta: dict, int8: bool = False) -> Path:
    """Write an ensemble file atomically: each member's config and stored weights (``storage_state``), the fitted
    temperatures."""
    members = [
        {"config": net.config.to_dict(), "state_dict": storage_state(net, int8=int8)} for net in ensemble.members
    ]
    return save_atomically(
        path,
        {"format": ENSEMBLE_FORMAT, "members": members, "temperatures": ensemble.temperatures.tolist(), "meta": meta},
    )


def load_attr_model(source: str | Path | None = None):
    """A ready ``AttrNet`` (or ``AttrEnsemble``) in eval mode, on the CPU, and its metadata dict (name, version,
    metrics...).

    An ``.onnx`` file gives an ``OnnxAttrModel`` instead (same ``infer``/``config``; needs onnxruntime).
    """
    import torch

    from faceattr_batch.models.attr_ensemble import AttrEnsemble
    from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig

    path = resolve_attr_source(source)
    if path.suffix.lower() == ".onnx":
        return load_onnx_model(path)
    data = read_checkpoint(path, (ATTR_FORMAT, TRAIN_FORMAT, ENSEMBLE_FORMAT))
    try:
        if data["format"] == ENSEMBLE_FORMAT:
            members = []
            for member in data["members"]:
                net = AttrNet(AttrNetConfig.from_dict(member["config"]))
                net.load_state_dict(restore_state(member["state_dict"]))
                members.append(net)
            model = AttrEnsemble(members)
            model.temperatures.copy_(torch.tensor(data["temperatures"]))
        else:
            model = AttrNet(AttrNetConfig.from_dict(data["config"]))
            model.load_state_dict(data["state_dict"] if data["format"] == ATTR_FORMAT else data["model"])
    except (RuntimeError, KeyError, ValueError) as err:
        first = str(err).strip().splitlines()[0]
        raise FaceattrError(f"{path}: weights do not match the model config ({first[:160]})") from None
    model.eval()
    meta = dict(data.get("meta", {}))
    meta.setdefault("name", path.stem)
    meta["source"] = str(path)
    return model, meta


class OnnxAttrModel:
    """An exported attribute model run by onnxruntime, with ``AttrNet``'s ``infer`` and ``config`` interface.

    The graph takes uint8 N x 3 x S x S and returns the calibrated outputs named like ``AttrOutputs``'s fields
    (``models/export.py`` writes such files); ``config`` comes from the file's metadata, or its input shape.
    """

    def __init__(self, path: str | Path | bytes, threads: int = 0):
        try:
            import onnxruntime as ort  # defer import: optional dependency
        except ImportError:
            raise FaceattrError(
                "an .onnx model needs onnxruntime: pip install 'faceattr-batch[onnx]' (or onnxruntime)"
            ) from None
        import json

        from faceattr_batch.models.attr_net import AttrNetConfig, AttrOutputs

        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads  # 0 = onnxruntime's own choice
        session_options.inter_op_num_threads = 1
        shown = "<bytes>" if isinstance(path, bytes) else str(path)
        try:
            source = path if isinstance(path, bytes) else str(path)
            self.session = ort.InferenceSession(source, session_options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise FaceattrError(f"{shown}: not a loadable ONNX model ({first[:160]})") from None
        names = [o.name for o in self.session.get_outputs()]
        if sorted(names) != sorted(AttrOutputs._fields):
            raise FaceattrError(f"{shown}: ONNX outputs {names} are not {list(AttrOutputs._fields)}")
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.properties = dict(self.session.get_modelmeta().custom_metadata_map)
        if "config" in self.properties:
            self.config = AttrNetConfig.from_dict(json.loads(self.properties["config"]))
        else:
            self.config = AttrNetConfig(input_size=int(graph_input.shape[-1]))
        self._outputs = AttrOutputs

    def eval(self) -> OnnxAttrModel:
        return self

    def infer(self, pixels):
        """``pixels``: uint8 N x 3 x S x S (torch tensor or numpy array) -> ``AttrOutputs`` of torch tensors."""
        import numpy as np
        import torch

        array = pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels
        feeds = {self.input_name: np.ascontiguousarray(array, dtype=np.uint8)}
        values = dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds), strict=True))
        return self._outputs(*(torch.from_numpy(values[name]) for name in self._outputs._fields))


def load_onnx_model(path: str | Path, threads: int = 0) -> tuple[OnnxAttrModel, dict]:
    """An ``OnnxAttrModel`` and its metadata (name from the file's ``model_name`` property, or its stem)."""
    path = Path(path)
    if not path.is_file():
        raise FaceattrError(f"{path}: no such ONNX file")
    model = OnnxAttrModel(path, threads)
    meta = {"name": model.properties.get("model_name", path.stem), "source": str(path), "runtime": "onnxruntime"}
    if "faceattr_batch.version" in model.properties:
        meta["exported_by"] = model.properties["faceattr_batch.version"]
    return model, meta


def onnxruntime_available() -> bool:
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None
