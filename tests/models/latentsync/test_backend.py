"""The LatentSync backend's own rules, on CPU: face tracking fallbacks, the clip's loop order, strict
checkpoint loading through the served path, and the mask."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.base import BackendOptions, InputError
from models.latentsync.backend import (
    MASK_FILE,
    UNET_FILE,
    LatentSyncBackend,
    LipSyncOptions,
    load_fixed_mask,
    lower_face_mask,
    ping_pong,
)
from models.latentsync.tiny import write_tiny_checkpoints
from tests.support.fixtures import fixtures


class _Landmarks:
    """Answers per frame from a list (None: no face), like FaceLandmarker.points."""

    def __init__(self, answers: list[np.ndarray | None]) -> None:
        self.answers = answers

    def points(self, frame: np.ndarray) -> np.ndarray | None:
        return self.answers[int(frame[0, 0, 0])]


def _tracker(
    answers: list[np.ndarray | None], grace: int = 25, reuse: int = 12
) -> tuple[LatentSyncBackend, np.ndarray]:
    options = LipSyncOptions(face_grace_frames=grace, face_reuse_frames=reuse)
    backend = LatentSyncBackend(BackendOptions(lipsync=options))
    backend._landmarker = _Landmarks(answers)
    frames = np.zeros((len(answers), 4, 4, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(len(answers))
    return backend, frames


def test_frames_without_a_face_reuse_the_last_good_one() -> None:
    a, b = np.full((3, 2), 1.0, np.float32), np.full((3, 2), 2.0, np.float32)
    backend, frames = _tracker([None, a, None, None, b, None])
    tracked = backend._track_faces(frames)
    assert [float(p[0, 0]) for p in tracked] == [1, 1, 1, 1, 2, 2]  # before the first face: the first face


def test_a_face_lost_for_longer_than_the_reuse_limit_is_no_face_detected_naming_the_frames() -> None:
    """Upstream stops at the first frame without a face; we reuse the last good one, but only for
    LATENTSYNC_FACE_REUSE_FRAMES frames in a row (a face gone for longer is not there)."""
    a = np.ones((3, 2), np.float32)
    backend, frames = _tracker([a, a, None, None, None, a], reuse=3)
    assert len(backend._track_faces(frames)) == 6  # 3 in a row: reused
    backend, frames = _tracker([a, a, None, None, None, None, a], reuse=3)
    with pytest.raises(InputError) as caught:
        backend._track_faces(frames)
    assert caught.value.code == "no_face_detected"
    assert "frames 2 to 5" in str(caught.value) and "LATENTSYNC_FACE_REUSE_FRAMES" in str(caught.value)
    backend, frames = _tracker([a] + [None] * 4, reuse=3)  # to the end of the clip as well
    with pytest.raises(InputError, match="frames 1 to 4"):
        backend._track_faces(frames)


def test_no_face_in_the_first_frames_is_no_face_detected() -> None:
    backend, frames = _tracker([None] * 5 + [np.ones((3, 2), np.float32)], grace=5)
    with pytest.raises(InputError) as caught:
        backend._track_faces(frames)
    assert caught.value.code == "no_face_detected" and "first 5 frames" in str(caught.value)
    backend, frames = _tracker([None] * 3)  # shorter than the grace: all of it
    with pytest.raises(InputError):
        backend._track_faces(frames)


def test_the_clip_plays_forwards_then_backwards_or_is_cut() -> None:
    assert ping_pong(4, 3) == [0, 1, 2]
    assert ping_pong(3, 8) == [0, 1, 2, 2, 1, 0, 0, 1]


def test_the_mask_keeps_the_upper_face_and_regenerates_mouth_and_chin() -> None:
    mask = lower_face_mask(256)
    assert mask.shape == (3, 256, 256) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask[0, :90].min() == 1  # eyes and forehead kept
    assert mask[0, 150, 128] == 0 and mask[0, 200, 128] == 0  # mouth and chin regenerated
    assert mask[0, 110, 128] == 1  # the nose kept


@pytest.mark.parametrize(("case", "resolution"), [("A", 256), ("B", 512)])
def test_the_real_model_uses_upstreams_mask_exactly_as_upstream_resizes_it(case: str, resolution: int) -> None:
    """mask.png is upstream's file (../shared/fixtures/latentsync/e2e, byte-identical); its resized
    channel 0 at both resolutions is what upstream's load_fixed_mask produced (mask_resized.npy)."""
    e2e = fixtures() / "e2e"
    mask = load_fixed_mask(e2e / "mask.png", resolution)
    expected = np.load(e2e / case / "mask_resized.npy")
    assert mask.shape == (3, resolution, resolution)
    assert torch.equal(mask[0], torch.from_numpy(expected.astype(np.float64) / 255.0).float())
    assert torch.equal(mask[0], mask[1]) and torch.equal(mask[0], mask[2])
    # And it is not our drawing: about 2% of the face differs (the nose gap, the jaw).
    drawn = lower_face_mask(resolution)[0]
    differing = float(((mask[0] > 0.5) != (drawn > 0.5)).float().mean())
    assert 0.005 < differing < 0.1, differing


