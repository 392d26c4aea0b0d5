"""The one MP4 writer: H.264 (yuv420p, +faststart) with PyAV, frames as they come, optionally a
mono AAC speech track; every backend's output goes through it, so VIDEO_CRF / VIDEO_PRESET reach
every task.

The file appears under its final name only when complete (written to `.<name>.partial`, then
renamed), so a reader never sees a half-written video and a crash leaves no truncated file.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np


@dataclass(frozen=True, kw_only=True)
class Mp4Options:
    """x264 settings (VIDEO_CRF, VIDEO_PRESET)."""

    crf: int = 18
    preset: str = "veryfast"


# The same seed must give the same video (an API promise). x264's macroblock-tree rate control
# does not: the same frames gave 2-3 different streams in 4 encodes (704x1216x41, with 1 thread or
# several; 64x64x9 too), decoded pixels up to 41 levels apart. Without it every encode was
# identical, with any thread count. It costs some compression at a given CRF.
_X264_PARAMS = "mbtree=0"


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


class Mp4Writer:
    """Frames (uint8 RGB, H x W x 3) in order; `close()` flushes, muxes the audio, renames into place.

    Odd sizes are cropped by one pixel (yuv420p needs even sides)."""

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: int | Fraction,
        options: Mp4Options,
        audio_rate: int | None = None,
    ) -> None:
        self.path, self.partial = path, partial_path(path)
        self.frames = 0
        self._container = av.open(str(self.partial), mode="w", format="mp4", options={"movflags": "+faststart"})
        self._video = self._container.add_stream("libx264", rate=Fraction(fps))
        self._video.width, self._video.height = width - width % 2, height - height % 2
        self._video.pix_fmt = "yuv420p"
        self._video.options = {
            "crf": str(options.crf),
            "preset": options.preset,
            "x264-params": _X264_PARAMS,
        }
        self._time_base = 1 / Fraction(fps)
        self._audio = None
        if audio_rate is not None:
            self._audio = self._container.add_stream("aac", rate=audio_rate)
            self._audio.layout = "mono"
        self._audio_rate = audio_rate

    def write(self, frame: np.ndarray) -> None:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
        frame = np.ascontiguousarray(frame[: self._video.height, : self._video.width])
        image = av.VideoFrame.from_ndarray(frame, format="rgb24")
        image.pts, image.time_base = self.frames, self._time_base
        self._container.mux(self._video.encode(image))
        self.frames += 1

    def close(self, audio: np.ndarray | None = None) -> int:
        """Flush the video, add `audio` (float32 mono at `audio_rate`, in [-1, 1]), close and
        rename into place; returns the file's size in bytes."""
        try:
            self._container.mux(self._video.encode(None))  # the encoder's delayed frames
            if self._audio is not None and audio is not None:
                self._write_audio(audio)
            self._container.close()
            os.replace(self.partial, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path.stat().st_size

    def _write_audio(self, samples: np.ndarray) -> None:
        assert self._audio is not None and self._audio_rate is not None
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        block, pts = 1024 * 16, 0
        for start in range(0, len(pcm), block):
            piece = pcm[start : start + block]
            frame = av.AudioFrame.from_ndarray(piece[None], format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = self._audio_rate, pts, Fraction(1, self._audio_rate)
            pts += len(piece)
            self._container.mux(self._audio.encode(frame))
        self._container.mux(self._audio.encode(None))

    def abort(self) -> None:
        """Drop the partial file (the request already failed; do not mask why)."""
        with contextlib.suppress(Exception):
            self._container.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            self.abort()


def encode_mp4(frames: np.ndarray, fps: int, path: Path, options: Mp4Options | None = None) -> int:
    """Write `frames` (uint8, F x H x W x 3) to `path` atomically; return the file size."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape (F, H, W, 3), got {frames.dtype} {frames.shape}")
    count, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError("yuv420p needs even height and width")
    with Mp4Writer(path, width=width, height=height, fps=fps, options=options or Mp4Options()) as writer:
        for index in range(count):
            writer.write(frames[index])
        return writer.close()
