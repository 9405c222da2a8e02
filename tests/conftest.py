"""Shared fixtures. Tests that need the real UTKFace chips read ``../shared/data/utkface`` (never a copy)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_UTKFACE = REPO.parent / "shared" / "data" / "utkface"
UTKFACE_COUNT = 18_967


@pytest.fixture(scope="session", autouse=True)
def _own_onnx_cache(tmp_path_factory):
    """ONNX exports go to a folder of this test session's, never the user's cache (subprocesses inherit it)."""
    os.environ["FACEATTR_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def shared_utkface() -> Path:
    """The shared UTKFace folder, or a skip that says why (CI clones have ../shared beside them)."""
    if not SHARED_UTKFACE.is_dir():
        pytest.skip(f"shared UTKFace chips not found at {SHARED_UTKFACE} (expected ../shared/data/utkface)")
    return SHARED_UTKFACE


@pytest.fixture(scope="session")
def tiny_attr_model(tmp_path_factory) -> Path:
    """A tiny random-weight attribute model file (fast; predictions are meaningless but deterministic)."""
    import torch

    from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig
    from faceattr_batch.models.registry import save_attr_model

    torch.manual_seed(0)
    model = AttrNet(AttrNetConfig(input_size=32, widths=(8, 16), depths=(1, 1))).eval()
    path = tmp_path_factory.mktemp("tiny_model") / "tiny.pt"
    return save_attr_model(model, path, {"name": "tiny", "version": "test-1"})


def load_script(name: str):
    """``scripts/NAME.py`` as a module (the scripts are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_faces(folder: Path, count: int, seed: int = 0, size: int = 48) -> list[Path]:
    """``count`` random-noise JPEG chips with UTKFace-style names (ages, genders and races cycle)."""
    import datetime as dt

    import numpy as np
    from PIL import Image

    from faceattr_batch.data.labels import format_name

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stamp = dt.datetime(2017, 1, 1, 12, 0, 0)
    paths = []
    for i in range(count):
        name = format_name((7 * i + 3) % 90 + 1, i % 2, i % 5, stamp + dt.timedelta(seconds=i))
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name, quality=90)
        paths.append(folder / name)
    return paths


# a few-iteration train-gen run of a tiny generator (32 px), checkpoint and grid every 3 iterations
TINY_RUN = dict(
    resolution=32,
    g_width=32,
    d_width=16,
    batch_size=8,
    sample_every=3,
    checkpoint_every=3,
    evaluate=False,
    workers=0,
    progress=False,
)


def interrupt_at_second_grid(monkeypatch):
    """Make train-gen's second sample grid raise KeyboardInterrupt (with grids and checkpoints every 3 iterations:
    after the iteration-3 checkpoint, before the next), as a user's Ctrl-C would; returns the function undoing it."""
    from faceattr_batch.training import gen_grid

    real_save = gen_grid.save_grid
    calls = {"n": 0}

    def crash_on_second_grid(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real_save(*args)

    monkeypatch.setattr(gen_grid, "save_grid", crash_on_second_grid)
    return lambda: monkeypatch.setattr(gen_grid, "save_grid", real_save)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds almost no data (a bomb as far as any header reader knows)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny faces and a 3-iteration train-gen run trained on them, once per test module: (faces folder, RUN_DIR)."""
    from faceattr_batch.pipelines.train_gen import TrainGenOptions
    from faceattr_batch.pipelines.train_gen import run as train_gen

    root = tmp_path_factory.mktemp("generator")
    make_faces(root / "faces", 40)
    train_gen(TrainGenOptions(source=root / "faces", out_dir=root / "base", iterations=3, **TINY_RUN))
    return root / "faces", root / "base"
