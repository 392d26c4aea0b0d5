"""Faces of every size the issue names: a real face photograph (scikit-image's astronaut) scaled
so the face is 64 to 200 px wide, pasted into 720p and 1080p frames of another photograph, is
found, and its three points land where the points found on the large photo land once scaled. A
frame with no face gives none."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from models.latentsync.landmarks import FaceLandmarker


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker()


HEAD = (slice(0, 260), slice(110, 350))  # the astronaut's head and shoulders in the 512 px photo


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
@pytest.mark.parametrize("face_width", [64, 100, 150, 200])
def test_small_faces_are_found_where_they_are(
    landmarker: FaceLandmarker, size: tuple[int, int], face_width: int
) -> None:
    photo = data.astronaut()
    reference = landmarker.points(photo)
    assert reference is not None
    width = 2 * abs(float(reference[1][0] - reference[0][0]))  # about the face's width: twice the brows' distance
    scale = face_width / width
    head = photo[HEAD]
    small = cv2.resize(head, (round(head.shape[1] * scale), round(head.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    w, h = size
    frame = cv2.resize(data.coffee(), (w, h))
    x, y = w // 2 - small.shape[1] // 4, (h - small.shape[0]) // 2
    frame[y : y + small.shape[0], x : x + small.shape[1]] = small
    points = landmarker.points(frame)
    assert points is not None, f"a {face_width} px face in {w}x{h} was missed"
    expected = (reference - [HEAD[1].start, HEAD[0].start]) * scale + [x, y]
    error = float(np.abs(points - expected).max())
    print(f"{w}x{h}, face {face_width} px: largest point error {error:.2f} px")
    assert error < max(2.0, 0.03 * face_width)


def test_no_face_gives_no_points(landmarker: FaceLandmarker) -> None:
    assert landmarker.points(cv2.resize(data.coffee(), (1920, 1080))) is None
    assert landmarker.points(np.zeros((720, 1280, 3), np.uint8)) is None
