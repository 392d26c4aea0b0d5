"""Our LatentSync implementation against numbers computed with upstream's code (commit a229c39,
LatentSync 1.6; see ../shared/fixtures/latentsync/README.md). Every comparison prints its
measured maximum error; tolerances are the issue's (1e-4 UNet/DDIM, 1e-5 audio and matrices,
1 level for uint8 images)."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.latentsync import audio as A
from models.latentsync import face as FA
from models.latentsync.checkpoint import strict_load
from models.latentsync.denoise import denoise, guided_audio, make_scheduler
from models.latentsync.unet import DeepCache, LatentSyncUNet, UNetConfig
from tests.support.fixtures import fixtures


@pytest.fixture(scope="module")
def tiny_unet() -> LatentSyncUNet:
    root = fixtures() / "unet_tiny"
    unet = LatentSyncUNet(UNetConfig.from_dict(json.loads((root / "config.json").read_text()))).eval()
    strict_load(unet, {k: v.float() for k, v in load_file(root / "weights.safetensors").items()}, "fixture")
    return unet


def _report(name: str, error: float, tolerance: float) -> None:
    print(f"parity {name}: max abs error {error:.3g} (tolerance {tolerance:g})")
    assert error <= tolerance, f"{name}: {error} > {tolerance}"


def test_full_unet_has_the_official_state_dict_layout() -> None:
    reference = json.loads((fixtures() / "unet_full_keys.json").read_text())
    with torch.device("meta"):
        unet = LatentSyncUNet(UNetConfig.from_dict(reference["model_kwargs"]))
    ours = [(k, list(v.shape)) for k, v in unet.state_dict().items()]
    theirs = [(e["key"], e["shape"]) for e in reference["keys"]]
    assert len(ours) == reference["num_state_dict_entries"] == 1246
    assert ours == theirs  # names, shapes and order
    assert sum(p.numel() for p in unet.parameters()) == reference["parameter_count"] == 1_267_099_844
    assert sum(b.numel() for b in unet.buffers()) == reference["buffer_element_count"]


def test_a_wrong_checkpoint_is_refused_with_the_keys_that_differ(tiny_unet: LatentSyncUNet) -> None:
    state = dict(tiny_unet.state_dict())
    state.pop("conv_out.bias")
    state["conv_in.weight"] = torch.zeros(32, 9, 3, 3)
    state["module.extra"] = torch.zeros(1)
    with pytest.raises(ValueError) as caught:
        strict_load(LatentSyncUNet(tiny_unet.config), state, "bad.pt")
    text = str(caught.value)
    assert "1 missing (first: conv_out.bias)" in text
    assert "1 unexpected (first: module.extra)" in text
    assert "conv_in.weight: checkpoint (32, 9, 3, 3) != model (32, 13, 3, 3)" in text


@pytest.mark.parametrize(
    ("output", "timestep", "audio"),
    [
        ("sample", "timestep", True),
        ("sample_no_audio", "timestep", False),
        ("sample_timestep_vec", "timestep_vec", True),
    ],
)
def test_tiny_unet_reproduces_upstream(tiny_unet: LatentSyncUNet, output: str, timestep: str, audio: bool) -> None:
    root = fixtures() / "unet_tiny"
    inputs, outputs = load_file(root / "inputs.safetensors"), load_file(root / "outputs.safetensors")
    context = inputs["encoder_hidden_states"].float() if audio else None
    with torch.no_grad():
        result = tiny_unet(inputs["sample"], inputs[timestep], context)
    _report(f"unet {output}", float((result - outputs[output]).abs().max()), 1e-4)


@pytest.mark.parametrize("deep_cache", [False, True], ids=["plain", "deepcache"])
def test_ddim_loop_reproduces_upstream(tiny_unet: LatentSyncUNet, deep_cache: bool) -> None:
    root = fixtures() / "unet_tiny"
    inputs = load_file(root / "ddim_inputs.safetensors")
    reference = load_file(root / ("ddim_deepcache_outputs.safetensors" if deep_cache else "ddim_outputs.safetensors"))
    scheduler = make_scheduler()
    scheduler.set_timesteps(20)
    assert torch.equal(scheduler.timesteps, inputs["timesteps_all"])
    assert torch.equal(scheduler.alphas_cumprod, inputs["alphas_cumprod"])
    scheduler.timesteps = scheduler.timesteps[:4]
    chunks = torch.from_numpy(np.load(fixtures() / "audio" / "chunks.npy")[:16]).float()
    conditioning = torch.cat([inputs["mask_latents"], inputs["masked_image_latents"], inputs["ref_latents"]], dim=1)
    errors: dict[str, float] = {}

    def record(step: int, tensors: dict[str, torch.Tensor]) -> None:
        for ours, theirs in (("raw", "noise_pred_raw"), ("guided", "noise_pred_guided"), ("latents", "latents_out")):
            if (key := f"step{step}_{theirs}") in reference:
                errors[key] = float((tensors[ours] - reference[key]).abs().max())

    with torch.no_grad():
        denoise(
            tiny_unet,
            scheduler,
            inputs["latents_init"],
            conditioning,
            guided_audio(chunks, 1.5),
            1.5,
            DeepCache(interval=3) if deep_cache else None,
            record,
        )
    assert set(errors) == set(reference)  # every recorded tensor of all 4 steps was compared
    for key, error in sorted(errors.items()):
        _report(f"ddim{'-deepcache' if deep_cache else ''} {key}", error, 1e-4)


def _speech() -> np.ndarray:
    with wave.open(str(fixtures() / "audio" / "speech.wav")) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), np.int16).astype(np.float32) / 32768.0


def test_audio_path_reproduces_upstream() -> None:
    root = fixtures() / "audio"
    weights = {k: v.float() for k, v in load_file(root / "whisper_tiny_random.safetensors").items()}
    encoder = A.whisper_from_state_dict(weights, A.WhisperDims(), torch.device("cpu"), "fixture")
    samples = _speech()
    _report("audio log-mel", float(np.abs(A.log_mel(samples).numpy() - np.load(root / "mel.npy")).max()), 1e-5)
    features = A.audio_features(encoder, samples)
    reference = np.load(root / "features.npy")
    assert features.shape == reference.shape == (100, 5, 384)
    _report("audio features", float(np.abs(features.numpy() - reference).max()), 1e-5)
    indices = np.array(A.chunk_indices(len(features)))
    assert np.array_equal(indices, np.load(root / "chunk_feature_indices.npy"))
    chunks = A.feature_chunks(features)
    assert chunks.shape == (52, 50, 384)
    _report("audio chunks", float(np.abs(chunks.numpy() - np.load(root / "chunks.npy")).max()), 1e-5)


def _image_error(name: str, ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    print(f"parity {name}: max {diff.max()} level(s), {int((diff > 0).sum())} of {diff.size} values differ")
    assert diff.max() <= 1


def _matrix_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Relative error of a float32 affine matrix (absolute below 1): its translations are ~200 px,
    where one float32 step is 1.5e-5, so an absolute 1e-5 would ask for better than float32."""
    return float((np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs))).max())


