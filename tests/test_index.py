"""build_index / write_index / the index command: odd trees, hashing groups, the shared UTKFace folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from faceattr_batch import FaceattrError, __version__
from faceattr_batch.cli import app
from faceattr_batch.data import batches, inputs
from faceattr_batch.data.batches import iter_batches, process_pool
from faceattr_batch.data.inputs import list_images
from faceattr_batch.data.labels import GENDERS, RACES
from faceattr_batch.index import hashing, sizes
from faceattr_batch.index.build import IndexOptions, build_index, read_index_metadata, write_index
from faceattr_batch.index.duplicates import add_dup_groups
from faceattr_batch.pipelines.index import run

GOOD = "30_1_2_20170116174525125.jpg.chip.jpg"
runner = CliRunner()


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def face_like(seed: int, size: int = 96) -> Image.Image:
    """A smooth random picture (8x8 noise blown up): stable under JPEG re-encoding, unlike raw noise."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return small.resize((size, size), Image.Resampling.BICUBIC)


@pytest.fixture()
def odd_tree(tmp_path: Path) -> Path:
    root = tmp_path / "faces"
    touch(root / GOOD)
    touch(root / "sub" / "deeper" / "40_0_0_20170116174525125.jpg.chip.jpg", b"xyz")
    touch(root / "24_0_1_20170116220224657 .jpg.chip.jpg")  # a space before the extension
    touch(root / "55_0_0_20170116232725357jpg.chip.jpg")  # no dot: ends in .jpg all the same
    touch(root / "39_1_20170116174525125.jpg.chip.jpg")  # no race field
    touch(root / "holiday.JPG")  # an image, not a UTKFace name
    touch(root / "30_1_2_20170116174525125")  # no extension
    touch(root / "notes.txt")
    touch(root / ".hidden.jpg")
    touch(root / ".cache" / GOOD)  # hidden folder
    os.symlink(root / GOOD, root / "link_30_1_2_20170116174525126.jpg.chip.jpg")  # symlink to a file
    os.symlink(root / "gone.jpg", root / "broken.jpg")
    os.symlink("self.jpg", root / "self.jpg")  # a one-file symlink loop
    os.symlink(root, root / "sub" / "loop")  # a folder loop
    raw = os.fsencode(str(root)) + b"/25_0_3_20170116174525125\xff.jpg"  # not valid UTF-8
    with open(raw, "wb") as fh:
        fh.write(b"x")
    return root


def test_odd_tree_never_crashes_and_counts_what_it_skipped(odd_tree: Path):
    result = build_index(IndexOptions(root=odd_tree))
    table = result.table.sort("path")
    assert table["path"].to_list() == [
        "24_0_1_20170116220224657 .jpg.chip.jpg",
        "25_0_3_20170116174525125\\xff.jpg",
        "30_1_2_20170116174525125.jpg.chip.jpg",
        "39_1_20170116174525125.jpg.chip.jpg",
        "55_0_0_20170116232725357jpg.chip.jpg",
        "holiday.JPG",
        "link_30_1_2_20170116174525126.jpg.chip.jpg",
        "sub/deeper/40_0_0_20170116174525125.jpg.chip.jpg",
    ]
    by_path = {row["path"]: row for row in table.iter_rows(named=True)}
    assert by_path[GOOD]["status"] == "ok" and by_path[GOOD]["size_bytes"] == 1
    assert by_path["sub/deeper/40_0_0_20170116174525125.jpg.chip.jpg"]["size_bytes"] == 3
    assert (
        by_path["sub/deeper/40_0_0_20170116174525125.jpg.chip.jpg"]["name"] == "40_0_0_20170116174525125.jpg.chip.jpg"
    )
    assert "not valid UTF-8" in by_path["25_0_3_20170116174525125\\xff.jpg"]["error"]
    assert by_path["25_0_3_20170116174525125\\xff.jpg"]["status"] == "rejected"  # a stray byte in the stamp
    assert by_path["holiday.JPG"]["status"] == "rejected"
    assert by_path["39_1_20170116174525125.jpg.chip.jpg"]["status"] == "rejected"
    assert by_path["55_0_0_20170116232725357jpg.chip.jpg"]["status"] == "recovered"
    assert result.summary["skipped"] == {
        "broken symlink or symlink loop": 2,
        "hidden file": 1,
        "hidden folder": 1,
        "not an image extension": 2,
        "symlink to a folder (not followed)": 1,
    }
    assert result.summary["status"] == {"ok": 2, "recovered": 2, "rejected": 4}  # link_... is no UTKFace name


