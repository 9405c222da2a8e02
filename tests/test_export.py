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
from faceattr_batch.io.digest import file_digest
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
    result = runner.invoke(app, ["export-onnx", "-m", str(checkpoint), "-o", str(tmp_path / "cli.onnx"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == {"path": str(tmp_path / "cli.onnx"), "input_size": 40, "opset": 17, "source": str(checkpoint)}
    assert (tmp_path / "cli.onnx").is_file()
    missing = runner.invoke(app, ["export-onnx", "-m", str(tmp_path / "none.pt"), "-o", str(tmp_path / "x.onnx")])
    assert missing.exit_code == 2
    assert "none.pt: no such checkpoint file" in missing.output
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(FaceattrError):
        export_onnx(tmp_path / "none.pt", tmp_path / "y.onnx")
    before = checkpoint.read_bytes()
    onto_source = runner.invoke(app, ["export-onnx", "-m", str(checkpoint), "-o", str(checkpoint)])
    assert onto_source.exit_code == 2 and "name the ONNX file .onnx" in onto_source.output
    assert checkpoint.read_bytes() == before  # the trained weights are not replaced by their export


def test_an_unwritable_output_is_refused_before_the_export_and_the_calibration(checkpoint, tmp_path, monkeypatch):
    """A reviewer's finding: `-o afile/x.onnx --int8` failed with "afile: File exists" after the whole calibration."""
    from faceattr_batch.models import export, quantize

    (tmp_path / "afile").write_text("a file, not a folder")
    monkeypatch.setattr(export, "load_attr_model", lambda *args: pytest.fail("the model was loaded"))
    for write in (export.export_onnx, lambda source, out: quantize.quantize_onnx(source, out, ["a.jpg"], count=1)):
        with pytest.raises(FaceattrError, match=r"^-o .*afile/x.onnx: cannot write there"):
            write(checkpoint, tmp_path / "afile" / "x.onnx")
    (tmp_path / "model.onnx").write_bytes(b"onnx")  # a reviewer's finding: "it can't teach, train or be a member"
    with pytest.raises(FaceattrError, match=r"^-m .*model.onnx: already an ONNX model; export-onnx reads a .pt model"):
        export.export_onnx(tmp_path / "model.onnx", tmp_path / "again.onnx")


# --- the per-user cache of exports: predict with onnxruntime exports a .pt model once, not at every start ---------


def _load_with_onnxruntime(path: Path):
    from faceattr_batch.models.runtime import ModelRunner

    return ModelRunner.load(str(path), torch.device("cpu"), "onnxruntime", 1)


def test_export_is_cached_and_a_bad_cache_file_is_made_again(checkpoint: Path, tmp_path: Path, monkeypatch):
    from faceattr_batch import __version__
    from faceattr_batch.models import runtime

    monkeypatch.setenv("FACEATTR_CACHE_DIR", str(tmp_path / "cache"))
    pixels = face_like_batch(4, 40).transpose(0, 2, 3, 1)  # N x S x S x 3, as ModelRunner takes them
    first = _load_with_onnxruntime(checkpoint)
    assert first.meta["precision"] == "fp32"
    expected = first.infer(pixels)
    cached = tmp_path / "cache" / "onnx" / f"model-{file_digest(checkpoint)}-{__version__}.onnx"
    assert sorted((tmp_path / "cache" / "onnx").iterdir()) == [cached]  # no temporary file left beside it

    real_export, exports = runtime.export_onnx, []
    monkeypatch.setattr(runtime, "export_onnx", lambda *args: exports.append(args) or real_export(*args))

    def same_outputs() -> bool:
        outputs = _load_with_onnxruntime(checkpoint).infer(pixels)
        return all(np.array_equal(outputs[name], expected[name]) for name in expected)

    assert same_outputs() and exports == []  # the second start reads the cache
    cached.write_bytes(cached.read_bytes()[:1000])  # a partial file (a crash of another writer, a full disk)
    assert same_outputs() and len(exports) == 1
    # a whole ONNX file of other weights under that name is not trusted either
    torch.manual_seed(1)
    other_net = AttrNet(AttrNetConfig(input_size=40, widths=(8,), depths=(1,))).eval()
    other = save_attr_model(other_net, tmp_path / "other.pt", {"name": "other"})
    export_onnx(other, cached)
    assert same_outputs() and len(exports) == 2
    assert not np.array_equal(_load_with_onnxruntime(other).infer(pixels)["p_female"], expected["p_female"])


def test_an_export_from_before_the_median_age_is_refused_or_made_again(checkpoint: Path, tmp_path: Path, monkeypatch):
    import onnx

    from faceattr_batch import __version__
    from faceattr_batch.models import runtime

    old = onnx.load(str(export_onnx(checkpoint, tmp_path / "old.onnx")["path"]))
    for node in old.graph.node:  # the graph as earlier versions named it: age_mean
        node.output[:] = ["age_mean" if name == "age_median" else name for name in node.output]
    next(o for o in old.graph.output if o.name == "age_median").name = "age_mean"
    onnx.save(old, str(tmp_path / "old.onnx"))
    with pytest.raises(FaceattrError, match="older faceattr-batch.*export it again"):
        runtime.load_onnx_model(tmp_path / "old.onnx")
    monkeypatch.setenv("FACEATTR_CACHE_DIR", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "onnx" / f"model-{file_digest(checkpoint)}-{__version__}.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes((tmp_path / "old.onnx").read_bytes())  # a cache file left by the older version
    pixels = face_like_batch(4, 40)
    got = _load_with_onnxruntime(checkpoint).infer(pixels.transpose(0, 2, 3, 1))
    model, _ = load_attr_model(checkpoint)
    with torch.inference_mode():
        want = model.infer(torch.from_numpy(pixels)).age_median.numpy()
    assert np.abs(got["age_median"] - want).max() <= 1e-4
    names = [o.name for o in onnx.load(str(cached)).graph.output]
    assert "age_median" in names and "age_mean" not in names  # exported again over it


def test_an_unwritable_cache_still_predicts(checkpoint: Path, tmp_path: Path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FACEATTR_CACHE_DIR", str(blocker))
    runner = _load_with_onnxruntime(checkpoint)
    assert runner.runtime == "onnxruntime" and runner.infer(face_like_batch(2, 40).transpose(0, 2, 3, 1))
    assert "ONNX cache not written" in caplog.text and blocker.read_text() == "not a folder"


def test_two_processes_starting_at_once_share_one_cache_file(checkpoint: Path, tmp_path: Path):
    import os
    import subprocess
    import sys

    code = (
        "import sys, torch; from faceattr_batch.models.runtime import ModelRunner\n"
        "print(ModelRunner.load(sys.argv[1], torch.device('cpu'), 'onnxruntime', 1).runtime)"
    )
    env = {**os.environ, "FACEATTR_CACHE_DIR": str(tmp_path / "cache")}
    starts = [
        subprocess.Popen([sys.executable, "-c", code, str(checkpoint)], env=env, text=True, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [start.communicate(timeout=300)[0].strip() for start in starts] == ["onnxruntime"] * 2
    files = list((tmp_path / "cache" / "onnx").iterdir())
    assert len(files) == 1 and ort.InferenceSession(str(files[0])).get_modelmeta().custom_metadata_map


# --- int8: onnxruntime's static quantization, calibrated on chips --------------------------------------------------


def test_int8_graph_is_quantized_keeps_the_metadata_and_predict_uses_it(checkpoint: Path, tmp_path: Path, monkeypatch):
    from conftest import make_faces

    from faceattr_batch.data.inputs import list_images
    from faceattr_batch.models.export import QUANTIZATION, SOURCE_DIGEST
    from faceattr_batch.models.quantize import quantize_onnx

    monkeypatch.setenv("FACEATTR_CACHE_DIR", str(tmp_path / "cache"))
    beside = checkpoint.with_suffix(".onnx")
    make_faces(tmp_path / "faces", 40)
    summary = quantize_onnx(checkpoint, beside, list_images(tmp_path / "faces"), count=33)  # 3 batches of 11
    assert summary["quantization"] == "int8 static QDQ, per-channel 7-bit weights, 33 calibration chips (percentile)"
    proto = onnx.load(str(beside))
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 3
    properties = {entry.key: entry.value for entry in proto.metadata_props}
    export_onnx(checkpoint, tmp_path / "fp32.onnx")
    fp32 = {entry.key: entry.value for entry in onnx.load(str(tmp_path / "fp32.onnx")).metadata_props}
    assert properties == {**fp32, QUANTIZATION: summary["quantization"]}

    pixels = face_like_batch(16, 40)
    int8 = dict(zip(OUTPUT_NAMES, ort.InferenceSession(str(beside)).run(None, {"pixels": pixels}), strict=True))
    model, _ = load_attr_model(checkpoint)
    with torch.inference_mode():
        want = dict(zip(OUTPUT_NAMES, (t.numpy() for t in model.infer(torch.from_numpy(pixels))), strict=True))
    graph = proto.graph
    after_quantized = {name for node in graph.node if node.op_type == "DequantizeLinear" for name in node.output}
    tail_ops = {"Sigmoid", "Softmax", "CumSum"}  # the calibrated outputs are computed in float
    assert {n.op_type for n in graph.node if after_quantized.intersection(n.input)}.isdisjoint(tail_ops)
    assert tail_ops <= {n.op_type for n in graph.node}
    moved = np.abs(int8["p_female"] - want["p_female"]).max()
    assert 0 < moved < 0.1  # rounded, not another model
    assert np.abs(int8["age_median"] - want["age_median"]).max() < 0.5  # measured 0.009 with the float tail
    runner = _load_with_onnxruntime(checkpoint)  # the int8 file beside the .pt, made from its weights
    assert runner.model.properties[QUANTIZATION] and runner.model.properties[SOURCE_DIGEST] == fp32[SOURCE_DIGEST]
    assert runner.meta["precision"] == "int8"  # predict's summary and resume check say so
    assert not (tmp_path / "cache").exists()  # nothing exported


OLD_INT8 = "int8 static QDQ, per-channel weights, 512 calibration chips (percentile)"  # files before 2026-12-05
NEW_INT8 = "int8 static QDQ, per-channel 7-bit weights, 512 calibration chips (percentile)"


@pytest.mark.parametrize(
    ("quantization", "cpu_lacks_vnni", "warned"),
    [(OLD_INT8, True, True), (OLD_INT8, False, False), (NEW_INT8, True, False), (None, True, False)],
)
def test_a_full_range_int8_file_is_named_on_a_cpu_where_it_saturates(
    checkpoint: Path, tmp_path: Path, monkeypatch, caplog, quantization, cpu_lacks_vnni, warned
):
    from faceattr_batch.models import runtime
    from faceattr_batch.models.export import QUANTIZATION

    path = tmp_path / "user.onnx"
    export_onnx(checkpoint, path)
    if quantization:
        proto = onnx.load(str(path))
        proto.metadata_props.add(key=QUANTIZATION, value=quantization)
        onnx.save(proto, str(path))
    monkeypatch.setattr(runtime, "lacks_vnni", lambda: cpu_lacks_vnni)
    with caplog.at_level("WARNING", logger=runtime.__name__):
        model, _ = runtime.load_onnx_model(path)
    assert model.config.input_size == 40  # loaded and used either way: a warning, not an error
    expected = [f"{path}: int8 with full-range weights, which saturate on this CPU (no VNNI)"] if warned else []
    assert [record.getMessage().split(" and read")[0] for record in caplog.records] == expected


@pytest.mark.parametrize(
    ("machine", "cpuinfo", "lacking"),
    [
        ("x86_64", "flags\t\t: fpu sse2 avx2 fma avx512f\n", True),
        ("x86_64", "flags\t\t: fpu avx2 avx512f avx512_vnni\n", False),
        ("AMD64", "flags\t\t: avx2 avx_vnni\n", False),
        ("aarch64", "Features\t: fp asimd\n", False),  # onnxruntime's ARM kernels do not saturate so
        ("x86_64", None, False),  # no /proc/cpuinfo (not Linux): not known to lack it
    ],
)
def test_lacks_vnni_reads_the_cpu_flags(tmp_path: Path, monkeypatch, machine, cpuinfo, lacking):
    from faceattr_batch.models import device

    monkeypatch.setattr(device.platform, "machine", lambda: machine)
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(f"processor\t: 0\n{cpuinfo}")
    assert device.lacks_vnni(path) is lacking


def test_calibration_chips_sample_the_images(tmp_path: Path):
    from conftest import make_faces

    from faceattr_batch.data.inputs import list_images
    from faceattr_batch.models.quantize import calibration_chips

    make_faces(tmp_path / "faces", 12)
    paths = list_images(tmp_path / "faces")
    chips = calibration_chips(paths, 40, 5)
    assert chips.shape == (5, 3, 40, 40) and chips.dtype == np.uint8
    assert np.array_equal(chips, calibration_chips(paths, 40, 5))  # seeded
    assert calibration_chips(paths, 40, 100).shape[0] == 12
    with pytest.raises(FaceattrError, match="holds none"):
        calibration_chips([], 40, 5)
    (tmp_path / "faces" / "broken.jpg").write_bytes(b"not an image")
    with_broken = list_images(tmp_path / "faces")
    assert calibration_chips(with_broken, 40, 100).shape[0] == 12  # the one that does not decode is left out
    with pytest.raises(FaceattrError, match=r"none of the 1 sampled images decodes \(.*broken.jpg: not an image"):
        calibration_chips([str(tmp_path / "faces" / "broken.jpg")], 40, 5)


@pytest.mark.parametrize(("chips", "size"), [(512, 16), (300, 15), (257, 1), (7, 7)])
def test_calibration_batches_are_all_one_size(chips: int, size: int):
    from faceattr_batch.models.quantize import calibration_batches

    batches = calibration_batches(np.arange(chips * 2).reshape(chips, 2))
    assert {len(batch) for batch in batches} == {size}
    assert np.array_equal(np.concatenate(batches), np.arange(chips * 2).reshape(chips, 2))


def test_cli_int8_export_and_a_folder_without_images(checkpoint: Path, tmp_path: Path):
    from conftest import make_faces

    make_faces(tmp_path / "faces", 20)
    out = tmp_path / "int8.onnx"
    runner = CliRunner()
    args = ["export-onnx", "-m", str(checkpoint), "-o", str(out), "--int8", str(tmp_path / "faces")]
    args += ["--int8-chips", "8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (input uint8 N x 3 x 40 x 40; int8 static QDQ, per-channel 7-bit weights, 8 calibration" in (
        " ".join(result.stdout.split())
    )
    assert len(result.stdout.strip().splitlines()) <= 2  # the summary alone, no calibration prints of onnxruntime
    assert "QuantizeLinear" in {node.op_type for node in onnx.load(str(out)).graph.node}
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["export-onnx", "-o", str(tmp_path / "e.onnx"), "--int8", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "no image files found" in empty.output and not (tmp_path / "e.onnx").exists()


@pytest.mark.parametrize("name", ["default", "fast"])
def test_shipped_int8_graphs_read_real_faces_as_their_weights_do_on_this_cpu(shared_utkface: Path, name: str):
    """onnxruntime's int8 kernels differ between CPUs: where there is no VNNI (AVX2 alone) its u8 x s8 products
    saturate 16-bit sums, which made the default's first int8 file read faces of 40 and over 6.5 years younger
    than its weights did (150 validation faces; on AVX-512 VNNI CPUs it had matched). The shipped graphs are
    quantized with 7-bit weights (``models.quantize``), which cannot saturate; this holds them to their weights
    on whatever CPU runs the tests, on real faces of every age."""
    from faceattr_batch.data.decode import load_chip
    from faceattr_batch.data.labels import parse_names
    from faceattr_batch.models.runtime import ModelRunner

    names = sorted(p.name for p in shared_utkface.iterdir())
    ages = parse_names(names)["age"].fill_null(0).to_numpy()
    rng = np.random.default_rng(0)
    chosen = [names[i] for i in rng.choice(np.flatnonzero(ages >= 40), 48, replace=False)]
    chosen += [names[i] for i in rng.choice(np.flatnonzero(ages < 40), 48, replace=False)]
    cpu = torch.device("cpu")
    int8_runner = ModelRunner.load(name, cpu, "onnxruntime", 2)  # what predict runs on CPUs
    assert int8_runner.meta["precision"] == "int8"
    pixels = np.stack([load_chip(shared_utkface / n, int8_runner.input_size) for n in chosen])
    want = ModelRunner.load(name, cpu, "torch", 2).infer(pixels)
    int8 = int8_runner.infer(pixels)
    age_moved = int8["age_median"] - want["age_median"]
    assert abs(age_moved.mean()) < 0.5 and np.abs(age_moved).mean() < 1.0, age_moved
    assert np.abs(int8["p_female"] - want["p_female"]).max() < 0.2
    assert (int8["race_probs"].argmax(1) == want["race_probs"].argmax(1)).mean() >= 0.95


def test_an_onnx_file_whose_input_is_not_exports_is_refused_at_load(checkpoint: Path, tmp_path: Path):
    import onnx

    from faceattr_batch.models.runtime import OnnxAttrModel

    export_onnx(checkpoint, tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    for axis, name in ((2, "H"), (3, "W")):  # a graph of any size: predict would not know what to feed it
        proto.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = name
    onnx.save(proto, str(tmp_path / "any_size.onnx"))
    with pytest.raises(FaceattrError, match=r"any_size.onnx: ONNX input pixels: tensor\(uint8\) \[.*'H', 'W'\] is not"):
        OnnxAttrModel(tmp_path / "any_size.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    config = next(entry for entry in proto.metadata_props if entry.key == "config")
    config.value = json.dumps({**json.loads(config.value), "input_size": 64})
    onnx.save(proto, str(tmp_path / "other_size.onnx"))
    with pytest.raises(FaceattrError, match="other_size.onnx: its metadata says 64 px, its graph takes 40"):
        OnnxAttrModel(tmp_path / "other_size.onnx")
    # reviewer's findings, each a traceback before: a config that is not JSON, a race output of other classes
    config.value = "{not json"
    onnx.save(proto, str(tmp_path / "bad_config.onnx"))
    with pytest.raises(FaceattrError, match="bad_config.onnx: its config property is no model config"):
        OnnxAttrModel(tmp_path / "bad_config.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))  # race_probs cut to its first 3 classes (a model of other races)
    for node in proto.graph.node:
        node.output[:] = ["race_five" if name == "race_probs" else name for name in node.output]
    ends = onnx.helper.make_tensor("ends", onnx.TensorProto.INT64, [2], [2**31, 3])
    starts = onnx.helper.make_tensor("starts", onnx.TensorProto.INT64, [2], [0, 0])
    proto.graph.initializer.extend([starts, ends])
    proto.graph.node.append(onnx.helper.make_node("Slice", ["race_five", "starts", "ends"], ["race_probs"]))
    race = next(output for output in proto.graph.output if output.name == "race_probs")
    race.type.tensor_type.shape.dim[1].dim_value = 3
    onnx.save(proto, str(tmp_path / "three_races.onnx"))
    with pytest.raises(FaceattrError, match=r"three_races.onnx: ONNX output race_probs is \['batch', 3\], not N x 5"):
        OnnxAttrModel(tmp_path / "three_races.onnx")


def test_int8_calibrates_an_ensemble_on_fewer_chips_by_default(checkpoint: Path, tmp_path: Path):
    """A reviewer's finding: the default 512 chips need about 28 GB for the shipped ensemble (60 MB a chip) and
    the process was killed without a message; the shipped ensemble's own int8 file used 128."""
    from faceattr_batch.models.quantize import default_chips

    export_onnx(checkpoint, tmp_path / "one.onnx")
    assert default_chips(onnx.load(str(tmp_path / "one.onnx"))) == 512
    ensemble = onnx.ModelProto()
    entry = ensemble.metadata_props.add()
    entry.key, entry.value = "config", json.dumps({"input_size": 128, "backbone": "ensemble", "members": []})
    assert default_chips(ensemble) == 128
    help_text = CliRunner().invoke(app, ["export-onnx", "--help"], terminal_width=200).output
    assert "512; 128 for an ensemble" in " ".join(help_text.split())
