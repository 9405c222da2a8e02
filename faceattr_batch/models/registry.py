"""The one place that turns a model source into a ready model: the package default, a RUN_DIR, or a file.

Weights are only ever read with ``torch.load(..., weights_only=True)``: a checkpoint is a dict of tensors and
plain values, never a pickle of arbitrary objects. A file that is not such a checkpoint gives one line naming it.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import torch

from faceattr_batch.errors import FaceattrError, first_line
from faceattr_batch.io.atomic import replacing
from faceattr_batch.io.digest import file_digest
from faceattr_batch.io.torch_file import load_torch_file
from faceattr_batch.models.attr_ensemble import AttrEnsemble
from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig
from faceattr_batch.models.generator import Generator, GeneratorConfig

ATTR_FORMAT = "faceattr-attr-v1"  # a shippable model: config + state_dict + meta
TRAIN_FORMAT = "faceattr-attr-train-v1"  # a training checkpoint (also holds optimizer state)
DEFAULT_ATTR_WEIGHTS = "attr_default.pt"
log = logging.getLogger(__name__)
# shipped attribute models by name: --model fast trades accuracy for speed (MODEL_CARD.md)
SHIPPED_ATTR_MODELS = {"default": DEFAULT_ATTR_WEIGHTS, "fast": "attr_fast.pt"}
# the images a model saw, and in which role (models.seen_images), in this file beside the model: the shipped
# models were all trained on the one split of MODEL_CARD.md, so one file in weights/ (scripts/seen_images.py)
SEEN_IMAGES_FILE = "seen_images.parquet"
GEN_FORMAT = "faceattr-gen-v1"  # a shippable generator: config + EMA state_dict + meta
GEN_TRAIN_FORMAT = "faceattr-gen-train-v1"  # a train-gen checkpoint (G, D, EMA, optimizers)
DEFAULT_GEN_WEIGHTS = "gen_default.pt"
ENSEMBLE_FORMAT = "faceattr-attr-ensemble-v1"  # members (config + state_dict each) + temperatures + meta
HALF_STORAGE_MIN_ELEMENTS = 1024  # float tensors at least this large are stored in half precision
INT8_SCALE_SUFFIX = ":int8_scale"  # beside an int8-stored weight: its per-output-channel scale
_FORMAT_KINDS = {  # what a checkpoint of another kind is, for the message that refuses it
    ATTR_FORMAT: "trained attribute model",
    TRAIN_FORMAT: "attribute-model training checkpoint",
    ENSEMBLE_FORMAT: "attribute-model ensemble",
    GEN_FORMAT: "generator",
    GEN_TRAIN_FORMAT: "train-gen checkpoint",
}


def default_weights_path(name: str = DEFAULT_ATTR_WEIGHTS) -> Path:
    return Path(str(resources.files("faceattr_batch") / "weights" / name))


def read_checkpoint(path: Path, formats: tuple[str, ...] = (ATTR_FORMAT, TRAIN_FORMAT), kind="attribute-model") -> dict:
    if not path.is_file():
        raise FaceattrError(f"{path}: no such checkpoint file")
    data = load_torch_file(path, "faceattr checkpoint")
    if not isinstance(data, dict) or data.get("format") not in formats:
        other = _FORMAT_KINDS.get(data.get("format")) if isinstance(data, dict) else None
        what = f"a {other}" if other else "no known 'format' key"
        raise FaceattrError(f"{path}: not a faceattr {kind} checkpoint ({what})")
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
        raise FaceattrError(f"{path}: weights do not match the generator config ({first_line(err, 160)})") from None
    meta = dict(data.get("meta", {}))
    meta.setdefault("name", path.stem)
    # two trainings of one name are two generators: a file that names no version is known by its digest
    meta["version"] = str(meta.get("version") or file_digest(path))
    meta["source"] = str(path)
    return generator.eval(), meta


def save_atomically(path: Path, payload: dict) -> Path:
    """``torch.save`` atomically (a model file, or a train / train-gen checkpoint)."""
    with replacing(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


RUN_DIR_MODELS = ("model.pt", "best.pt", "last.pt")  # what -m RUN_DIR reads, the first that exists


def resolve_attr_source(source: str | Path | None) -> Path:
    """None (no -m) -> the shipped default, whatever the working folder holds; a shipped model's name (``fast``) ->
    its file, unless a model file or RUN_DIR of that name is in the working folder (then that, with a warning:
    ``./fast`` names it without one); a RUN_DIR -> its model.pt (finished run) or best.pt/last.pt; else the file."""
    name = "default" if source is None else str(source)
    path = Path(name)
    local = source is not None and (path.is_file() or any((path / file_name).is_file() for file_name in RUN_DIR_MODELS))
    if name in SHIPPED_ATTR_MODELS and local:
        log.warning("-m %s: the model at ./%s, not the shipped one (write ./%s to say so)", name, name, name)
    if source is None or (name in SHIPPED_ATTR_MODELS and not local):  # a folder of images named fast is no model
        path = default_weights_path(SHIPPED_ATTR_MODELS[name])
        if not path.is_file():
            raise FaceattrError(f"the {name} weights are missing from the installed package ({path})")
        return path
    if path.is_dir():
        for file_name in RUN_DIR_MODELS:
            if (path / file_name).is_file():
                if file_name != RUN_DIR_MODELS[0]:  # read unsaid, a tiny run's race accuracy fell from 43% to 20%
                    log.warning(
                        "%s: an unfinished run (no %s): reading its %s, a training checkpoint (not calibrated, "
                        "no test-time mirror chosen): finish the run with train --resume",
                        path,
                        RUN_DIR_MODELS[0],
                        file_name,
                    )
                return path / file_name
        folds = sorted(model.parent.name for model in path.glob("fold_*/model.pt"))
        if folds:
            raise FaceattrError(f"{path}: a cross-fitting run; give one of its folds' models ({', '.join(folds)})")
        raise FaceattrError(f"{path}: a folder without model.pt, best.pt or last.pt (not a train RUN_DIR)")
    if not path.is_file():
        shipped = ", ".join(SHIPPED_ATTR_MODELS)
        raise FaceattrError(f"{path}: no such checkpoint file (nor a shipped model's name: {shipped})")
    return path


def absolute_source(source: str | None) -> str | None:
    """A model option of a run (``--teacher``, ``--init-from``, ``--init-generator``) as the run stores it: the
    absolute path of a model file or RUN_DIR in reach (what ``resolve_attr_source`` and ``load_generator`` read
    there, so a resume from another folder reads the same), else as given: a shipped model's name, or a folder of
    images named ``fast`` (no model, so the shipped one)."""
    if source is None:
        return None
    path = Path(source)
    names = (*RUN_DIR_MODELS, "generator.pt")
    if path.is_file() or (path.is_dir() and any((path / name).is_file() for name in names)):
        return str(path.resolve())
    return source


def seen_images_path(model_path: Path) -> Path | None:
    """The ``seen_images.parquet`` beside the model at ``model_path`` (as ``resolve_attr_source`` gives it: a
    shipped model's .pt or .onnx, a RUN_DIR's model, a file), or None when it has none; a shipped model's must be
    there."""
    model_path = Path(model_path).resolve()
    beside = model_path.parent / SEEN_IMAGES_FILE
    if beside.is_file():
        return beside
    if model_path.parent == default_weights_path().resolve().parent:
        raise FaceattrError(f"the seen-images file is missing from the installed package ({beside})")
    return None


def storage_state(model, int8: bool = False) -> dict:
    """The state dict as a model file keeps it: the large float tensors (convolution and linear weights) in half
    precision, which halves the file, and the small ones (batch-norm statistics, biases) in full. Loading casts
    back to float32; train evaluates the rounded weights, so reported figures are those of the file.

    ``int8``: the large weight matrices instead as int8 with a float32 scale per output channel (symmetric), a
    quarter of float32; ``restore_state`` turns them back into floats."""
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
    metrics...). An ``.onnx`` file only predicts (``models.runtime.ModelRunner`` runs it)."""
    path = resolve_attr_source(source)
    if path.suffix.lower() == ".onnx":
        raise FaceattrError(
            f"{path}: an ONNX file only predicts; it can't teach, train or be an ensemble member (give its .pt model)"
        )
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
        meta = dict(data.get("meta", {}))
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as err:  # a config or meta malformed
        raise FaceattrError(f"{path}: weights do not match the model config ({first_line(err, 160)})") from None
    model.eval()
    meta.setdefault("name", path.stem)
    meta["source"] = str(path)
    return model, meta
