"""Reading a file that torch.save wrote, safely (``weights_only``), with errors that say what the file is."""

from __future__ import annotations

from pathlib import Path

import torch

from faceattr_batch.errors import FaceattrError, first_line


def load_torch_file(path: Path, what: str) -> object:
    """``torch.load(weights_only=True)`` of ``path``, or a one-line ``FaceattrError`` saying what the file is instead
    (``what`` names what it should be): torch's own messages are about unpickling, not about the user's file."""
    with open(path, "rb") as file:
        head = file.read(2)
    if head not in (b"PK", b"\x80\x02"):  # what torch.save writes: a zip archive (a pickle before torch 1.6)
        why = "an ONNX file only predicts" if path.suffix.lower() == ".onnx" else "not a file torch.save writes"
        raise FaceattrError(f"{path}: not a {what} ({why})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise FaceattrError(f"{path}: a damaged {what} or a foreign file ({first_line(err, 160)})") from None