def test_odd_tree_hash_and_probe_give_reasons_not_crashes(odd_tree: Path):
    touch(odd_tree / "empty" / "41_0_0_20170116174525125.jpg.chip.jpg", b"")
    result = build_index(IndexOptions(root=odd_tree, hash=True, probe=True, workers=0))
    errors = dict(result.table.select("path", "error").iter_rows())
    # the words of predict's and fid's error rows (a 0-byte file was "not an image format Pillow knows" here)
    assert errors[GOOD] == "cannot decode: not an image (unidentified format)"  # one byte is not an image
    assert errors["empty/41_0_0_20170116174525125.jpg.chip.jpg"] == "cannot decode: empty file (0 bytes)"
    assert result.table["sha256"].null_count() == 0  # the bytes were still read and hashed
    assert result.table["dup_group"].null_count() == 0
    link = "link_30_1_2_20170116174525126.jpg.chip.jpg"
    same = result.table.filter(pl.col("path").is_in([GOOD, link]))["dup_group"]
    assert same.n_unique() == 1  # a symlink and its target are byte-identical duplicates


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: chmod cannot make a folder unreadable")
def test_unreadable_subfolder_is_reported_and_unreadable_root_is_an_error(tmp_path: Path):
    touch(tmp_path / "root" / GOOD)
    locked = tmp_path / "root" / "locked"
    touch(locked / GOOD)
    locked.chmod(0)
    try:
        result = build_index(IndexOptions(root=tmp_path / "root"))
        assert result.summary["unreadable_dirs"] == [{"path": "locked", "reason": "Permission denied"}]
        assert result.table.height == 1
        (tmp_path / "root").chmod(0)
        with pytest.raises(FaceattrError, match="cannot read the folder"):
            build_index(IndexOptions(root=tmp_path / "root"))
    finally:
        (tmp_path / "root").chmod(0o755)
        locked.chmod(0o755)


def test_unreadable_subfolder_as_root_is_skipped_via_a_fake_scandir(tmp_path: Path, monkeypatch):
    """The same path as the test above, for root (where chmod cannot block reads)."""
    touch(tmp_path / GOOD)
    touch(tmp_path / "locked" / GOOD)
    real = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(inputs.os, "scandir", scandir)
    result = build_index(IndexOptions(root=tmp_path))
    assert result.summary["unreadable_dirs"] == [{"path": "locked", "reason": "Permission denied"}]
    assert result.table["path"].to_list() == [GOOD]


def test_missing_root_or_a_file_is_one_line_error(tmp_path: Path):
    with pytest.raises(FaceattrError, match="no such folder"):
        build_index(IndexOptions(root=tmp_path / "nope"))
    with pytest.raises(FaceattrError, match="not a folder"):
        build_index(IndexOptions(root=touch(tmp_path / GOOD)))


NO_IMAGES = "no image files found (allowed: .jpg, .jpeg, .png, .webp, .bmp)"


@pytest.mark.parametrize("content", ["nothing", "no image"])
def test_a_folder_without_images_is_an_error_like_predicts(tmp_path: Path, content: str):
    """Rough edge 9: index wrote an empty Parquet (exit 0) where predict refused the same folder."""
    folder = tmp_path / "faces"
    folder.mkdir()
    if content == "no image":
        touch(folder / "notes.txt")
        touch(folder / ".hidden.jpg")
    with pytest.raises(FaceattrError) as indexed:
        build_index(IndexOptions(root=folder, hash=True, probe=True))
    with pytest.raises(FaceattrError) as listed:
        list_images([folder])
    assert str(indexed.value) == str(listed.value) == f"{folder}: {NO_IMAGES}"


def test_cli_index_and_predict_refuse_a_folder_without_images_alike(tmp_path: Path):
    folder = tmp_path / "empty"
    folder.mkdir()
    index = runner.invoke(app, ["index", str(folder), "-o", str(tmp_path / "i.parquet")])
    predict = runner.invoke(app, ["predict", str(folder), "-o", str(tmp_path / "p.parquet")])
    for result in (index, predict):
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [f"error: {folder}: {NO_IMAGES}"]
    assert not (tmp_path / "i.parquet").exists() and not (tmp_path / "p.parquet").exists()


