"""Knowledge distillation's targets: a teacher model's calibrated probabilities on the training faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from faceattr_batch.io.atomic import replacing
from faceattr_batch.models.registry import load_attr_model
from faceattr_batch.training.calibration import collect_logits
from faceattr_batch.training.data import cache_key, decode_cache


def teacher_targets(source: str, rows: pl.DataFrame, cache: Path, workers: int, progress: bool, device) -> dict:
    """The teacher's calibrated probabilities on ``rows`` (float32 numpy arrays ``p_female``, ``race``, ``age``),
    computed once and kept in ``cache`` (reused on resume: ``cache_key`` of these rows and this teacher). The chips
    are decoded at the teacher's own input size."""
    import torch  # heavy: loaded when a training starts, not when the CLI does

    key = cache_key(rows.get_column("file").to_list(), str(Path(source).resolve()) if Path(source).exists() else source)
    if cache.is_file():
        with np.load(cache) as stored:
            if "key" in stored.files and str(stored["key"]) == key:
                return {name: stored[name] for name in stored.files if name != "key"}
    teacher, _ = load_attr_model(source)  # an ONNX file is refused there, in one line
    teacher = teacher.to(device).eval()
    pixels = decode_cache(rows, teacher.config.input_size, None, workers, progress)
    gender, race, age = collect_logits(teacher, pixels, device, 128, "teacher" if progress else None)
    t_gender, t_race, t_age = teacher.temperatures.cpu().tolist()
    targets = {
        "p_female": torch.sigmoid(gender / t_gender).numpy(),
        "race": torch.softmax(race / t_race, dim=1).numpy(),
        "age": torch.softmax(age / t_age, dim=1).numpy(),
    }
    with replacing(cache) as tmp:
        np.savez(tmp, key=np.array(key), **targets)
    return targets
