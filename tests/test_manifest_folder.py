"""The output folder of synth and crop: an earlier run's listed files replaced on --overwrite, nothing else."""

from __future__ import annotations

import polars as pl
import pytest

from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.manifest_folder import check_output_folder, remove_earlier, write_pending


def test_remove_earlier_removes_the_manifests_and_the_pending_lists_names_then_the_lists(tmp_path):
    pl.DataFrame({"file": ["a.jpg", None, "b.jpg", "gone.jpg"]}).write_parquet(tmp_path / "manifest.parquet")
    write_pending(tmp_path, ["c.jpg"], "file")
    for name in ("a.jpg", "b.jpg", "c.jpg", "mine.txt"):
        (tmp_path / name).write_text(name)
    remove_earlier(tmp_path, "manifest.parquet", "file", ["file"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("name", ["../victim.txt", "sub/x.jpg", ".."])
def test_a_manifest_naming_a_file_outside_the_folder_removes_nothing(tmp_path, name):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "victim.txt").write_text("the user's")
    (out / "ok.jpg").write_text("ok")
    pl.DataFrame({"file": ["ok.jpg", name]}).write_parquet(out / "manifest.parquet")
    with pytest.raises(FaceattrError, match=r"manifest.parquet: lists .*, not a file of .*out; nothing removed"):
        remove_earlier(out, "manifest.parquet", "file", ["file"])
    assert (tmp_path / "victim.txt").read_text() == "the user's" and (out / "manifest.parquet").is_file()
    # the manifest is good and the pending list is not: every list is read before anything goes
    pl.DataFrame({"file": ["ok.jpg"]}).write_parquet(out / "manifest.parquet")
    write_pending(out, [name], "file")
    with pytest.raises(FaceattrError, match=r"pending.parquet: lists .*; nothing removed"):
        remove_earlier(out, "manifest.parquet", "file", ["file"])
    assert sorted(p.name for p in out.iterdir()) == [".pending.parquet", "manifest.parquet", "ok.jpg"]


def test_another_commands_manifest_is_refused_in_one_line(tmp_path):
    pl.DataFrame({"chip": ["a.jpg"]}).write_parquet(tmp_path / "manifest.parquet")
    with pytest.raises(FaceattrError, match=r"^\S+manifest.parquet: not a manifest this command wrote \(.*\); move"):
        remove_earlier(tmp_path, "manifest.parquet", "file", ["file"])
    (tmp_path / "manifest.parquet").write_bytes(b"not parquet")
    with pytest.raises(FaceattrError, match="not a manifest this command wrote"):
        remove_earlier(tmp_path, "manifest.parquet", "file", ["file"])


def test_check_output_folder(tmp_path):
    check_output_folder(tmp_path / "new", False, "x")
    assert (tmp_path / "new").is_dir()
    (tmp_path / "new" / "f").write_text("")
    with pytest.raises(FaceattrError, match="new is not empty: add --overwrite to replace the things"):
        check_output_folder(tmp_path / "new", False, "the things")
    check_output_folder(tmp_path / "new", True, "the things")
    with pytest.raises(FaceattrError, match="exists and is not a folder"):
        check_output_folder(tmp_path / "new" / "f", True, "x")


def test_a_parquet_of_the_users_own_with_the_name_column_is_not_taken_for_the_manifest(tmp_path):
    (tmp_path / "my_photo.jpg").write_text("the user's")
    pl.DataFrame({"chip": ["my_photo.jpg"], "person": ["alice"]}).write_parquet(tmp_path / "manifest.parquet")
    with pytest.raises(
        FaceattrError, match=r"manifest.parquet: not a manifest this command wrote \(no column 'source'\)"
    ):
        remove_earlier(tmp_path, "manifest.parquet", "chip", ["source", "error", "chip"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.parquet", "my_photo.jpg"]