def test_index_columns_are_codes_plus_enum_labels(odd_tree: Path):
    """One label convention: Int64 codes plus Enum labels over the vocabulary of data.labels."""
    table = build_index(IndexOptions(root=odd_tree)).table
    assert (table.schema["gender"], table.schema["race"]) == (pl.Int64, pl.Int64)
    assert table.schema["gender_label"] == pl.Enum(GENDERS) and table.schema["race_label"] == pl.Enum(RACES)
    row = table.filter(pl.col("path") == GOOD).row(0, named=True)
    assert (row["gender"], row["gender_label"], row["race"], row["race_label"]) == (1, "female", 2, "Asian")
    assert row["age_band"] == "30-39"


@pytest.fixture()
def duplicates(tmp_path: Path) -> Path:
    root = tmp_path / "dups"
    root.mkdir()
    face_like(1).save(root / "30_0_0_20170101000000001.jpg.chip.jpg", quality=95)
    shutil.copyfile(root / "30_0_0_20170101000000001.jpg.chip.jpg", root / "30_0_0_20170101000000002.jpg.chip.jpg")
    face_like(1).save(root / "40_0_0_20170101000000003.jpg.chip.jpg", quality=60)  # re-encoded, other label
    face_like(1).save(root / "30_0_0_20170101000000004.png")  # lossless copy, same label
    face_like(2).save(root / "30_0_0_20170101000000005.jpg.chip.jpg", quality=95)  # unrelated
    face_like(3).save(root / "31_1_1_20170101000000006.jpg.chip.jpg", quality=95)  # unrelated
    (root / "30_0_0_20170101000000007.jpg.chip.jpg").write_bytes(b"\xff\xd8\xff truncated")
    return root


def group_of(table: pl.DataFrame) -> dict[str, int]:
    return {path[-20:-13]: group for path, group in table.select("path", "dup_group").iter_rows()}


def test_exact_and_near_duplicates_share_a_group_and_unrelated_faces_do_not(duplicates: Path):
    table = build_index(IndexOptions(root=duplicates, hash=True, probe=True, workers=0)).table
    groups = {path.split("_")[3][:17]: g for path, g in table.select("path", "dup_group").iter_rows()}
    first = groups["20170101000000001"]
    assert groups["20170101000000002"] == first  # byte-identical
    assert groups["20170101000000003"] == first  # re-encoded at quality 60
    assert groups["20170101000000004"] == first  # PNG of the same picture
    others = {groups["20170101000000005"], groups["20170101000000006"], groups["20170101000000007"]}
    assert len(others) == 3 and first not in others
    conflict = dict(table.select("dup_group", "label_conflict").unique().iter_rows())
    assert conflict[first] is True  # 30 vs 40 years
    assert conflict[groups["20170101000000005"]] is False
    bad = table.filter(pl.col("path").str.contains("000000007")).row(0, named=True)
    assert bad["error"].startswith("cannot decode") and bad["dhash"] is None and bad["width"] is None
    good = table.filter(pl.col("path").str.contains("000000001")).row(0, named=True)
    assert (good["width"], good["height"], good["mode"]) == (96, 96, "RGB")


def test_broken_files_and_unlabelled_copies_make_no_duplicate_or_conflict(tmp_path: Path):
    """A reviewer's findings: two empty files (a failed copy) were reported as a label conflict, and a byte copy
    under a name with no labels counted as a conflict with its labelled original."""
    root = tmp_path / "faces"
    root.mkdir()
    (root / "25_0_0_20170101000000001.jpg.chip.jpg").write_bytes(b"")
    (root / "70_1_3_20170101000000002.jpg.chip.jpg").write_bytes(b"")
    face_like(1).save(root / "30_0_0_20170101000000003.jpg.chip.jpg", quality=95)
    shutil.copyfile(root / "30_0_0_20170101000000003.jpg.chip.jpg", root / "holiday.jpg")
    result = build_index(IndexOptions(root=root, hash=True, workers=0))
    groups = dict(result.table.select("path", "dup_group").iter_rows())
    assert groups["25_0_0_20170101000000001.jpg.chip.jpg"] == groups["70_1_3_20170101000000002.jpg.chip.jpg"]
    assert groups["30_0_0_20170101000000003.jpg.chip.jpg"] == groups["holiday.jpg"]  # byte copies stay grouped
    assert not result.table["label_conflict"].any()
    assert (result.summary["duplicates"]["groups"], result.summary["duplicates"]["conflict_groups"]) == (2, 0)


