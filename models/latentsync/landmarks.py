"""Face landmarks from MediaPipe (Apache-2.0; the 0.10.x wheels ship the detector and mesh models,
so nothing is downloaded at run time). Gives the three points LatentSync's alignment uses: the
centres of the two eyebrows (image left first) and of the lower nose.

The face mesh's own detector is the short-range one: it misses faces under about 200 px wide in a
1080p frame (150 px at 720p). So the whole frame goes first through MediaPipe's full-range face
detector (on overlapping tiles when the whole frame shows none), and the mesh runs on a square
crop around the face it found, scaled to 256 px; without a detection, the mesh tries the whole
frame. Faces from 64 px wide are found at 720p and 1080p
(tests/models/latentsync/test_landmarks.py).

Upstream uses InsightFace's 106-point model, whose weights are licensed for non-commercial
research only; the mesh points below sit on the same anatomy (eyebrow arcs, nose tip/base).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

log = logging.getLogger("models.latentsync")

# Face-mesh indices: eyebrow arcs (the subject's right brow appears on the image's left) and the
# lower nose (tip and base).
_LEFT_BROW = [70, 63, 105, 66, 107]
_RIGHT_BROW = [300, 293, 334, 296, 336]
_NOSE = [1, 4, 5, 19]


class FaceLandmarker:
    """One MediaPipe face mesh, used from the runner thread only (it keeps tracking state off:
    every frame is detected afresh, so a cut in the video cannot confuse it)."""

    CROP = 256  # the face crop's side for the mesh, in pixels
    MARGIN = 2.2  # the crop's side over the detected face box's longer side

    def __init__(self, min_confidence: float = 0.5) -> None:
        from mediapipe.python.solutions import face_detection, face_mesh

        self._mesh = face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=min_confidence
        )
        self._detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_confidence)
        self._lock = threading.Lock()

    def points(self, frame: np.ndarray) -> np.ndarray | None:
        """(3, 2) float32 pixel coordinates, rounded as upstream does, or None without a face."""
        frame = np.ascontiguousarray(frame)
        with self._lock:
            box = self._face_box(frame)
            xy = self._mesh_on_crop(frame, box) if box is not None else None
            if xy is None:
                xy = self._mesh_points(frame)
        if xy is None:
            return None
        three = [xy[_LEFT_BROW].mean(axis=0), xy[_RIGHT_BROW].mean(axis=0), xy[_NOSE].mean(axis=0)]
        return np.round(three).astype(np.float32)

    def _face_box(self, frame: np.ndarray) -> tuple[float, float, float, float] | None:
        """The most confident face's box (x, y, width, height) in pixels, from the full-range
        detector on the whole frame; failing that, on overlapping tiles of half the frame's
        shorter side (its input is 192 px, so a 64 px face in a 1080p frame is only found on a tile)."""
        h, w = frame.shape[:2]
        found = self._detect(frame, 0, 0)
        if found is None:
            side = max(256, min(h, w) // 2)
            stride = side * 3 // 4
            tiles = [
                (x, y)
                for y in range(0, max(h - side, 0) + stride, stride)
                for x in range(0, max(w - side, 0) + stride, stride)
            ]
            hits = [hit for x, y in tiles if (hit := self._detect(frame[y : y + side, x : x + side], x, y)) is not None]
            found = max(hits, key=lambda hit: hit[0]) if hits else None
        return found[1] if found is not None else None

    def _detect(self, image: np.ndarray, x0: int, y0: int) -> tuple[float, tuple[float, float, float, float]] | None:
        result = self._detector.process(np.ascontiguousarray(image))
        if not result.detections:
            return None
        best = max(result.detections, key=lambda d: d.score[0])
        box = best.location_data.relative_bounding_box
        h, w = image.shape[:2]
        return float(best.score[0]), (x0 + box.xmin * w, y0 + box.ymin * h, box.width * w, box.height * h)

    def _mesh_on_crop(self, frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
        import cv2

        x, y, bw, bh = box
        side = max(bw, bh) * self.MARGIN
        x0, y0 = x + bw / 2 - side / 2, y + bh / 2 - side / 2
        scale = self.CROP / side
        # The crop as an affine warp: parts outside the frame are edge pixels, never an error.
        matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
        crop = cv2.warpAffine(
            frame,
            matrix,
            (self.CROP, self.CROP),
            flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        xy = self._mesh_points(crop)
        return None if xy is None else xy / scale + [x0, y0]

    def _mesh_points(self, image: np.ndarray) -> np.ndarray | None:
        result = self._mesh.process(image)
        if not result.multi_face_landmarks:
            return None
        h, w = image.shape[:2]
        return np.array([(p.x * w, p.y * h) for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)

    def close(self) -> None:
        self._mesh.close()
        self._detector.close()
