"""int8 against fp32, measured side by side in one run: validation accuracy and model-alone speed of each model.

    nice -n 10 python benchmarks/bench_int8.py --index utk.parquet --split RUN_DIR/split.parquet \
        [--models default fast RUN_DIR ...] [--calibration 512] [--threads 2] [--batch-size 256] [--shipped-only]

For each model: its fp32 ONNX export and its int8 graph (``models.quantize``: static QDQ, per-channel 7-bit weights,
calibrated on ``--calibration`` chips of the split's *training* faces), both run by onnxruntime on the split's
validation faces (decoded once per input size, as predict decodes them), and for a shipped model's name its shipped
int8 file too (``int8 shipped``: onnxruntime's int8 kernels differ between CPUs, so a file quantized and checked on one
CPU is checked again on this one). Prints gender and race accuracy, age MAE,
race macro-F1 and images/s (model alone, pre-decoded batches), and int8 minus fp32, with the face-by-face
agreement: mean and 99th percentile of |int8 age - fp32 age|, the signed mean, and the faces whose gender or race
changes. ``--shipped-only`` skips the new quantization (fp32 export against the shipped int8 file). The issue's
rule: int8 is accepted where accuracy moves by less than 0.2 points and MAE by less than 0.02 years.

``--split`` is a ``train`` RUN_DIR's ``split.parquet`` (path, dup_group, split), ``--index`` the ``index --hash``
Parquet it was made from (labels; images under its recorded root).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from faceattr_batch.data.batches import iter_batches
from faceattr_batch.data.decode import load_chip
from faceattr_batch.index.build import read_index_metadata
from faceattr_batch.metrics.attributes import overall
from faceattr_batch.models.export import export_onnx
from faceattr_batch.models.quantize import quantize_onnx
from faceattr_batch.models.registry import SHIPPED_ATTR_MODELS
from faceattr_batch.models.runtime import ModelRunner, OnnxAttrModel


def decode_all(paths: list[str], size: int) -> np.ndarray:
    """uint8 N x 3 x S x S, in ``paths`` order (2 decode processes)."""
    chips = [None] * len(paths)
    for batch in iter_batches(paths, functools.partial(load_chip, size=size), 256, 2):
        assert not batch.errors, batch.errors
        for index, chip in zip(batch.ok, batch.items, strict=True):
            chips[batch.start + index] = chip
    return np.stack(chips).transpose(0, 3, 1, 2).copy()


def evaluate(model: OnnxAttrModel, pixels: np.ndarray, labels: pl.DataFrame, batch_size: int) -> tuple[dict, dict]:
    """The metrics (and images/s), and the predictions face by face (gender, race, age)."""
    outputs, start = [], time.perf_counter()
    for begin in range(0, len(pixels), batch_size):
        outputs.append(model.infer(pixels[begin : begin + batch_size]))
    seconds = time.perf_counter() - start
    predicted = {
        "pred_gender": np.concatenate([(o.p_female >= 0.5).numpy() for o in outputs]).astype(np.int64),
        "pred_race": np.concatenate([o.race_probs.argmax(1).numpy() for o in outputs]).astype(np.int64),
        "pred_age": np.concatenate([o.age_median.numpy() for o in outputs]).astype(np.float64),
    }
    frame = labels.with_columns(pl.Series(name, values) for name, values in predicted.items())
    return {**overall(frame), "images_per_s": len(pixels) / seconds}, predicted


def agreement(graph: dict, fp32: dict) -> dict:
    """A graph's predictions face by face against the fp32 export's."""
    age = graph["pred_age"] - fp32["pred_age"]
    return {
        "|age - fp32| mean": float(np.abs(age).mean()),
        "|age - fp32| p99": float(np.percentile(np.abs(age), 99)),
        "age - fp32 mean": float(age.mean()),
        "gender flips": int((graph["pred_gender"] != fp32["pred_gender"]).sum()),
        "race flips": int((graph["pred_race"] != fp32["pred_race"]).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["default", "fast"])
    parser.add_argument("--calibration", type=int, default=512, help="training chips to calibrate int8 on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shipped-only", action="store_true", help="no new quantization: fp32 vs the shipped int8")
    args = parser.parse_args()

    root = Path(read_index_metadata(args.index)["faceattr_batch.root"])
    split = pl.read_parquet(args.split).join(pl.read_parquet(args.index, columns=["path", "age", "gender", "race"]),
                                             on="path")  # fmt: skip
    val = split.filter(pl.col("split") == "val").sort("path")
    train_paths = [str(root / p) for p in split.filter(pl.col("split") == "train")["path"]]
    labels = val.select(true_gender="gender", true_race="race", true_age="age")
    made = f"int8 calibrated on {args.calibration} training faces"
    made = "the shipped int8 files only" if args.shipped_only else made
    print(f"{val.height} validation faces, {made}, {args.threads} threads, batch {args.batch_size}")
    decoded: dict[int, np.ndarray] = {}
    rows, agreements = [], []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as folder:
        for name in args.models:
            fp32_path, int8_path = Path(folder) / f"{len(rows)}.fp32.onnx", Path(folder) / f"{len(rows)}.int8.onnx"
            size = export_onnx(name, fp32_path)["input_size"]  # a shipped name, a RUN_DIR or a file
            graphs = [("fp32", OnnxAttrModel(fp32_path, args.threads))]
            if not args.shipped_only:
                quantize_onnx(name, int8_path, train_paths, count=args.calibration)
                graphs.append(("int8", OnnxAttrModel(int8_path, args.threads)))
            if size not in decoded:
                decoded[size] = decode_all([str(root / p) for p in val["path"]], size)
            if name in SHIPPED_ATTR_MODELS:  # the graph predict runs on CPUs: the int8 file beside the .pt
                shipped = ModelRunner.load(name, torch.device("cpu"), "onnxruntime", args.threads)
                graphs.append((f"{shipped.meta['precision']} shipped", shipped.model))
            for precision, graph in graphs:
                result, predicted = evaluate(graph, decoded[size], labels, args.batch_size)
                rows.append({"model": name, "input": size, "precision": precision, **result})
                if precision == "fp32":
                    fp32_predicted = predicted
                else:
                    agreements.append({"model": name, "precision": precision, **agreement(predicted, fp32_predicted)})
                print(f"  {name} {precision}: done", flush=True)
    table = pl.DataFrame(rows).select(
        "model", "input", "precision",
        (pl.col("gender_accuracy") * 100).round(2).alias("gender %"),
        (pl.col("race_accuracy") * 100).round(2).alias("race %"),
        pl.col("race_macro_f1").round(3).alias("race F1"),
        pl.col("age_mae").round(3).alias("MAE"),
        pl.col("images_per_s").round(0).alias("images/s"),
    )  # fmt: skip
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
        print(table)
        fp32 = table.filter(pl.col("precision") == "fp32")
        fp32 = fp32.select("model", pl.exclude("model", "input", "precision").name.suffix(" fp32"))
        deltas = table.filter(pl.col("precision") != "fp32").join(fp32, on="model").select(
            "model", "precision",
            *((pl.col(c) - pl.col(f"{c} fp32")).round(3).alias(f"- fp32: {c}") for c in ("gender %", "race %", "MAE")),
            (pl.col("images/s") / pl.col("images/s fp32")).round(2).alias("speed / fp32"),
        )  # fmt: skip
        print(deltas)
        print("face by face, against the fp32 export:")
        print(pl.DataFrame(agreements).with_columns(pl.selectors.float().round(3)))


if __name__ == "__main__":
    main()
