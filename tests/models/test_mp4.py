"""MP4 encoding: H.264, yuv420p, exact frame count and rate, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.mp4 import encode_mp4
from tests.support.media import decode_mp4


@pytest.mark.parametrize(("count", "fps"), [(9, 24), (25, 8), (17, 30)])
def test_every_frame_is_kept_at_the_requested_rate(tmp_path: Path, count: int, fps: int) -> None:
    gradient = np.linspace(0, 255, count, dtype=np.uint8)[:, None, None, None]
    frames = np.broadcast_to(gradient, (count, 64, 96, 3)).copy()
    path = tmp_path / "v.mp4"
    size = encode_mp4(frames, fps, path)
    decoded, rate, codec, pix_fmt = decode_mp4(path.read_bytes())
    assert size == path.stat().st_size
    assert decoded.shape == frames.shape
    assert rate == fps and codec == "h264" and pix_fmt == "yuv420p"
    # Flat grey frames survive yuv420p and crf 18 within a few levels.
    assert np.abs(decoded.astype(int) - frames.astype(int)).max() <= 3


def test_moov_atom_comes_first_for_streaming(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    encode_mp4(np.zeros((9, 64, 64, 3), np.uint8), 24, path)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")


def test_failed_encode_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    with pytest.raises(ValueError):
        encode_mp4(np.zeros((9, 63, 64, 3), np.uint8), 24, path)
    assert list(tmp_path.iterdir()) == []


def test_the_same_frames_always_give_the_same_file(tmp_path: Path) -> None:
    """Same seed, same video: x264's mbtree rate control made encodes of the same frames differ
    (2-3 different files in 4 tries, pixels up to 41 levels apart); the writer turns it off."""
    from models.base import BackendOptions, GenerationRequest
    from models.ltx.tiny import LTXVideoTinyBackend

    backend = LTXVideoTinyBackend(BackendOptions(device="cpu"))
    backend.load()
    request = GenerationRequest(prompt="waves", height=64, width=64, num_frames=9, num_inference_steps=3, seed=7)
    frames = backend.render(request, lambda step, total: None)
    files = set()
    for attempt in range(8):
        encode_mp4(frames, 24, tmp_path / f"{attempt}.mp4")
        files.add((tmp_path / f"{attempt}.mp4").read_bytes())
    assert len(files) == 1
