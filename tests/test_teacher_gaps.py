"""scripts/teacher_gaps.py: per-cell teacher-feature gaps of a generator's samples against the real faces."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import load_script
from PIL import Image

from faceattr_batch.data.labels import AGE_BANDS, RACES
from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig
from faceattr_batch.training.feature_moments import N_CELLS, condition_cells
from faceattr_batch.training.losses import teacher_pixels

# one real face in each of three cells: (age, gender, race)
FACES = [(30, 0, 2), (85, 1, 3), (5, 1, 4)]


@pytest.fixture(scope="module")
def gaps():
    return load_script("teacher_gaps")


@dataclass
class _Config:
    resolution: int = 16
    z_dim: int = 4


class CopyingGenerator:
    """Draws, for any condition, the one real face of its cell, plus ``shift`` in every pixel."""

    config = _Config()

    def __init__(self, faces: dict, shift: float = 0.0):
        self.faces, self.shift = faces, shift

    def __call__(self, noise, gender, race, age):
        cells = condition_cells(gender, race, age).tolist()
        return torch.stack([self.faces[c] for c in cells]).clamp(-1, 1 - self.shift) + self.shift


def _teacher() -> AttrNet:
    torch.manual_seed(0)
    return AttrNet(AttrNetConfig(input_size=24, widths=(8, 16), depths=(1, 1))).eval().requires_grad_(False)


def _faces(folder: Path) -> dict:
    """Writes the three faces under UTKFace names; returns them by cell as the generator's [-1, 1] images."""
    folder.mkdir()
    by_cell = {}
    for i, (age, gender, race) in enumerate(FACES):
        pixels = np.random.default_rng(i).integers(0, 256, (16, 16, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{age}_{gender}_{race}_2017010{i}.jpg.chip.png")
        cell = condition_cells(torch.tensor([gender]), torch.tensor([race]), torch.tensor([age])).item()
        by_cell[cell] = torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1
    return by_cell


def _labels() -> list:
    ages, genders, races = zip(*FACES, strict=True)
    return [torch.tensor(genders), torch.tensor(races), torch.tensor(ages)]


def test_gap_is_zero_for_copied_faces_and_the_direct_mean_squared_z_gap_otherwise(gaps, tmp_path):
    teacher, labels = _teacher(), _labels()
    faces = _faces(tmp_path / "real")
    pixels = torch.stack([((faces[c] + 1) * 127.5).round().byte() for c in condition_cells(*labels).tolist()])
    real = gaps.FeatureMoments.of_real(teacher, pixels, labels, "cpu")
    n_real = torch.bincount(condition_cells(*labels), minlength=N_CELLS)

    drawn = list(gaps.draw_batches(CopyingGenerator(faces), labels, None, batches=2, truncation=1.0, seed=0))
    fake_mean, n_samples = gaps.cell_means(teacher, drawn)
    assert int(n_samples.sum()) == 2 * gaps.BATCH
    table = gaps.gap_table(real, fake_mean, n_samples, n_real)
    assert table.height == N_CELLS == 2 * len(RACES) * len(AGE_BANDS)
    drawn_cells = table.filter(pl.col("n_samples") > 0)
    assert drawn_cells.select("gender", "race", "band", "n_real").rows() == [
        ("male", "Asian", "30-39", 1),
        ("female", "Indian", "80+", 1),
        ("female", "Others", "3-9", 1),
    ]
    assert drawn_cells["gap"].to_list() == pytest.approx([0, 0, 0], abs=1e-8)
    assert table.filter(pl.col("n_samples") == 0)["gap"].null_count() == N_CELLS - 3

    brighter = list(gaps.draw_batches(CopyingGenerator(faces, 0.5), labels, None, batches=1, truncation=1.0, seed=0))
    fake_mean, n_samples = gaps.cell_means(teacher, brighter)
    shifted = torch.stack([faces[c] for c in condition_cells(*labels).tolist()]).clamp(-1, 0.5) + 0.5
    with torch.no_grad():
        features = teacher.pooled(teacher_pixels(teacher, shifted))
    expected = (((features - real.real_mean[condition_cells(*labels)]) / real.scale) ** 2).mean(dim=1)
    got = gaps.gap_table(real, fake_mean, n_samples, n_real).filter(pl.col("n_samples") > 0)["gap"]
    assert got.to_list() == pytest.approx(expected.tolist(), rel=1e-4)
    assert min(got) > 0

    # the moments loss sends no gradient to faces whose cells match; the teacher's age loss does
    age_norm, moments_norm = gaps.gradient_norms(teacher, real, gaps.cell_means(teacher, drawn)[0], drawn, 0.03)
    assert moments_norm == pytest.approx(0, abs=1e-6) and age_norm > 0


def test_main_writes_every_cell(gaps, tmp_path, monkeypatch, capsys):
    faces = _faces(tmp_path / "real")
    monkeypatch.setattr(gaps, "load_generator", lambda source: (CopyingGenerator(faces), {}))
    monkeypatch.setattr(gaps, "load_attr_model", lambda source: (_teacher(), {}))
    out = tmp_path / "gaps.csv"
    argv = ["teacher_gaps.py", "--source", str(tmp_path / "real"), "--batches", "2", "-o", str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--min-cell", "200"])
    with pytest.raises(SystemExit, match="no cell has 200 samples"):
        gaps.main()
    monkeypatch.setattr(sys, "argv", [*argv, "--min-cell", "1"])
    gaps.main()
    printed = capsys.readouterr().out
    assert "mean gap over 3 cells" in printed and "equal at moments weight" in printed
    table = pl.read_csv(out)
    assert table.columns == ["gender", "race", "band", "n_real", "n_samples", "gap"]
    assert table.height == N_CELLS and table["n_real"].sum() == 3 and table["n_samples"].sum() == 2 * gaps.BATCH
    assert table.filter(pl.col("n_samples") > 0)["gap"].to_list() == pytest.approx([0, 0, 0], abs=1e-6)