def test_an_output_over_an_indexed_image_is_refused(duplicates: Path, tmp_path: Path):
    image = duplicates / "30_0_0_20170101000000001.jpg.chip.jpg"
    before = image.read_bytes()
    with pytest.raises(
        FaceattrError,
        match=r"^-o .*000001.jpg.chip.jpg has an image's name under the indexed folder .*dups: it would replace",
    ):
        run(IndexOptions(root=duplicates), image)
    assert image.read_bytes() == before
    run(IndexOptions(root=duplicates), duplicates / "index.parquet")  # an index beside its images is fine, twice
    assert run(IndexOptions(root=duplicates), duplicates / "index.parquet").table.height == 7


def test_summary_lists_conflicting_groups(duplicates: Path):
    summary = build_index(IndexOptions(root=duplicates, hash=True, workers=0)).summary
    dups = summary["duplicates"]
    assert (dups["groups"], dups["images_in_groups"], dups["conflict_groups"]) == (1, 4, 1)
    assert sorted(set(dups["conflicts"][0]["labels"])) == ["30_0_0", "40_0_0"]


def test_process_pool_gives_the_same_table_as_one_process(duplicates: Path, monkeypatch):
    monkeypatch.setattr(hashing, "CHUNK", 2)  # 7 files -> 4 chunks -> a real pool
    pooled = build_index(IndexOptions(root=duplicates, hash=True, probe=True, workers=2)).table
    single = build_index(IndexOptions(root=duplicates, hash=True, probe=True, workers=0)).table
    assert pooled.sort("path").equals(single.sort("path"))


def test_stat_in_worker_processes_gives_the_same_sizes(odd_tree: Path, monkeypatch):
    serial = build_index(IndexOptions(root=odd_tree)).table
    monkeypatch.setattr(sizes, "PARALLEL_FROM", 1)
    monkeypatch.setattr(sizes.os, "cpu_count", lambda: 2)
    pooled = build_index(IndexOptions(root=odd_tree)).table
    assert pooled.select("path", "size_bytes").equals(serial.select("path", "size_bytes"))
    assert serial["size_bytes"].null_count() == 0 and set(serial["size_bytes"]) == {1, 3}


def test_pool_workers_leave_ctrl_c_to_the_parent():
    """Ctrl-C reaches every process of the group: the workers ignore it, so none prints a traceback of its own."""
    with process_pool(1, os.environ.setdefault, ("FACEATTR_TEST_INIT", "ran")) as pool:
        assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN
        assert pool.submit(os.getenv, "FACEATTR_TEST_INIT").result() == "ran"  # the caller's initializer too


