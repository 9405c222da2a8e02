"""predict: one row per input, bad files as error rows, labels, runtimes, kill -9 and --resume, CLI codes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import REPO, make_faces, png_header_only
from PIL import Image
from typer.testing import CliRunner

from faceattr_batch import __version__
from faceattr_batch.cli import app
from faceattr_batch.errors import FaceattrError
from faceattr_batch.models.registry import default_weights_path
from faceattr_batch.models.runtime import ModelRunner
from faceattr_batch.pipelines import predict as predict_module
from faceattr_batch.pipelines.predict import PredictOptions, run
from faceattr_batch.schema import MODEL_KEY, OPTIONS_KEY, OUTPUT_COLUMNS, VERSION_KEY

FAST = {"workers": 1, "threads": 1, "runtime": "torch", "progress": False}


def _run(inputs, out, model, **kwargs):
    options = {**FAST, "batch_size": 8, "shard_size": 8, **kwargs}
    return run(PredictOptions(inputs=tuple(str(i) for i in inputs), output=out, model=str(model), **options))


def _bad_files(folder: Path, monkeypatch) -> dict[str, str]:
    """One file per bad case -> the start of its expected error reason."""
    folder.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good, "JPEG")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (folder / "text.png").write_text("this is not an image")
    (folder / "bomb.png").write_bytes(png_header_only(40_000, 40_000))
    os.symlink(folder / "gone.jpg", folder / "broken_link.jpg")
    locked = folder / "locked.jpg"
    locked.write_bytes(good.getvalue())
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads mode-000 files: make the open fail the way it fails for a user
        real_open = Image.open

        def deny(path, *args, **kwargs):
            if str(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(Image, "open", deny)
    return {
        "zero.jpg": "empty file (0 bytes)",
        "truncated.jpg": "unreadable image",
        "text.png": "not an image",
        "bomb.png": "decompression bomb guard",
        "broken_link.jpg": "file not found (or a broken symlink)",
        "locked.jpg": "permission denied",
    }


def test_every_bad_file_is_a_row_with_its_reason_and_no_predictions(tmp_path, tiny_attr_model, monkeypatch):
    make_faces(tmp_path / "in", 5)
    expected = _bad_files(tmp_path / "in", monkeypatch)
    out = tmp_path / "out.parquet"
    result = _run([tmp_path / "in"], out, tiny_attr_model, workers=0)
    frame = pl.read_parquet(out)
    assert frame.columns == list(OUTPUT_COLUMNS)
    assert frame.height == result.images == 11 and result.predicted == 5
    bad = frame.filter(pl.col("error").is_not_null())
    reasons = {Path(p).name: e for p, e in bad.select("path", "error").iter_rows()}
    assert set(reasons) == set(expected)
    for name, start in expected.items():
        assert reasons[name].startswith(start), (name, reasons[name])
    predictions = [c for c in OUTPUT_COLUMNS if c.startswith(("p_", "pred_", "age_"))]
    assert bad.select(predictions).null_count().row(0) == (0,) * 0 + (6,) * len(predictions)
    assert sum(result.errors.values()) == 6
    assert result.errors["unreadable image"] == 1


def test_image_formats_and_modes_decode(tmp_path, tiny_attr_model):
    folder = tmp_path / "in"
    folder.mkdir()
    rgb = np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    base.convert("L").save(folder / "gray.png")
    base.convert("RGBA").save(folder / "rgba.png")
    base.convert("P").save(folder / "palette.png")
    base.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(folder / "sixteen.png")
    base.save(folder / "plain.webp")
    base.save(folder / "plain.bmp")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    base.save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    base.transpose(Image.Transpose.ROTATE_270).save(folder / "rotated_by_hand.jpg", quality=95)
    out = tmp_path / "out.parquet"
    result = _run([folder], out, tiny_attr_model)
    frame = pl.read_parquet(out)
    assert result.predicted == frame.height == 9, frame.filter(pl.col("error").is_not_null()).to_dicts()
    by_name = {Path(r["path"]).name: r for r in frame.to_dicts()}
    a, b = by_name["exif_rotated.jpg"], by_name["rotated_by_hand.jpg"]
    assert abs(a["pred_age"] - b["pred_age"]) < 1.0 and abs(a["p_female"] - b["p_female"]) < 0.02
    probs = frame.select(pl.sum_horizontal("p_white", "p_black", "p_asian", "p_indian", "p_others")).to_series()
    assert np.allclose(probs.to_numpy(), 1.0, atol=1e-4)
    assert frame.select((pl.col("age_low") <= pl.col("age_high")).all()).item()


def test_labels_from_names_and_from_an_index(tmp_path, tiny_attr_model):
    paths = make_faces(tmp_path / "in", 6)
    plain = tmp_path / "in" / "holiday.jpg"
    Image.new("RGB", (32, 32), "white").save(plain)
    out = tmp_path / "names.parquet"
    result = _run([tmp_path / "in"], out, tiny_attr_model)
    frame = pl.read_parquet(out).sort("path")
    first = frame.filter(pl.col("path") == str(paths[0])).row(0, named=True)
    assert (first["true_age"], first["true_gender"], first["true_race"], first["true_age_band"]) == (4, 0, 0, "3-9")
    assert (first["true_gender_label"], first["true_race_label"]) == ("male", "White")
    assert first["age_error"] == pytest.approx(first["pred_age"] - 4)
    assert first["gender_correct"] == (first["pred_gender"] == 0)
    assert first["pred_gender_label"] == ("female" if first["p_female"] >= 0.5 else "male")
    assert first["pred_race_label"] == ("White", "Black", "Asian", "Indian", "Others")[first["pred_race"]]
    # one label convention (schema.py): integer codes beside Enum labels, as `index` writes them
    assert frame.schema["true_gender"] == pl.Int8 and frame.schema["pred_race"] == pl.Int8
    assert frame.schema["true_gender_label"] == pl.Enum(["male", "female"])
    assert frame.schema["pred_race_label"] == pl.Enum(["White", "Black", "Asian", "Indian", "Others"])
    assert isinstance(frame.schema["pred_age_band"], pl.Enum) and isinstance(frame.schema["true_age_band"], pl.Enum)
    assert frame.filter(pl.col("path") == str(plain)).select("true_age", "true_gender").row(0) == (None, None)
    assert result.labelled == 6 and result.metrics["n_age"] == 6

    index = tmp_path / "index.parquet"
    pl.DataFrame(
        {"path": ["holiday.jpg", paths[1].name], "age": [33, 50], "gender": [1, 1], "race": [2, None]},
        schema_overrides={"age": pl.Int64, "gender": pl.Int64, "race": pl.Int64},
    ).write_parquet(index, metadata={"faceattr_batch.root": str(tmp_path / "in")})
    out = tmp_path / "index_labels.parquet"
    result = _run([tmp_path / "in"], out, tiny_attr_model, labels=index)
    frame = pl.read_parquet(out)
    rows = {Path(r["path"]).name: r for r in frame.to_dicts()}
    assert (rows["holiday.jpg"]["true_age"], rows["holiday.jpg"]["true_race_label"]) == (33, "Asian")
    assert (rows[paths[1].name]["true_age"], rows[paths[1].name]["true_race"]) == (50, None)
    assert rows[paths[0].name]["true_age"] is None  # the index wins; it does not list this file
    assert result.labelled == 2 and result.settings["labels"].startswith("index:")
    # the index given as the input is also the label source
    from_index = _run([index], tmp_path / "from_index.parquet", tiny_attr_model)
    assert from_index.images == 2 and from_index.labelled == 2


def test_batch_size_and_runtime_do_not_change_the_values(tmp_path, tiny_attr_model):
    make_faces(tmp_path / "in", 21)
    a = _run([tmp_path / "in"], tmp_path / "a.parquet", tiny_attr_model, batch_size=4)
    b = _run([tmp_path / "in"], tmp_path / "b.parquet", tiny_attr_model, batch_size=32, workers=0)
    c = _run([tmp_path / "in"], tmp_path / "c.parquet", tiny_attr_model, runtime="onnxruntime")
    frames = [pl.read_parquet(r.output) for r in (a, b, c)]
    assert c.model["runtime"] == "onnxruntime" and a.model["runtime"] == "torch"
    numeric = ["p_female", "p_white", "p_others", "pred_age", "age_low", "age_high"]
    for other in frames[1:]:
        assert other["path"].to_list() == frames[0]["path"].to_list()
        diff = (other.select(numeric) - frames[0].select(numeric)).select(pl.all().abs().max()).row(0)
        assert max(diff) < 1e-3, diff
        assert other["pred_race_label"].to_list() == frames[0]["pred_race_label"].to_list()


def test_an_exported_onnx_file_is_a_model_source(tmp_path, tiny_attr_model):
    from faceattr_batch.models.export import export_onnx

    make_faces(tmp_path / "in", 5)
    onnx_file = tmp_path / "tiny.onnx"
    export_onnx(tiny_attr_model, onnx_file)
    result = _run([tmp_path / "in"], tmp_path / "o.parquet", onnx_file, runtime="auto")
    assert result.model["runtime"] == "onnxruntime" and result.predicted == 5
    # the Parquet records the tool, the run's options and the model (the graph's exporter among its metadata)
    saved = {key.decode(): value.decode() for key, value in pq.read_schema(tmp_path / "o.parquet").metadata.items()}
    assert saved[VERSION_KEY] == __version__
    assert json.loads(saved[OPTIONS_KEY])["runtime"] == "auto"
    assert json.loads(saved[MODEL_KEY])["exported_by"] == __version__
    with pytest.raises(FaceattrError, match="runs with onnxruntime"):
        _run([tmp_path / "in"], tmp_path / "o.parquet", onnx_file, runtime="torch")


def test_on_cpus_half_the_cores_decode_and_the_model_threads_use_all_without_spinning(
    tmp_path, tiny_attr_model, monkeypatch
):
    """split_cores: decode workers cores // 2 and model threads every core on the CPU (a GPU: every core decodes,
    one thread feeds it); given values pass through. The onnxruntime session's idle threads do not spin."""
    from faceattr_batch.models import runtime
    from faceattr_batch.models.export import export_onnx

    for cores, cpu in ((1, (1, 1)), (2, (1, 2)), (8, (4, 8))):
        monkeypatch.setattr(runtime, "available_cores", lambda cores=cores: cores)
        assert runtime.split_cores("cpu", None, None) == cpu
        assert runtime.split_cores("cuda", None, None) == (cores, 1)
        assert runtime.split_cores("cpu", 0, 3) == (0, 3)
    export_onnx(tiny_attr_model, tmp_path / "tiny.onnx")
    session = runtime.OnnxAttrModel(tmp_path / "tiny.onnx", 2).session
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.get_session_options().intra_op_num_threads == 2


