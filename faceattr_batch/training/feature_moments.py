"""train-gen's ``--teacher-moments``: per condition, the mean of a frozen attribute network's features of the generated
faces matched to that of the real faces.

The teacher's classification loss rewards whatever the network reads as the asked age, however far it is pushed:
gen16, taught so, drew glasses on most old Indian women (2-3 of 25 real ones wear them) and its 80+ faces read old to
the teacher, 6 years young to the networks that did not teach. A matched mean has nothing to gain from a cue drawn
more often than the real faces of the condition show it. Cells are gender x race x age band (the report's bands);
the fake side is a running mean over recent batches, since a batch holds about one face per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

from faceattr_batch.data.labels import AGE_BANDS, RACES
from faceattr_batch.progress import progress_bar
from faceattr_batch.training.losses import teacher_pixels

# The fake means' update rate: each follows about the last 50 faces drawn for its cell (noise of a 50-face mean:
# a seventh of a feature's spread), while the generator moves little over the ~80 iterations that takes.
RATE = 0.02
N_CELLS = 2 * len(RACES) * len(AGE_BANDS)


def condition_cells(gender, race, age):
    """Each row's cell number: (gender x race x age band), 0..N_CELLS - 1."""
    import torch

    starts = torch.tensor([low for _, low, _ in AGE_BANDS[1:]], device=age.device)
    band = torch.bucketize(age, starts, right=True)
    return (gender * len(RACES) + race) * len(AGE_BANDS) + band


def cell_feature_sums(teacher, batches) -> tuple:
    """Over ``batches`` of (images in [-1, 1], their cell numbers): the teacher's pooled features summed per cell
    (N_CELLS x D), their squares summed over all images (D) and each cell's count, all float64."""
    import torch

    sums = squares = counts = None
    with torch.no_grad():
        for images, cells in batches:
            features = teacher.pooled(teacher_pixels(teacher, images)).double()
            if sums is None:
                sums, squares = features.new_zeros(N_CELLS, features.shape[1]), features.new_zeros(features.shape[1])
                counts = features.new_zeros(N_CELLS)
            sums.index_add_(0, cells, features)
            squares += features.square().sum(dim=0)
            counts += torch.bincount(cells, minlength=N_CELLS)
    return sums, squares, counts


@dataclass
class FeatureMoments:
    """The real faces' mean features per cell and each feature's spread over all of them (fixed); the generated
    faces' running means per cell and whether a cell has been drawn yet (updated by ``loss``)."""

    real_mean: object  # N_CELLS x D
    scale: object  # D
    fake_mean: object  # N_CELLS x D
    seen: object  # N_CELLS, bool

    @classmethod
    def of_real(cls, teacher, pixels, labels: list, device, progress: bool = False, batch: int = 256):
        """From ``pixels`` (N x 3 x S x S uint8, the training faces) and their (gender, race, age) tensors,
        read at the generated faces' size through the same resize (``teacher_pixels``)."""
        import torch

        cells = condition_cells(*labels).to(device)
        starts = progress_bar(range(0, len(pixels), batch), desc="teacher features", enabled=progress)
        batches = ((pixels[i : i + batch].to(device).float() / 127.5 - 1, cells[i : i + batch]) for i in starts)
        sums, squares, counts = cell_feature_sums(teacher, batches)
        overall = sums.sum(dim=0) / len(pixels)
        variance = squares / len(pixels) - overall.square()
        real_mean = (sums / counts.clamp(min=1).unsqueeze(1)).float()
        scale = variance.clamp(min=1e-12).sqrt().float()
        return cls(real_mean, scale, torch.zeros_like(real_mean), torch.zeros(N_CELLS, dtype=torch.bool, device=device))

    def loss(self, teacher, images, gender, race, age):
        """The mean squared gap, in units of each feature's spread, between the real mean and the running fake mean
        of every cell in the batch; the running means take this batch in first. Its value is the running means',
        its gradient the batch's own (the running part is held fixed)."""
        import torch

        features = teacher.pooled(teacher_pixels(teacher, images))
        present, inverse = torch.unique(condition_cells(gender, race, age), return_inverse=True)
        counts = torch.bincount(inverse, minlength=len(present)).unsqueeze(1)
        batch_mean = features.new_zeros(len(present), features.shape[1]).index_add(0, inverse, features) / counts
        with torch.no_grad():
            before = self.fake_mean[present]
            running = torch.where(self.seen[present].unsqueeze(1), torch.lerp(before, batch_mean, RATE), batch_mean)
            self.fake_mean[present] = running
            self.seen[present] = True
        value = running + batch_mean - batch_mean.detach()
        return ((value - self.real_mean[present]) / self.scale).square().mean()

    def state_dict(self) -> dict:
        return {"real_mean": self.real_mean, "scale": self.scale, "fake_mean": self.fake_mean, "seen": self.seen}

    @classmethod
    def from_state(cls, state: dict, device) -> FeatureMoments:
        return cls(**{key: value.to(device) for key, value in state.items()})
