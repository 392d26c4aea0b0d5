"""How the LatentSync backend runs (LATENTSYNC_* settings); importable without the model's libraries."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.latentsync.media import MediaLimits


@dataclass(frozen=True, kw_only=True)
class LipSyncOptions:
    variant: str = "1.6"  # 1.5: 256 px, 1.6: 512 px
    deepcache: bool = True
    deepcache_interval: int = 3
    face_grace_frames: int = 25  # no face in the first N frames: no_face_detected
    face_reuse_frames: int = 12  # a face lost for more frames in a row than this: no_face_detected
    limits: MediaLimits = field(default_factory=MediaLimits)
