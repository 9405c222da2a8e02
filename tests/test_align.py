"""Alignment maths on synthetic landmarks: known similarity transforms are recovered, warps land where they should,
and the chip-framing test accepts chips and refuses other framings."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("cv2", reason="alignment needs OpenCV: pip install -e '.[detect]'")

from faceattr_batch.faces.align import (  # noqa: E402  (after the skip: these call cv2)
    CHIP_SIZE,
    TEMPLATE,
    align_face,
    fills_frame,
    framing_error,
    similarity_to_template,
    transform_parts,
    warp_to_chip,
)


def _similarity(scale: float, degrees: float, shift: tuple[float, float]) -> np.ndarray:
    angle = math.radians(degrees)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[cos, -sin, shift[0]], [sin, cos, shift[1]]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _image_landmarks(to_chip: np.ndarray) -> np.ndarray:
    """Where the template's points sit in an image that ``to_chip`` maps onto the chip."""
    inverse = np.linalg.inv(np.vstack([to_chip, [0, 0, 1]]))[:2]
    return _apply(inverse, TEMPLATE)


CASES = [(1.0, 0.0, (0.0, 0.0)), (0.31, 12.0, (40.0, -25.0)), (2.5, -35.0, (-90.0, 60.0)), (0.05, 170.0, (7.0, 3.0))]


@pytest.mark.parametrize(("scale", "degrees", "shift"), CASES)
def test_a_known_similarity_is_recovered(scale, degrees, shift):
    expected = _similarity(scale, degrees, shift)
    found = similarity_to_template(_image_landmarks(expected))
    np.testing.assert_allclose(found, expected, rtol=1e-6, atol=1e-6 * max(1.0, abs(shift[0]) + abs(shift[1])))
    recovered_scale, recovered_degrees, recovered_shift = transform_parts(found)
    assert recovered_scale == pytest.approx(scale, rel=1e-6)
    assert recovered_degrees == pytest.approx(degrees, abs=1e-5)
    np.testing.assert_allclose(recovered_shift, shift, atol=1e-5)


def test_one_misplaced_landmark_does_not_tilt_the_face():
    expected = _similarity(0.7, 8.0, (12.0, -30.0))
    points = _image_landmarks(expected)
    points[4] += (25.0, -18.0)  # an occluded mouth corner, guessed badly
    np.testing.assert_allclose(similarity_to_template(points), expected, atol=1e-4)  # a least-squares fit: ~2 px off


def test_the_output_size_scales_the_template():
    expected = _similarity(0.5, 0.0, (0.0, 0.0))
    half = similarity_to_template(_image_landmarks(expected), size=CHIP_SIZE // 2)
    np.testing.assert_allclose(half[:, :2], expected[:, :2] / 2, atol=1e-9)


def _dots(height: int, width: int, points: np.ndarray, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    image = np.zeros((height, width, 3), np.uint8)
    for x, y in points:
        image[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = 255
    return image


def _dot_centres(chip: np.ndarray) -> np.ndarray:
    """Brightness-weighted centre of the chip's bright pixels near each template point."""
    gray = chip[:, :, 0].astype(np.float64)
    yy, xx = np.mgrid[: chip.shape[0], : chip.shape[1]]
    centres = []
    for x, y in TEMPLATE:
        near = ((xx - x) ** 2 + (yy - y) ** 2 <= 12**2) * gray
        centres.append((float((near * xx).sum() / near.sum()), float((near * yy).sum() / near.sum())))
    return np.array(centres)


@pytest.mark.parametrize(("scale", "degrees", "size"), [(1.3, 20.0, (500, 400)), (0.12, -15.0, (3000, 2400))])
def test_warped_landmarks_land_on_the_template(scale, degrees, size):
    """Dots drawn at the image landmarks end up on the template points (scale 0.12: the shrink-first path)."""
    height, width = size
    to_chip = _similarity(scale, degrees, (0.0, 0.0))
    points = _image_landmarks(to_chip)
    centre = np.array([width / 2, height / 2]) - points.mean(axis=0)  # the face in the middle of the image
    to_chip[:, 2] -= to_chip[:, :2] @ centre
    points = points + centre
    image = _dots(height, width, points, radius=max(2, round(3 / scale)))
    chip = align_face(image, points)
    assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3)
    np.testing.assert_allclose(_dot_centres(chip), TEMPLATE, atol=1.0)


def test_shrinking_first_matches_a_direct_warp_on_smooth_images():
    """The area-resize path must not move anything: on a smooth image it equals the plain bilinear warp."""
    from faceattr_batch.faces.detect import opencv

    cv2 = opencv()

    yy, xx = np.mgrid[:2400, :3000].astype(np.float64)
    smooth = np.stack([xx / 3000 * 255, yy / 2400 * 255, (xx + yy) / 5400 * 255], axis=2).astype(np.uint8)
    matrix = _similarity(0.12, 25.0, (0.0, 0.0))
    matrix[:, 2] = CHIP_SIZE / 2 - matrix[:, :2] @ (1500.0, 1200.0)  # the image centre to the chip centre
    direct = cv2.warpAffine(smooth, matrix, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR)
    shrunk = warp_to_chip(smooth, matrix)
    assert np.abs(direct.astype(int) - shrunk.astype(int)).mean() < 1.0


def test_framing_of_chips_and_of_other_images():
    chip_points = TEMPLATE.copy()
    framing = framing_error(chip_points, CHIP_SIZE, CHIP_SIZE)
    assert (framing.scale, framing.rotation, framing.shift) == pytest.approx((1.0, 0.0, 0.0), abs=1e-6)
    assert fills_frame(chip_points, CHIP_SIZE, CHIP_SIZE)
    assert fills_frame(chip_points * 2, 400, 400)  # the same framing at twice the size
    assert fills_frame(chip_points + (50, 0), 300, 200)  # a chip-framed centre square of a wider image
    assert not fills_frame(chip_points / 2, 400, 400)  # a face a quarter of the image: a photo
    assert not fills_frame(chip_points + (60, 0), CHIP_SIZE, CHIP_SIZE)  # off centre
    turned = _apply(_similarity(1.0, 40.0, (0.0, 0.0)), chip_points - 100) + 100
    assert framing_error(turned, CHIP_SIZE, CHIP_SIZE).rotation == pytest.approx(-40.0, abs=1e-4)
    assert not fills_frame(turned, CHIP_SIZE, CHIP_SIZE)


def test_the_template_is_a_face():
    left_eye, right_eye, nose, mouth_left, mouth_right = TEMPLATE
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < nose[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert abs((left_eye[0] + right_eye[0]) / 2 - CHIP_SIZE / 2) < 5  # centred, as the chips are
    assert ((TEMPLATE > 0) & (TEMPLATE < CHIP_SIZE)).all()
