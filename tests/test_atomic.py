"""atomic.replacing: the old file or the whole new one, on disk before its name points at it."""

from __future__ import annotations

import os

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
