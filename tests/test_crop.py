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


@pytest.mark.parametrize("stem", ["é" * 120, "a" * 251, os.fsdecode(b"\xff" * 60 + b"x")])
def test_a_chip_name_stays_under_255_bytes_and_unique_per_photo(stem):
    name = crop._chip_name(f"/photos/{stem}.jpg", 3)
    assert len(os.fsencode(name)) <= 255 and name.endswith("_3.jpg")
    assert name != crop._chip_name(f"/elsewhere/{stem}.jpg", 3)
