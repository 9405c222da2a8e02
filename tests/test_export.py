"""export-onnx: a valid ONNX file whose outputs equal torch's within 1e-4, with its preprocessing in metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.errors import FaceattrError
from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig
from faceattr_batch.models.export import OUTPUT_NAMES, export_onnx
from faceattr_batch.models.registry import load_attr_model, save_attr_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[onnx]')")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = AttrNet(AttrNetConfig(input_size=40, widths=(8, 16, 24), depths=(1, 1, 1), tta_flip=True))
    # Make the BatchNorm statistics and temperatures non-trivial, as in a trained model.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.temperatures.copy_(torch.tensor([1.3, 0.8, 1.7]))
    return save_attr_model(model.eval(), tmp_path / "model.pt", {"name": "test"})


def face_like_batch(n: int, size: int) -> np.ndarray:
    """Smooth gradients plus noise: closer to real chips than uniform noise, still made here."""
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 1, size)
    base = 60 + 150 * np.outer(ramp, 1 - ramp)[None, None] * rng.uniform(0.5, 1.5, (n, 3, 1, 1))
    return np.clip(base + rng.normal(0, 12, (n, 3, size, size)), 0, 255).astype(np.uint8)


def test_onnx_outputs_equal_torch(checkpoint: Path, tmp_path: Path):
    summary = export_onnx(checkpoint, tmp_path / "m.onnx")
    assert summary["input_size"] == 40
    model, _ = load_attr_model(checkpoint)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 7, 33):  # dynamic batch axis
        pixels = face_like_batch(n, 40)
        got = session.run(None, {"pixels": pixels})
        with torch.inference_mode():
            want = model.infer(torch.from_numpy(pixels))
        for name, a, b in zip(OUTPUT_NAMES, got, want, strict=True):
            assert a.shape == tuple(b.shape), name
            assert np.abs(a - b.numpy()).max() <= 1e-4, name


def test_onnx_metadata_documents_preprocessing(checkpoint: Path, tmp_path: Path):
    export_onnx(checkpoint, tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    props = {p.key: p.value for p in proto.metadata_props}
    assert "40 x 40" in props["preprocessing"]
    assert json.loads(props["races"]) == ["White", "Black", "Asian", "Indian", "Others"]
    assert json.loads(props["config"])["tta_flip"] is True


def test_cli_export_and_missing_source(checkpoint: Path, tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["export-onnx", "-m", str(checkpoint), "-o", str(tmp_path / "cli.onnx")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.onnx").is_file()
    missing = runner.invoke(app, ["export-onnx", "-m", str(tmp_path / "none.pt"), "-o", str(tmp_path / "x.onnx")])
    assert missing.exit_code == 2
    assert "none.pt: no such checkpoint file" in missing.output
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(FaceattrError):
        export_onnx(tmp_path / "none.pt", tmp_path / "y.onnx")
