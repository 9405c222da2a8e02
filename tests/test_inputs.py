"""inputs.list_images: folders, files, globs, index Parquets -> sorted unique absolute paths."""

from __future__ import annotations

import os

import polars as pl
import pytest
from PIL import Image

from faceattr_batch.data import inputs
from faceattr_batch.data.inputs import display_path, is_index_parquet, list_images, walk_tree
from faceattr_batch.errors import FaceattrError


def _tree(root):
    (root / "a" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for rel in ("a/1.jpg", "a/deep/2.PNG", "b.webp", "c.bmp", ".hidden/x.jpg", "a/.dot.jpg"):
        Image.new("RGB", (8, 8)).save(root / rel)  # Pillow picks the format from the extension
    (root / "notes.txt").write_text("not an image")
    os.symlink(root / "missing.jpg", root / "broken.jpg")
    os.symlink(root / "a", root / "link_to_a")  # a directory symlink is not followed
    return root


def test_folder_is_recursive_sorted_and_skips_hidden(tmp_path):
    root = _tree(tmp_path)
    paths = list_images([root])
    rel = [os.path.relpath(p, root) for p in paths]
    assert rel == sorted(rel)
    assert rel == ["a/1.jpg", "a/deep/2.PNG", "b.webp", "broken.jpg", "c.bmp"]
    assert all(os.path.isabs(p) for p in paths)


def test_sources_are_merged_without_duplicates(tmp_path):
    root = _tree(tmp_path)
    paths = list_images([root / "a", root / "a" / "1.jpg", str(root / "**" / "*.webp")])
    assert [os.path.relpath(p, root) for p in paths] == ["a/1.jpg", "a/deep/2.PNG", "b.webp"]


def test_named_file_is_taken_whatever_its_extension(tmp_path):
    root = _tree(tmp_path)
    assert list_images(root / "notes.txt") == [str(root / "notes.txt")]


def test_index_parquet_paths_are_joined_to_its_root(tmp_path):
    root = _tree(tmp_path / "imgs")
    index = tmp_path / "index.parquet"
    pl.DataFrame({"path": ["b.webp", "a/1.jpg"]}).write_parquet(index, metadata={"faceattr_batch.root": str(root)})
    assert is_index_parquet(index)
    assert list_images([index]) == [str(root / "a" / "1.jpg"), str(root / "b.webp")]


def test_foreign_parquet_and_missing_sources_raise(tmp_path):
    foreign = tmp_path / "x.parquet"
    pl.DataFrame({"path": ["a"]}).write_parquet(foreign)
    with pytest.raises(FaceattrError, match="did not write"):
        list_images([foreign])
    with pytest.raises(FaceattrError, match="no such file or folder"):
        list_images([tmp_path / "nope"])
    with pytest.raises(FaceattrError, match="no image files"):
        list_images([str(tmp_path / "*.jpg")])
    with pytest.raises(FaceattrError, match="no inputs"):
        list_images([])


def test_display_path_keeps_undecodable_bytes_visible():
    raw = os.fsdecode(b"/tmp/caf\xe9.jpg")
    assert display_path(raw) == "/tmp/caf\\xe9.jpg"
    assert display_path("/tmp/ok.jpg") == "/tmp/ok.jpg"


def test_an_unreadable_subfolder_is_an_error_in_the_walkers_one_wording(tmp_path, monkeypatch):
    """index reports the folder with this reason and predict refuses with it: one walker, one wording."""
    root = _tree(tmp_path)
    real = os.scandir

    def scandir(path):
        if str(path).endswith("deep"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(inputs.os, "scandir", scandir)
    assert walk_tree(root).unreadable_dirs == [{"path": "a/deep", "reason": "Permission denied"}]
    with pytest.raises(FaceattrError) as err:
        list_images([root])
    assert str(err.value) == f"{root / 'a' / 'deep'}: cannot read the folder (Permission denied)"


def test_a_fifo_named_like_an_image_is_skipped_not_listed(tmp_path):
    """os.walk listed a named pipe as a file, and decoding it would block for ever."""
    root = _tree(tmp_path)
    os.mkfifo(root / "pipe.jpg")
    assert "pipe.jpg" not in {os.path.basename(p) for p in list_images([root])}
    assert walk_tree(root).skipped["not a regular file"] == 1
    # a reviewer's finding: a symlink to it was taken for a broken link, which fid keeps, and fid hung for ever
    os.symlink("pipe.jpg", root / "link.jpg")
    for keep in (False, True):
        walked = walk_tree(root, keep_broken_links=keep)
        assert "link.jpg" not in walked.names
        assert walked.skipped["symlink to something that is not a regular file"] == 1


def test_walk_tree_lists_broken_links_only_when_asked(tmp_path):
    root = _tree(tmp_path)
    kept = walk_tree(root, keep_broken_links=True)
    skipped = walk_tree(root)
    assert "broken.jpg" in kept.names and "broken.jpg" not in skipped.names
    assert skipped.skipped["broken symlink or symlink loop"] == 1
    assert kept.skipped == {"hidden folder": 1, "symlink to a folder (not followed)": 1}
    rows = {os.path.relpath(kept.real_path(root, row), root) for row in range(len(kept.names))}
    assert rows == {"a/1.jpg", "a/.dot.jpg", "a/deep/2.PNG", "b.webp", "c.bmp", "notes.txt", "broken.jpg"}


def test_an_index_finds_a_file_whose_name_is_not_utf8(tmp_path):
    from faceattr_batch.index.build import IndexOptions, build_index, write_index

    root = tmp_path / "imgs"
    (root / "caf\\xe9").mkdir(parents=True)  # a folder literally named with a backslash: kept as it is
    names = [b"30_1_2_x\xff.jpg", b"31_0_0_ok.jpg", b"caf\\xe9/32_0_1_y.jpg"]
    for name in names:
        Image.new("RGB", (8, 8)).save(os.path.join(os.fsencode(root), name), format="JPEG")
    write_index(build_index(IndexOptions(root=root, workers=0)), tmp_path / "index.parquet")
    shown = pl.read_parquet(tmp_path / "index.parquet")["path"].to_list()
    assert "30_1_2_x\\xff.jpg" in shown
    found = list_images([tmp_path / "index.parquet"])
    assert sorted(found) == sorted(os.fsdecode(os.path.join(os.fsencode(root), n)) for n in names)
    assert all(os.path.lexists(p) for p in found)


def test_an_index_summary_shows_a_root_that_is_not_utf8_as_text(tmp_path):
    """A reviewer's finding: index --json wrote such a root with a lone surrogate ("\\udcff"), not the \\xNN text of
    every path."""
    from faceattr_batch.index.build import IndexOptions, build_index

    root = tmp_path / os.fsdecode(b"faces_\xff")
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "30_1_2_20170116174525123.jpg.chip.jpg", format="JPEG")
    summary = build_index(IndexOptions(root=root, workers=0)).summary
    assert summary["root"] == f"{tmp_path}/faces_\\xff" and summary["root"].encode("utf-8")
