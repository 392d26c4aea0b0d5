"""Small helpers shared by tests."""

from __future__ import annotations

import io
import socket
from fractions import Fraction

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
