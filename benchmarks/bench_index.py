"""Benchmark `faceattr-batch index` (whole process) against a straightforward pandas script.

    python benchmarks/bench_index.py [--files 1000000] [--repeat 3] [--pandas-python PYTHON] [--hash-files N]

Makes (once, then reuses) a tree of empty files with UTKFace names under $TMPDIR/faceattr-bench/, then times
  1. `faceattr-batch index TREE` (file sizes on, the default), and with `--no-file-sizes`;
  2. the pandas baseline: list the folder, split each name on "_" in a Python loop, build a DataFrame, write
     Parquet; run by --pandas-python (default: this Python), skipped with a message when pandas is missing
     (pandas is not a dependency of the project: `pip install pandas` in a throwaway environment);
  3. `faceattr-batch index --hash`, `--quality` and both with the dataset page (`--report`) over the shared UTKFace
     chips (../shared/data/utkface), in images/s; over the first N of them (a folder of symlinks) with --hash-files N.
Each is a separate process, timed from spawn to exit; the best of --repeat runs is reported with the median.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "utkface"
CLI = [sys.executable, "-m", "faceattr_batch"]

PANDAS_BASELINE = """
import os, sys
import pandas as pd
folder, out = sys.argv[1], sys.argv[2]
rows = []
for name in os.listdir(folder):
    parts = name.split("_")
    try:
        rows.append((name, int(parts[0]), int(parts[1]), int(parts[2]), parts[3].split(".")[0]))
    except (IndexError, ValueError):
        rows.append((name, None, None, None, None))
frame = pd.DataFrame(rows, columns=["name", "age", "gender", "race", "datetime"])
frame["captured_at"] = pd.to_datetime(frame["datetime"].str[:14], format="%Y%m%d%H%M%S", errors="coerce")
frame.to_parquet(out)
"""


def make_tree(count: int) -> Path:
    """count empty files named {age}_{gender}_{race}_{17 digits}.jpg.chip.jpg; reused when already complete."""
    base = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "faceattr-bench"
    tree = base / f"tree-{count}"
    done = base / f"tree-{count}.done"
    if done.exists():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    rng = random.Random(0)
    print(f"making {count:,} empty files in {tree} (once) ...", flush=True)
    started = time.perf_counter()
    first = dt.datetime(2016, 12, 1)
    for i in range(count):
        stamp = first + dt.timedelta(milliseconds=1009 * i)  # unique and a valid date for every i
        digits = stamp.strftime("%Y%m%d%H%M%S") + f"{stamp.microsecond // 1000:03d}"
        name = f"{rng.randint(1, 116)}_{rng.randint(0, 1)}_{rng.randint(0, 4)}_{digits}.jpg.chip.jpg"
        os.close(os.open(tree / name, os.O_CREAT | os.O_WRONLY, 0o644))
    done.write_text(f"{count}\n")
    print(f"  made in {time.perf_counter() - started:.1f} s", flush=True)
    return tree


def chip_folder(out: Path, count: int | None) -> Path:
    """The shared chips, or a folder of symlinks to the first ``count`` of them (by name)."""
    if count is None:
        return SHARED
    subset = out / "chips"
    subset.mkdir()
    for name in sorted(os.listdir(SHARED))[:count]:
        (subset / name).symlink_to(SHARED / name)
    return subset


def timed(command: list[str], repeat: int) -> tuple[float, float]:
    """(best, median) wall seconds of running command as a whole process."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def has_pandas(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import pandas, pyarrow"], capture_output=True)
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pandas-python", default=sys.executable, help="a Python with pandas + pyarrow")
    parser.add_argument("--skip-hash", action="store_true", help="do not time --hash / --quality on the shared chips")
    parser.add_argument("--hash-files", type=int, default=None, help="time --hash on the first N chips only")
    args = parser.parse_args()

    tree = make_tree(args.files)
    out = Path(tempfile.mkdtemp(prefix="faceattr-bench-out-"))
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        index = timed([*CLI, "index", str(tree), "-o", str(out / "i.parquet")], args.repeat)
        print(f"faceattr-batch index                  {index[0]:6.2f} s (median {index[1]:.2f})  {args.files:,} files")
        no_size = timed([*CLI, "index", str(tree), "-o", str(out / "n.parquet"), "--no-file-sizes"], args.repeat)
        print(f"faceattr-batch index --no-file-sizes  {no_size[0]:6.2f} s (median {no_size[1]:.2f})")
        if has_pandas(args.pandas_python):
            script = out / "baseline.py"
            script.write_text(PANDAS_BASELINE)
            pandas = timed([args.pandas_python, str(script), str(tree), str(out / "p.parquet")], args.repeat)
            print(f"pandas baseline                       {pandas[0]:6.2f} s (median {pandas[1]:.2f})")
            print(f"ratio pandas / index                  {pandas[0] / index[0]:6.2f} x  (best runs)")
            print(f"ratio pandas / index --no-file-sizes  {pandas[0] / no_size[0]:6.2f} x  (same file columns)")
        else:
            print(f"pandas baseline skipped: {args.pandas_python} cannot import pandas + pyarrow")
            print(
                "  python -m venv /tmp/pd && /tmp/pd/bin/pip install pandas pyarrow; --pandas-python /tmp/pd/bin/python"
            )
        if not args.skip_hash and SHARED.is_dir():
            chips = chip_folder(out, args.hash_files)
            count = sum(1 for _ in os.scandir(chips))
            for flags in (["--hash"], ["--quality"], ["--hash", "--quality", "--report", str(out / "dataset")]):
                seconds = timed([*CLI, "index", str(chips), "-o", str(out / "h.parquet"), *flags], 1)[0]
                shown = " ".join(flag for flag in flags if flag.startswith("--"))
                print(
                    f"faceattr-batch index {shown:<33} {seconds:6.2f} s  {count / seconds:,.0f} images/s over {count:,}"
                )
        elif not args.skip_hash:
            print(f"--hash timing skipped: {SHARED} not found")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
