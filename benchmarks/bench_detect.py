"""Face detection speed: ms per photo at 640 x 480 and 1920 x 1080, and `predict --faces detect` / `auto` beside
`--faces chips` on the same chips, measured in one run.

    nice -n 10 python benchmarks/bench_detect.py [--images ../shared/data/utkface] [--photos 24] [--chips 1000]

1. per photo size: composite photos built now (``tests/test_detect.py``'s ``make_composites``: 1-4 UTKFace chips
   of 60-300 px on noise or gradient canvases, nothing kept), timed in this process with one thread, as a
   decode worker runs them: the detector alone (``detect.find_faces``) and decode + detect + align
   (``faces.load_faces``); mean and median ms;
2. ``faceattr-batch predict`` as a whole process on ``--chips`` shared chips with ``--faces chips``, ``auto`` and
   ``detect`` (predict's default worker/thread split unless given), images/s by the wall clock and by predict's
   own timer; ``--splits`` adds detect runs with other splits (e.g. 2x1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests")]

from bench_predict import link_folder, model_file, run_predict  # noqa: E402
from test_detect import make_composites  # noqa: E402

from faceattr_batch.data.decode import read_rgb  # noqa: E402
from faceattr_batch.data.inputs import list_images  # noqa: E402
from faceattr_batch.faces.detect import find_faces  # noqa: E402
from faceattr_batch.faces.load import FaceOptions, load_faces, shared_detector  # noqa: E402
from faceattr_batch.models.runtime import split_cores  # noqa: E402

SIZES = ((640, 480), (1920, 1080))


def time_photos(photos, repeats: int) -> tuple[list[float], list[float], int]:
    """ms per photo: the detector alone, and decode + detect + align (best of ``repeats`` each); faces found."""
    detector, options = shared_detector(), FaceOptions("detect")
    detect_ms, whole_ms, faces = [], [], 0
    for photo in photos:
        pixels = read_rgb(photo.path)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            found = find_faces(pixels, detector, options.min_face, options.min_score, options.max_faces)
            runs.append(time.perf_counter() - start)
        detect_ms.append(1000 * min(runs))
        faces += len(found)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            load_faces(str(photo.path), options, 80)
            runs.append(time.perf_counter() - start)
        whole_ms.append(1000 * min(runs))
    return detect_ms, whole_ms, faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(REPO.parent / "shared" / "data" / "utkface"))
    parser.add_argument("--photos", type=int, default=24, help="composite photos per size")
    parser.add_argument("--repeats", type=int, default=3, help="timings per photo (the best is kept)")
    parser.add_argument("--chips", type=int, default=1000, help="shared chips for the predict runs")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--splits", default="", help="extra detect runs, e.g. '2x1' (workers x threads)")
    args = parser.parse_args()

    images = Path(args.images)
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        tmp = Path(tmp)
        print(f"detector {shared_detector().name}, one thread; best of {args.repeats} per photo")
        for width, height in SIZES:
            photos = make_composites(images, tmp / f"photos_{width}", args.photos, seed=0, sizes=((width, height),))
            detect_ms, whole_ms, faces = time_photos(photos, args.repeats)
            pasted = sum(len(p.faces) for p in photos)
            print(
                f"1. {width}x{height}: detect {statistics.mean(detect_ms):6.1f} ms mean "
                f"({statistics.median(detect_ms):.1f} median); decode+detect+align {statistics.mean(whole_ms):6.1f} "
                f"ms mean; {faces} faces found of {pasted} pasted, {len(photos)} photos"
            )

        paths = list_images([args.images])[: args.chips]
        folder = link_folder(tmp / "chips", paths, len(paths))
        model_path, model_note = model_file(tmp, None)
        workers, threads = split_cores("cpu", args.workers, args.threads)
        print(f"2. predict on {len(paths)} chips ({model_note}), {workers} workers x {threads} threads:")
        runs = [("chips", workers, threads), ("auto", workers, threads), ("detect", workers, threads)]
        for split in filter(None, args.splits.split(",")):
            w, t = (int(v) for v in split.split("x"))
            runs.append(("detect", w, t))
        for mode, w, t in runs:
            flags = ["--faces", mode, "--workers", str(w), "--threads", str(t), "-b", str(args.batch_size)]
            result = run_predict(folder, tmp / f"{mode}_{w}x{t}.parquet", model_path, flags)
            summary = result["summary"]
            print(
                f"   --faces {mode:6s} ({w}x{t}): {len(paths) / result['wall']:7.1f} images/s whole process, "
                f"{summary['images_per_second']:7.1f} by its own timer; {summary['predicted']} rows predicted"
            )


if __name__ == "__main__":
    main()
