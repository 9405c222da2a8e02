"""Scoring and calibrating a trained attribute model on its validation faces: logits over cached chips, the
predictions frame the attribute metrics read, the early-stopping score, temperature scaling and the report."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl

from faceattr_batch.metrics import attributes as m
from faceattr_batch.progress import progress_bar
from faceattr_batch.schema import derived_columns, float_outputs, prediction_codes, true_label_codes

HEADS = ("gender", "race", "age")
UNCALIBRATED = (1.0, 1.0, 1.0)  # temperatures that leave the logits as they are


def collect_logits(model, pixels: np.ndarray, device, batch_size: int = 512, desc: str | None = None):
    """Logits for all cached pixels (with the model's test-time mirror when configured), on the CPU; a progress
    bar named ``desc`` when given."""
    import torch  # heavy: loaded when a training starts, not when the CLI does

    parts = []
    starts = range(0, len(pixels), batch_size)
    with torch.inference_mode():
        for start in progress_bar(starts, desc=desc, unit="batch", enabled=desc is not None):
            chunk = torch.from_numpy(pixels[start : start + batch_size]).permute(0, 3, 1, 2).to(device)
            parts.append([t.float().cpu() for t in model.logits(chunk.contiguous(memory_format=torch.channels_last))])
    return [torch.cat(column) for column in zip(*parts, strict=True)]


def predictions_frame(logits, temperatures, labels: pl.DataFrame) -> pl.DataFrame:
    """``labels`` (path, gender, race, age) beside the predictions of ``logits`` at ``temperatures``, codes and
    labels named as in the predictions Parquet (``schema``), which ``metrics.attributes`` reads."""
    import torch

    from faceattr_batch.models.attr_net import AttrLogits, calibrated_outputs  # torch-backed

    outputs = calibrated_outputs(AttrLogits(*logits), torch.tensor(temperatures))
    columns = float_outputs({name: value.numpy() for name, value in outputs._asdict().items()})
    return (
        labels.select(pl.col("path"), *true_label_codes())
        .with_columns(
            *(pl.Series(name, values) for name, values in columns.items()),
            pl.Series("race_confidence", outputs.race_probs.max(dim=1).values.numpy()),
        )
        .with_columns(**prediction_codes())
        .with_columns(derived_columns())
    )


def overall_metrics(model, pixels: np.ndarray, rows: pl.DataFrame, device) -> dict:
    """The overall attribute metrics of ``model`` (uncalibrated) on cached chips with labels ``rows``."""
    return m.overall(predictions_frame(collect_logits(model, pixels, device), UNCALIBRATED, rows))


def validation_score(metrics: dict) -> float:
    """One number for early stopping: accuracies in %, MAE in years (1 year of MAE ~ 2.5 points)."""
    return 100 * metrics["gender_accuracy"] + 100 * metrics["race_accuracy"] - 2.5 * metrics["age_mae"]


def fit_temperatures(logits, labels: pl.DataFrame) -> tuple[list[float], dict]:
    """Temperature per head minimising validation NLL (grid search in log space: robust, 1-D each)."""
    import torch
    from torch.nn import functional as F

    gender, race, age = logits
    g_true = torch.tensor(labels.get_column("gender").to_numpy()).float()
    r_true = torch.tensor(labels.get_column("race").to_numpy()).long()
    a_true = torch.tensor(labels.get_column("age").to_numpy()).long().clamp(0, age.shape[1] - 1)
    nll = {
        "gender": lambda t: F.binary_cross_entropy_with_logits(gender / t, g_true).item(),
        "race": lambda t: F.cross_entropy(race / t, r_true).item(),
        # age bins are one year wide and the labels noisy: score the probability within ±2 years
        "age": lambda t: (
            -torch.log(
                (torch.softmax(age / t, 1) * (torch.arange(age.shape[1])[None] - a_true[:, None]).abs().le(2)).sum(1)
                + 1e-8
            )
            .mean()
            .item()
        ),
    }
    grid = torch.exp(torch.linspace(math.log(0.25), math.log(4.0), 121)).tolist()
    temps = [min(grid, key=nll[head]) for head in HEADS]
    g_true, r_true = g_true.numpy(), r_true.numpy()
    calibration = {
        "temperatures": dict(zip(HEADS, temps, strict=True)),
        "gender_ece_before": _gender_ece(torch.sigmoid(gender).numpy(), g_true),
        "gender_ece_after": _gender_ece(torch.sigmoid(gender / temps[0]).numpy(), g_true),
        "race_ece_before": _race_ece(torch.softmax(race, 1).numpy(), r_true),
        "race_ece_after": _race_ece(torch.softmax(race / temps[1], 1).numpy(), r_true),
    }
    return temps, calibration


def _gender_ece(p_female: np.ndarray, truth: np.ndarray) -> float | None:
    return m.expected_calibration_error(np.maximum(p_female, 1 - p_female), (p_female >= 0.5) == (truth == 1))


def _race_ece(probs: np.ndarray, truth: np.ndarray) -> float | None:
    return m.expected_calibration_error(probs.max(axis=1), probs.argmax(axis=1) == truth)


def validation_report(frame: pl.DataFrame) -> dict:
    """Overall metrics, race confusion matrix and per race / gender / age band breakdowns of a predictions frame."""
    return {
        "n_train_val": {"val": frame.height},
        "overall": m.overall(frame),
        "race_confusion": m.confusion_matrix(frame),
        "by_race": m.breakdown(frame, ["race"]).to_dicts(),
        "by_gender": m.breakdown(frame, ["gender"]).to_dicts(),
        "by_age_band": m.breakdown(frame, ["age_band"]).to_dicts(),
    }


def calibrated_report(model, val_pixels, val_rows, race_weights, device, state) -> dict:
    """Undo the race class weights (logit adjustment), choose test-time mirroring by validation, fit
    temperatures, and build the final validation report."""
    import torch

    from faceattr_batch import __version__

    weighted_metrics = overall_metrics(model, val_pixels, val_rows, device)
    # A loss weighted by w_c learns posteriors tilted by w_c; subtracting log w_c restores the class
    # frequencies, which maximises accuracy (Menon et al. 2021, logit adjustment). Not tuned on validation.
    model.race_bias.copy_(-torch.log(race_weights))  # race_weights: the loss weights, a CPU tensor
    plain = collect_logits(model, val_pixels, device)
    plain_metrics = m.overall(predictions_frame(plain, UNCALIBRATED, val_rows))
    model.config = replace(model.config, tta_flip=True)
    mirrored = collect_logits(model, val_pixels, device)
    mirrored_metrics = m.overall(predictions_frame(mirrored, UNCALIBRATED, val_rows))
    use_flip = validation_score(mirrored_metrics) > validation_score(plain_metrics)
    model.config = replace(model.config, tta_flip=use_flip)
    logits = mirrored if use_flip else plain
    temps, calibration = fit_temperatures(logits, val_rows)
    calibration["temperatures_list"] = temps
    return {
        "tool_version": __version__,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "tta_flip": use_flip,
        "tta_comparison": {"plain": plain_metrics, "mirrored": mirrored_metrics},
        "race_adjustment": {"bias": model.race_bias.tolist(), "before": weighted_metrics, "after": plain_metrics},
        **validation_report(predictions_frame(logits, temps, val_rows)),
        "calibration": calibration,
    }
