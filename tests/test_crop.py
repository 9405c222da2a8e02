"""crop: the output folder is checked before any photo is read (detection's own tests are in test_detect.py)."""

from __future__ import annotations

import os

import pytest
from conftest import make_faces

from faceattr_batch.errors import FaceattrError
from faceattr_batch.pipelines import crop


def test_crop_checks_its_output_folder_before_any_work(tmp_path, monkeypatch):
    pytest.importorskip("cv2", reason="crop needs the [detect] extra")
    make_faces(tmp_path / "in", 2)
    (tmp_path / "afile").write_text("a file, not a folder")  # as root, chmod would not stop a write: this does
    decoded = []
    monkeypatch.setattr(crop, "iter_batches", lambda *args, **kwargs: decoded.append(args) or iter(()))
    options = crop.CropOptions(inputs=(str(tmp_path / "in"),), out_dir=tmp_path / "afile" / "chips", progress=False)
    with pytest.raises(FaceattrError, match=r"^-o .*afile/chips: cannot write there"):
        crop.run(options)
    assert decoded == []
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("not ours")
    with pytest.raises(FaceattrError, match="is not empty: add --overwrite"):
        crop.run(crop.CropOptions(inputs=(str(tmp_path / "in"),), out_dir=tmp_path / "out", progress=False))
    assert decoded == [] and (tmp_path / "out" / "keep.txt").is_file()
    both = crop.CropOptions(inputs=(str(tmp_path / "in"),), out_dir=tmp_path / "out", overwrite=True, resume=True)
    with pytest.raises(FaceattrError, match="^--resume goes on with a run, --overwrite replaces it: give one of them"):
        crop.run(both)
    assert decoded == [] and (tmp_path / "out" / "keep.txt").is_file()


@pytest.mark.parametrize("stem", ["é" * 120, "a" * 251, os.fsdecode(b"\xff" * 60 + b"x")])
def test_a_chip_name_stays_under_255_bytes_and_unique_per_photo(stem):
    name = crop._chip_name(f"/photos/{stem}.jpg", 3)
    assert len(os.fsencode(name)) <= 255 and name.endswith("_3.jpg")
    assert name != crop._chip_name(f"/elsewhere/{stem}.jpg", 3)


def test_a_dot_photo_gives_a_visible_chip_and_the_path_digest_is_64_bits():
    name = crop._chip_name("/photos/.holiday.jpg", 0)
    stem, digest, face = name.removesuffix(".jpg").rsplit("_", 2)
    assert (stem, face, len(digest)) == ("holiday", "0", 16)


def test_images_inside_the_output_folder_are_never_inputs(tmp_path):
    """Checked path by path: a glob of the input folder (a reviewer's finding) took the earlier chips as photos,
    which --overwrite then removed, and a user's image in the output folder was cropped again."""
    make_faces(tmp_path / "photos", 2)
    make_faces(tmp_path / "photos" / "chips", 3)  # an earlier run's chips, -o inside the input folder
    chips = tmp_path / "photos" / "chips"
    for named in (str(tmp_path / "photos"), str(tmp_path / "photos" / "*")):  # a folder; a glob
        photos = crop.list_images([named])
        kept = crop._outside(photos, chips)
        assert len(photos) == 5 and [os.path.dirname(path) for path in kept] == [str(tmp_path / "photos")] * 2
    os.symlink(chips, tmp_path / "link")
    assert len(crop._outside(photos, tmp_path / "link")) == 2  # the output folder named through a link
    assert crop._outside(photos, tmp_path / "out") == photos
    with pytest.raises(FaceattrError, match=r"^-o .*chips: every input image lies in the output folder"):
        crop._outside(photos[2:], chips)


def test_crop_over_its_own_output_with_overwrite_removes_nothing(tmp_path):
    pytest.importorskip("cv2", reason="crop needs the [detect] extra")
    out = tmp_path / "chips"
    make_faces(out, 2)
    before = sorted(out.iterdir())
    with pytest.raises(FaceattrError, match="every input image lies in the output folder"):
        crop.run(crop.CropOptions(inputs=(str(out),), out_dir=out, overwrite=True, progress=False))
    assert sorted(out.iterdir()) == before
