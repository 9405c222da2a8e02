"""train-gen's fine-tuning options: --init-generator (start from a generator file, a fresh discriminator),
--d-warmup (the discriminator alone at first) and --teacher (a frozen attribute network's loss on generated faces)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, interrupt_at_second_grid
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.errors import FaceattrError
from faceattr_batch.models.attr_ensemble import AttrEnsemble
from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig
from faceattr_batch.models.registry import load_generator, read_generator_checkpoint, save_attr_ensemble
from faceattr_batch.pipelines.train_gen import TrainGenOptions
from faceattr_batch.pipelines.train_gen import run as train_gen
from faceattr_batch.training.losses import generated_faces_loss


def parameters(state: dict) -> dict:
    """A generator state dict without its BatchNorm statistics (which standing statistics recompute on save)."""
    return {k: v for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def cut_and_resumed(options: dict, out: Path, monkeypatch) -> None:
    """A run interrupted at its second sample grid, then resumed to its end."""
    restore = interrupt_at_second_grid(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_gen(TrainGenOptions(out_dir=out, **options))
    restore()
    train_gen(TrainGenOptions(out_dir=out, **options), resume=True)


def test_init_generator_starts_from_the_file_and_d_warmup_keeps_it_there(trained, tmp_path: Path):
    faces, base = trained
    start, _ = load_generator(base)
    options = dict(source=faces, iterations=3, init_generator=str(base / "generator.pt"), **TINY_RUN)
    options["d_width"] = 8  # the new discriminator's width is this run's choice; the generator's config is the file's
    train_gen(TrainGenOptions(out_dir=tmp_path / "warm", d_warmup=3, **options))
    checkpoint = read_generator_checkpoint(tmp_path / "warm" / "last.pt")
    assert checkpoint["config"] == {**start.config.to_dict(), "d_width": 8}
    for key in ("generator", "ema"):  # three iterations of the discriminator alone: the generator has not moved
        for name, value in parameters(start.state_dict()).items():
            assert torch.equal(checkpoint[key][name], value), (key, name)
    first_conv = next(v for k, v in checkpoint["discriminator"].items() if k.endswith("weight_orig"))
    assert first_conv.shape[0] == 8

    train_gen(TrainGenOptions(out_dir=tmp_path / "joint", d_warmup=2, **options))
    moved = read_generator_checkpoint(tmp_path / "joint" / "last.pt")["generator"]
    assert any(not torch.equal(moved[name], value) for name, value in parameters(start.state_dict()).items())


def test_lr_g_reaches_the_generators_optimizer_from_the_command_line(trained, tmp_path: Path):
    """--lr-g 0 against a new discriminator: D learns, G and its EMA stay the file's (fine-tuning needs G slower)."""
    faces, base = trained
    start, _ = load_generator(base)
    flags = ["--workers", "0", "--batch-size", "8", "--d-width", "16", "--no-eval", "--iterations", "2"]
    args = ["train-gen", str(faces), "-o", str(tmp_path / "r"), "--init-generator", str(base), *flags]
    result = CliRunner().invoke(app, [*args, "--lr-g", "0", "--lr-d", "1e-3"])
    assert result.exit_code == 0, result.output
    checkpoint = read_generator_checkpoint(tmp_path / "r" / "last.pt")
    for key in ("generator", "ema"):
        for name, value in parameters(start.state_dict()).items():
            assert torch.equal(checkpoint[key][name], value), (key, name)
    assert [group["lr"] for group in checkpoint["opt_d"]["param_groups"]] == [1e-3]


def test_init_generator_decodes_the_real_faces_at_the_files_resolution(trained, tmp_path: Path):
    """A reviewer's finding: with --init-generator of a 32 px file and --resolution 64, the discriminator saw real
    faces at 64 px and fakes at 32 px."""
    faces, base = trained
    options = {**TINY_RUN, "resolution": 64}
    train_gen(TrainGenOptions(source=faces, out_dir=tmp_path / "r", iterations=1, init_generator=str(base), **options))
    assert load_generator(base)[0].config.resolution == 32
    assert [path.name for path in (tmp_path / "r").glob("pixels_*.npy")] == ["pixels_32.npy"]


def test_generated_faces_loss_is_lowest_for_what_the_teacher_reads_and_reaches_the_images():
    torch.manual_seed(0)
    teacher = AttrNet(AttrNetConfig(input_size=40, widths=(8, 16), depths=(1, 1))).eval().requires_grad_(False)
    images = (torch.rand(6, 3, 32, 32) * 2 - 1).requires_grad_(True)
    with torch.no_grad():  # what the teacher reads: the same 32 -> 40 px resize the loss makes
        read = teacher(torch.nn.functional.interpolate((images + 1) * 127.5, size=(40, 40), mode="bilinear"))
    gender, race, age = (read.gender > 0).long(), read.race.argmax(1), read.age.argmax(1)
    agreeing = generated_faces_loss(teacher, images, gender, race, age)
    assert agreeing < generated_faces_loss(teacher, images, 1 - gender, (race + 1) % 5, (age + 60) % 121)
    agreeing.backward()
    assert images.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_the_teacher_age_only_reads_the_age_and_not_gender_or_race():
    torch.manual_seed(0)
    teacher = AttrNet(AttrNetConfig(input_size=40, widths=(8, 16), depths=(1, 1))).eval().requires_grad_(False)
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    gender, race, age = torch.randint(0, 2, (6,)), torch.randint(0, 5, (6,)), torch.randint(0, 100, (6,))
    age_only = generated_faces_loss(teacher, images, gender, race, age, age_only=True)
    assert torch.equal(age_only, generated_faces_loss(teacher, images, 1 - gender, (race + 1) % 5, age, age_only=True))
    assert age_only != generated_faces_loss(teacher, images, gender, race, (age + 60) % 121, age_only=True)
    whole = generated_faces_loss(teacher, images, gender, race, age)
    assert whole != generated_faces_loss(teacher, images, 1 - gender, (race + 1) % 5, age)
    assert age_only < whole  # the whole loss is the age part plus the gender and race terms


