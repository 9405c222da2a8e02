"""The attribute network's training losses: labels (multi-task), a teacher's predictions (distillation), and the
race class weights they share."""

from __future__ import annotations

import numpy as np
import polars as pl

from faceattr_batch.data.labels import RACES


def race_loss_weights(train_rows: pl.DataFrame) -> np.ndarray:
    """Race cross-entropy weights proportional to 1/sqrt(class frequency), mean 1."""
    counts = np.bincount(train_rows.get_column("race").to_numpy(), minlength=len(RACES)).astype(np.float64)
    weights = (counts.sum() / (len(RACES) * np.maximum(counts, 1))) ** 0.5
    return weights / weights.mean()


def soft_age_targets(age, bins: int):
    """Label distribution for ages: a Gaussian whose width grows with age, as the labels' noise does."""
    import torch  # heavy: loaded when a training starts, not when the CLI does

    values = torch.arange(bins, dtype=torch.float32, device=age.device)
    sigma = 1.5 + 0.05 * age.float()
    weights = torch.exp(-0.5 * ((values[None, :] - age[:, None].float()) / sigma[:, None]) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def multitask_loss(logits, gender, race, age, race_weights, age_values):
    """Gender BCE + class-weighted, smoothed race CE + soft-label age CE + a tenth of the expected age's L1."""
    import torch
    from torch.nn import functional as F

    gender_loss = F.binary_cross_entropy_with_logits(logits.gender.float(), gender.float())
    race_loss = F.cross_entropy(logits.race.float(), race, weight=race_weights, label_smoothing=0.05)
    log_probs = torch.log_softmax(logits.age.float(), dim=1)
    age_loss = -(soft_age_targets(age, log_probs.shape[1]) * log_probs).sum(dim=1).mean()
    expected = (log_probs.exp() * age_values).sum(dim=1)
    age_l1 = (expected - age.float()).abs().mean()
    return gender_loss + race_loss + age_loss + 0.1 * age_l1


def distillation_loss(logits, soft: dict, race_bias):
    """Cross-entropy to the teacher's calibrated probabilities (P(female), race, age distribution). The teacher's
    race probabilities follow the real class frequencies, so they are compared with the student's logits after
    the logit adjustment the finished model will carry (``race_bias`` = -log of the loss weights)."""
    import torch
    from torch.nn import functional as F

    gender_loss = F.binary_cross_entropy_with_logits(logits.gender.float(), soft["p_female"])
    race_loss = -(soft["race"] * torch.log_softmax(logits.race.float() + race_bias, dim=1)).sum(dim=1).mean()
    age_loss = -(soft["age"] * torch.log_softmax(logits.age.float(), dim=1)).sum(dim=1).mean()
    return gender_loss + race_loss + age_loss