# A Ctrl-C that reaches a worker the instant after its fork, before it ignores SIGINT (a signal sent by the child to
# itself from an at-fork hook, in a process of its own so that the hook leaves the test process alone).
CTRL_C_AT_FORK = """
import os, signal
from faceattr_batch.data.batches import process_pool
os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGINT))
with process_pool(2) as pool:
    print(sorted(pool.map(abs, [-1, -2, -3])))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the pool forks its workers on Linux only")
def test_a_ctrl_c_between_fork_and_ignore_prints_no_worker_traceback():
    run = subprocess.run([sys.executable, "-c", CTRL_C_AT_FORK], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (0, "[1, 2, 3]\n", "")


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no POSIX signal masks")
def test_a_ctrl_c_held_back_while_the_workers_fork_reaches_the_parent_after():
    arrivals = []
    previous = signal.signal(signal.SIGINT, lambda *_: arrivals.append("handled"))
    try:
        with batches._sigint_held():
            # to this thread, the one that forks the workers (a signal to the process may go to another thread)
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            sum(range(10_000))  # where a signal delivered at once would have run its handler
            arrivals.append("block ended")
        sum(range(10_000))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert arrivals == ["block ended", "handled"]


PARENT = os.getpid()


def _killed(*args):
    """A worker's task that dies as the out-of-memory killer ends a process (never in the test process itself)."""
    if os.getpid() == PARENT:
        raise AssertionError("ran in the test process, not in a worker")
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_ends_the_run_with_one_line(duplicates: Path, monkeypatch):
    """multiprocessing.Pool waited forever for the task of a killed worker; the one pool of the package stops."""
    message = "a worker process died (killed by the system, most often for lack of memory): run again with fewer"
    monkeypatch.setattr(hashing, "CHUNK", 2)
    monkeypatch.setattr(hashing, "_inspect_chunk", _killed)
    with pytest.raises(FaceattrError, match=re.escape(message)):
        build_index(IndexOptions(root=duplicates, hash=True, workers=2))
    with pytest.raises(FaceattrError, match=re.escape(message)):
        list(iter_batches(list_images(duplicates), _killed, 2, 1))
    monkeypatch.setattr(sizes, "PARALLEL_FROM", 1)
    monkeypatch.setattr(sizes.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sizes, "_stat_slice", _killed)
    with pytest.raises(FaceattrError, match=re.escape(message)):
        build_index(IndexOptions(root=duplicates))


def test_no_file_sizes_leaves_the_column_out(odd_tree: Path):
    result = build_index(IndexOptions(root=odd_tree, file_sizes=False))
    assert "size_bytes" not in result.table.columns and "total_bytes" not in result.summary
    assert result.table.height == 8


def test_near_pairs_find_every_hash_within_the_distance_and_none_beyond():
    rng = np.random.default_rng(0)
    n = 100_000
    hashes = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    bits = [rng.choice(64, 5, replace=False) for _ in range(3)]
    flip = [sum(np.uint64(1) << np.uint64(b) for b in chosen[:k]) for chosen, k in zip(bits, (4, 5, 1), strict=True)]
    hashes[1], hashes[3], hashes[5] = hashes[0] ^ flip[0], hashes[2] ^ flip[1], hashes[4] ^ flip[2]
    table = pl.DataFrame(
        {
            "path": [f"{i:06d}" for i in range(n)],
            "sha256": [str(i) for i in range(n)],
            "dhash": pl.Series(hashes, dtype=pl.UInt64),
            "age": 1,
            "gender": 0,
            "race": 0,
        }
    )
    groups = add_dup_groups(table, near_bits=4)["dup_group"].to_list()
    assert groups[0] == groups[1]  # 4 bits apart
    assert groups[2] != groups[3]  # 5 bits apart
    assert groups[4] == groups[5]  # 1 bit apart
    assert len(set(groups)) == n - 2  # random 64-bit hashes are never that close


def test_write_index_is_atomic_and_records_root_version_counts(duplicates: Path, tmp_path: Path):
    result = build_index(IndexOptions(root=duplicates, hash=True, workers=0))
    path = write_index(result, tmp_path / "out" / "index.parquet")
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.parquet"]  # no tmp file left
    assert pl.read_parquet(path).equals(result.table)
    meta = read_index_metadata(path)
    assert meta["faceattr_batch.root"] == str(duplicates.resolve())
    assert meta["faceattr_batch.version"] == __version__
    counts = json.loads(meta["faceattr_batch.counts"])
    assert counts["images"] == 7 and counts["duplicates"]["conflict_groups"] == 1


def test_run_checks_the_output_place_before_indexing(duplicates: Path, tmp_path: Path):
    blocker = touch(tmp_path / "a-file")
    with pytest.raises(FaceattrError, match="cannot write there"):
        run(IndexOptions(root=duplicates), blocker / "index.parquet")
    (tmp_path / "folder.parquet").mkdir()
    with pytest.raises(FaceattrError, match=r"^-o .*folder.parquet: is a folder; name the file to write"):
        run(IndexOptions(root=duplicates), tmp_path / "folder.parquet")
    result = run(IndexOptions(root=duplicates), tmp_path / "out" / "index.parquet")
    assert result.summary["output"] == str(tmp_path / "out" / "index.parquet")
    assert pl.read_parquet(result.summary["output"]).equals(result.table)
    # a file output without a suffix is a file: the check probes its folder, it does not make the path a folder
    plain = run(IndexOptions(root=duplicates), tmp_path / "out" / "index")
    assert (tmp_path / "out" / "index").is_file() and pl.read_parquet(plain.summary["output"]).equals(result.table)


