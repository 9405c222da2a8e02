"""Alignment: a detected face -> a chip framed like UTKFace's aligned 200 x 200 chips, the model's training data.

A similarity transform (rotation, uniform scale, shift) takes the detector's five landmarks onto ``TEMPLATE``, the
mean landmark positions of the training chips, estimated by ``scripts/estimate_template.py`` (numbers only; run
it again for another detector or another training set). ``cv2.estimateAffinePartial2D`` with LMEDS fits it, so
one misplaced landmark (an occluded mouth corner) does not tilt the face.

``framing_error`` measures how far an image already is from that framing: ``predict --faces auto`` treats an image
whose single face is framed within ``CHIP_TOLERANCE`` as a chip and runs it exactly as ``--faces chips`` would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from faceattr_batch.faces.detect import opencv

CHIP_SIZE = 200
# (x, y) in CHIP_SIZE pixels of left eye, right eye, nose, mouth left, mouth right (as seen in the image): the
# mean of MTCNN's landmarks over 2,000 shared UTKFace chips (scripts/estimate_template.py, seed 0)
TEMPLATE = np.array(
    [
        [59.71, 58.11],
        [137.97, 58.24],
        [98.43, 104.14],
        [63.28, 138.61],
        [133.77, 138.80],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Framing:
    """How an image's centre square differs from the chip framing its landmarks would give it."""

    scale: float  # chip side / square side that the alignment implies; 1 = framed like a chip
    rotation: float  # degrees the alignment would turn the face
    shift: float  # how far the square's centre moves, as a share of the chip side


# Chips that ``--faces auto`` takes as they are: 18,950 of the 18,967 shared UTKFace chips (the other 17: babies,
# tilted or off-centre crops, one picture without a face); scripts/estimate_template.py prints the observed ranges
CHIP_TOLERANCE = Framing(scale=0.4, rotation=25.0, shift=0.15)


def similarity_to_template(landmarks: np.ndarray, size: int = CHIP_SIZE, template: np.ndarray = TEMPLATE):
    """The 2 x 3 matrix taking image points to a ``size`` x ``size`` chip's points (least median of squares)."""
    cv2 = opencv()

    source = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    target = np.asarray(template, dtype=np.float64) * (size / CHIP_SIZE)
    matrix, _ = cv2.estimateAffinePartial2D(source, target, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("degenerate landmarks: no similarity transform fits them")
    return matrix


def transform_parts(matrix: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(scale, rotation in degrees, shift) of a similarity matrix [[s cos, -s sin, tx], [s sin, s cos, ty]]."""
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    rotation = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
    return scale, rotation, matrix[:, 2].copy()


def framing_error(landmarks: np.ndarray, width: int, height: int, template: np.ndarray = TEMPLATE) -> Framing:
    """How the centre square of a ``width`` x ``height`` image would move if aligned by these landmarks."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    square = np.asarray(landmarks, dtype=np.float64).reshape(5, 2) - (left, top)
    matrix = similarity_to_template(square * (CHIP_SIZE / side), CHIP_SIZE, template)
    scale, rotation, _ = transform_parts(matrix)
    centre = matrix @ np.array([CHIP_SIZE / 2, CHIP_SIZE / 2, 1.0])
    shift = float(np.hypot(*(centre - CHIP_SIZE / 2))) / CHIP_SIZE
    return Framing(scale=scale, rotation=rotation, shift=shift)


def fills_frame(landmarks: np.ndarray, width: int, height: int, template: np.ndarray = TEMPLATE) -> bool:
    """True when the image is already framed like a chip (within ``CHIP_TOLERANCE``)."""
    framing = framing_error(landmarks, width, height, template)
    return (
        abs(math.log(framing.scale)) <= math.log1p(CHIP_TOLERANCE.scale)
        and abs(framing.rotation) <= CHIP_TOLERANCE.rotation
        and framing.shift <= CHIP_TOLERANCE.shift
    )


def warp_to_chip(rgb: np.ndarray, matrix: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` chip that ``matrix`` frames in ``rgb`` (borders replicated).

    A face much larger than the chip is first shrunk with area averaging (only the region the chip covers), so
    big faces in big photos are not aliased by the bilinear warp.
    """
    cv2 = opencv()

    matrix = np.asarray(matrix, dtype=np.float64)
    scale = transform_parts(matrix)[0]
    if scale < 0.5:
        rgb, matrix = _shrink_region(rgb, matrix, size, scale)
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _shrink_region(rgb: np.ndarray, matrix: np.ndarray, size: int, scale: float):
    """The part of ``rgb`` under the chip, area-resized to about the chip's resolution, and the matrix for it."""
    cv2 = opencv()

    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ inverse.T
    height, width = rgb.shape[:2]
    margin = 2.0 / scale  # two chip pixels, so the bilinear warp never reads past the region
    x0 = int(np.clip(np.floor(corners[:, 0].min() - margin), 0, width - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min() - margin), 0, height - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max() + margin), x0 + 1, width))
    y1 = int(np.clip(np.ceil(corners[:, 1].max() + margin), y0 + 1, height))
    region = rgb[y0:y1, x0:x1]
    new_w, new_h = max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale))
    small = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
    fx, fy = new_w / region.shape[1], new_h / region.shape[0]
    # small pixel -> region pixel (cv2.resize's pixel-centre convention) -> original pixel
    to_original = np.array([[1 / fx, 0, 0.5 / fx - 0.5 + x0], [0, 1 / fy, 0.5 / fy - 0.5 + y0], [0, 0, 1]])
    return small, (np.vstack([matrix, [0, 0, 1]]) @ to_original)[:2]


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """The face with these landmarks as a ``size`` x ``size`` chip framed like the training chips."""
    return warp_to_chip(rgb, similarity_to_template(landmarks, size), size)
