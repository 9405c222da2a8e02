"""One image file -> its faces as chips: decode, detect, align. Runs in predict's and crop's decode workers.

``load_faces(path, options, size)`` returns a ``FoundFaces`` record per image (``batches.iter_batches`` collects
them in a list); ``face_rows`` turns a batch of them into one row per face for the model and the output table.

``--faces auto`` first asks whether the image is already a chip: the detector rescores one candidate box, the
image's centre square (about 1.5 ms, against 100+ ms for a full search of a photo), and the face it confirms there
must be framed like the training chips (``align.fills_frame``). The check reads the one decode ``decode.load_chip``
makes at the model's size, and such an image's chip is that decode exactly as ``--faces chips`` loads it, so chip
folders give the same predictions in both modes. Anything else is
searched in full and each face aligned. An image shaped like a chip (``chip_shaped``) in which the search finds
no face either is still predicted as ``--faces chips`` would, framed ``chip-unconfirmed``: so ``auto`` never
answers fewer images than ``chips`` (UTKFace holds chips MTCNN misses, and chips whose EXIF orientation turns the
face on its side; the shape test is on the short/long side ratio, which a quarter turn leaves as it is).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from faceattr_batch.data.decode import chip_pixels, load_chip, read_rgb, read_rgb_scaled, resize
from faceattr_batch.errors import FaceattrError
from faceattr_batch.faces.align import CHIP_SIZE, align_face, fills_frame
from faceattr_batch.faces.detect import Detections, MtcnnDetector, find_faces, rescore_boxes
from faceattr_batch.schema import FACE_COLUMNS

FACE_MODES = ("auto", "detect", "chips")
FRAMING_CHIP = "chip"  # the whole image is the one face: confirmed by the detector, or --faces chips
FRAMING_CHIP_UNCONFIRMED = "chip-unconfirmed"  # auto: chip-shaped, no face found, predicted as a chip anyway
FRAMING_ALIGNED = "aligned"  # detected in the image and aligned to the chip framing
FRAMINGS = (FRAMING_CHIP, FRAMING_CHIP_UNCONFIRMED, FRAMING_ALIGNED)  # every framing value, for the schema
# What a chip looks like: near square (UTKFace and crop 200 x 200, FairFace 224, CelebA's aligned 178 x 218) and
# no larger than the largest the generator writes; a bigger or wider image without a face is a photo without one
CHIP_MIN_ASPECT = 0.8  # short side / long side
CHIP_MAX_SIDE = 1024
NO_FACE = "no face found"
# The chip check's score floor: the framing test is the evidence, so it is lower than --min-score (one UTKFace chip
# in 300 scores 0.88 in a full search)
CHECK_MIN_SCORE = 0.5
# The chip check's decode side, at least: its O-net reads 48 px, and from 64 px up the landmarks it places sit
# within 3 px of those of the full decode (of 200 px chips; at 50 px, 8 px off)
CHECK_SIDE = 64


@dataclass(frozen=True)
class FaceOptions:
    mode: str = "auto"  # auto | detect | chips
    min_face: int = 20  # smallest face box side, in the photo's pixels
    min_score: float = 0.9  # the detector's confidence
    max_faces: int = 50  # per image, the best scores

    def validate(self) -> None:
        if self.mode not in FACE_MODES:
            raise FaceattrError(f"--faces {self.mode!r}: use {', '.join(FACE_MODES)}")
        if self.min_face < 1:
            raise FaceattrError(f"--min-face {self.min_face}: must be >= 1 (pixels)")
        if not 0.0 <= self.min_score <= 1.0:
            raise FaceattrError(f"--min-score {self.min_score}: must be within 0..1")
        if self.max_faces < 1:
            raise FaceattrError(f"--max-faces {self.max_faces}: must be >= 1")


@dataclass(frozen=True)
class FoundFaces:
    """The faces of one image: ``chips[i]`` is the face at ``detections`` row i (original pixels)."""

    framing: str  # one of FRAMINGS
    chips: np.ndarray  # k x size x size x 3 uint8
    detections: Detections


@functools.cache
def shared_detector() -> MtcnnDetector:
    """One detector per process (workers each load their own: the nets are small)."""
    return MtcnnDetector()


def load_faces(path: str, options: FaceOptions, size: int) -> FoundFaces:
    """The faces of the image at ``path`` as ``size`` x ``size`` chips (aligned at the training chips' 200 px, then
    resized as ``load_chip`` resizes a chip). Raises ``DecodeError`` for bad files."""
    detector = shared_detector()
    if options.mode == "auto":
        pixels, factors = read_rgb_scaled(path, draft_to=max(size, CHECK_SIDE))
        chip = confirmed_chip(path, pixels, factors, size, detector)
        if chip is not None:
            return chip
        if factors != (1.0, 1.0):  # the search needs every pixel; an image decoded whole is not decoded again
            pixels = read_rgb(path)
    else:
        pixels = read_rgb(path)
    found = find_faces(pixels, detector, options.min_face, options.min_score, options.max_faces)
    if not len(found) and options.mode == "auto" and chip_shaped(*pixels.shape[:2]):
        return FoundFaces(FRAMING_CHIP_UNCONFIRMED, load_chip(path, size)[None], _undetected())
    chips = [resize(align_face(pixels, points, CHIP_SIZE), size) for points in found.landmarks]
    stacked = np.stack(chips) if chips else np.zeros((0, size, size, 3), np.uint8)
    return FoundFaces(FRAMING_ALIGNED, stacked, found)


def confirmed_chip(path: str, pixels: np.ndarray, factors, size: int, detector) -> FoundFaces | None:
    """The image at ``path`` as one chip if ``chip_face`` confirms it is one, else None. ``pixels``, ``factors``:
    ``read_rgb_scaled(path, draft_to=max(size, CHECK_SIDE))``. One decode serves the check and the chip: at the
    model's size (DCT-scaled where the JPEG allows), which is ``load_chip``'s decode, or ``CHECK_SIDE`` for smaller
    models (their chip is then decoded again). Boxes and landmarks come back in the full image's pixels."""
    face = chip_face(pixels, detector)
    if face is None:
        return None
    chip = chip_pixels(pixels, size) if size >= CHECK_SIDE else load_chip(path, size)
    return FoundFaces(FRAMING_CHIP, chip[None], face.scaled(*factors))