def test_bad_options_fail_before_work(tmp_path, tiny_attr_model):
    make_faces(tmp_path / "in", 2)
    with pytest.raises(FaceattrError, match="must be a .parquet"):
        _run([tmp_path / "in"], tmp_path / "out.csv", tiny_attr_model)
    with pytest.raises(FaceattrError, match="--runtime 'tf'"):
        _run([tmp_path / "in"], tmp_path / "out.parquet", tiny_attr_model, runtime="tf")
    with pytest.raises(FaceattrError, match="none.parquet: no such file"):
        _run([tmp_path / "in"], tmp_path / "out.parquet", tiny_attr_model, labels=tmp_path / "none.parquet")


# --- kill -9, resume, atomic output ------------------------------------------------------------------------


def _cli(args: list[str], kill: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FACEATTR_BATCH_TEST_KILL"}
    if kill:
        env["FACEATTR_BATCH_TEST_KILL"] = kill
    # the timeout turns a hang into a failure: a killed predict's orphaned decode worker once held stdout open
    return subprocess.run(
        [sys.executable, "-m", "faceattr_batch", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )


def test_kill9_then_resume_gives_each_input_once_with_equal_values(tmp_path, tiny_attr_model):
    make_faces(tmp_path / "in", 37)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff")  # one bad row travels through resume too
    reference = _run([tmp_path / "in"], tmp_path / "reference.parquet", tiny_attr_model, batch_size=4)
    out = tmp_path / "out.parquet"
    args = ["predict", str(tmp_path / "in"), "-o", str(out), "-m", str(tiny_attr_model), "--runtime", "torch"]
    args += ["--faces", "chips", "--workers", "1", "--threads", "1", "-b", "4", "--shard-size", "8", "--json"]

    killed = _cli(args, kill="part:1")  # dies with shard 0 finished and shard 1 half written
    assert killed.returncode == -9, killed.stderr
    assert not out.exists()
    parts = out.with_name(out.name + ".parts")
    assert sorted(p.name for p in parts.iterdir()) == [
        "manifest.json", "part-00000.done.json", "part-00000.parquet", "part-00001.parquet.tmp",
    ]  # fmt: skip

    out.write_bytes(b"an older file under the output name")
    killed = _cli([*args, "--resume"], kill="finalize")  # dies while writing the final file
    assert killed.returncode == -9, killed.stderr
    assert out.read_bytes() == b"an older file under the output name"  # never a half-written file

    done = _cli([*args, "--resume"])
    assert done.returncode == 0, done.stderr
    assert '"shards_skipped": 5' in done.stdout  # all five shards were finished before the finalize kill
    assert not parts.exists() and not list(tmp_path.glob(".out.*"))
    resumed, expected = pl.read_parquet(out), pl.read_parquet(reference.output)
    assert resumed["path"].is_unique().all() and resumed.height == 38
    assert resumed.equals(expected)

    again = _cli([*args, "--resume"])  # a finished output: nothing to do
    assert again.returncode == 0 and '"processed": 0' in again.stdout


def test_resume_with_another_model_is_refused(tmp_path, tiny_attr_model):
    make_faces(tmp_path / "in", 12)
    out = tmp_path / "out.parquet"
    args = ["predict", str(tmp_path / "in"), "-o", str(out), "-m", str(tiny_attr_model), "--runtime", "torch"]
    args += ["--workers", "0", "-b", "4", "--shard-size", "4", "--json"]
    assert _cli(args, kill="shard:0").returncode == -9
    other = _cli([*args[:-1], "--runtime", "onnxruntime", "--json", "--resume"])
    assert other.returncode == 2 and "different inputs or options (runtime)" in other.stderr


def test_resume_with_another_file_of_the_same_name_and_version_is_refused(tmp_path, tiny_attr_model):
    """A reviewer's finding: every trained model was "faceattr-attr 0.1.0", so a resume with another training's file
    went on and wrote one output of two models."""
    import torch

    from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig
    from faceattr_batch.models.registry import save_attr_model

    torch.manual_seed(1)
    other = AttrNet(AttrNetConfig(input_size=32, widths=(8, 16), depths=(1, 1))).eval()
    twin = save_attr_model(other, tmp_path / "twin.pt", {"name": "tiny", "version": "test-1"})  # the fixture's meta
    make_faces(tmp_path / "in", 12)
    args = ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out.parquet"), "--runtime", "torch"]
    args += ["--workers", "0", "-b", "4", "--shard-size", "4", "--json"]
    assert _cli([*args, "-m", str(tiny_attr_model)], kill="shard:0").returncode == -9
    resumed = _cli([*args, "-m", str(twin), "--resume"])
    assert resumed.returncode == 2 and "different inputs or options (model_digest)" in resumed.stderr


# --- CLI ---------------------------------------------------------------------------------------------------


def test_cli_exit_codes(tmp_path, tiny_attr_model):
    make_faces(tmp_path / "in", 3)
    (tmp_path / "in" / "zero.jpg").write_bytes(b"")
    runner = CliRunner()
    base = ["predict", str(tmp_path / "in"), "-m", str(tiny_attr_model), "--workers", "0", "--runtime", "torch"]
    base += ["--faces", "chips"]  # the noise "chips" have no face a detector would find
    ok = runner.invoke(app, [*base, "-o", str(tmp_path / "a.parquet"), "--report", str(tmp_path / "rep")])
    assert ok.exit_code == 0, ok.output
    assert "errors by reason" in ok.output and "empty file (0 bytes)" in ok.output and "MAE" in ok.output
    assert (tmp_path / "rep" / "report.html").is_file()
    strict = runner.invoke(app, [*base, "-o", str(tmp_path / "b.parquet"), "--strict", "--json"])
    assert strict.exit_code == 1
    missing = runner.invoke(app, ["predict", str(tmp_path / "nope"), "-o", str(tmp_path / "c.parquet")])
    assert missing.exit_code == 2 and "no such file or folder" in missing.output
    rebuilt = runner.invoke(app, ["report", str(tmp_path / "a.parquet"), "--report", str(tmp_path / "rep2")])
    assert rebuilt.exit_code == 0 and (tmp_path / "rep2" / "report.html").is_file()


@pytest.mark.slow
def test_shared_utkface_with_the_default_weights(tmp_path, shared_utkface):
    if not default_weights_path().is_file():
        pytest.skip(f"default weights not shipped yet ({default_weights_path()})")
    from faceattr_batch.metrics import attributes as metrics

    # a fixed 1,000 of the 18,967 shared chips (all of them took 15 minutes of CI): linked, not copied
    chips = tmp_path / "chips"
    chips.mkdir()
    for name in sorted(os.listdir(shared_utkface))[::18][:1000]:
        (chips / name).symlink_to(shared_utkface / name)
    out = tmp_path / "utk.parquet"
    result = run(PredictOptions(inputs=(str(chips),), output=out, progress=False, report_dir=tmp_path / "r"))
    frame = pl.read_parquet(out)
    assert frame.height == 1000 == result.images
    assert frame["path"].is_unique().all()
    # metrics from an independent computation over the file, without the chips the default was trained on
    frame = frame.filter(pl.col("training_role").cast(pl.String).ne_missing("train"))
    assert result.training["train"] == 1000 - frame.height > 800  # the split holds 90% of the faces for training
    labelled = frame.filter(pl.col("true_age").is_not_null() & pl.col("pred_age").is_not_null())
    mae = float(np.mean(np.abs(labelled["pred_age"].to_numpy() - labelled["true_age"].to_numpy())))
    assert result.metrics["age_mae"] == pytest.approx(mae, rel=1e-5)
    both = frame.filter(pl.col("true_gender").is_not_null() & pl.col("pred_gender").is_not_null())
    accuracy = float((both["true_gender"] == both["pred_gender"]).mean())
    assert result.metrics["gender_accuracy"] == pytest.approx(accuracy)
    assert metrics.overall(frame)["n_race"] == result.metrics["n_race"]
    assert accuracy > 0.9 and mae < 6  # its validation faces: a broken model reads far worse


def test_shipped_models_resolve_by_name_unless_a_model_has_that_name(tmp_path, monkeypatch, caplog):
    from faceattr_batch.models.registry import SHIPPED_ATTR_MODELS, load_attr_model, resolve_attr_source

    assert resolve_attr_source(None) == default_weights_path()
    assert resolve_attr_source("default") == default_weights_path()
    assert resolve_attr_source("fast") == default_weights_path(SHIPPED_ATTR_MODELS["fast"])
    assert resolve_attr_source("fast").is_file()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").mkdir()
    (tmp_path / "fast" / "face.jpg").write_bytes(b"")  # a reviewer's finding: a folder of images called fast was
    assert resolve_attr_source("fast") == default_weights_path(SHIPPED_ATTR_MODELS["fast"])  # "not a RUN_DIR"
    (tmp_path / "fast" / "model.pt").write_bytes(b"")
    with caplog.at_level("WARNING"):
        assert resolve_attr_source("fast") == Path("fast") / "model.pt"  # the user's RUN_DIR called fast wins
    assert caplog.messages == ["-m fast: the model at ./fast, not the shipped one (write ./fast to say so)"]
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "model.pt").write_bytes(b"")
    caplog.clear()
    with caplog.at_level("WARNING"):  # no -m: the shipped model, and no warning that said the local one was used
        assert resolve_attr_source(None) == default_weights_path()
    assert caplog.messages == []
    monkeypatch.chdir(tmp_path.parent)
    fast, fast_meta = load_attr_model("fast")
    default, _ = load_attr_model(None)
    assert fast.config.backbone == "resnet"
    # the default averages the 128 px and 96 px Inception networks and the fast CNN (MODEL_CARD.md)
    assert [member.config.input_size for member in default.members] == [128, 96, 80]
    assert default.config.input_size == 128
    assert fast_meta["name"] == "faceattr-attr-fast"


def test_a_run_dir_without_model_pt_is_read_from_its_checkpoint_with_a_warning(tmp_path, caplog):
    """A reviewer's finding: an interrupted run's RUN_DIR (best.pt, last.pt) was read as its best.pt unsaid, a
    training checkpoint, and a tiny run's race accuracy fell from 43% to 20%."""
    from faceattr_batch.models.registry import resolve_attr_source

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"")
    with caplog.at_level("WARNING"):
        assert resolve_attr_source(run_dir) == run_dir / "last.pt"
    assert caplog.messages == [
        f"{run_dir}: an unfinished run (no model.pt): reading its last.pt, a training checkpoint (not calibrated, "
        "no test-time mirror chosen): finish the run with train --resume"
    ]
    (run_dir / "model.pt").write_bytes(b"")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert resolve_attr_source(run_dir) == run_dir / "model.pt"
    assert caplog.messages == []