def test_the_real_model_refuses_to_start_without_upstreams_mask(tmp_path: Path) -> None:
    root = write_tiny_checkpoints(tmp_path / "weights")
    backend = LatentSyncBackend(BackendOptions(model_path=str(root), device="cpu"))
    backend.lipsync = LipSyncOptions(variant="1.5")
    with pytest.raises(
        FileNotFoundError, match=r"mask\.png is missing: .*upstream LatentSync's latentsync/utils/mask\.png"
    ):
        backend.load()
    shutil.copy(fixtures() / "e2e" / "mask.png", root / MASK_FILE)
    backend.load()
    assert torch.equal(backend.mask.cpu(), load_fixed_mask(root / MASK_FILE, backend.resolution))


def test_a_wrong_unet_checkpoint_fails_setup_with_the_keys(tmp_path: Path) -> None:
    root = write_tiny_checkpoints(tmp_path / "weights")
    ckpt = torch.load(root / UNET_FILE, weights_only=True)
    ckpt["state_dict"].pop("conv_in.weight")
    torch.save(ckpt, root / UNET_FILE)
    backend = LatentSyncBackend(BackendOptions(model_path=str(root), device="cpu"))
    backend.lipsync = LipSyncOptions(variant="1.5")
    with pytest.raises(ValueError, match=r"does not match the model: 1 missing \(first: conv_in.weight\)"):
        backend.load()


def test_missing_checkpoints_are_named(tmp_path: Path) -> None:
    backend = LatentSyncBackend(BackendOptions(model_path=str(tmp_path), device="cpu"))
    with pytest.raises(FileNotFoundError, match=r"latentsync_unet\.pt is missing"):
        backend.load()


def test_a_checkpoint_without_the_fixed_positional_encodings_loads_and_computes_the_same(tmp_path: Path) -> None:
    root = write_tiny_checkpoints(tmp_path / "weights")
    shutil.copy(fixtures() / "e2e" / "mask.png", root / MASK_FILE)
    with_buffers = LatentSyncBackend(BackendOptions(model_path=str(root), device="cpu"))
    with_buffers.lipsync = LipSyncOptions(variant="1.5")
    with_buffers.load()
    ckpt = torch.load(root / UNET_FILE, weights_only=True)
    dropped = [k for k in ckpt["state_dict"] if k.endswith("pos_encoder.pe")]
    assert len(dropped) == 24  # 12 motion modules in the tiny UNet (4 down, 8 up), 2 attention blocks each
    for key in dropped:
        del ckpt["state_dict"][key]
    torch.save(ckpt, root / UNET_FILE)
    without = LatentSyncBackend(BackendOptions(model_path=str(root), device="cpu"))
    without.lipsync = LipSyncOptions(variant="1.5")
    without.load()
    for key in dropped:
        assert torch.equal(with_buffers.unet.state_dict()[key], without.unet.state_dict()[key])
