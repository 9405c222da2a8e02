"""ensemble: mean logits of members at their own input sizes, stored weights, the file predict and ONNX read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_faces
from torch.nn import functional as F
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.errors import FaceattrError
from faceattr_batch.models.attr_ensemble import AttrEnsemble, resize_chips, resize_matrix
from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig
from faceattr_batch.models.registry import (
    INT8_SCALE_SUFFIX,
    load_attr_model,
    restore_state,
    save_attr_model,
    storage_state,
)
from faceattr_batch.pipelines.ensemble import EnsembleOptions, run
from faceattr_batch.pipelines.train import TrainOptions
from faceattr_batch.pipelines.train import run as train


def trained_looking(config: AttrNetConfig, seed: int) -> AttrNet:
    """Random weights with non-trivial BatchNorm statistics, temperatures and race bias, as after training."""
    torch.manual_seed(seed)
    net = AttrNet(config)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    net.temperatures.copy_(torch.tensor([1.3, 0.8, 1.7]))
    net.race_bias.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.fixture
def members(tmp_path: Path) -> tuple[Path, Path]:
    """Two member files of different architectures and input sizes (32 and 40 px)."""
    small = trained_looking(AttrNetConfig(input_size=32, widths=(8, 16), depths=(1, 1)), seed=1)
    large = trained_looking(AttrNetConfig(input_size=40, widths=(8, 16, 24), depths=(1, 1, 1), tta_flip=True), 2)
    return (
        save_attr_model(small, tmp_path / "small.pt", {"name": "small"}),
        save_attr_model(large, tmp_path / "large.pt", {"name": "large"}),
    )


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    make_faces(tmp_path / "faces", 60)
    return tmp_path / "faces"


def test_resize_matrix_is_the_antialiased_bilinear_resize():
    image = torch.rand(2, 3, 40, 40) * 255
    matrix = resize_matrix(40, 32)
    want = F.interpolate(image, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(matrix @ image @ matrix.T, want, atol=1e-3)
    assert torch.allclose(matrix.sum(dim=1), torch.ones(32))  # a flat chip stays flat
    flat = torch.full((1, 3, 40, 40), 117.0)
    assert torch.equal(resize_chips(flat, matrix), torch.full((1, 3, 32, 32), 117.0))


def test_ensemble_logits_are_the_mean_of_its_members_at_their_own_sizes(members):
    small, large = (load_attr_model(path)[0] for path in members)
    ensemble = AttrEnsemble([small, large]).eval()
    assert ensemble.config.input_size == 40
    pixels = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    with torch.inference_mode():
        got = ensemble.logits(pixels)
        from_small = small.logits(resize_chips(pixels, resize_matrix(40, 32)))
        from_large = large.logits(pixels)
    for head, a, b in zip(got, from_small, from_large, strict=True):
        assert torch.allclose(head, (a + b) / 2, atol=1e-5)


def test_members_must_share_the_age_bins():
    with pytest.raises(ValueError, match="age bins"):
        AttrEnsemble([AttrNet(AttrNetConfig(input_size=32, widths=(8,), depths=(1,), age_bins=b)) for b in (121, 80)])


def test_int8_storage_is_within_half_a_step_per_output_channel():
    net = trained_looking(AttrNetConfig(input_size=32, widths=(8, 16), depths=(1, 1)), seed=3)
    stored = storage_state(net, int8=True)
    restored = restore_state(stored)
    for name, weight in net.state_dict().items():
        if name + INT8_SCALE_SUFFIX in stored:
            assert stored[name].dtype == torch.int8
            step = stored[name + INT8_SCALE_SUFFIX]
            assert bool(((restored[name] - weight).abs() <= step / 2 + 1e-7).all()), name
        else:  # small tensors and vectors are not quantised
            assert restored[name].dtype == weight.dtype
    assert any(key.endswith(INT8_SCALE_SUFFIX) for key in stored)


def test_ensemble_run_writes_a_file_that_predict_and_onnx_read(members, faces: Path, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    from faceattr_batch.models.device import resolve_device
    from faceattr_batch.models.runtime import ModelRunner

    out = tmp_path / "ens" / "ensemble.pt"
    options = EnsembleOptions(
        source=faces, members=tuple(map(str, members)), out=out, val_fraction=0.3, workers=0, progress=False
    )
    result = run(options)
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["members"] == [str(path) for path in members]
    assert len(report["members_alone"]) == 2
    assert report["n_train_val"]["val"] == result.report["n_train_val"]["val"] > 0
    assert 0 <= report["overall"]["race_accuracy"] <= 1

    model, meta = load_attr_model(out)
    assert isinstance(model, AttrEnsemble)
    assert meta["source"] == str(out)
    fitted = report["calibration"]["temperatures"]
    assert model.temperatures.tolist() == pytest.approx([fitted[head] for head in ("gender", "race", "age")])
    pixels = np.random.default_rng(0).integers(0, 256, (9, 40, 40, 3), dtype=np.uint8)
    cpu = resolve_device("cpu")
    by_torch = ModelRunner.load(str(out), cpu, "torch", threads=1).infer(pixels)
    by_onnx = ModelRunner.load(str(out), cpu, "onnxruntime", threads=1).infer(pixels)
    for name, value in by_torch.items():
        assert np.abs(value - by_onnx[name]).max() <= 1e-4, name
    assert np.allclose(by_torch["race_probs"].sum(axis=1), 1, atol=1e-5)


def test_int8_files_are_smaller_and_read_back_close(members, faces: Path, tmp_path: Path):
    common = dict(source=faces, members=tuple(map(str, members)), val_fraction=0.3, workers=0, progress=False)
    run(EnsembleOptions(out=tmp_path / "half.pt", **common))
    run(EnsembleOptions(out=tmp_path / "int8.pt", int8=True, **common))
    assert (tmp_path / "int8.pt").stat().st_size < (tmp_path / "half.pt").stat().st_size  # tiny nets: headers weigh
    half, _ = load_attr_model(tmp_path / "half.pt")
    int8, _ = load_attr_model(tmp_path / "int8.pt")
    pixels = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    with torch.inference_mode():
        assert torch.allclose(half.infer(pixels).race_probs, int8.infer(pixels).race_probs, atol=0.05)


def test_bad_members_and_ensembles_as_a_start_give_one_line_errors(members, faces: Path, tmp_path: Path):
    common = dict(source=faces, out=tmp_path / "e.pt", workers=0, progress=False)
    with pytest.raises(FaceattrError, match="two or more"):
        run(EnsembleOptions(members=(str(members[0]),), **common))
    with pytest.raises(FaceattrError, match="nowhere.pt"):
        run(EnsembleOptions(members=(str(members[0]), str(tmp_path / "nowhere.pt")), **common))
    with pytest.raises(FaceattrError, match=r"^-o .*faces: is a folder; name the file to write"):
        run(EnsembleOptions(members=tuple(map(str, members)), **{**common, "out": faces}))
    before = members[0].read_bytes()  # a reviewer's finding: -o a member's file replaced its weights
    with pytest.raises(FaceattrError, match=r"^-o .*small.pt is the member .*small.pt: the output would replace it"):
        run(EnsembleOptions(members=tuple(map(str, members)), **{**common, "out": tmp_path / "." / "small.pt"}))
    run_dir = tmp_path / "small_run"
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(before)
    with pytest.raises(FaceattrError, match=r"^-o .*model.pt: it would sit in the member's RUN_DIR .*small_run"):
        run(EnsembleOptions(members=(str(run_dir), str(members[1])), **{**common, "out": run_dir / "model.pt"}))
    assert members[0].read_bytes() == before and sorted(p.name for p in run_dir.iterdir()) == ["best.pt"]
    # reviewer's findings: a member given as its RUN_DIR's file, -o the run's best.pt, replaced the checkpoint; -o the
    # SOURCE index wrote a torch file over it; -o x.onnx wrote a torch file predict then read as a broken ONNX
    with pytest.raises(FaceattrError, match=r"^-o .*last.pt: it would sit in the member's RUN_DIR .*small_run"):
        run(
            EnsembleOptions(
                members=(str(run_dir / "best.pt"), str(members[1])), **{**common, "out": run_dir / "last.pt"}
            )
        )
    with pytest.raises(FaceattrError, match=r"^-o .*model.pt: it would sit in the member's RUN_DIR .*small_run"):
        run(
            EnsembleOptions(
                members=(str(run_dir / "best.pt"), str(members[1])), **{**common, "out": run_dir / "model.pt"}
            )
        )
    index = tmp_path / "index.parquet"
    index.write_bytes(b"PAR1 an index")
    with pytest.raises(FaceattrError, match=r"^-o .*index.parquet: name the ensemble file .pt"):
        run(EnsembleOptions(members=tuple(map(str, members)), **{**common, "source": index, "out": index}))
    with pytest.raises(FaceattrError, match=r"^-o .*e.onnx: name the ensemble file .pt"):
        run(EnsembleOptions(members=tuple(map(str, members)), **{**common, "out": tmp_path / "e.onnx"}))
    assert index.read_bytes() == b"PAR1 an index" and sorted(p.name for p in run_dir.iterdir()) == ["best.pt"]
    run(EnsembleOptions(members=tuple(map(str, members)), val_fraction=0.3, **common))
    with pytest.raises(FaceattrError, match="can't be members"):
        run(EnsembleOptions(members=(str(members[0]), str(tmp_path / "e.pt")), **{**common, "out": tmp_path / "f.pt"}))
    tiny = dict(input_size=32, widths=(8, 16), depths=(1, 1), batch_size=16, workers=0, progress=False)
    with pytest.raises(FaceattrError, match="an ensemble"):
        train(TrainOptions(source=faces, out_dir=tmp_path / "run", init_from=str(tmp_path / "e.pt"), **tiny))


def test_another_file_is_never_replaced_and_a_model_is_a_member_once(members, faces, tmp_path: Path, caplog):
    """Reviewer's findings: -o another run's model.pt (not a member) replaced it; a member given twice (or a copy of
    it) was averaged with itself; a loose model file's validation faces went unchecked without a word."""
    common = dict(source=faces, workers=0, progress=False, val_fraction=0.3)
    victim = tmp_path / "victim" / "model.pt"
    victim.parent.mkdir()
    victim.write_bytes(members[0].read_bytes())
    with pytest.raises(FaceattrError, match=r"^-o .*model.pt: exists and is a trained model, not an ensemble"):
        run(EnsembleOptions(members=tuple(map(str, members)), out=victim, **common))
    (tmp_path / "notes.pt").write_text("the user's own file")
    with pytest.raises(FaceattrError, match=r"notes.pt: exists and is not a faceattr model, not an ensemble"):
        run(EnsembleOptions(members=tuple(map(str, members)), out=tmp_path / "notes.pt", **common))
    assert victim.read_bytes() == members[0].read_bytes()
    assert (tmp_path / "notes.pt").read_text() == "the user's own file"
    copy = tmp_path / "copy.pt"
    copy.write_bytes(members[0].read_bytes())
    for twice in ((members[0], members[0]), (members[0], tmp_path / "." / "small.pt"), (members[0], copy)):
        with pytest.raises(FaceattrError, match=r"the member .* is the same model as .*small.pt: give each model once"):
            run(EnsembleOptions(members=tuple(map(str, twice)), out=tmp_path / "twice.pt", **common))
    caplog.set_level("WARNING")
    run(EnsembleOptions(members=tuple(map(str, members)), out=tmp_path / "e.pt", **common))
    unchecked = [r.getMessage() for r in caplog.records if "is not checked" in r.getMessage()]
    assert len(unchecked) == 2 and "small.pt: a model without its RUN_DIR's split.parquet" in unchecked[0]
    run(EnsembleOptions(members=(str(members[1]), str(members[0])), out=tmp_path / "e.pt", **common))  # replaced
    assert load_attr_model(tmp_path / "e.pt")[1]["members"] == json.dumps([str(members[1]), str(members[0])])
    assert not (tmp_path / "twice.pt").exists()