@pytest.mark.parametrize(("name", "chips"), [("fast", 512), ("default", 128)])
def test_the_shipped_models_run_their_int8_graphs_on_cpus(name, chips):
    """attr_<name>.onnx beside attr_<name>.pt was quantized from these very weights (MODEL_CARD): predict uses it
    on onnxruntime, and the .pt in torch."""
    import torch

    from faceattr_batch.models.runtime import ModelRunner

    pytest.importorskip("onnxruntime")
    runner = ModelRunner.load(name, torch.device("cpu"), "auto", 1)
    assert runner.runtime == "onnxruntime" and runner.meta["precision"] == "int8"
    described = f"int8 static QDQ, per-channel 7-bit weights, {chips} calibration chips (percentile)"
    assert runner.model.properties["quantization"] == described
    assert ModelRunner.load(name, torch.device("cpu"), "torch", 1).meta["precision"] == "fp32"


# --- rough edges: one-line errors, output places checked first, --resume afresh, Ctrl-C ------------------------


def _model_sources(tmp_path: Path) -> dict[str, Path]:
    """A missing model, a corrupt checkpoint and a corrupt ONNX file."""
    corrupt_pt, corrupt_onnx = tmp_path / "corrupt.pt", tmp_path / "corrupt.onnx"
    corrupt_pt.write_bytes(b"PK\x03\x04 not really a torch file")
    corrupt_onnx.write_bytes(b"\x08\x07 not an onnx graph")
    return {"nosuch": tmp_path / "nosuch", "corrupt.pt": corrupt_pt, "corrupt.onnx": corrupt_onnx}


