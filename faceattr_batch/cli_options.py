"""The flags two or more commands share, each declared once (``Annotated`` aliases and option factories for the
ones whose shown default differs by command); ``cli`` and ``cli_train`` use them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceattr_batch import __version__


def out_option(what: str, name: str = "--out") -> typer.models.OptionInfo:
    """-o: what the command writes."""
    return typer.Option(name, "-o", help=what)


def workers_option(none_means: str | None = None) -> typer.models.OptionInfo:
    """--workers; ``none_means`` is the default shown where the command's default is None (chosen by the cores)."""
    return typer.Option(
        "--workers", "-w", min=0, show_default=none_means or True, help="Worker processes (0 = all in this process)."
    )


def threads_option(none_means: str) -> typer.models.OptionInfo:
    return typer.Option("--threads", min=1, show_default=none_means, help="Model threads on the CPU.")


def labels_option(none_means: str) -> typer.models.OptionInfo:
    """--labels (predict, report); ``none_means``: where the true labels come from without it."""
    return typer.Option(
        "--labels",
        show_default=none_means,
        help="Labels file: CSV, Parquet, JSON Lines, an index Parquet, CelebA list_attr_celeba.txt or a FairFace "
        "labels CSV.",
    )


BatchSize = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch.")]
Workers = Annotated[int, workers_option()]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda (auto picks cuda when present).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the summary as JSON (for scripts) instead of tables.")]
# the most numpy's seeding takes (models.sampling.MAX_SEED, which the CLI does not import)
Seed = Annotated[
    int, typer.Option("--seed", min=0, max=2**32 - 1, help="Random seed (results are deterministic given it).")
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output of an earlier run in OUT.")]
Resume = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted run (same command, same output) where it stopped.")
]
Root = Annotated[
    Path | None,
    typer.Option("--root", show_default="the one recorded in it", help="Image folder of an index Parquet."),
]
Engine = Annotated[str, typer.Option("--engine", help="local | ray (Ray Data, same output; needs the [ray] extra).")]
RayAddress = Annotated[
    str | None,
    typer.Option("--ray-address", show_default="a local one", help="With --engine ray: auto | HOST:PORT of a cluster."),
]
Concurrency = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        min=1,
        show_default="1 per GPU; else the CPUs not decoding: predict half, fid 15 in 16",
        help="With --engine ray: model actors.",
    ),
]
SliceBy = Annotated[
    str | None,
    typer.Option(
        "--slice-by",
        show_default="race, gender, age band",
        help="Columns of the --labels file to slice the --report by as well, comma-separated; name:k cuts a numeric "
        "one into k quantile bins (skin_tone,brightness:4).",
    ),
]
MinGroup = Annotated[
    int,
    typer.Option(
        "--min-group",
        min=2,
        help="Fewest rows a group's metric counts (images, true women, known ages) to be compared and ranked "
        "in the report.",
    ),
]
IncludeTraining = Annotated[
    bool,
    typer.Option(
        "--include-training",
        help="Keep the images the model was trained on in the metrics (left out by default: they flatter it).",
    ),
]


Compare = Annotated[
    Path | None,
    typer.Option(
        "--compare",
        metavar="B",
        help="A second run to compare with (predict's Parquet or another tool's table, same --labels): B - A for "
        "every metric and slice, paired intervals and disagreements where the images are the same.",
    ),
]
Columns = Annotated[
    str | None,
    typer.Option(
        "--columns",
        show_default="found by their common names",
        help="Another tool's table: ours=its column, comma-separated (path=img,gender=sex,age=apparent_age); "
        "race= (nothing) leaves race out.",
    ),
]
GenderOneIs = Annotated[
    str,
    typer.Option(
        "--gender-one-is", help="female | male: what a gender of 1 means in another tool's table (insightface: male)."
    ),
]
ReportDir = Annotated[
    Path | None,
    typer.Option("--report", show_default="none: --suspects alone", help="Folder to write the report into."),
]
SuspectsList = Annotated[
    Path | None,
    typer.Option(
        "--suspects",
        metavar="FILE",
        help="Also write the ranked suspect labels (likely wrong labels, with a suggested one) to FILE: .parquet or "
        ".csv; without --report, only that.",
    ),
]
Backbone = Annotated[
    str,
    typer.Option(
        "--backbone",
        help="resnet | inception. resnet: a small CNN trained from scratch (--widths/--depths); inception: the "
        "first blocks of the ImageNet Inception-v3 that `fid` uses (needs the [fid] extra), fine-tuned at a "
        "quarter of --lr.",
    ),
]
InitFrom = Annotated[
    str | None,
    typer.Option(
        "--init-from",
        help="Start from this attribute model's weights: default | fast | a model file | a RUN_DIR. Its "
        "architecture is kept (--backbone/--widths/--depths are ignored), --input-size may differ (e.g. "
        "fine-tune at a larger size); the trunk learns at a quarter of --lr; calibration is refitted.",
    ),
]
Teacher = Annotated[
    str | None,
    typer.Option(
        "--teacher",
        help="Also learn this model's calibrated predictions on the training faces (knowledge distillation): "
        "default | fast | a model file (an ensemble too) | a RUN_DIR. Computed once, kept in RUN_DIR.",
    ),
]
TrainThreads = Annotated[int | None, threads_option("all cores")]
TrainLimit = Annotated[int | None, typer.Option("--limit", min=2, help="Train on the first N labelled images only.")]
Folds = Annotated[
    int,
    typer.Option(
        "--folds",
        min=1,
        metavar="K",
        help="Cross-fit K models instead of one, each holding out a K-th of the duplicate groups (its validation "
        "side) and predicting it: RUN_DIR/oof.parquet holds every labelled image's out-of-fold prediction, for "
        "`report oof.parquet --suspects FILE`. Replaces --val-fraction.",
    ),
]


def slice_specs(text: str | None) -> tuple[str, ...]:
    """--slice-by's comma-separated specs."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def report_options(params: dict) -> dict:
    """report.build's keyword options from the report command's parameters (``locals()``), --slice-by and
    --columns parsed; no progress bar with --json."""
    from faceattr_batch.data.foreign_predictions import parse_columns  # defer import: polars, for one command

    names = ("min_group", "include_training", "gender_one_is", "compare", "suspects")
    columns = None if params["columns"] is None else parse_columns(params["columns"])
    parsed = {"slice_by": slice_specs(params["slice_by"]), "columns": columns, "progress": not params["json_out"]}
    return {name: params[name] for name in names} | parsed


MinFace = Annotated[int, typer.Option("--min-face", min=1, help="Smallest face kept: box side in the photo's pixels.")]
MinScore = Annotated[float, typer.Option("--min-score", min=0.0, max=1.0, help="Detector confidence to keep a face.")]
MaxFaces = Annotated[int, typer.Option("--max-faces", min=1, help="Faces kept per image (the most confident).")]


def print_version(value: bool) -> None:
    if value:
        typer.echo(f"faceattr-batch {__version__}")
        raise typer.Exit()


Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars and no summary; errors and --json still print.")
]
Version = Annotated[
    bool, typer.Option("--version", callback=print_version, is_eager=True, help="Print the version and exit.")
]