def test_cli_ensemble(members, faces: Path, tmp_path: Path):
    runner = CliRunner()
    args = ["ensemble", str(faces), *map(str, members), "-o", str(tmp_path / "e.pt"), "--val-fraction", "0.3"]
    result = runner.invoke(app, [*args, "--workers", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["members_alone"]) == 2
    shown = runner.invoke(app, [*args[:4], "-o", str(tmp_path / "g.pt"), "--val-fraction", "0.3", "-w", "0"])
    assert shown.exit_code == 0, shown.output
    assert "member" in shown.output and "race" in shown.output
    alone = runner.invoke(app, ["ensemble", str(faces), str(members[0]), "-o", str(tmp_path / "h.pt")])
    assert alone.exit_code == 2


def test_no_mirror_drops_the_members_mirror_in_the_file(members, faces: Path, tmp_path: Path):
    runner = CliRunner()
    args = ["ensemble", str(faces), *map(str, members), "--val-fraction", "0.3", "-w", "0", "--json"]
    mirrored = runner.invoke(app, [*args, "-o", str(tmp_path / "m.pt")])
    single = runner.invoke(app, [*args, "-o", str(tmp_path / "s.pt"), "--no-mirror"])
    assert mirrored.exit_code == 0 and single.exit_code == 0, single.output
    assert json.loads(mirrored.stdout)["tta_flip"] == [False, True]
    assert json.loads(single.stdout)["tta_flip"] == [False, False]
    model, _ = load_attr_model(tmp_path / "s.pt")
    assert [member.config.tta_flip for member in model.members] == [False, False]
    pixels = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    large = model.members[1]
    with torch.inference_mode():  # the member reads one view: its logits are those of the image alone
        assert torch.allclose(large.logits(pixels).race, large(pixels).race + large.race_bias)


def test_a_member_trained_on_the_ensembles_validation_faces_is_refused(members, faces: Path, tmp_path: Path):
    import polars as pl

    from faceattr_batch.training.data import load_labelled, split_by_group

    table = load_labelled(faces, None, 0)
    common = dict(source=faces, members=tuple(map(str, members)), workers=0, progress=False, val_fraction=0.3)
    # the members' run folder holds the split they trained with: the ensemble's own (seed 0) passes
    split_by_group(table, 0.3, 0).select("path", "dup_group", "split").write_parquet(tmp_path / "split.parquet")
    run(EnsembleOptions(out=tmp_path / "same.pt", **common))
    other = split_by_group(table, 0.3, 1)  # another seed: some of seed 0's validation faces were trained on
    n_val = split_by_group(table, 0.3, 0).filter(pl.col("split") == "val").height
    other.select("path", "dup_group", "split").write_parquet(tmp_path / "split.parquet")
    with pytest.raises(
        FaceattrError, match=rf"^member 1 .*small.pt: trained on \d+ of this run's {n_val} validation faces"
    ):
        run(EnsembleOptions(out=tmp_path / "other.pt", **common))
    assert not (tmp_path / "other.pt").exists()
