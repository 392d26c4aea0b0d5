"""Small helpers shared by tests."""

from __future__ import annotations

import io
import socket
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def decode_mp4(data: bytes) -> tuple[np.ndarray, Fraction, str, str]:
    """Frames (F, H, W, 3), average frame rate, codec and pixel format of an MP4."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        return frames, Fraction(stream.average_rate), stream.codec_context.name, stream.codec_context.pix_fmt


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def face_frames(count: int = 40) -> np.ndarray:
    """A real face photo (scikit-image's astronaut, 256 px) moved a few pixels per frame."""
    import cv2
    from skimage import data

    photo = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    return np.stack([np.roll(photo, (i % 7) - 3, axis=1) for i in range(count)])


def face_and_speech(folder: Path) -> tuple[Path, Path]:
    """A 1.6 s face video (face_frames at 25 fps) and upstream's 2 s speech clip."""
    from models.mp4 import encode_mp4
    from tests.support.fixtures import fixtures

    face, speech = folder / "face.mp4", folder / "speech.wav"
    encode_mp4(face_frames(), 25, face)
    speech.write_bytes((fixtures() / "audio" / "speech.wav").read_bytes())
    return face, speech
