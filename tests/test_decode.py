import pytest
from conftest import png_header_only as header_only

from faceattr_batch.data.decode import DEFAULT_MAX_PIXELS, DecodeError, read_rgb


def png_header_only(path, width: int, height: int):
    path.write_bytes(header_only(width, height))
    return path


def test_a_100_megapixel_photo_passes_the_guard_that_pillow_would_trip(tmp_path):
    # 11648 x 8736 (a 100 Mpx camera frame) is over Pillow's warning limit (89.5 Mpx), under ours: it gets as far
    # as decoding, which fails here only because the file holds no pixel data
    path = png_header_only(tmp_path / "frame.png", 11648, 8736)
    with pytest.raises(DecodeError) as caught:
        read_rgb(path)
    assert str(caught.value).startswith("unreadable image")


def test_larger_images_are_refused_by_the_guard(tmp_path):
    path = png_header_only(tmp_path / "bomb.png", 12000, 11000)
    with pytest.raises(DecodeError) as caught:
        read_rgb(path)
    assert str(caught.value) == f"decompression bomb guard: 12000x11000 exceeds {DEFAULT_MAX_PIXELS} pixels"
    # past twice Pillow's own limit Pillow refuses before the size is read: the same reason, in its words
    with pytest.raises(DecodeError, match="^decompression bomb guard: Image size"):
        read_rgb(png_header_only(tmp_path / "huge.png", 40000, 40000))
