import struct
import zlib

import pytest

from faceattr_batch.data.decode import DEFAULT_MAX_PIXELS, DecodeError, read_rgb


def png_header_only(path, width: int, height: int):
    """A PNG that claims width x height pixels and holds almost no data: header readers see its size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
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