def chip_face(pixels: np.ndarray, detector) -> Detections | None:
    """The face that makes this image a chip (its centre square framed like the training chips), or None."""
    height, width = pixels.shape[:2]
    side = min(height, width)
    square = np.array([[(width - side) / 2, (height - side) / 2, side, side]])
    found = rescore_boxes(pixels, detector, square, CHECK_MIN_SCORE)
    if not len(found):
        return None
    best = found.take([int(np.argmax(found.scores))])
    return best if fills_frame(best.landmarks[0], width, height) else None


def chip_shaped(height: int, width: int) -> bool:
    """Whether an image of this size could be a face chip (see CHIP_MIN_ASPECT, CHIP_MAX_SIDE)."""
    return min(height, width) >= CHIP_MIN_ASPECT * max(height, width) and max(height, width) <= CHIP_MAX_SIDE


def _undetected() -> Detections:
    """One face the detector did not see: no box, score or landmarks (NaN, written as nulls)."""
    return Detections(
        np.full((1, 4), np.nan, np.float32), np.full(1, np.nan, np.float32), np.full((1, 5, 2), np.nan, np.float32)
    )


@dataclass
class FaceRows:
    """A batch of images as one row per face (an image without faces, or that failed, is one error row)."""

    image: np.ndarray  # row -> position of its image in the batch
    faces_in_image: np.ndarray  # row -> how many faces its image has
    pixels: np.ndarray  # chips of the rows in ``ok``, stacked
    ok: list[int]  # rows with a chip
    errors: dict[int, str]  # row -> reason
    columns: dict[str, list]  # face columns (FACE_COLUMNS), one value per row


def face_rows(batch, size: int) -> FaceRows:
    """``batch`` (``batches.Batch`` whose ``items`` is a list of FoundFaces for its ``ok`` positions)."""
    found_at = dict(zip(batch.ok, batch.items, strict=True))
    image, counts, chips, ok, errors = [], [], [], [], {}
    columns: dict[str, list] = {name: [] for name in FACE_COLUMNS}
    for position in range(len(batch.paths)):
        found = found_at.get(position)
        count = len(found.detections) if found is not None else 0
        if count == 0:
            errors[len(image)] = batch.errors.get(position, NO_FACE)
            image.append(position)
            counts.append(0)
            for name in FACE_COLUMNS:
                columns[name].append(None)
            continue
        det = found.detections
        for face in range(count):
            ok.append(len(image))
            image.append(position)
            counts.append(count)
            chips.append(found.chips[face])
            x, y, w, h = (_finite(v) for v in det.boxes[face])
            points = det.landmarks[face].ravel()
            landmarks = points.tolist() if np.isfinite(points).all() else None
            values = (face, found.framing, x, y, w, h, _finite(det.scores[face]), landmarks)
            for name, value in zip(FACE_COLUMNS, values, strict=True):
                columns[name].append(value)
    pixels = np.stack(chips) if chips else np.zeros((0, size, size, 3), np.uint8)
    return FaceRows(np.asarray(image, np.int64), np.asarray(counts, np.int64), pixels, ok, errors, columns)


def _finite(value) -> float | None:
    """A detection value for the output table; None where the detector gave none (an unconfirmed chip)."""
    value = float(value)
    return value if np.isfinite(value) else None
