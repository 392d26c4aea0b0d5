"""Reading the inputs and writing the output of a lip-sync request with PyAV (FFmpeg's
libraries in-process: no shell, no temp paths, every failure a clear error).

Frames are decoded once into a disk-backed array (host memory stays flat however long the
clip), turned upright as the stream's display matrix says (phone videos), and resampled to 25 fps
exactly as upstream's preprocessing does it: upstream runs `ffmpeg -i in -r 25 -crf 18 out.mp4`,
whose constant-frame-rate sync (fftools, FFmpeg 5.1: `do_video_out`, VSYNC_CFR / VSCFR) keeps,
drops or repeats each source frame by how far its timestamp has drifted from the output's frame
count. `Cfr25` is that rule; tests compare it frame by frame with Debian 12's ffmpeg 5.1 (the
version upstream's fixtures were made with) at 15, 24, 29.97, 30, 50 and 60 fps.
The output is written frame by frame as the chunks finish, with the speech muxed as AAC.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
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


def _lrint(value: float) -> int:
    """C's lrint in the default rounding mode: to nearest, ties to even (Python's round)."""
    return round(value)


class Cfr25:
    """FFmpeg 5.1's constant-frame-rate sync to 25 fps, one source frame at a time: `take` says
    how many times to write the previous frame, then this one (0, 0 drops it). `sync` is the
    frame's timestamp in output frames (from the file's start), `duration` its length in output
    frames (FFmpeg: the smaller of the stream's frame period and one output frame, replaced by the
    packet's own duration when that rounds to a whole frame or more)."""

    def __init__(self, *, single_stream: bool) -> None:
        self.vscfr = single_stream  # FFmpeg's VSCFR: a lone video stream does not pad its start
        self.next = 0  # the output frame count (FFmpeg's sync_opts)
        self.recent_nb0 = [0, 0, 0]

    def take(self, sync: float, duration: float) -> tuple[int, int]:
        sync += (1 if sync >= 0 else -1) / (1 << 17)  # FFmpeg nudges off exact midpoints
        delta0 = sync - self.next
        delta = delta0 + duration
        if self.vscfr and self.next == 0 and delta0 >= 0.5:  # "not duplicating initial frames"
            delta, delta0 = duration, 0.0
            self.next = _lrint(sync)
        nb0, nb = 0, 1
        if delta < -1.1:
            nb = 0
        elif delta > 1.1:
            nb = _lrint(delta)
            if delta0 > 1.1:
                nb0 = _lrint(delta0 - 0.6)
        nb0 = min(nb0, nb)
        self.recent_nb0 = [nb0, *self.recent_nb0[:2]]
        self.next += nb
        return nb0, nb - nb0

    def flush(self) -> int:
        """Copies of the last frame written at the end of the stream (the median of the last three
        `previous` counts, as FFmpeg's flush)."""
        return sorted(self.recent_nb0)[1]


def _near(value: Fraction) -> int:
    """FFmpeg's av_rescale_q rounding: to nearest, ties away from zero."""
    return math.floor(value + Fraction(1, 2)) if value >= 0 else -math.floor(-value + Fraction(1, 2))


def _rotation(frame: av.VideoFrame) -> int:
    """Quarter turns counter-clockwise that show the frame upright (from its display matrix)."""
    try:
        degrees = float(frame.rotation or 0)
    except (AttributeError, ValueError, TypeError):
        return 0
    return round(degrees / 90) % 4


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
        # The 25 fps stream runs from the file's start (a video starting after its audio is padded
        # with its first frame, as FFmpeg does) and may trail the source by about two frames.
        offset = 0.0
        if stream.start_time is not None and stream.time_base:
            offset = max(float(stream.start_time * stream.time_base) - (container.start_time or 0) / 1_000_000, 0.0)
        capacity = min(limit, math.ceil((offset + duration) * FPS * 1.05) + 5) if duration is not None else limit
        needed = capacity * height * width * 3
        if needed > limits.max_scratch_bytes:
            raise InputError(
                "input_too_large",
                f"video_in ({width}x{height}, {duration if duration is not None else 'unknown'} s) would take "
                f"{needed} bytes decoded; this server allows {limits.max_scratch_bytes}",
            )
        frames: np.memmap | None = None
        count = 0
        rate = stream.guessed_rate or stream.average_rate
        period = min(FPS / float(rate), 1.0) if rate else 1.0
        start = container.start_time or 0  # FFmpeg shifts the input so the file starts at 0

        def write(image: np.ndarray, times: int) -> None:
            nonlocal count, frames
            if frames is None:  # the first frame, turned upright, gives the shape
                frames = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(capacity, *image.shape))
            for _ in range(times):
                if count >= capacity:
                    if capacity < limit:
                        raise InputError("invalid_video", "video_in runs longer than its header says")
                    raise InputError("input_too_long", f"video_in is longer than {limits.max_seconds:g} s")
                frames[count] = image
                count += 1

        sync = Cfr25(single_stream=len(container.streams) == 1)
        try:
            previous = None
            for frame in container.decode(stream):
                if frame.pts is None or frame.time_base is None:
                    continue
                image = frame.to_ndarray(format="rgb24")
                if image.shape[:2] != (height, width):
                    raise InputError("invalid_video", "video_in changes resolution mid-stream")
                turns = _rotation(frame)
                if turns:
                    image = np.ascontiguousarray(np.rot90(image, turns))
                shifted = frame.pts + _near(Fraction(-start, 1_000_000) / frame.time_base)
                position = _near(shifted * frame.time_base * FPS * 65536) / 65536
                duration = period
                if frame.duration and _lrint(float(frame.duration * frame.time_base * FPS)) > 0:
                    duration = float(_lrint(float(frame.duration * frame.time_base * FPS)))
                again, times = sync.take(float(position), duration)
                write(previous if previous is not None else image, again)  # FFmpeg: no previous yet, this one
                write(image, times)
                previous = image
            if previous is not None:
                write(previous, sync.flush())
        except InputError:
            raise
        except (av.error.FFmpegError, ValueError) as exc:
            raise InputError("invalid_video", f"video_in could not be decoded: {exc}") from None
    if frames is None or count == 0:
        raise InputError("invalid_video", "video_in has no frames")
    frames.flush()
    return frames[:count]