def test_alignment_and_paste_back_reproduce_upstream() -> None:
    import cv2

    root = fixtures() / "affine"
    frame = np.load(root / "frame.npy")
    aligner = FA.FaceAligner(512)
    assert aligner.face_size == (420, 560)
    points0 = FA.landmarks3_from_106(np.load(root / "landmarks106_frame0.npy"))
    np.testing.assert_array_equal(points0, np.load(root / "landmarks3_frame0.npy"))
    matrix0 = aligner.matrix(points0)
    _report("affine matrix frame0", _matrix_error(matrix0, np.load(root / "affine_matrix_frame0.npy")), 1e-6)
    crop = aligner.crop(frame, matrix0)
    _image_error("affine crop frame0", crop, np.load(root / "crop_raw_frame0.npy"))
    aligned0 = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_LANCZOS4)
    _image_error("aligned512 frame0", aligned0, np.load(root / "aligned512_frame0.npy"))
    # Frame 1 after frame 0: the nose bias is smoothed across frames.
    aligned1, matrix1 = aligner.align(frame, FA.landmarks3_from_106(np.load(root / "landmarks106_frame1.npy")))
    _report("affine matrix frame1", _matrix_error(matrix1, np.load(root / "affine_matrix_frame1.npy")), 1e-6)
    _image_error("aligned512 frame1", aligned1, np.load(root / "aligned512_frame1.npy"))
    # Paste-back of the colour-inverted aligned face, as the fixture made it.
    reference_face = np.load(root / "aligned512_frame0.npy")
    face = (torch.from_numpy(255 - reference_face).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    restored = FA.paste_back(frame, FA.resize_face_to_box(face, (560, 420)), matrix0)
    _image_error("restored frame0", restored, np.load(root / "restored_frame0.npy"))
