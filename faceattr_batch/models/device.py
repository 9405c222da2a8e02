"""``--device auto|cpu|cuda`` -> a torch device, checked before any work starts (train, predict, fid, train-gen)."""

from __future__ import annotations

from faceattr_batch.errors import FaceattrError


def resolve_device(name: str):
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise FaceattrError(f"--device {name!r}: use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise FaceattrError("--device cuda: no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
