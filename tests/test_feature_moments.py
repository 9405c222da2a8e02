"""train-gen's --teacher-moments: per-cell feature means of real faces against running means of generated ones."""

from __future__ import annotations

import pytest
import torch

from faceattr_batch.data.labels import AGE_BANDS, RACES
from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig
from faceattr_batch.training import feature_moments
from faceattr_batch.training.feature_moments import N_CELLS, FeatureMoments, condition_cells
from faceattr_batch.training.losses import teacher_pixels


def _teacher() -> AttrNet:
    torch.manual_seed(0)
    return AttrNet(AttrNetConfig(input_size=24, widths=(8, 16), depths=(1, 1))).eval().requires_grad_(False)


def test_condition_cells_follow_the_report_bands():
    ages = torch.tensor([0, 2, 3, 9, 10, 79, 80, 116])
    bands = condition_cells(torch.zeros_like(ages), torch.zeros_like(ages), ages)
    assert bands.tolist() == [0, 0, 1, 1, 2, 8, 9, 9]
    last = condition_cells(torch.tensor([1]), torch.tensor([len(RACES) - 1]), torch.tensor([85]))
    assert last.item() == N_CELLS - 1 == 2 * len(RACES) * len(AGE_BANDS) - 1


def test_of_real_averages_each_cells_features_and_scales_by_their_spread():
    teacher = _teacher()
    pixels = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    gender, race = torch.tensor([0] * 6 + [1] * 4), torch.tensor([2] * 6 + [4] * 4)
    age = torch.tensor([30, 31, 35, 85, 90, 99, 5, 5, 6, 7])
    moments = FeatureMoments.of_real(teacher, pixels, [gender, race, age], "cpu", batch=4)  # batches split cells
    with torch.no_grad():
        features = teacher.pooled(teacher_pixels(teacher, pixels.float() / 127.5 - 1))
    cells = condition_cells(gender, race, age)
    for rows in ([0, 1, 2], [3, 4, 5], [6, 7, 8, 9]):
        assert torch.allclose(moments.real_mean[cells[rows[0]]], features[rows].mean(dim=0), atol=1e-5)
    assert torch.allclose(moments.scale, features.std(dim=0, unbiased=False), rtol=1e-3)
    assert moments.real_mean.shape == (N_CELLS, features.shape[1])
    assert int(moments.real_mean.abs().sum(dim=1).gt(0).sum()) == 3  # the other cells have no real faces
    assert not moments.seen.any()


def test_loss_tracks_a_running_mean_and_pushes_each_face_towards_its_cells_real_mean():
    teacher = _teacher()
    gender, race, age = torch.tensor([0, 0, 1]), torch.tensor([1, 1, 3]), torch.tensor([40, 45, 82])
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        features = teacher.pooled(teacher_pixels(teacher, images))
    dim = features.shape[1]
    cells = condition_cells(gender, race, age)
    real_mean = torch.zeros(N_CELLS, dim)
    real_mean[cells[0]] = features[:2].mean(dim=0)  # the first cell's real mean: exactly this batch's
    real_mean[cells[2]] = features[2] + 1.0  # the second's: one spread above it in every feature
    moments = FeatureMoments(real_mean, torch.ones(dim), torch.zeros(N_CELLS, dim), torch.zeros(N_CELLS, dtype=bool))

    drawn = images.clone().requires_grad_(True)
    loss = moments.loss(teacher, drawn, gender, race, age)
    # first sight of both cells: the running means are the batch's; the gaps 0 and 1 in every feature
    assert loss.item() == pytest.approx(0.5, rel=1e-4)
    assert moments.seen[cells].all() and moments.seen.sum() == 2
    assert torch.allclose(moments.fake_mean[cells[2]], features[2], atol=1e-5)
    loss.backward()
    assert drawn.grad[:2].abs().max() < 1e-6 < drawn.grad[2].abs().max()  # matched cell: nothing to push
    assert all(p.grad is None for p in teacher.parameters())

    # seen again, another batch moves the running mean by RATE of its gap and no more
    moved = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        new = teacher.pooled(teacher_pixels(teacher, moved))
    moments.loss(teacher, moved, gender, race, age)
    expected = features[2] + feature_moments.RATE * (new[2] - features[2])
    assert torch.allclose(moments.fake_mean[cells[2]], expected, atol=1e-5)


def test_state_round_trips():
    moments = FeatureMoments(torch.rand(N_CELLS, 4), torch.rand(4), torch.rand(N_CELLS, 4), torch.rand(N_CELLS) > 0.5)
    again = FeatureMoments.from_state(moments.state_dict(), "cpu")
    for key, value in moments.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)