def test_cli_index_writes_parquet_and_json(duplicates: Path, tmp_path: Path):
    out = tmp_path / "i.parquet"
    result = runner.invoke(app, ["index", str(duplicates), "-o", str(out), "--hash", "--workers", "0", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 7 and summary["output"] == str(out)
    assert pl.read_parquet(out).height == 7
    args = ["index", str(duplicates), "-o", str(out), "--hash", "--probe", "--workers", "0"]
    rich = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert rich.exit_code == 0, rich.output
    assert "label conflicts" in rich.stdout and "30_0_0 vs 40_0_0" in rich.stdout


@pytest.mark.parametrize("folder", ["missing", GOOD])
def test_cli_index_bad_folder_exits_2_with_one_line(tmp_path: Path, folder: str):
    touch(tmp_path / GOOD)
    result = runner.invoke(app, ["index", str(tmp_path / folder), "-o", str(tmp_path / "i.parquet")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert not (tmp_path / "i.parquet").exists()


# --- the shared UTKFace folder -----------------------------------------------------------------------------------

STRICT = re.compile(r"^(\d+)_([01])_([0-4])_(\d{17})\.jpg\.chip\.jpg$")


def independent_parse(name: str) -> tuple[int | None, int | None, int | None]:
    """A plain split, written apart from labels.py: (age, gender, race) or Nones when it is not strict."""
    match = STRICT.match(name)
    if match:
        return int(match[1]), int(match[2]), int(match[3])
    head = name.replace(" ", "").split(".")[0].split("_")
    if len(head) == 4 and all(part.isdigit() for part in head):
        return int(head[0]), int(head[1]), int(head[2])
    if len(head) == 4 and head[3].endswith("jpg"):
        return int(head[0]), int(head[1]), int(head[2])
    return None, None, None


def test_shared_utkface_rows_labels_and_quirks(shared_utkface: Path):
    result = build_index(IndexOptions(root=shared_utkface))
    table = result.table
    assert table.height == 18_967 == len(os.listdir(shared_utkface))
    assert table["path"].n_unique() == 18_967
    assert result.summary["status"] == {"ok": 18_959, "recovered": 5, "rejected": 3}
    labelled = table.filter(pl.col("status") != "rejected")
    for name, age, gender, race in labelled.select("name", "age", "gender", "race").iter_rows():
        assert independent_parse(name) == (age, gender, race), name
    assert (table["size_bytes"] > 0).all()
    odd = table.filter(pl.col("status") != "ok").sort("name")
    assert odd["name"].to_list() == [
        "14_0_0_2017011022340900.jpg.chip.jpg",
        "24_0_1_20170116220224657 .jpg.chip.jpg",
        "28_1_2_201701161846515488.jpg.chip.jpg",
        "38_0_1_201701162330572788.jpg.chip.jpg",
        "39_1_20170116174525125.jpg.chip.jpg",
        "55_0_0_20170116232725357jpg.chip.jpg",
        "61_1_20170109142408075.jpg.chip.jpg",
        "61_1_20170109150557335.jpg.chip.jpg",
    ]
    assert odd.filter(pl.col("status") == "rejected")["race"].null_count() == 3  # never an invented race


def subset_of_chips(shared_utkface: Path, folder: Path) -> Path:
    """Symlinks to the chips aged 0-3, 10-13 and 80+ (2,388 of 18,967): babies, whose faces dHash chains most,
    and the ages of known conflicts (the same picture labelled 100 and 86 years, 10 and 13)."""
    folder.mkdir()
    for name in os.listdir(shared_utkface):
        age = int(name.split("_")[0])
        if age <= 3 or 10 <= age <= 13 or age >= 80:
            (folder / name).symlink_to(shared_utkface / name)
    return folder


@pytest.mark.slow
def test_shared_utkface_duplicate_groups_with_conflicting_labels(shared_utkface: Path, tmp_path: Path):
    result = build_index(IndexOptions(root=subset_of_chips(shared_utkface, tmp_path / "chips"), hash=True))
    table = result.table
    dups = result.summary["duplicates"]
    assert table.height == 2_388
    assert 40 <= dups["conflict_groups"] <= dups["groups"]  # tens here, hundreds over all chips
    assert table["dup_group"].null_count() == 0
    assert table["dup_size"].max() <= 10  # no run-away chaining ...
    unconfirmed = add_dup_groups(table.drop("dup_group", "dup_size", "label_conflict"))
    assert unconfirmed["dup_size"].max() > 10  # ... which dHash alone, without the thumbnail check, shows here
    pair = table.filter(
        pl.col("name").is_in(["100_0_0_20170112215240346.jpg.chip.jpg", "86_0_0_20170111222700442.jpg.chip.jpg"])
    )
    assert pair["dup_group"].n_unique() == 1 and pair["label_conflict"].all()
    identical = table.group_by("sha256").agg(pl.col("dup_group").n_unique().alias("n"))
    assert (identical["n"] == 1).all()  # byte-identical files always share a group


def test_a_16_bit_image_hashes_as_its_8_bit_self(tmp_path: Path):
    from PIL import Image

    from faceattr_batch.index.hashing import inspect_file

    rng = np.random.default_rng(3)
    hashes = []
    for name in ("a", "b"):
        wide = rng.integers(0, 65536, (48, 48)).astype(np.uint16)
        Image.fromarray(wide).save(tmp_path / f"{name}16.png")  # mode I;16
        Image.fromarray(np.rint(wide / 257).astype(np.uint8)).save(tmp_path / f"{name}8.png")
        sha16, dhash16, thumb16, _, _, mode16, _, error16 = inspect_file(str(tmp_path / f"{name}16.png"), True, True)
        _, dhash8, thumb8, *_ = inspect_file(str(tmp_path / f"{name}8.png"), True, True)
        assert mode16.startswith("I;16") and error16 is None and sha16
        assert dhash16 == dhash8 and thumb16 == thumb8  # not clipped white (dhash 0), as convert("L") made it
        hashes.append(dhash16)
    assert hashes[0] != hashes[1] and 0 not in hashes


@pytest.mark.parametrize("real_dirs", [[""], ["", "sub"]])
def test_rows_parse_while_the_walker_is_half_way_through_adding_a_folder(real_dirs):
    import array

    from faceattr_batch.data.inputs import Listing
    from faceattr_batch.index.parse import _named_rows

    # the walker appended "later" to dirs and is about to append it to real_dirs, as the parser thread reads
    listing = Listing(dirs=[*real_dirs, "later"], real_dirs=real_dirs, names=["30_1_0_a.jpg", "31_0_2_b.jpg"])
    listing.dir_of = array.array("I", [0, len(real_dirs) - 1])
    frame = _named_rows(listing, 0, 2)
    expected = ["30_1_0_a.jpg", "31_0_2_b.jpg"] if len(real_dirs) == 1 else ["30_1_0_a.jpg", "sub/31_0_2_b.jpg"]
    assert frame["path"].to_list() == expected and frame["error"].null_count() == 2


def test_a_root_and_an_output_with_undecodable_bytes_are_written_and_read_back(duplicates: Path, tmp_path: Path):
    """A reviewer's finding: a root folder or -o whose name is not UTF-8 made polars raise while writing (exit 1)."""
    from faceattr_batch.data.label_files import load_labels

    root = tmp_path / os.fsdecode(b"r\xffoot")
    shutil.copytree(duplicates, root)
    out = tmp_path / os.fsdecode(b"o\xff.parquet")
    run(IndexOptions(root=root), out)
    plain = tmp_path / "plain.parquet"
    run(IndexOptions(root=root), plain)
    assert out.read_bytes()[:4] == b"PAR1" and pl.read_parquet(out.read_bytes()).equals(pl.read_parquet(plain))
    assert read_index_metadata(plain)["faceattr_batch.root"] == str(tmp_path) + "/r\\xffoot"
    files = inputs.index_paths(plain)
    assert sorted(files) == sorted(str(path) for path in root.iterdir()) and all(os.path.exists(f) for f in files)
    matched = load_labels(plain, files)  # predict over the index: its labels found again for its own files
    assert matched.summary["matched_inputs"] == len(files) == 7 and matched.summary["labels_not_in_inputs"] == 0
    assert matched.frame["true_age"].drop_nulls().len() > 0
