"""The attribute network's training losses: labels (multi-task), a teacher's predictions (distillation), the
race class weights they share, and a frozen attribute network's read of generated faces (train-gen's teacher)."""

from __future__ import annotations

from dataclasses import dataclass

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
    from torch.nn import functional as F

    gender_loss = F.binary_cross_entropy_with_logits(logits.gender.float(), gender.float())
    race_loss = F.cross_entropy(logits.race.float(), race, weight=race_weights, label_smoothing=0.05)
    return gender_loss + race_loss + age_loss(logits.age, age, age_values)


def age_loss(age_logits, age, age_values):
    """``multitask_loss``'s age part: soft-label CE over the age bins + a tenth of the expected age's L1."""
    import torch

    log_probs = torch.log_softmax(age_logits.float(), dim=1)
    soft_ce = -(soft_age_targets(age, log_probs.shape[1]) * log_probs).sum(dim=1).mean()
    expected = (log_probs.exp() * age_values).sum(dim=1)
    return soft_ce + 0.1 * (expected - age.float()).abs().mean()


def teacher_pixels(model, images):
    """Generated ``images`` (N x 3 x S x S in [-1, 1]) as an ``AttrNet`` reads them: 0..255, resized to its input
    size (bilinear, antialiased), the gradient flowing back to them."""
    from torch.nn import functional as F

    size = model.config.input_size
    pixels = (images.float() + 1) * 127.5
    if pixels.shape[-1] != size:  # not attr_ensemble.resize_chips: its rounding passes no gradient
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return pixels


def generated_faces_loss(model, images, gender, race, age, *, age_only: bool = False):
    """``multitask_loss`` of a frozen ``AttrNet`` reading generated ``images`` (``teacher_pixels``) against the
    conditions they were drawn for, or with ``age_only`` its age part alone. Its plain forward: no test-time mirror,
    no race adjustment, as in training."""
    logits = model(teacher_pixels(model, images))
    if age_only:
        return age_loss(logits.age, age, model.age_values)
    return multitask_loss(logits, gender, race, age, None, model.age_values)


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


@dataclass
class TrainingTargets:
    """The training side as tensors: chips (N x 3 x S x S uint8), labels, race loss weights and, with --teacher,
    the teacher's probabilities and the race logit adjustment they are compared after. ``labelled``: None where
    every row's own labels count, else a bool per row (False: a row that learns from the teacher alone)."""

    pixels: object
    labels: dict
    race_weights: object
    soft: dict | None = None
    race_adjustment: object = None
    labelled: object = None

    def batch_loss(self, logits, index, distill_weight: float, age_values):
        """The loss of the rows ``index``: labels, or (1 - distill_weight) x labels + distill_weight x the
        teacher's. Rows without own labels add nothing to the labels' part (its mean over the labelled rows, scaled
        by their share of the batch) and all of their weight to the teacher's."""
        device = logits.gender.device
        labels = [self.labels[key][index].to(device) for key in ("gender", "race", "age")]
        if self.labelled is None:
            loss = multitask_loss(logits, *labels, self.race_weights, age_values)
        elif (keep := self.labelled[index].to(device)).any():
            mine = type(logits)(*(part[keep] for part in logits))
            loss = keep.float().mean() * multitask_loss(
                mine, *(part[keep] for part in labels), self.race_weights, age_values
            )
        else:  # a batch of teacher-only rows
            loss = logits.gender.new_zeros(())
        if self.soft is None:
            return loss
        soft = {key: value[index].to(device) for key, value in self.soft.items()}
        return (1 - distill_weight) * loss + distill_weight * distillation_loss(logits, soft, self.race_adjustment)
