"""The training commands (train, ensemble, export-onnx, train-gen): the ones that make model files rather than
read folders. ``cli`` merges them into the one ``faceattr-batch`` command, listed after the everyday commands; the
same conventions hold (one options dataclass per pipeline, one library call, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceattr_batch import cli_options as opt
from faceattr_batch import summaries
from faceattr_batch.cli_base import command_registrar, int_tuple, log_progress, options_of
from faceattr_batch.summaries import show

app = typer.Typer()
command = command_registrar(app)


# --- train / ensemble / export-onnx --------------------------------------------------------------------------------


@command("train")
def train_command(
    source: Annotated[Path, typer.Argument(help="Index Parquet from `index --hash`, or an image folder.")],
    out: Annotated[Path, opt.out_option("RUN_DIR for checkpoints, metrics and the model.")],
    root: opt.Root = None,
    extra: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="SOURCE",
            help="Labelled faces (index Parquet or folder, e.g. synth's output) added to the training side only: "
            "never validated on, the split unchanged. Repeatable.",
        ),
    ] = None,
    input_size: Annotated[int, typer.Option(min=16, help="Chip size the network sees (pixels).")] = 80,
    backbone: opt.Backbone = "resnet",
    widths: Annotated[str, typer.Option(help="resnet: channels per stage, comma-separated.")] = "32,64,128,256",
    depths: Annotated[str, typer.Option(help="resnet: residual blocks per stage, comma-separated.")] = "1,2,2,1",
    inception_block: Annotated[
        str, typer.Option(help="inception: the last Inception-v3 block kept, Mixed_5b ... Mixed_6e (earlier = faster).")
    ] = "Mixed_6e",
    dropout: Annotated[float, typer.Option(min=0.0, max=0.9, help="Dropout before the output layer.")] = 0.1,
    init_from: opt.InitFrom = None,
    teacher: opt.Teacher = None,
    distill_weight: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="With --teacher: the teacher's share of the loss.")
    ] = 0.5,
    extra_teacher_only: Annotated[
        bool,
        typer.Option(
            help="With --teacher and --extra: the extra faces learn from the teacher alone, their own labels "
            "unused (a generator's requested labels, not read off the faces)."
        ),
    ] = False,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the cosine schedule.")] = 60,
    batch_size: opt.BatchSize = 128,
    lr: Annotated[float, typer.Option(min=1e-8, help="Peak AdamW learning rate.")] = 2e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    val_fraction: Annotated[float, typer.Option(min=0.01, max=0.5, help="Share of duplicate groups held out.")] = 0.1,
    folds: opt.Folds = 1,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without a better score.")] = 12,
    seed: opt.Seed = 0,
    workers: opt.Workers = 2,
    threads: opt.TrainThreads = None,
    device: opt.Device = "auto",
    resume: opt.Resume = False,
    limit: opt.TrainLimit = None,
    steps_per_epoch: Annotated[int | None, typer.Option(min=1, help="Cap the steps per epoch (smoke runs).")] = None,
    json_out: opt.JsonOut = False,
) -> None:
    """Train the attribute model (gender, race, age distribution) on a UTKFace-style set."""
    from faceattr_batch.pipelines import train

    log_progress()
    widths, depths = int_tuple(widths, "--widths"), int_tuple(depths, "--depths")
    options = options_of(train.TrainOptions, locals(), out_dir=out, extra=tuple(extra or ()))
    result = train.run(options, resume=resume)
    summary = summaries.cross_fit if folds > 1 else summaries.train
    show(summary, result, json_data=result.report if json_out else None)


@command("ensemble")
def ensemble_command(
    source: Annotated[Path, typer.Argument(help="The index Parquet (or folder) the members were trained on.")],
    members: Annotated[list[str], typer.Argument(help="Two or more trained networks: fast | model files | RUN_DIRs.")],
    out: Annotated[Path, opt.out_option("The ensemble model file to write (.pt).")],
    root: opt.Root = None,
    val_fraction: Annotated[
        float, typer.Option(min=0.01, max=0.5, help="The members' share of duplicate groups held out.")
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="The members' split seed.")] = 0,
    int8: Annotated[
        bool, typer.Option("--int8", help="Store the members' large weights as int8 (half the fp16 size).")
    ] = False,
    no_mirror: Annotated[
        bool, typer.Option("--no-mirror", help="Drop the members' test-time mirror: one view each, half the cost.")
    ] = False,
    workers: opt.Workers = 2,
    json_out: opt.JsonOut = False,
) -> None:
    """Average trained attribute models into one file; temperatures and report from the members' validation split.

    Each member reads the chip at its own input size; their logits are averaged. The members must share the
    index and split (--seed, --val-fraction) they were trained with, so the report counts faces none of them saw.
    """
    from faceattr_batch.pipelines import ensemble

    options = options_of(ensemble.EnsembleOptions, locals(), members=tuple(members))
    result = ensemble.run(options)
    show(summaries.ensemble, result, json_data=result.report if json_out else None)


@command("export-onnx")
def export_onnx_command(
    out: Annotated[Path, opt.out_option("The ONNX file to write.")] = Path("model.onnx"),
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", show_default="the shipped ensemble", help="default | fast | RUN_DIR | .pt checkpoint."
        ),
    ] = None,
    opset: Annotated[int, typer.Option(min=13, max=23, help="ONNX opset version (torch 2.13 exports up to 23).")] = 17,
    int8: Annotated[
        Path | None, typer.Option(metavar="IMAGES", help="Quantize to int8, calibrated on chips of this folder.")
    ] = None,
    int8_chips: Annotated[
        int | None,
        typer.Option(
            min=1,
            show_default="512; 128 for an ensemble",
            help="--int8: chips sampled to calibrate (the shipped ensemble needs ~60 MB each).",
        ),
    ] = None,
    json_out: opt.JsonOut = False,
) -> None:
    """Export the attribute model to ONNX (dynamic batch, uint8 chips in, calibrated outputs)."""
    from faceattr_batch.data.inputs import list_images
    from faceattr_batch.models import export, quantize

    if int8 is None:
        summary = export.export_onnx(model, out, opset)
    else:
        summary = quantize.quantize_onnx(model, out, list_images(int8), int8_chips, opset)
    show(summaries.export_onnx, summary, json_data=summary if json_out else None)


@command("train-gen")
def train_gen_command(
    source: Annotated[Path, typer.Argument(help="Index Parquet from `index`, or an image folder.")],
    out: Annotated[Path, opt.out_option("RUN_DIR for checkpoints, grids, metrics, generator.")],
    root: opt.Root = None,
    resolution: Annotated[int, typer.Option(help="Generated chip size: 32, 64 or 128.")] = 64,
    g_width: Annotated[
        int, typer.Option(min=4, help="Generator channels at the output size (doubled per halving).")
    ] = 16,
    d_width: Annotated[
        int, typer.Option(min=4, help="Discriminator channels after its first layer (doubled per halving).")
    ] = 32,
    upsample: Annotated[
        str, typer.Option(help="Generator upsampling: resize (x2 then 3x3 conv) or transposed (v1, checkerboard).")
    ] = "resize",
    age_bins: Annotated[
        int, typer.Option(min=0, help="Discriminator reads age as a distribution over N bins; 0: regression (v1).")
    ] = 32,
    age_scale: Annotated[
        str, typer.Option(help="Age scale of the conditioning and the age bins: sqrt (finer when old) or log (v1).")
    ] = "sqrt",
    balance: Annotated[
        float, typer.Option(min=0, max=1, help="Draw rows by count(gender, race, age band)^-B: 0 natural, 1 even.")
    ] = 0.5,
    r1_gamma: Annotated[float, typer.Option(min=0, help="R1 penalty weight on real faces (lazy); 0 = off.")] = 0.01,
    mode_seeking: Annotated[float, typer.Option(min=0, help="Mode-seeking weight (MSGAN, diversity); 0 = off.")] = 0.1,
    age_weight: Annotated[float, typer.Option(min=0, help="Age's weight in G's auxiliary loss (gender's: 1).")] = 1.0,
    d_age_weight: Annotated[float, typer.Option(min=0, help="Age's weight in D's aux. loss on real faces.")] = 1.0,
    init_generator: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune: start G and its EMA from this generator file or RUN_DIR (its config; D is new, of "
            "--d-width)."
        ),
    ] = None,
    d_warmup: Annotated[int, typer.Option(min=0, help="Train D alone for the first N iterations.")] = 0,
    lr_g: Annotated[float, typer.Option(min=0, help="G's Adam learning rate (lower it to fine-tune).")] = 2e-4,
    lr_d: Annotated[float, typer.Option(min=0, help="D's Adam learning rate.")] = 2e-4,
    teacher: Annotated[
        str | None,
        typer.Option(help="A frozen attribute network (name, e.g. fast, or .pt) whose loss on G's faces joins G's."),
    ] = None,
    teacher_weight: Annotated[float, typer.Option(min=0, help="Weight of --teacher's loss in G's.")] = 1.0,
    teacher_age_only: Annotated[
        bool, typer.Option("--teacher-age-only", help="With --teacher: its age loss alone (not gender's, race's).")
    ] = False,
    teacher_moments: Annotated[
        float,
        typer.Option(
            min=0,
            help="With --teacher: weight of matching its mean features of G's faces to the real faces', per gender x "
            "race x age band (0: off; with --teacher-weight 0, in place of its loss).",
        ),
    ] = 0.0,
    count: Annotated[
        int | None,
        typer.Option(
            "--iterations",
            min=1,
            show_default="40000; with --resume the run's own",  # TrainGenOptions.iterations (test_cli checks)
            help="Training iterations, one D and one G step each. With --resume: extends the run, or ends it at its "
            "checkpoint.",
        ),
    ] = None,
    batch_size: opt.BatchSize = 64,
    sample_every: Annotated[int, typer.Option(min=1, help="Write a sample grid every N iterations.")] = 500,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Checkpoint every N iterations.")] = 500,
    eval_every: Annotated[int, typer.Option(min=1, help="Log FID and attribute agreement every N iterations.")] = 2_500,
    eval_samples: Annotated[int, typer.Option(min=2, help="Generated faces per evaluation.")] = 1_000,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip FID/agreement evaluations (faster).")] = False,
    attr_model: Annotated[
        str | None, typer.Option(show_default="the shipped ensemble", help="Attribute model for agreement.")
    ] = None,
    seed: opt.Seed = 0,
    workers: opt.Workers = 2,
    threads: opt.TrainThreads = None,
    device: opt.Device = "auto",
    resume: opt.Resume = False,
    limit: opt.TrainLimit = None,
) -> None:
    """Train the conditional face generator (gender, race, age) with checkpoints, grids, FID and agreement."""
    from faceattr_batch.pipelines import train_gen

    log_progress()
    # --iterations is passed once: in a fresh run's options, or as the count that replaces a resumed run's own
    given = {} if count is None else {"iterations": count}
    fresh, resumed = ({}, given) if resume else (given, {})
    options = options_of(train_gen.TrainGenOptions, locals(), out_dir=out, evaluate=not no_eval, **fresh)
    result = train_gen.run(options, resume=resume, **resumed)
    show(summaries.train_gen, result)
