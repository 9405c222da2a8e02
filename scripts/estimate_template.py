"""Estimate align.TEMPLATE and check align.CHIP_TOLERANCE on the training chips (prints numbers, writes nothing).

    python scripts/estimate_template.py ../shared/data/utkface --n 2000

Detects the face of ``--n`` randomly chosen chips with the package's detector (as ``find_faces`` does: grey
margin, min score 0.9), takes the best face of each, and prints: the mean of each landmark in 200-px chip
coordinates (paste it into ``faceattr_batch/align.py`` as TEMPLATE), the chips with no face, and how far each
chip's own framing is from the template (scale, rotation, shift percentiles: CHIP_TOLERANCE must cover them so
that ``predict --faces auto`` takes every chip as a chip). No pixels leave this script.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from faceattr_batch.data.decode import read_rgb
from faceattr_batch.faces.align import CHIP_SIZE, CHIP_TOLERANCE, fills_frame, framing_error
from faceattr_batch.faces.detect import MtcnnDetector, find_faces, rescore_boxes
from faceattr_batch.faces.load import CHECK_MIN_SCORE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chips", help="folder of 200 x 200 training chips")
    parser.add_argument("--n", type=int, default=2000, help="chips to sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    names = sorted(n for n in os.listdir(args.chips) if n.lower().endswith((".jpg", ".jpeg", ".png")))
    chosen = np.random.default_rng(args.seed).choice(len(names), size=min(args.n, len(names)), replace=False)
    detector = MtcnnDetector()
    points, boxes, missed, checks = [], [], [], []
    for i in sorted(chosen):
        pixels = read_rgb(os.path.join(args.chips, names[i]))
        height, width = pixels.shape[:2]
        side = min(width, height)
        square = np.array([[(width - side) / 2, (height - side) / 2, side, side]])
        checks.append((names[i], rescore_boxes(pixels, detector, square, CHECK_MIN_SCORE), width, height))
        found = find_faces(pixels, detector, min_face=20, min_score=0.9, max_faces=10)
        if not len(found):
            missed.append(names[i])
            continue
        best = int(np.argmax(found.scores))
        points.append(found.landmarks[best] * (CHIP_SIZE / min(width, height)))
        boxes.append(found.boxes[best] / min(width, height))
    points = np.stack(points)
    template = points.mean(axis=0)
    print(f"chips: {len(chosen)}, face found: {len(points)}, missed: {len(missed)} {missed[:10]}")
    print("TEMPLATE = [")
    for x, y in template:
        print(f"    [{x:.2f}, {y:.2f}],")
    print("]")
    print("landmark scatter (px, std per landmark):", np.round(points.std(axis=0).astype(float), 2).tolist())
    framings = [framing_error(p, CHIP_SIZE, CHIP_SIZE, template) for p in points]
    scale = np.array([abs(np.log(f.scale)) for f in framings])
    rotation = np.array([abs(f.rotation) for f in framings])
    shift = np.array([f.shift for f in framings])
    for name, values, limit in (
        ("|log scale|", scale, np.log1p(CHIP_TOLERANCE.scale)),
        ("|rotation| deg", rotation, CHIP_TOLERANCE.rotation),
        ("shift / side", shift, CHIP_TOLERANCE.shift),
    ):
        quantiles = np.percentile(values, [50, 99, 99.9, 100]).round(4).tolist()
        print(f"{name}: p50/p99/p99.9/max {quantiles}; tolerance {limit:.4f}; outside {(values > limit).sum()}")
    not_chips = [
        name for name, check, width, height in checks
        if not (len(check) and fills_frame(check.landmarks[np.argmax(check.scores)], width, height, template))
    ]  # fmt: skip
    print(f"--faces auto would not take {len(not_chips)} as chips: {not_chips[:10]}")
    sides = np.stack(boxes)[:, 2:].max(axis=1)
    print("face box side / chip side: p0.1/p1/p50", np.percentile(sides, [0.1, 1, 50]).round(3).tolist())


if __name__ == "__main__":
    main()