def test_a_missing_or_corrupt_model_is_one_line_exit_2(tmp_path):
    """Rough edge 2: `predict --model nosuch` printed a 46-line traceback (exit 1)."""
    make_faces(tmp_path / "in", 2)
    runner = CliRunner()
    for name, source in _model_sources(tmp_path).items():
        with pytest.raises(FaceattrError, match=name):
            _run([tmp_path / "in"], tmp_path / "out.parquet", source, runtime="auto")
        args = ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out.parquet"), "-m", str(source), "--json"]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (name, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0] and "Traceback" not in result.output, (name, result.stderr)
    assert not (tmp_path / "out.parquet").exists()


def test_output_places_are_checked_before_any_work(tmp_path, tiny_attr_model, monkeypatch):
    """Rough edge 3: `--report DIR` not writable failed only after the whole prediction. (Tests run as root, where
    chmod does not stop writing: a path under a regular file cannot be created by anyone.)"""
    make_faces(tmp_path / "in", 2)
    (tmp_path / "afile").write_text("a file, not a folder")
    loaded = []
    monkeypatch.setattr(ModelRunner, "load", classmethod(lambda cls, *args: loaded.append(args)))
    with pytest.raises(FaceattrError, match=r"^-o .*afile/out.parquet: cannot write there"):
        _run([tmp_path / "in"], tmp_path / "afile" / "out.parquet", tiny_attr_model)
    with pytest.raises(FaceattrError, match=r"^--report .*afile/rep: cannot write there"):
        _run([tmp_path / "in"], tmp_path / "out.parquet", tiny_attr_model, report_dir=tmp_path / "afile" / "rep")
    assert loaded == [] and not list(tmp_path.glob("out.parquet*"))
    index = tmp_path / "index.parquet"
    pl.DataFrame({"path": ["x.jpg"]}).write_parquet(index, metadata={"faceattr_batch.root": str(tmp_path / "in")})
    with pytest.raises(FaceattrError, match=r"^-o .*index.parquet is the input .*index.parquet: the output would"):
        _run([index], tmp_path / "." / "index.parquet", tiny_attr_model)
    labels = tmp_path / "labels.parquet"
    pl.DataFrame({"path": ["x.jpg"], "age": [30]}).write_parquet(labels)
    with pytest.raises(FaceattrError, match=r"^-o .*labels.parquet is --labels: the output would replace it"):
        _run([tmp_path / "in"], labels, tiny_attr_model, labels=labels)
    assert loaded == [] and pl.read_parquet(labels).columns == ["path", "age"] and pl.read_parquet(index).height == 1