def test_teacher_moves_the_generator_and_resumes_to_the_same_generator(trained, tiny_attr_model, tmp_path, monkeypatch):
    faces, base = trained
    options = dict(
        source=faces, iterations=6, init_generator=str(base), d_warmup=2, teacher=str(tiny_attr_model), **TINY_RUN
    )
    train_gen(TrainGenOptions(out_dir=tmp_path / "whole", **options))
    train_gen(TrainGenOptions(out_dir=tmp_path / "untaught", **{**options, "teacher": None}))
    train_gen(TrainGenOptions(out_dir=tmp_path / "age", teacher_age_only=True, **options))
    cut_and_resumed(options, tmp_path / "cut", monkeypatch)
    whole, cut, untaught, age = (
        load_generator(tmp_path / name)[0].state_dict() for name in ("whole", "cut", "untaught", "age")
    )
    for name, value in whole.items():
        assert torch.equal(value, cut[name]), name
    for other in (untaught, age):  # the teacher's gender and race terms moved it too
        assert any(not torch.equal(value, other[name]) for name, value in parameters(whole).items())
    assert any(not torch.equal(value, untaught[name]) for name, value in parameters(age).items())


def test_teacher_moments_alone_move_the_generator_and_resume_to_the_same_generator(
    trained, tiny_attr_model, tmp_path, monkeypatch
):
    faces, base = trained
    options = dict(source=faces, iterations=6, init_generator=str(base), teacher=str(tiny_attr_model), **TINY_RUN)
    moments = {**options, "teacher_weight": 0.0, "teacher_moments": 1.0}
    train_gen(TrainGenOptions(out_dir=tmp_path / "whole", **moments))
    train_gen(TrainGenOptions(out_dir=tmp_path / "untaught", **{**options, "teacher": None}))
    with pytest.raises(FaceattrError, match=r"^--teacher .* with --teacher-weight 0 and no --teacher-moments: unused"):
        train_gen(TrainGenOptions(out_dir=tmp_path / "silent", **{**options, "teacher_weight": 0.0}))
    assert not (tmp_path / "silent").exists()  # a teacher weighted 0 with no moments adds nothing: refused
    cut_and_resumed(moments, tmp_path / "cut", monkeypatch)
    whole, cut, untaught = (load_generator(tmp_path / name)[0].state_dict() for name in ("whole", "cut", "untaught"))
    for name, value in whole.items():  # the running fake means travel in the checkpoint
        assert torch.equal(value, cut[name]), name
    assert any(not torch.equal(value, untaught[name]) for name, value in parameters(whole).items())
    state = read_generator_checkpoint(tmp_path / "whole" / "last.pt")["teacher_moments"]
    assert state["seen"].any() and torch.isfinite(state["fake_mean"]).all()
    assert "teacher_moments" not in read_generator_checkpoint(tmp_path / "untaught" / "last.pt")


def test_teacher_must_be_one_attribute_network(trained, tmp_path: Path, tiny_attr_model, caplog):
    faces, _ = trained
    members = [AttrNet(AttrNetConfig(input_size=32, widths=(8,), depths=(1,))) for _ in range(2)]
    ensemble = save_attr_ensemble(AttrEnsemble(members).eval(), tmp_path / "pair.pt", {"name": "pair"})
    with pytest.raises(FaceattrError, match="an ensemble; give one attribute network"):
        train_gen(TrainGenOptions(source=faces, out_dir=tmp_path / "run", teacher=str(ensemble), **TINY_RUN))

    result = CliRunner().invoke(
        app,
        ["train-gen", str(faces), "-o", str(tmp_path / "cli"), "--teacher", str(tmp_path / "missing.pt"), "--no-eval"],
    )
    assert result.exit_code == 2
    assert "missing.pt" in result.output and "Traceback" not in result.output

    alone = CliRunner().invoke(app, ["train-gen", str(faces), "-o", str(tmp_path / "alone"), "--teacher-age-only"])
    assert alone.exit_code == 2 and "--teacher-age-only needs --teacher" in alone.output
    moments = CliRunner().invoke(
        app, ["train-gen", str(faces), "-o", str(tmp_path / "alone"), "--teacher-moments", "0.5"]
    )
    assert moments.exit_code == 2 and "--teacher-moments needs --teacher" in moments.output
    moot = dict(teacher=str(tiny_attr_model), teacher_weight=0.0, teacher_moments=0.5, teacher_age_only=True)
    with caplog.at_level("WARNING"), pytest.raises(FaceattrError, match="no such index file or folder"):
        train_gen(TrainGenOptions(source=tmp_path / "none", out_dir=tmp_path / "moot", **moot))
    # the age-only switch shapes a loss weighted 0 there: said, not silently ignored
    assert "--teacher-age-only shapes --teacher-weight's loss, which is 0 here: it changes nothing" in caplog.text
    # --resume replaces the command line's options with the run's: there the flag alone is not an error to report
    resumed = CliRunner().invoke(
        app, ["train-gen", str(faces), "-o", str(tmp_path / "alone"), "--teacher-age-only", "--resume"]
    )
    assert resumed.exit_code == 2 and "nothing to resume" in resumed.output
