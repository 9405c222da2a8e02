"""FID and KID statistics of a feature set, and the two distances (torchmetrics' split: state + update/compute).

``FeatureStats`` keeps running float64 sums and sums of outer products (FID: memory flat in the number of images)
and a seeded reservoir sample of at most ``capacity`` rows (KID needs features). ``save_stats``/``load_stats``
store a bundle (``ALL`` and any slices) as .npz with pytorch-fid's ``mu``/``sigma`` names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceattr_batch.errors import FaceattrError, first_line
from faceattr_batch.io.atomic import replacing

STATS_FORMAT = "faceattr-fid-stats-v1"
ALL = ""  # the key of the whole side in a stats bundle; slices are keyed by their label


# --- sufficient statistics ------------------------------------------------------------------------------------


@dataclass
class FeatureStats:
    """Running float64 sum and sum of outer products of features (FID), plus a reservoir sample (KID).

    ``merge`` combines two sides' stats as if one pass had seen both (the reservoir by a hypergeometric draw, so
    it stays a uniform sample of the union).
    """

    dim: int
    capacity: int = 10_000
    seed: int = 0
    n: int = 0
    total: np.ndarray = field(default=None, repr=False)  # (dim,) float64
    outer: np.ndarray = field(default=None, repr=False)  # (dim, dim) float64
    _chunks: list = field(default_factory=list, repr=False)  # reservoir rows, float32, until it is full
    _rng: np.random.Generator = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.total is None:
            self.total = np.zeros(self.dim, dtype=np.float64)
        if self.outer is None:
            self.outer = np.zeros((self.dim, self.dim), dtype=np.float64)
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)

    @property
    def reservoir(self) -> np.ndarray:
        if len(self._chunks) != 1:
            rows = np.concatenate(self._chunks) if self._chunks else np.empty((0, self.dim), np.float32)
            self._chunks = [rows]
        return self._chunks[0]

    def update(self, features: np.ndarray) -> None:
        rows = np.asarray(features, dtype=np.float32).reshape(-1, self.dim)
        wide = rows.astype(np.float64)
        self.total += wide.sum(axis=0)
        self.outer += wide.T @ wide
        self._offer(rows)
        self.n += len(rows)

    def _offer(self, rows: np.ndarray) -> None:
        # Algorithm R: row number i (0-based, over the whole stream) replaces a random slot with prob cap/(i+1)
        filled = sum(len(chunk) for chunk in self._chunks)
        take = min(max(self.capacity - filled, 0), len(rows))
        if take:
            self._chunks.append(rows[:take].copy())
        rest = rows[take:]
        if len(rest):
            numbers = np.arange(self.n + take, self.n + len(rows))
            slots = self._rng.integers(0, numbers + 1)
            kept = np.flatnonzero(slots < self.capacity)
            if len(kept):
                buffer = self.reservoir
                for position in kept:  # in stream order, so a later row wins a slot drawn twice
                    buffer[slots[position]] = rest[position]

    def merge(self, other: FeatureStats) -> FeatureStats:
        """A new FeatureStats equal (sums exactly, reservoir in distribution) to one pass over both inputs."""
        if other.dim != self.dim:
            raise FaceattrError(f"cannot merge feature stats of dimension {self.dim} and {other.dim}")
        merged = FeatureStats(self.dim, self.capacity, self.seed, self.n + other.n)
        merged.total = self.total + other.total
        merged.outer = self.outer + other.outer
        mine, theirs = self.reservoir, other.reservoir
        if len(mine) + len(theirs) <= self.capacity:
            merged._chunks = [np.concatenate([mine, theirs])]
        else:
            # each kept row stands for n/len(reservoir) rows of its stream; draw how many come from each stream
            count = merged._rng.hypergeometric(self.n, other.n, self.capacity)
            count = min(count, len(mine))
            count = max(count, self.capacity - len(theirs))
            pick_mine = merged._rng.choice(len(mine), count, replace=False)
            pick_theirs = merged._rng.choice(len(theirs), self.capacity - count, replace=False)
            merged._chunks = [np.concatenate([mine[np.sort(pick_mine)], theirs[np.sort(pick_theirs)]])]
        return merged

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (as ``np.cov(rowvar=False)``), float64."""
        if self.n < 2:
            raise FaceattrError(f"a covariance needs at least 2 images, got {self.n}")
        mean = self.total / self.n
        cov = (self.outer - self.n * np.outer(mean, mean)) / (self.n - 1)
        return mean, (cov + cov.T) / 2

    @classmethod
    def from_mean_cov(
        cls, n: int, mean: np.ndarray, cov: np.ndarray, reservoir: np.ndarray | None = None, seed: int = 0
    ) -> FeatureStats:
        mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
        width = mean.shape[0] if mean.ndim == 1 else -1
        kept = reservoir is not None and len(reservoir)
        if cov.shape != (width, width) or (kept and np.shape(reservoir)[1:] != (width,)):  # a file edited by hand
            shapes = f"mu {mean.shape}, sigma {cov.shape}" + (f", features {np.shape(reservoir)}" if kept else "")
            raise ValueError(f"its arrays' sizes do not agree ({shapes})")
        stats = cls(len(mean), max(len(reservoir) if reservoir is not None else 0, 1), seed, int(n))
        stats.total = n * mean
        stats.outer = (n - 1) * cov + n * np.outer(mean, mean)
        if reservoir is not None and len(reservoir):
            stats._chunks = [np.asarray(reservoir, np.float32)]
        return stats


