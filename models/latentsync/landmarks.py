"""Face landmarks from MediaPipe's face mesh (Apache-2.0; the 0.10.x wheels ship the detector
and mesh models, so nothing is downloaded at run time). Gives the three points LatentSync's
alignment uses: the centres of the two eyebrows (image left first) and of the lower nose.

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

    def __init__(self, min_confidence: float = 0.5) -> None:
        from mediapipe.python.solutions import face_mesh

        self._mesh = face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=min_confidence
        )
        self._lock = threading.Lock()

    def points(self, frame: np.ndarray) -> np.ndarray | None:
        """(3, 2) float32 pixel coordinates, rounded as upstream does, or None without a face."""
        h, w, _ = frame.shape
        with self._lock:
            result = self._mesh.process(np.ascontiguousarray(frame))
        if not result.multi_face_landmarks:
            return None
        marks = result.multi_face_landmarks[0].landmark
        xy = np.array([(p.x * w, p.y * h) for p in marks], dtype=np.float64)
        three = [xy[_LEFT_BROW].mean(axis=0), xy[_RIGHT_BROW].mean(axis=0), xy[_NOSE].mean(axis=0)]
        return np.round(three).astype(np.float32)

    def close(self) -> None:
        self._mesh.close()