def test_a_report_folder_that_would_replace_or_read_the_inputs_is_refused(tmp_path, tiny_attr_model, monkeypatch):
    """A reviewer's finding: `--report photos` wrote its plots over photos/confusion.png and removed
    photos/calibration.png; `-o r/breakdown.parquet --report r` lost the predictions to the breakdown table; a
    report inside the input folder was read as faces by the next run."""
    make_faces(tmp_path / "photos", 2)
    (tmp_path / "photos" / "confusion.png").write_bytes(b"the user's photo")
    loaded = []
    monkeypatch.setattr(ModelRunner, "load", classmethod(lambda cls, *args: loaded.append(args)))
    photos, out = tmp_path / "photos", tmp_path / "out.parquet"
    with pytest.raises(
        FaceattrError, match=r"^--report .*photos is inside the input .*photos: what it writes would be read as faces"
    ):
        _run([photos], out, tiny_attr_model, report_dir=photos)
    with pytest.raises(FaceattrError, match=r"^--report .*photos/report is inside the input .*photos"):
        _run([photos], out, tiny_attr_model, report_dir=photos / "report")
    with pytest.raises(FaceattrError, match=r"^--report .*rep would replace -o \(breakdown.parquet\)"):
        _run([photos], tmp_path / "rep" / "breakdown.parquet", tiny_attr_model, report_dir=tmp_path / "rep")
    with pytest.raises(FaceattrError, match=r"^--report .*photos would replace the input .*confusion.png"):
        _run([photos / "confusion.png"], out, tiny_attr_model, report_dir=photos)
    # -o v.parquet --report v.parquet: the folder was made where the output goes, and the run failed at its end
    with pytest.raises(FaceattrError, match=r"^--report .*v.parquet is -o: name another folder"):
        _run([photos], tmp_path / "v.parquet", tiny_attr_model, report_dir=tmp_path / "v.parquet")
    assert loaded == [] and (photos / "confusion.png").read_bytes() == b"the user's photo"
    assert not (tmp_path / "rep").exists() and not (photos / "report").exists()
    assert not (tmp_path / "v.parquet").exists()


