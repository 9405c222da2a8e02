"""``--device auto|cpu|cuda`` -> a torch device, checked before any work starts (train, predict, fid, train-gen);
the count of cores this process may use; whether the CPU lacks VNNI."""

from __future__ import annotations

import os
import platform
from pathlib import Path

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


def lacks_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True on an x86 CPU whose flags (Linux's ``cpuinfo``) show no VNNI (``avx512_vnni`` or ``avx_vnni``): there
    onnxruntime's uint8 x int8 kernel adds pairs of products in 16 bits, which full-range int8 weights saturate
    (``models.quantize``). False where VNNI is present or the flags cannot be read."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        described = cpuinfo.read_text()
    except OSError:
        return False
    return "flags" in described and "vnni" not in described
