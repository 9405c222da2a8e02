"""`faceattr-batch train-gen`: train the conditional face generator, resumably, with FID and agreement logged.

Spine: labelled index -> decode every chip once at the generator's resolution -> iterations of hinge-loss
GAN training (DiffAugment on both sides of the discriminator, auxiliary classification on real faces,
an EMA copy of the generator) -> at intervals: a sample grid PNG, a checkpoint, and an evaluation
(``training.gen_eval``: FID / KID against a fixed real subset, agreement with the attribute model).

Deterministic given the seed: iteration i draws its batch, noise and augmentation from generators seeded by
(seed, i), so a run resumed from a checkpoint continues as the uninterrupted one would.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from faceattr_batch import __version__
from faceattr_batch.errors import FaceattrError, first_line
from faceattr_batch.io.atomic import refuse_overlap
from faceattr_batch.io.rundir import append_metrics, start_run
from faceattr_batch.models.device import available_cores, resolve_device
from faceattr_batch.models.registry import (
    GEN_TRAIN_FORMAT,
    absolute_source,
    load_attr_model,
    load_generator,
    read_checkpoint,
    save_atomically,
    save_generator,
)
from faceattr_batch.progress import progress_bar
from faceattr_batch.training.data import decode_cache, label_tensors, load_labelled
from faceattr_batch.training.feature_moments import FeatureMoments, condition_cells
from faceattr_batch.training.gen_eval import check_ready, evaluate
from faceattr_batch.training.gen_grid import grid_drawer
from faceattr_batch.training.stop_request import StopRequest

log = logging.getLogger(__name__)

GEN_CHECKPOINT = "last.pt"
GEN_MODEL = "generator.pt"
GEN_MAX_AGE = 100  # condition ages are clamped to this
RESOLUTIONS = (32, 64, 128)


@dataclass(frozen=True)
class TrainGenOptions:
    source: Path  # index Parquet or folder of UTKFace-style images
    out_dir: Path
    root: Path | None = None
    resolution: int = 64
    g_width: int = 16
    d_width: int = 32
    upsample: str = "resize"  # "transposed": v1's DCGAN upsampling (models.generator)
    age_bins: int = 32  # 0: v1's age regression in the discriminator's auxiliary head
    age_scale: str = "sqrt"  # where ages sit for the conditioning and the age bins (models.generator.AGE_SCALES)
    # Rows (real and fake conditions alike) are drawn with weight count(gender, race, age band) ** -balance:
    # 0 draws the data's own mix, 1 every condition as often; rare conditions (old women, Others) collapsed in v1.
    balance: float = 0.5
    r1_gamma: float = 0.01  # R1 penalty on real faces (lazy: every r1_every iterations, scaled up by it); 0 = off
    r1_every: int = 16
    # Mode seeking (MSGAN, Mao et al. 2019): half the batch repeats the other half's conditions with new noise, and
    # the generator is pushed by this weight / (image distance / noise distance); 0 = off.
    mode_seeking: float = 0.1
    iterations: int = 40_000
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    ema_decay: float = 0.999
    aux_weight: float = 0.5  # weight of the auxiliary classification loss on generated faces (generator side)
    age_weight: float = 1.0  # age's weight within it, beside gender's and race's 1 (mode seeking cost age)
    d_age_weight: float = 1.0  # age's weight in the discriminator's auxiliary loss on real faces
    # Fine-tuning: the generator and its EMA start from a generator file or RUN_DIR (its config, a fresh
    # discriminator of d_width); the first d_warmup iterations train the discriminator alone.
    init_generator: str | None = None
    d_warmup: int = 0
    # A frozen attribute network (a name such as fast, or a .pt file) whose training loss on the generated faces,
    # times teacher_weight, joins the generator's: an age signal from a network that reads old faces as old (the
    # discriminator's own head reads real faces of 80+ as 72). It is one of the default model's three members.
    teacher: str | None = None
    teacher_weight: float = 1.0
    # Its age loss alone: its gender and race terms pulled the rarest conditions towards one face (gen13, gen14).
    teacher_age_only: bool = False
    # Weight of matching, per gender x race x age band, the mean of the teacher's features of generated faces to
    # that of real ones (training.feature_moments); 0 = off. teacher_weight 0 leaves it alone in the teacher's place.
    teacher_moments: float = 0.0
    sample_every: int = 500
    checkpoint_every: int = 500
    eval_every: int = 2_500
    eval_samples: int = 1_000
    real_subset: int = 2_000  # fixed real faces for the logged FID
    attr_model: str | None = None  # scores agreement; None = the shipped attribute model
    evaluate: bool = True
    seed: int = 0
    workers: int = 2
    threads: int | None = None  # torch threads on the CPU; None = all cores
    device: str = "auto"
    limit: int | None = None
    progress: bool = True


@dataclass
class _Gan:
    """The networks and optimizers a checkpoint holds."""

    config: object  # GeneratorConfig
    generator: object
    discriminator: object
    ema: object  # the generator's exponential moving average: what is saved and sampled
    opt_g: object
    opt_d: object
    teacher: object = None  # --teacher's frozen attribute network (not saved: run loads it after the checkpoint)
    moments: object = None  # --teacher-moments' FeatureMoments (saved: its running means are training state)

    def checkpoint(self, iteration: int) -> dict:
        return {
            "format": GEN_TRAIN_FORMAT,
            "config": self.config.to_dict(),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "ema": self.ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "iteration": iteration,
            **({} if self.moments is None else {"teacher_moments": self.moments.state_dict()}),
        }


class _Standing:
    """The EMA with standing statistics at one iteration, made once and shared by grid, evaluation and save."""

    def __init__(self, ema, labels: list, weights, seed: int):
        self.ema, self.labels, self.weights, self.seed = ema, labels, weights, seed
        self.iteration, self.model = None, None

    def at(self, iteration: int):
        if iteration != self.iteration:
            standing = with_standing_stats(self.ema, self.labels, self.seed, weights=self.weights)
            self.iteration, self.model = iteration, standing
        return self.model


def condition_weights(labels: list, balance: float):
    """Each row's drawing weight, count(gender x race x age band) ** -balance, summing to 1 (a float64 tensor;
    the cells are the teacher moments' own); None: uniform (0)."""
    if balance == 0:
        return None
    cells = condition_cells(*labels)
    weights = cells.bincount()[cells].double() ** -balance
    return weights / weights.sum()