def save_stats(path: str | Path, bundle: dict[str, FeatureStats], meta: dict[str, str]) -> Path:
    """Write a side's stats as .npz: ``mu``/``sigma`` (pytorch-fid's names, so its tools read the file too),
    ``count``, the KID reservoir ``features``; slices as ``slice.<label>.<key>``; ``meta.*`` strings."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"format": np.array(STATS_FORMAT)}
    for key, stats in bundle.items():
        prefix = f"slice.{key}." if key != ALL else ""
        mean, cov = stats.mean_cov() if stats.n >= 2 else (stats.total / max(stats.n, 1), np.zeros_like(stats.outer))
        arrays[prefix + "mu"], arrays[prefix + "sigma"] = mean, cov
        arrays[prefix + "count"] = np.array(stats.n)
        arrays[prefix + "features"] = stats.reservoir
    arrays.update({f"meta.{key}": np.array(value) for key, value in meta.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def load_stats(path: str | Path, seed: int = 0) -> tuple[dict[str, FeatureStats], dict[str, str]]:
    """The bundle (``ALL`` and any slices) and meta strings of a file written by ``save_stats``."""
    path = Path(path)
    with open(path, "rb") as file:
        if file.read(2) != b"PK":  # an .npz is a zip archive; numpy's own message for text suggests allow_pickle
            raise FaceattrError(f"{path}: not a readable stats file (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as err:  # numpy raises ValueError/OSError/BadZipFile for foreign bytes
        raise FaceattrError(f"{path}: not a readable stats file ({first_line(err)})") from None
    if str(arrays.get("format", "")) != STATS_FORMAT:
        raise FaceattrError(f"{path}: not a faceattr-batch FID stats file (no format {STATS_FORMAT!r})")
    bundle: dict[str, FeatureStats] = {}
    for key in sorted(k for k in arrays if k.endswith("count")):
        prefix = key[: -len("count")]
        label = prefix[len("slice.") : -1] if prefix.startswith("slice.") else ALL
        try:
            bundle[label] = FeatureStats.from_mean_cov(
                int(arrays[key]), arrays[prefix + "mu"], arrays[prefix + "sigma"], arrays.get(prefix + "features"), seed
            )
        except (KeyError, ValueError, TypeError) as err:  # a file edited or written by hand
            raise FaceattrError(f"{path}: damaged stats file ({label or 'all images'}: {first_line(err)})") from None
    meta = {key[len("meta.") :]: str(value) for key, value in arrays.items() if key.startswith("meta.")}
    return bundle, meta


# --- the distances --------------------------------------------------------------------------------------------


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> tuple[float, list[str]]:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), float64, and notes.

    tr((S1 S2)^1/2) is the sum of square roots of the eigenvalues of a symmetric PSD matrix similar to S1 S2
    (``_trace_sqrt_product``): real by construction, so there are no complex parts to discard as with
    scipy.linalg.sqrtm, and it costs a third of sqrtm. An offset eps*I is added only if an eigendecomposition
    fails to converge, and then said in the notes.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise FaceattrError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise FaceattrError("feature statistics contain NaN or infinity")
    notes: list[str] = []
    try:
        trace_root = _trace_sqrt_product(sigma1, sigma2)
    except np.linalg.LinAlgError:
        eps = 1e-6
        offset = eps * np.eye(len(sigma1))
        trace_root = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
        notes.append(f"matrix square root did not converge; added {eps:g}*I to both covariances")
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)
    return value, notes


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    # S1 = V diag(w) V^T; with B = V_r diag(sqrt w_r) over the r eigenvalues above rounding level (a covariance
    # of n < dim images is singular), S1 S2 has the eigenvalues of the r x r PSD matrix B^T S2 B: real, >= 0
    values, vectors = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    floor = max(values.max(initial=0.0), 0.0) * len(values) * np.finfo(np.float64).eps
    keep = values > floor
    basis = vectors[:, keep] * np.sqrt(values[keep])
    inner = basis.T @ sigma2 @ basis
    eigen = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigen, 0.0, None)).sum())


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel (x.y / d + 1)^3, float64."""
    return (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T / x.shape[1] + 1.0) ** 3


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = len(kxx), len(kyy)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 between two feature sets with KID's polynomial kernel (one subset holding all)."""
    return _mmd2_from_kernels(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


FULL_GRAM_ROWS = 4096  # up to this many rows in all, the kernel matrix is computed once (128 MiB) and indexed


def kid(x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0):
    """KID: mean and std (ddof 0) of the unbiased MMD^2 over ``subsets`` seeded draws (without replacement)
    of min(subset_size, len(x), len(y)) rows per side. Returns (mean, std, subset size used)."""
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise FaceattrError(f"KID needs at least 2 feature rows per side, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    draws = [(rng.choice(len(x), m, replace=False), rng.choice(len(y), m, replace=False)) for _ in range(subsets)]
    if len(x) + len(y) <= FULL_GRAM_ROWS:
        gram = polynomial_kernel(np.concatenate([x, y]), np.concatenate([x, y]))
        nx = len(x)
        kxx, kyy, kxy = gram[:nx, :nx], gram[nx:, nx:], gram[:nx, nx:]
        values = [_mmd2_from_kernels(kxx[np.ix_(a, a)], kyy[np.ix_(b, b)], kxy[np.ix_(a, b)]) for a, b in draws]
    else:
        values = [mmd2_unbiased(x[a], y[b]) for a, b in draws]
    return float(np.mean(values)), float(np.std(values)), m
