"""train-gen: DiffAugment, deterministic resume, evaluate (FID / KID / agreement, as `fid` and `predict` score the
same samples) and the command end to end on generated fixtures. A tiny network stands in for Inception."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import TINY_RUN, interrupt_at_second_grid, make_faces
from fakes import TinyFeatures
from PIL import Image
from typer.testing import CliRunner

from faceattr_batch import __version__
from faceattr_batch.cli import app
from faceattr_batch.errors import FaceattrError
from faceattr_batch.metrics.fid_stats import ALL, load_stats
from faceattr_batch.models import generator as generator_module
from faceattr_batch.models import inception
from faceattr_batch.models.generator import (
    Discriminator,
    Generator,
    GeneratorConfig,
    ResizeConv,
    age_distribution,
    age_features,
    age_position,
    diff_augment,
    mode_seeking_loss,
)
from faceattr_batch.models.registry import load_generator, read_generator_checkpoint
from faceattr_batch.pipelines import fid
from faceattr_batch.pipelines import train_gen as train_gen_module
from faceattr_batch.pipelines.predict import PredictOptions
from faceattr_batch.pipelines.predict import run as predict
from faceattr_batch.pipelines.train_gen import TrainGenOptions, condition_weights
from faceattr_batch.pipelines.train_gen import run as train_gen
from faceattr_batch.training.data import load_labelled
from faceattr_batch.training.gen_eval import evaluate

TINY = GeneratorConfig(resolution=32, g_width=32, d_width=16)


def test_diff_augment_keeps_shape_and_is_seeded():
    x = torch.rand(4, 3, 32, 32)
    a = diff_augment(x, torch.Generator().manual_seed(1))
    b = diff_augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)


def test_age_distribution_peaks_at_the_age_and_widens_with_it():
    target = age_distribution(torch.tensor([0, 3, 30, 60, 100]), 32)
    assert target.shape == (5, 32) and torch.allclose(target.sum(dim=1), torch.ones(5))
    peaks = target.argmax(dim=1).tolist()
    assert peaks[0] == 0 and peaks[-1] == 31 and peaks == sorted(peaks) and len(set(peaks)) == 5
    centres = torch.expm1(torch.linspace(0, 1, 32) * math.log1p(100.0))
    spread = [float((target[i] * (centres - (target[i] * centres).sum()) ** 2).sum().sqrt()) for i in (1, 3)]
    assert spread[0] < 1.5 < 4 < spread[1] < 10  # about a year wide at 3, several at 60


def test_the_sqrt_age_scale_gives_old_ages_finer_bins_and_codes():
    ages = torch.tensor([3, 60, 85])
    spreads = {}
    expected = {"log": lambda a: torch.log1p(a) / math.log1p(100.0), "sqrt": lambda a: (a / 100).sqrt()}
    for scale, position in expected.items():
        assert torch.allclose(age_position(ages, scale), position(ages.float()))
        target = age_distribution(ages, 32, scale)
        centres = torch.linspace(0, 1, 32)
        # the targets' centres in years: invert the scale
        years = torch.expm1(centres * math.log1p(100.0)) if scale == "log" else centres**2 * 100
        mean = (target * years).sum(dim=1, keepdim=True)
        spreads[scale] = (target * (years - mean) ** 2).sum(dim=1).sqrt()
        assert mean[:, 0].tolist() == pytest.approx([3, 60, 85], abs=2.5)
    assert spreads["sqrt"][1] < 0.7 * spreads["log"][1] and spreads["sqrt"][2] < 0.6 * spreads["log"][2]
    assert spreads["sqrt"][0] < 1.5  # still about a year wide at 3
    # the conditioning code tells 70 from 85 by more on the sqrt scale
    gap = {s: (age_features(torch.tensor([70]), s) - age_features(torch.tensor([85]), s)).norm() for s in expected}
    assert gap["sqrt"] > 1.5 * gap["log"]
    with pytest.raises(ValueError, match="age scale 'linear'"):
        age_position(ages, "linear")


def test_condition_weights_trade_the_data_mix_for_even_conditions():
    # three 20-somethings (White men), one 85-year-old (Others woman)
    labels = [torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 4]), torch.tensor([25, 26, 29, 85])]
    assert condition_weights(labels, 0.0) is None  # uniform draws, as v1 made them
    even = condition_weights(labels, 1.0)
    assert even[:3].sum() == pytest.approx(0.5) and even[3] == pytest.approx(0.5)
    half = condition_weights(labels, 0.5)
    assert half.sum() == pytest.approx(1) and 0.25 < half[3] < 0.5


def test_discriminator_reads_age_as_a_distribution_or_a_regression():
    gender, race, age = torch.tensor([0, 1]), torch.tensor([0, 3]), torch.tensor([5, 70])
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    for bins, width in ((32, 1 + 5 + 32), (0, 1 + 5 + 1)):
        torch.manual_seed(0)
        discriminator = Discriminator(GeneratorConfig(resolution=32, d_width=8, age_bins=bins))
        score, aux = discriminator(images, gender, race, age)
        assert score.shape == (2,) and aux.shape == (2, width)
        loss = discriminator.aux_loss(aux, gender, race, age)
        assert math.isfinite(loss.item())
        without_age = discriminator.aux_loss(aux, gender, race, age, age_weight=0.0)
        heavier = discriminator.aux_loss(aux, gender, race, age, age_weight=3.0)
        assert 0 < without_age.item() < loss.item()
        assert heavier.item() == pytest.approx(without_age.item() + 3 * (loss - without_age).item(), rel=1e-5)


def test_generators_upsample_as_their_config_says():
    assert GeneratorConfig.from_dict({"resolution": 32}).upsample == "transposed"  # files written before v2
    assert GeneratorConfig.from_dict({"resolution": 32}).age_scale == "log"
    for upsample, layer in (("transposed", torch.nn.ConvTranspose2d), ("resize", ResizeConv)):
        generator = Generator(GeneratorConfig(resolution=32, g_width=8, upsample=upsample)).eval()
        assert any(isinstance(m, layer) for m in generator.modules())
        with torch.no_grad():
            out = generator(torch.zeros(2, 128), torch.tensor([0, 1]), torch.tensor([0, 4]), torch.tensor([3, 80]))
        assert out.shape == (2, 3, 32, 32)


def test_resize_conv_is_nearest_upsampling_then_a_3x3_convolution_values_and_gradients():
    torch.manual_seed(0)
    layer = ResizeConv(5, 7).double()
    x = torch.randn(3, 5, 6, 9, dtype=torch.double, requires_grad=True)
    expected = layer.conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    got = layer(x)
    assert got.shape == (3, 7, 12, 18)
    torch.testing.assert_close(got, expected)
    upstream = torch.randn_like(expected)
    inputs = [x, layer.conv.weight, layer.conv.bias]
    for a, b in zip(
        torch.autograd.grad((got * upstream).sum(), inputs),
        torch.autograd.grad((expected * upstream).sum(), inputs),
        strict=True,
    ):
        torch.testing.assert_close(a, b)


def test_resize_conv_folds_its_kernel_on_the_device_of_its_input(monkeypatch):
    # The folded taps followed x's dtype but stayed on the CPU: every CUDA run of a v2 generator (train-gen
    # --device cuda, synth on a GPU) failed in its first forward. Without a GPU: the meta device, whose mixing
    # with CPU tensors torch allows, so the test looks at where einsum's operands are.
    devices = []
    einsum = torch.einsum

    def spy(equation, *operands):
        devices.extend(t.device.type for t in operands)
        return einsum(equation, *operands)

    monkeypatch.setattr(torch, "einsum", spy)
    layer = ResizeConv(5, 7).to("meta")
    out = layer(torch.zeros(3, 5, 6, 9, device="meta"))
    assert out.device.type == "meta" and out.shape == (3, 7, 12, 18)
    assert devices == ["meta"] * 3


def test_mode_seeking_loss_falls_as_faces_of_one_condition_differ_more():
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    same = torch.zeros(8, 3, 4, 4)
    apart = torch.cat([torch.zeros(4, 3, 4, 4), torch.ones(4, 3, 4, 4)])
    noise_distance = (z[:4] - z[4:]).abs().mean()
    assert mode_seeking_loss(apart, z, 4).item() == pytest.approx(noise_distance.item(), rel=1e-4)  # 1 / (1 / d)
    assert mode_seeking_loss(same, z, 4).item() > 1e4  # one face for all noise: the largest push


def test_mode_seeking_pairs_conditions_with_new_noise_and_moves_the_generator(tmp_path: Path, monkeypatch):
    pixels = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = [torch.randint(0, 2, (16,)), torch.randint(0, 5, (16,)), torch.randint(0, 90, (16,))]
    calls = []
    monkeypatch.setattr(generator_module, "mode_seeking_loss", lambda *a: calls.append(a[2]) or torch.tensor(0.0))

    def step(mode_seeking: float):
        options = TrainGenOptions(source=tmp_path, out_dir=tmp_path, mode_seeking=mode_seeking, **TINY_RUN)
        gan, _ = train_gen_module._build_gan(options, torch.device("cpu"), None)
        inputs = []
        gan.generator.register_forward_hook(lambda module, args, output: inputs.append(args))
        train_gen_module._train_step(gan, pixels, labels, None, 1, options, torch.device("cpu"))
        return inputs[0]

    pairs = TINY_RUN["batch_size"] // 2
    z, *conditions = step(1.0)
    assert calls == [pairs]
    assert all(torch.equal(c[:pairs], c[pairs:]) for c in conditions)
    assert not torch.equal(z[:pairs], z[pairs:])
    _, *conditions = step(0.0)
    assert calls == [pairs]  # off: no term, and the conditions are drawn independently
    assert not all(torch.equal(c[:pairs], c[pairs:]) for c in conditions)


def test_each_side_of_the_auxiliary_loss_gets_its_own_age_weight(tmp_path: Path, monkeypatch):
    pixels = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = [torch.randint(0, 2, (16,)), torch.randint(0, 5, (16,)), torch.randint(0, 90, (16,))]
    weights = []
    real_aux_loss = Discriminator.aux_loss

    def recording(*args, **kwargs):
        weights.append(kwargs.get("age_weight"))
        return real_aux_loss(*args, **kwargs)

    monkeypatch.setattr(Discriminator, "aux_loss", recording)
    options = TrainGenOptions(source=tmp_path, out_dir=tmp_path, age_weight=3.0, d_age_weight=2.0, **TINY_RUN)
    gan, _ = train_gen_module._build_gan(options, torch.device("cpu"), None)
    train_gen_module._train_step(gan, pixels, labels, None, 1, options, torch.device("cpu"))
    assert weights == [2.0, 3.0]  # the discriminator's loss on real faces first, then the generator's on its own


def test_r1_penalty_changes_the_discriminator_step_only_every_r1_every_iterations(tmp_path: Path):
    pixels = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = [torch.randint(0, 2, (16,)), torch.randint(0, 5, (16,)), torch.randint(0, 90, (16,))]

    def discriminator_after(iteration: int, r1_gamma: float) -> list:
        options = TrainGenOptions(source=tmp_path, out_dir=tmp_path, r1_gamma=r1_gamma, r1_every=4, **TINY_RUN)
        gan, _ = train_gen_module._build_gan(options, torch.device("cpu"), None)
        train_gen_module._train_step(gan, pixels, labels, None, iteration, options, torch.device("cpu"))
        return list(gan.discriminator.state_dict().values())

    for iteration, differs in ((4, True), (5, False)):
        with_r1, without = discriminator_after(iteration, 10.0), discriminator_after(iteration, 0.0)
        assert any(not torch.equal(a, b) for a, b in zip(with_r1, without, strict=True)) == differs


@pytest.mark.parametrize(
    "generation", [{}, dict(upsample="transposed", age_bins=0, balance=0.0, r1_gamma=0.0)], ids=["v2", "v1"]
)
def test_train_gen_resumes_to_the_same_generator(tmp_path: Path, monkeypatch, generation: dict):
    faces = tmp_path / "faces"
    make_faces(faces, 40)
    options = dict(source=faces, iterations=6, **TINY_RUN, **generation)
    train_gen(TrainGenOptions(out_dir=tmp_path / "whole", **options))
    assert (tmp_path / "whole" / "grid_000006.png").is_file()

    restore = interrupt_at_second_grid(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_gen(TrainGenOptions(out_dir=tmp_path / "cut", **options))
    restore()
    # mid-run, the RUN_DIR's generator is its last checkpoint's EMA with standing statistics, as a 3-iteration run's
    midway, meta = load_generator(tmp_path / "cut")
    assert meta["iterations"] == 3 and meta["source"].endswith("generator.pt")
    train_gen(TrainGenOptions(out_dir=tmp_path / "three", **{**options, "iterations": 3}))
    three, _ = load_generator(tmp_path / "three")
    for (name, a), b in zip(three.state_dict().items(), midway.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(FaceattrError, match="already holds a generator run"):
        train_gen(TrainGenOptions(out_dir=tmp_path / "cut", **options))
    train_gen(TrainGenOptions(out_dir=tmp_path / "cut", **options), resume=True)
    whole, _ = load_generator(tmp_path / "whole")
    cut, _ = load_generator(tmp_path / "cut")
    for (name, a), b in zip(whole.state_dict().items(), cut.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_train_gen_resume_can_end_a_run_at_its_checkpoint_or_extend_it(tmp_path: Path, monkeypatch):
    faces = tmp_path / "faces"
    make_faces(faces, 40)
    options = dict(source=faces, **TINY_RUN)
    train_gen(TrainGenOptions(out_dir=tmp_path / "whole", iterations=6, **options))
    run_dir = tmp_path / "run"
    train_gen(TrainGenOptions(out_dir=run_dir, iterations=3, **options))
    (run_dir / "generator.pt").unlink()
    with monkeypatch.context() as patch:  # ending a run needs its labels and checkpoint, not its pixels
        patch.setattr(train_gen_module, "decode_cache", lambda *args: pytest.fail("decoded pixels to end a run"))
        train_gen(TrainGenOptions(out_dir=run_dir, iterations=40_000, **options), resume=True, iterations=3)
    _, meta = load_generator(run_dir / "generator.pt")
    assert meta["iterations"] == 3 and not (run_dir / "grid_000006.png").exists()

    train_gen(TrainGenOptions(out_dir=run_dir, **options), resume=True, iterations=6)
    whole, _ = load_generator(tmp_path / "whole")
    extended, meta = load_generator(run_dir)
    assert meta["iterations"] == 6
    for (name, a), b in zip(whole.state_dict().items(), extended.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_evaluate_scores_the_samples_as_the_fid_and_predict_commands_do(tiny_attr_model: Path, tmp_path: Path):
    faces = tmp_path / "faces"
    make_faces(faces, 16)
    table = load_labelled(faces, None, workers=0)
    torch.manual_seed(0)
    ema = Generator(TINY).eval()
    out = tmp_path / "run"
    out.mkdir()
    options = TrainGenOptions(
        source=faces, out_dir=out, eval_samples=12, real_subset=10, attr_model=str(tiny_attr_model), workers=0
    )
    result = evaluate(ema, TINY, table, options, out, fid_network=TinyFeatures())

    samples = sorted((out / "eval_samples").glob("*.jpg"))
    assert len(samples) == 12 and Image.open(samples[0]).size == (32, 32)
    real_stats = out / "real_stats_32.npz"
    bundle, meta = load_stats(real_stats)
    assert bundle[ALL].n == 10 and meta["size"] == "32"  # the real subset, at the generator's resolution
    # the same figures as `fid REAL_STATS SAMPLES --resize-to 32` ...
    by_fid = fid.compute(
        real_stats, out / "eval_samples", fid.FidOptions(resize_to=32, workers=0, progress=False), model=TinyFeatures()
    )
    assert result["fid"] == pytest.approx(by_fid.fid, rel=1e-9) and result["fid"] > 0
    assert result["kid_mean"] == pytest.approx(by_fid.kid_mean, rel=1e-9, abs=1e-12)
    # ... and as `predict` reading the samples (their names carry the requested labels) as chips
    by_predict = predict(
        PredictOptions(
            inputs=(str(out / "eval_samples"),),
            output=tmp_path / "p.parquet",
            model=str(tiny_attr_model),
            progress=False,
        )
    ).metrics
    assert result["gender_agreement"] == pytest.approx(by_predict["gender_accuracy"])
    assert result["race_agreement"] == pytest.approx(by_predict["race_accuracy"])
    assert result["age_mae_vs_requested"] == pytest.approx(by_predict["age_mae"], rel=1e-5)

    stamp = real_stats.stat().st_mtime_ns
    again = evaluate(ema, TINY, table, options, out, fid_network=TinyFeatures())
    assert real_stats.stat().st_mtime_ns == stamp  # the real side is computed once per run
    assert again == pytest.approx(result)
    missing = TrainGenOptions(**{**vars(options), "attr_model": str(tmp_path / "nowhere.pt")})
    fid_only = evaluate(ema, TINY, table, missing, out, fid_network=TinyFeatures())
    assert set(fid_only) == {"fid", "kid_mean"}  # no attribute model: FID alone, with a warning


def test_cli_train_gen_writes_metrics_checkpoint_grid_and_model(tiny_attr_model: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(inception, "load_inception", lambda *args, **kwargs: TinyFeatures())
    faces = tmp_path / "faces"
    make_faces(faces, 16)
    run_dir = tmp_path / "run"
    args = ["train-gen", str(faces), "-o", str(run_dir), "--resolution", "32", "--g-width", "32", "--d-width", "16"]
    args += ["--iterations", "2", "--batch-size", "8", "--sample-every", "2", "--checkpoint-every", "2"]
    args += ["--eval-every", "2", "--eval-samples", "6", "--attr-model", str(tiny_attr_model), "--workers", "0"]
    result = CliRunner().invoke(app, [*args, "--upsample", "bilinear"])
    assert result.exit_code == 2 and "--upsample bilinear: use transposed or resize" in result.output
    result = CliRunner().invoke(app, [*args, "--age-bins", "1"])
    assert result.exit_code == 2 and "--age-bins 1 carries no age" in result.output
    result = CliRunner().invoke(app, [*args, "--age-scale", "linear"])
    assert result.exit_code == 2 and "--age-scale linear: use log or sqrt" in result.output
    result = CliRunner().invoke(app, [*args, "--mode-seeking", "-1"])
    assert result.exit_code == 2 and "--mode-seeking" in result.output
    v2_options = ["--age-bins", "16", "--balance", "1", "--r1-gamma", "0.5", "--mode-seeking", "0.25"]
    v2_options += ["--age-weight", "2", "--d-age-weight", "3", "--age-scale", "sqrt"]
    result = CliRunner().invoke(app, [*args, *v2_options])
    assert result.exit_code == 0, result.output
    saved = json.loads((run_dir / "options.json").read_text())
    chosen = ("upsample", "age_bins", "balance", "r1_gamma", "mode_seeking", "age_weight", "d_age_weight", "age_scale")
    assert [saved[key] for key in chosen] == ["resize", 16, 1.0, 0.5, 0.25, 2.0, 3.0, "sqrt"]

    metrics = pl.read_parquet(run_dir / "metrics.parquet")
    assert metrics["iteration"].to_list() == [2]
    row = metrics.row(0, named=True)
    for name in ("loss_d", "loss_g", "iterations_per_s", "fid", "kid_mean", "age_mae_vs_requested"):
        assert math.isfinite(row[name]), name
    assert 0 <= row["gender_agreement"] <= 1 and 0 <= row["race_agreement"] <= 1
    checkpoint = read_generator_checkpoint(run_dir / "last.pt")
    assert checkpoint["config"]["upsample"] == "resize" and checkpoint["config"]["age_bins"] == 16
    assert checkpoint["config"]["age_scale"] == "sqrt"
    assert checkpoint["iteration"] == 2 and {"generator", "discriminator", "ema", "opt_g", "opt_d"} <= set(checkpoint)
    generator, meta = load_generator(run_dir)
    assert meta["iterations"] == 2 and generator.config.resolution == 32 and generator.config.age_scale == "sqrt"
    # its version is its file's digest (synth's model_version), not the tool's version, which it keeps apart
    digest = hashlib.sha256((run_dir / "generator.pt").read_bytes()).hexdigest()[:12]
    assert (meta["version"], meta["tool_version"]) == (digest, __version__)
    assert generator.embed.age_scale == "sqrt"
    with torch.no_grad():
        faces_out = generator(
            torch.zeros(2, TINY.z_dim), torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([20, 60])
        )
    assert faces_out.shape == (2, 3, 32, 32) and bool(faces_out.abs().le(1).all())
    grid = Image.open(run_dir / "grid_latest.png")
    assert grid.size == (8 * 34, 10 * 34)  # the grid's ages across, every gender x race down, 2-pixel gaps
    assert np.asarray(grid).std() > 0
    assert len(list((run_dir / "eval_samples").glob("*.jpg"))) == 6


def test_metrics_log_the_losses_at_every_checkpoint_and_the_iterations_each_row_averages(tmp_path: Path):
    """Rows were written at evaluations only: a --no-eval run logged no losses, and the first row after a resume
    averaged fewer iterations without saying so."""
    make_faces(tmp_path / "faces", 16)
    options = dict(source=tmp_path / "faces", out_dir=tmp_path / "run", **TINY_RUN)  # checkpoints every 3
    train_gen(TrainGenOptions(iterations=3, **options))
    train_gen(TrainGenOptions(iterations=8, **options), resume=True, iterations=8)
    metrics = pl.read_parquet(tmp_path / "run" / "metrics.parquet")
    assert metrics["iteration"].to_list() == [3, 6, 8]
    assert metrics["iterations_averaged"].to_list() == [3, 3, 2]
    for name in ("loss_d", "loss_g", "iterations_per_s"):
        assert metrics[name].is_finite().all() and metrics[name].null_count() == 0, name
    assert "fid" not in metrics.columns
