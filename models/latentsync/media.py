"""Reading the inputs and writing the output of a lip-sync request with PyAV (FFmpeg's
libraries in-process: no shell, no temp paths, every failure a clear error).

Frames are decoded once into a disk-backed array (host memory stays flat however long the
clip), resampled to 25 fps by taking, for each output instant, the last frame shown by then.
The output is written frame by frame as the chunks finish, with the speech muxed as AAC.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from models.base import InputError

FPS = 25
SAMPLE_RATE = 16000


@dataclass(frozen=True, kw_only=True)
class MediaLimits:
    max_seconds: float = 60.0
    max_pixels: int = 1920 * 1080
    # Decoded frames go to a disk-backed array here (None: the system's temp folder), at most
    # this many bytes, judged from the container's header before anything is decoded.
    scratch_dir: Path | None = None
    max_scratch_bytes: int = 4 * 1024**3


def read_audio(path: Path, limits: MediaLimits) -> np.ndarray:
    """Mono float32 samples at 16 kHz in [-1, 1]; `invalid_audio` / `input_too_long` otherwise."""
    chunks: list[np.ndarray] = []
    total = 0
    cap = int(limits.max_seconds * SAMPLE_RATE)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError("invalid_audio", "audio_in has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += out.samples
                if total > cap:
                    raise InputError("input_too_long", f"audio_in is longer than the limit of {limits.max_seconds:g} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except InputError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise InputError("invalid_audio", f"audio_in could not be decoded: {exc}") from None
    samples = np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0, np.float32)
    if len(samples) < SAMPLE_RATE // FPS:
        raise InputError("invalid_audio", "audio_in holds no audio (shorter than one video frame)")
    return samples


@contextmanager
def read_video(path: Path, limits: MediaLimits) -> Iterator[np.ndarray]:
    """Yields the clip at 25 fps as a read-only (frames, h, w, 3) uint8 array backed by a temp file."""
    if limits.scratch_dir is not None:
        limits.scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lipsync-", dir=limits.scratch_dir) as tmp:
        yield _decode_to_disk(path, limits, Path(tmp) / "frames.npy")


def _decode_to_disk(path: Path, limits: MediaLimits, target: Path) -> np.ndarray:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise InputError("invalid_video", f"video_in could not be opened as a video: {exc}") from None
    with container:
        if not container.streams.video:
            raise InputError("invalid_video", "video_in has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_pixels:
            raise InputError(
                "input_too_large", f"video_in is {width}x{height}; the limit is {limits.max_pixels} pixels per frame"
            )
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        if duration is None and container.duration:
            duration = container.duration / 1_000_000
        if duration is not None and duration > limits.max_seconds + 1:
            raise InputError("input_too_long", f"video_in is {duration:.1f} s; the limit is {limits.max_seconds:g} s")
        # Room for the frames the header announces (a little more: rounding, a last long frame);
        # a clip that runs past it is lying about its length. No header duration: the longest allowed.
        limit = int(limits.max_seconds * FPS) + 2
        capacity = min(limit, math.ceil(duration * FPS * 1.05) + 3) if duration is not None else limit
        needed = capacity * height * width * 3
        if needed > limits.max_scratch_bytes:
            raise InputError(
                "input_too_large",
                f"video_in ({width}x{height}, {duration if duration is not None else 'unknown'} s) would take "
                f"{needed} bytes decoded; this server allows {limits.max_scratch_bytes}",
            )
        frames = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(capacity, height, width, 3))
        count = 0
        step = 1 / float(stream.average_rate) if stream.average_rate else 1 / FPS

        def emit_until(seconds: float, image: np.ndarray) -> None:
            nonlocal count
            while count / FPS < seconds - 1e-6:
                if count >= capacity:
                    if capacity < limit:
                        raise InputError("invalid_video", "video_in runs longer than its header says")
                    raise InputError("input_too_long", f"video_in is longer than {limits.max_seconds:g} s")
                frames[count] = image
                count += 1

        try:
            previous, last_time = None, 0.0
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                image = frame.to_ndarray(format="rgb24")
                if image.shape[:2] != (height, width):
                    raise InputError("invalid_video", "video_in changes resolution mid-stream")
                # The 25 fps instants before this frame starts show the frame before it.
                emit_until(frame.time, image if previous is None else previous)
                previous, last_time = image, frame.time
            if previous is not None:
                emit_until(last_time + step, previous)
        except InputError:
            raise
        except (av.error.FFmpegError, ValueError) as exc:
            raise InputError("invalid_video", f"video_in could not be decoded: {exc}") from None
    if count == 0:
        raise InputError("invalid_video", "video_in has no frames")
    frames.flush()
    return frames[:count]