def with_standing_stats(ema, labels: list, seed: int, batches: int = 40, batch: int = 64, weights=None):
    """A copy of the EMA generator with BatchNorm statistics of its own weights (BigGAN's "standing statistics").

    The running statistics the EMA carries are the training generator's, whose weights the average lags behind:
    measured at 8,500 iterations (1,000 samples against the 2,000-face real subset) FID 78.3 with the carried
    statistics, 64.9 with standing ones (the training generator itself: 73.0). Conditions are drawn as in
    training (``weights`` per row; None = the labels' joint distribution); noise and picks are seeded, so the
    copy is deterministic.
    """
    import copy

    import torch

    standing = copy.deepcopy(ema)
    for module in standing.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches below
    standing.train()
    device = next(standing.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(batches):
            index = draw_rows(len(labels[0]), batch, weights, rng)
            z = torch.randn(batch, standing.config.z_dim, generator=rng)
            standing(z.to(device), *[t[index].to(device) for t in labels])
    return standing.eval()


def run(options: TrainGenOptions, resume: bool = False, iterations: int | None = None) -> dict:
    """Train (or with ``resume`` continue) a generator run; ``iterations`` on resume replaces the run's own count,
    to extend a run or to end it at its checkpoint (then only ``generator.pt`` is written)."""
    import torch  # heavy: loaded when a training starts, not when the CLI does

    _check_options(options, resume)
    # eval samples and grids inside the faces would be indexed as faces by a resume, or by the next index
    refuse_overlap(options.out_dir, "-o", {"SOURCE": options.source, "--root": options.root}, folder=True)
    overrides = {"iterations": iterations} if resume and iterations is not None else None
    # model options kept as a resume from another folder reads them (the teacher is loaded again on resume)
    models = {name: absolute_source(getattr(options, name)) for name in ("teacher", "init_generator")}
    options = replace(options, **models)
    options = start_run(options, GEN_CHECKPOINT, "generator", resume, overrides)
    if options.evaluate:
        check_ready(options)
    out = Path(options.out_dir)
    torch.set_num_threads(options.threads or available_cores())
    device = resolve_device(options.device)
    table = load_labelled(options.source, options.root, options.workers, options.limit)
    labels = list(label_tensors(table, GEN_MAX_AGE).values())  # gender, race, age
    weights = condition_weights(labels, options.balance)
    gan, start = _build_gan(options, device, out / GEN_CHECKPOINT if resume else None)
    standing = _Standing(gan.ema, labels, weights, options.seed)
    model_path = out / GEN_MODEL
    result = {"model": str(model_path), "out_dir": str(out)}
    if start >= options.iterations:  # nothing left to train: the run ends at its checkpoint, without pixels or teacher
        log.info("the checkpoint is at iteration %d >= %d: writing its generator", start, options.iterations)
        save_generator(standing.at(start), model_path, _model_meta(options, start))
        return result
    gan.teacher = _load_teacher(options.teacher, device)  # before the decode: a wrong --teacher fails in seconds
    size = gan.config.resolution  # --init-generator's file's own, whatever --resolution says
    pixels = decode_cache(table, size, out / f"pixels_{size}.npy", options.workers, options.progress)
    pixels = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    if options.teacher_moments > 0 and gan.moments is None:
        gan.moments = FeatureMoments.of_real(gan.teacher, pixels, labels, device, options.progress)
    draw_grid = grid_drawer(gan.config.z_dim, device, out)
    bar = progress_bar(
        range(start, options.iterations),
        initial=start,
        total=options.iterations,
        desc="train-gen",
        enabled=options.progress,
    )
    started, losses = time.perf_counter(), []
    with StopRequest() as stop:  # Ctrl-C / SIGTERM: this iteration ends, its checkpoint is written, then the stop
        for iteration in bar:
            losses.append(_train_step(gan, pixels, labels, weights, iteration, options, device))
            done = iteration + 1
            if done % 50 == 0:
                bar.set_postfix(d=f"{_mean_loss(losses[-50:], 0):.3f}", g=f"{_mean_loss(losses[-50:], 1):.3f}")
            last = done == options.iterations
            if done % options.sample_every == 0 or last:
                draw_grid(standing.at(done), done)
            checkpoint = done % options.checkpoint_every == 0 or last or stop.asked
            evaluation = options.evaluate and (done % options.eval_every == 0 or last)
            if checkpoint:
                save_atomically(out / GEN_CHECKPOINT, gan.checkpoint(done))
            if checkpoint or evaluation:
                # what `synth -m RUN_DIR` reads mid-run: the checkpoint's EMA with the training generator's statistics
                save_generator(standing.at(done), model_path, _model_meta(options, done))
                # a row per checkpoint, so that a run without evaluations logs its losses too; after a resume the first
                # row averages fewer iterations, and says how many
                row = {
                    "iteration": done,
                    "loss_d": _mean_loss(losses, 0),
                    "loss_g": _mean_loss(losses, 1),  # NaN where every iteration warmed the discriminator alone
                    "iterations_averaged": len(losses),
                    "iterations_per_s": len(losses) / (time.perf_counter() - started),
                }
                if evaluation:
                    row |= evaluate(standing.at(done), gan.config, table, options, out)
                    log.info("iteration %d: %s", done, row)
                append_metrics(out / "metrics.parquet", row, key="iteration")
                losses, started = [], time.perf_counter()
            if stop.asked and not last:
                log.warning("stopped at iteration %d, checkpoint written: --resume goes on from it", done)
                break
    bar.close()
    if stop.asked and not last:
        stop.honour()
    return result


def _check_options(options: TrainGenOptions, resume: bool) -> None:
    """One line for an option out of range, before anything is read or written."""
    if options.resolution not in RESOLUTIONS:
        raise FaceattrError(f"--resolution {options.resolution}: use 32, 64 or 128")
    from faceattr_batch.models.generator import AGE_SCALES, UPSAMPLERS  # torch-backed

    if options.upsample not in UPSAMPLERS:
        raise FaceattrError(f"--upsample {options.upsample}: use {' or '.join(UPSAMPLERS)}")
    if options.age_scale not in AGE_SCALES:
        raise FaceattrError(f"--age-scale {options.age_scale}: use {' or '.join(AGE_SCALES)}")
    if options.age_bins == 1:
        raise FaceattrError("--age-bins 1 carries no age: use 0 (a regression) or 2 or more bins")
    # one rate 0 trains the other network alone (--lr-g 0: the discriminator); both 0 would train nothing
    if min(options.lr_g, options.lr_d) < 0 or options.lr_g == options.lr_d == 0:
        raise FaceattrError(f"--lr-g {options.lr_g} --lr-d {options.lr_d}: at least one must be above 0, none below")
    if not resume:  # a resume takes the run's own options
        if options.teacher is None and (options.teacher_age_only or options.teacher_moments > 0):
            raise FaceattrError(f"--teacher-{'age-only' if options.teacher_age_only else 'moments'} needs --teacher")
        if options.teacher is not None and options.teacher_weight == 0 and options.teacher_moments == 0:
            raise FaceattrError(f"--teacher {options.teacher} with --teacher-weight 0 and no --teacher-moments: unused")
        if options.teacher_age_only and options.teacher_weight == 0:
            log.warning("--teacher-age-only shapes --teacher-weight's loss, which is 0 here: it changes nothing")


def _mean_loss(losses: list[tuple], index: int) -> float:
    """The mean of the (loss_d, loss_g) pairs' ``index``-th, over the iterations that trained that network."""
    values = [pair[index] for pair in losses if pair[index] is not None]
    return float(np.mean(values)) if values else float("nan")


def _model_meta(options: TrainGenOptions, iteration: int) -> dict:
    # the tool's version, not the generator's: that is its file's digest (registry.load_generator), as for train
    return {
        "name": "faceattr-gen",
        "tool_version": __version__,
        "iterations": iteration,
        "trained_on": str(options.source),
    }


def _build_gan(options: TrainGenOptions, device, resume_from: Path | None) -> tuple[_Gan, int]:
    """Fresh networks seeded by ``seed`` (the EMA starts as the generator; with ``init_generator``, both start from
    that file), or the checkpoint's; the iteration to go on from."""
    import dataclasses

    import torch

    from faceattr_batch.models.generator import Discriminator, Generator, GeneratorConfig  # torch-backed

    checkpoint = None if resume_from is None else read_checkpoint(resume_from, (GEN_TRAIN_FORMAT,), "train-gen")
    start_from = None
    if checkpoint is not None:  # the networks the run was started with, whatever today's defaults
        config = _checked(resume_from, lambda: GeneratorConfig.from_dict(checkpoint["config"]))
    elif options.init_generator is not None:  # its generator; the discriminator is new, of the asked width
        start_from, _ = load_generator(options.init_generator)
        config = dataclasses.replace(start_from.config, d_width=options.d_width)
    else:  # the options that are config fields (resolution, widths, upsample, age_bins)
        config = GeneratorConfig.from_dict(vars(options))
    torch.manual_seed(options.seed)
    layout = torch.channels_last  # 10-20% faster convolutions on this CPU (measured side by side)
    generator = Generator(config)
    if start_from is not None:
        generator.load_state_dict(start_from.state_dict())
    generator = generator.to(device, memory_format=layout)
    discriminator = Discriminator(config).to(device, memory_format=layout)
    ema = Generator(config).to(device, memory_format=layout).eval()
    ema.load_state_dict(generator.state_dict())
    opt_g = torch.optim.Adam(generator.parameters(), lr=options.lr_g, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=options.lr_d, betas=(0.0, 0.99))
    gan = _Gan(config, generator, discriminator, ema, opt_g, opt_d)
    if checkpoint is None:
        return gan, 0
    for name in ("generator", "discriminator", "ema", "opt_g", "opt_d"):
        _checked(resume_from, lambda name=name: getattr(gan, name).load_state_dict(checkpoint[name]))
    if "teacher_moments" in checkpoint:
        gan.moments = FeatureMoments.from_state(checkpoint["teacher_moments"], device)
    start = checkpoint["iteration"]
    log.info("resuming after iteration %d", start)
    return gan, start


def _checked(path: Path, load):
    """``load()``, a checkpoint whose parts do not fit (edited, or of another version) as one line."""
    try:
        return load()
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise FaceattrError(f"{path}: a train-gen checkpoint this run cannot load ({first_line(err, 160)})") from None


def _load_teacher(source: str | None, device):
    """``--teacher``'s attribute network, frozen in eval mode, or None."""
    if source is None:
        return None
    from faceattr_batch.models.attr_net import AttrNet  # torch-backed

    model, _ = load_attr_model(source)
    if not isinstance(model, AttrNet):
        raise FaceattrError(f"--teacher {source}: an ensemble; give one attribute network (such as fast)")
    return model.to(device).eval().requires_grad_(False)


def draw_rows(n: int, batch: int, weights, rng):
    """``batch`` row numbers out of ``n``: uniform, or by ``weights`` (a tensor of n, summing to 1), seeded."""
    import torch

    if weights is None:
        return torch.randint(0, n, (batch,), generator=rng)
    return torch.multinomial(weights, batch, replacement=True, generator=rng)


def _train_step(gan: _Gan, pixels, labels: list, weights, iteration: int, options: TrainGenOptions, device):
    """One discriminator and one generator update, then the EMA; batch, noise and augmentation seeded by
    (seed, iteration). Real rows and fake conditions are drawn alike (``weights``), so the discriminator cannot
    tell them apart by their labels. Returns the two losses."""
    import torch
    from torch.nn import functional as F

    from faceattr_batch.models.generator import diff_augment, mode_seeking_loss  # torch-backed
    from faceattr_batch.training.losses import generated_faces_loss

    n = len(pixels)
    batch = min(options.batch_size, n)
    rng = torch.Generator().manual_seed(options.seed * 1_000_003 + iteration)
    real_index = draw_rows(n, batch, weights, rng)
    cond_index = draw_rows(n, batch, weights, rng)
    pairs = batch // 2 if options.mode_seeking > 0 else 0
    if pairs:  # rows pairs..2*pairs-1 repeat the first pairs conditions (the noise stays independent)
        cond_index = torch.cat([cond_index[:pairs], cond_index[:pairs], cond_index[2 * pairs :]])
    real = (pixels[real_index].float() / 127.5 - 1).to(device, memory_format=torch.channels_last)
    real_cond = [t[real_index].to(device) for t in labels]
    fake_cond = [t[cond_index].to(device) for t in labels]
    z = torch.randn(batch, gan.config.z_dim, generator=rng).to(device)
    discriminator = gan.discriminator

    warming_up = iteration < options.d_warmup  # a fresh discriminator learns before the generator moves
    with torch.set_grad_enabled(not warming_up):
        fake = gan.generator(z, *fake_cond)
    r1 = options.r1_gamma > 0 and iteration % options.r1_every == 0
    real_seen = diff_augment(real, rng).requires_grad_(r1)
    real_score, real_aux = discriminator(real_seen, *real_cond)
    fake_score, _ = discriminator(diff_augment(fake.detach(), rng), *fake_cond)
    loss_d = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
    loss_d = loss_d + discriminator.aux_loss(real_aux, *real_cond, age_weight=options.d_age_weight)
    if r1:  # StyleGAN2's lazy R1: gamma / 2 * |grad D(real)|^2, applied every r1_every steps at that many times
        (grad,) = torch.autograd.grad(real_score.sum(), real_seen, create_graph=True)
        penalty = grad.square().sum(dim=(1, 2, 3)).mean()
        loss_d = loss_d + options.r1_gamma / 2 * options.r1_every * penalty
    gan.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    gan.opt_d.step()
    if warming_up:
        return loss_d.item(), None

    fake_score, fake_aux = discriminator(diff_augment(fake, rng), *fake_cond)
    aux_g = discriminator.aux_loss(fake_aux, *fake_cond, age_weight=options.age_weight)
    loss_g = -fake_score.mean() + options.aux_weight * aux_g
    if pairs:
        loss_g = loss_g + options.mode_seeking * mode_seeking_loss(fake, z, pairs)
    if gan.teacher is not None and options.teacher_weight > 0:
        taught = generated_faces_loss(gan.teacher, fake, *fake_cond, age_only=options.teacher_age_only)
        loss_g = loss_g + options.teacher_weight * taught
    if gan.moments is not None:
        loss_g = loss_g + options.teacher_moments * gan.moments.loss(gan.teacher, fake, *fake_cond)
    gan.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    gan.opt_g.step()
    # EMA ramp-up: early on the average would be mostly the random initial weights (0.999^500 = 61%),
    # which made the first sample grids flat; (1 + i) / (10 + i) lets it follow until it reaches ema_decay.
    decay = min(options.ema_decay, (1 + iteration) / (10 + iteration))
    with torch.no_grad():
        for p_ema, p in zip(gan.ema.parameters(), gan.generator.parameters(), strict=True):
            p_ema.lerp_(p, 1 - decay)
        for b_ema, b in zip(gan.ema.buffers(), gan.generator.buffers(), strict=True):
            b_ema.copy_(b)
    return loss_d.item(), loss_g.item()
