"""atomic.replacing: the old file or the whole new one, on disk before its name points at it."""

from __future__ import annotations

import os
import re

import pytest

from faceattr_batch.io import atomic


def test_replacing_syncs_the_new_bytes_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (calls.append(("replace", str(a))), real_replace(a, b)))
    target = tmp_path / "out.json"
    atomic.write_json(target, {"a": 1})
    tmp = str(tmp_path / f".out.{os.getpid()}.tmp.json")
    assert calls == [("fsync", tmp), ("replace", tmp)]
    assert target.read_text() == '{\n  "a": 1\n}'


def test_an_error_in_the_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_refuse_overlap_keeps_every_output_off_what_the_run_reads(tmp_path):
    photos, labels = tmp_path / "photos", tmp_path / "labels.csv"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"a face")
    labels.write_text("path,age\n")
    inputs = {"the input photos": photos, "--labels": labels, "--compare": None}
    refused = {
        "is --labels: the output would replace it": (labels, {}),
        "has an image's name under the input photos": (photos / "a.jpg", {}),
        "has an image's name under the input photos: it would": (photos / "sub" / "new.PNG", {}),  # read next time
        "is inside the input photos: what it writes would be read as faces": (photos, {"folder": True}),
        "is inside the input photos: what": (photos / "report", {"folder": True}),
        "would replace --labels (labels.csv); name another folder": (tmp_path, {"folder": True, "writes": True}),
        # a reviewer's finding: predict -o v.parquet --report v.parquet made the folder, then failed after the run
        "is --labels: name another folder": (labels, {"folder": True}),
    }
    for message, (target, how) in refused.items():
        if "writes" in how:
            how = {**how, "writes": lambda name: name == "labels.csv"}
        with pytest.raises(atomic.FaceattrError, match="^" + re.escape(f"-o {target} {message}")):
            atomic.refuse_overlap(target, "-o", inputs, **how)
    atomic.refuse_overlap(photos / "index.parquet", "-o", inputs)  # beside the images, not one of them
    atomic.refuse_overlap(tmp_path / "report", "-o", inputs, folder=True, writes=lambda name: name == "labels.csv")
    atomic.refuse_overlap(tmp_path, "-o", inputs, folder=True, writes=lambda name: name == "report.html")
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["a.jpg", "labels.csv", "photos"]  # nothing made


def test_refuse_overlap_keeps_a_file_off_names_claimed_in_a_folder(tmp_path):
    report = tmp_path / "report"
    claimed = {"the report writes that file there": (report, lambda name: name == "suspects.parquet")}
    for target in (report / "suspects.parquet", tmp_path / "report" / ".." / "report" / "suspects.parquet"):
        with pytest.raises(atomic.FaceattrError, match="^" + re.escape(f"-o {target}: the report writes that file")):
            atomic.refuse_overlap(target, "-o", {}, claimed=claimed)
    atomic.refuse_overlap(report / "mine.parquet", "-o", {}, claimed=claimed)  # a name the folder leaves free
    atomic.refuse_overlap(tmp_path / "suspects.parquet", "-o", {}, claimed=claimed)  # another folder
    atomic.refuse_overlap(report, "-o", {}, folder=True, claimed=claimed)  # a folder is not a file of that name
    assert list(tmp_path.iterdir()) == []


def test_a_parquet_is_written_under_a_name_that_is_not_utf8(tmp_path):
    """A reviewer's finding: synth -o a folder named with a raw 0xff byte ended in polars' traceback (a path that is
    not UTF-8 cannot be handed to it)."""
    import polars as pl

    folder = tmp_path / os.fsdecode(b"set_\xff")
    folder.mkdir()
    atomic.write_parquet_atomically(pl.DataFrame({"age": [30, 40]}), folder / "manifest.parquet")
    with open(folder / "manifest.parquet", "rb") as file:
        assert pl.read_parquet(file)["age"].to_list() == [30, 40]
