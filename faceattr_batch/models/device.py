"""``--device auto|cpu|cuda`` -> a torch device, checked before any work starts (train, predict, fid, train-gen);
and the count of cores this process may use."""

from __future__ import annotations

import os

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


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
