"""H.264 MP4 encoding with PyAV: yuv420p, +faststart, every frame kept, exact frame rate."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def encode_mp4(frames: np.ndarray, fps: int, path: Path, *, crf: int = 18, preset: str = "veryfast") -> int:
    """Write `frames` (uint8, F x H x W x 3) to `path` atomically; return the file size.

    The file appears under its final name only when complete, so a reader never sees a
    half-written video and a crash leaves no truncated file behind.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape (F, H, W, 3), got {frames.dtype} {frames.shape}")
    count, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError("yuv420p needs even height and width")
    partial = path.with_name(f".{path.name}.partial")
    try:
        with av.open(str(partial), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=Fraction(fps, 1))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            for index in range(count):
                frame = av.VideoFrame.from_ndarray(frames[index], format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # flush the encoder's delayed frames
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path.stat().st_size