def test_resume_with_nothing_to_resume_says_it_starts_afresh(tmp_path, tiny_attr_model, caplog):
    make_faces(tmp_path / "in", 3)
    with caplog.at_level("WARNING"):
        result = _run([tmp_path / "in"], tmp_path / "out.parquet", tiny_attr_model, resume=True)
    assert result.processed == 3 and pl.read_parquet(result.output).height == 3
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert said == [f"--resume: nothing to resume at {tmp_path / 'out.parquet.parts'}; starting afresh"]


def test_report_with_predict_reads_the_output_once(tmp_path, tiny_attr_model, monkeypatch):
    """`--report` read the output and computed the overall metrics twice (predict's summary, then the report)."""
    make_faces(tmp_path / "in", 6)
    reads = []
    real = predict_module.read_predictions
    monkeypatch.setattr(predict_module, "read_predictions", lambda path: reads.append(path) or real(path))
    result = _run([tmp_path / "in"], tmp_path / "out.parquet", tiny_attr_model, report_dir=tmp_path / "rep")
    assert reads == [tmp_path / "out.parquet"]
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["overall"] == pytest.approx(result.metrics) and saved["images"] == result.images == 6


def test_ctrl_c_stops_quietly_with_exit_130(tmp_path, tiny_attr_model):
    """Rough edge 8: Ctrl-C sometimes printed a 25-line KeyboardInterrupt traceback from a decode worker."""
    make_faces(tmp_path / "in", 400, size=160)
    out = tmp_path / "out.parquet"
    args = [sys.executable, "-m", "faceattr_batch", "predict", str(tmp_path / "in"), "-o", str(out)]
    args += ["-m", str(tiny_attr_model), "--runtime", "torch", "--faces", "chips", "--workers", "2", "-b", "2"]
    # its own process group, and Ctrl-C's default action, as a shell gives a foreground job (a test runner started in
    # a shell's background hands its children SIGINT ignored): Ctrl-C reaches the parent and its workers
    process = subprocess.Popen(
        args, cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    parts = out.with_name(out.name + ".parts")
    deadline = time.monotonic() + 15
    while not any(parts.glob("*.tmp")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # the workers are decoding
    assert process.poll() is None, "predict finished before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:  # hung: leave nothing running
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "interrupted" in stderr


@pytest.mark.slow  # Ray's start-up (about 20 s), over the shared chips
@pytest.mark.ray
def test_faces_auto_runs_on_ray_and_gives_the_local_rows(tmp_path, tiny_attr_model, shared_utkface):
    """Rough edge 12: `--engine ray` changed --faces' default to chips, so the engines gave different rows."""
    pytest.importorskip("ray")
    pytest.importorskip("cv2")
    folder = tmp_path / "in"
    folder.mkdir()
    chips = sorted(shared_utkface.iterdir())[:6]
    photo = Image.new("RGB", (640, 480), (120, 130, 140))  # two faces in a photo: detected, one row each
    for chip, where in ((chips[0], (100, 120)), (chips[3], (360, 140))):
        with Image.open(chip) as face:
            photo.paste(face, where)
    photo.save(folder / "photo.jpg")
    for chip in chips:
        (folder / chip.name).write_bytes(chip.read_bytes())
    options = {"faces": "auto", "batch_size": 4, "shard_size": 8}
    local = _run([folder], tmp_path / "local.parquet", tiny_attr_model, **options)
    on_ray = _run([folder], tmp_path / "ray.parquet", tiny_attr_model, engine="ray", **options)
    a, b = pl.read_parquet(local.output), pl.read_parquet(on_ray.output)
    assert a.filter(pl.col("path") == str(folder / "photo.jpg"))["framing"].to_list() == ["aligned", "aligned"]
    assert a.height == 8 and (a["framing"] == "chip").sum() == 6
    floats = ["p_female", "p_white", "p_black", "p_asian", "p_indian", "p_others", "pred_age", "age_low", "age_high"]
    exact = [c for c in a.columns if c not in (*floats, "age_error")]
    assert a.select(exact).equals(b.select(exact))
    assert (a.select(floats) - b.select(floats)).select(pl.all().abs().max()).max_horizontal().item() <= 1e-5


def test_ages_labelled_as_bins_are_columns_of_the_parquet_and_a_report_rebuilt_alone_measures_them(
    tmp_path, tiny_attr_model
):
    """A reviewer's finding: predict with FairFace's labels measured the age bins; `report` of its Parquet alone
    reported no age at all, without a word (the bins lived in the labels file only)."""
    from faceattr_batch.pipelines import report

    faces = make_faces(tmp_path / "in", 3)
    labels = tmp_path / "fairface.csv"
    bins = ["20-29", "more than 70", "3-9"]
    rows = [f"{path.name},{age_bin},Male,East Asian" for path, age_bin in zip(faces, bins, strict=True)]
    labels.write_text("file,age,gender,race\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out.parquet"
    predicted = _run([tmp_path / "in"], out, tiny_attr_model, labels=labels, include_training=True)
    written = pl.read_parquet(out)
    assert written.columns == list(OUTPUT_COLUMNS)
    labelled = written.select(
        pl.col("path").str.split("/").list.last(), "true_age", "true_age_low", "true_age_high", "true_age_band",
        "true_gender", "true_race",
    )  # fmt: skip
    assert sorted(labelled.rows()) == sorted([
        (faces[0].name, None, 20, 29, "20-29", 0, 2),
        (faces[1].name, None, 70, 120, None, 0, 2),  # "more than 70" spans two bands
        (faces[2].name, None, 3, 9, "3-9", 0, 2),
    ])  # fmt: skip
    alone = report.build(out, tmp_path / "rep", include_training=True, progress=False)
    again = report.build(out, tmp_path / "rep2", labels=labels, include_training=True, progress=False)
    inside = written.select(((pl.col("pred_age") + 0.5).floor().is_between("true_age_low", "true_age_high")).mean())
    for measured in (predicted.metrics, alone.metrics, again.metrics):
        assert measured["n_age_bin"] == 3 and measured["age_bin_accuracy"] == pytest.approx(inside.item())


def test_a_predictions_file_written_before_the_age_bin_columns_reads_as_no_bin(tmp_path, tiny_attr_model):
    from faceattr_batch.pipelines import report

    make_faces(tmp_path / "in", 4)
    out = tmp_path / "out.parquet"
    _run([tmp_path / "in"], out, tiny_attr_model, include_training=True)
    older = tmp_path / "older.parquet"
    written = pl.read_parquet(out)
    assert written.select("pred_age_low", "pred_age_high").null_count().row(0) == (4, 4)  # our models predict years
    written.drop("true_age_low", "true_age_high", "pred_age_low", "pred_age_high").write_parquet(older)
    built = report.build(older, tmp_path / "rep", include_training=True, progress=False)
    assert built.metrics["n_age"] == 4 and built.metrics["n_age_bin"] == 0


def test_a_resume_of_parts_written_with_other_columns_is_refused(tmp_path, tiny_attr_model, monkeypatch):
    """Parts of a version with other columns cannot join this one's: the run's manifest holds its columns."""
    make_faces(tmp_path / "in", 4)
    out = tmp_path / "out.parquet"

    def stopped(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(predict_module.writer, "finalize", stopped)
        with pytest.raises(KeyboardInterrupt):
            _run([tmp_path / "in"], out, tiny_attr_model, shard_size=2)
    manifest = tmp_path / "out.parquet.parts" / "manifest.json"
    saved = json.loads(manifest.read_text())
    assert saved["columns"] == list(OUTPUT_COLUMNS)
    older = [c for c in saved["columns"] if c not in ("true_age_low", "true_age_high")]  # as before the bins
    manifest.write_text(json.dumps({**saved, "columns": older}))
    with pytest.raises(FaceattrError, match=r"started with different inputs or options \(columns\)"):
        _run([tmp_path / "in"], out, tiny_attr_model, shard_size=2, resume=True)


def test_two_inputs_written_as_one_path_are_refused_before_the_model_loads(tmp_path, tiny_attr_model, monkeypatch):
    """A reviewer's finding: a file named with the byte 0xff beside one named with the four characters \\xff (both
    written `a\\xff.jpg`) merged into one input, and the run ended, after predicting everything, in "shards [0] are
    not finished" with no output."""
    folder = tmp_path / "in"
    source = make_faces(folder, 1)[0]
    os.link(source, os.fsencode(str(folder)) + b"/a\xff.jpg")
    os.link(source, folder / "a\\xff.jpg")
    loaded = []
    monkeypatch.setattr(ModelRunner, "load", classmethod(lambda cls, *args: loaded.append(args)))
    with pytest.raises(FaceattrError, match=r"^the inputs b'.*' would both be written as .*: rename one$") as refused:
        _run([folder], tmp_path / "out.parquet", tiny_attr_model)
    said = str(refused.value)
    for name in (os.fsencode(str(folder)) + b"/a\xff.jpg", os.fsencode(str(folder / "a\\xff.jpg"))):
        assert repr(name) in said
    assert loaded == [] and not (tmp_path / "out.parquet.parts").exists()
