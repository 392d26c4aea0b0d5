"""The 25 fps frames and their orientation, against the real thing: upstream's preprocessing runs
`ffmpeg -y -loglevel error -i <video> -r 25 -crf 18 <out>` and reads the frames back; here Debian
12's ffmpeg 5.1 (the version upstream's fixtures were made with; `make test` installs it) runs that
command on clips whose frames carry their index as a pattern of black and white cells, and the
indices of its output are compared one by one with what read_video gives. Cases: constant rates
from 15 to 60 fps, NTSC 29.97, a video starting after its audio, irregular (VFR) frame times, and
display rotations of 90, 180 and 270 degrees (a phone's portrait video)."""

from __future__ import annotations

import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from models.latentsync.media import MediaLimits, read_video

W, H, COLS, ROWS, CELL = 128, 96, 4, 3, 32


def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        message = "needs Debian's ffmpeg (make test installs it as root with apt)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _pattern(index: int) -> np.ndarray:
    image = np.zeros((H, W, 3), np.uint8)
    for bit in range(COLS * ROWS):
        if index >> bit & 1:
            row, col = divmod(bit, COLS)
            image[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = 255
    return image


def _index(image: np.ndarray) -> int:
    value = 0
    for bit in range(COLS * ROWS):
        row, col = divmod(bit, COLS)
        cell = image[row * CELL + 8 : (row + 1) * CELL - 8, col * CELL + 8 : (col + 1) * CELL - 8]
        if cell.mean() > 128:
            value |= 1 << bit
    return value


def _clip(path: Path, times: list[float], *, audio: bool = False, rotation: int | None = None) -> None:
    """Frame i at times[i] seconds (lossless H.264, millisecond timestamps), optionally with a
    silent AAC track from 0 s and a display rotation."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt, video.options = W, H, "yuv420p", {"crf": "0"}
        video.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            video.set_display_rotation(rotation)
        if audio:
            sound = out.add_stream("aac", rate=16000)
            sound.layout = "mono"
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 64000), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            for packet in [*sound.encode(frame), *sound.encode(None)]:
                out.mux(packet)
        for index, moment in enumerate(times):
            picture = av.VideoFrame.from_ndarray(_pattern(index), format="rgb24")
            picture.pts, picture.time_base = round(moment * 1000), Fraction(1, 1000)
            for packet in video.encode(picture):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)


def _upstream(ffmpeg: str, source: Path) -> list[np.ndarray]:
    target = source.with_name(source.stem + "-25fps.mp4")
    command = [ffmpeg, "-y", "-loglevel", "error", "-i", str(source), "-r", "25", "-crf", "18", str(target)]
    subprocess.run(command, check=True, timeout=120)
    with av.open(str(target)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _ours(source: Path) -> np.ndarray:
    with read_video(source, MediaLimits()) as frames:
        return np.array(frames)


def _regular(rate: Fraction, seconds: float = 3.0) -> list[float]:
    return [float(i / rate) for i in range(int(seconds * rate))]


CASES = {
    "15 fps": (_regular(Fraction(15)), False),
    "24 fps": (_regular(Fraction(24)), False),
    "25 fps": (_regular(Fraction(25)), False),
    "29.97 fps": (_regular(Fraction(30000, 1001)), False),
    "30 fps": (_regular(Fraction(30)), False),
    "50 fps": (_regular(Fraction(50)), False),
    "60 fps": (_regular(Fraction(60)), False),
    "30 fps, 0.3 s after its audio": ([0.3 + t for t in _regular(Fraction(30))], True),
    "irregular frame times, with audio": (
        [float(t) for t in np.cumsum(np.random.default_rng(0).uniform(0.01, 0.09, 70))],
        True,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_25_fps_frame_is_the_source_frame_ffmpeg_picks(case: str, tmp_path: Path) -> None:
    ffmpeg = _ffmpeg()
    times, audio = CASES[case]
    source = tmp_path / "source.mp4"
    _clip(source, times, audio=audio)
    theirs = [_index(frame) for frame in _upstream(ffmpeg, source)]
    ours = [_index(frame) for frame in _ours(source)]
    assert ours == theirs


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_a_rotated_video_is_read_upright_as_ffmpeg_shows_it(rotation: int, tmp_path: Path) -> None:
    ffmpeg = _ffmpeg()
    source = tmp_path / "portrait.mp4"
    _clip(source, [i / 25 for i in range(25)], rotation=rotation)
    theirs = np.stack(_upstream(ffmpeg, source))
    ours = _ours(source)
    assert ours.shape == theirs.shape  # width and height swapped for 90 and 270
    assert ours.shape[1:3] == ((W, H) if rotation in (90, 270) else (H, W))
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 1.0
