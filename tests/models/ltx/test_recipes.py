"""Which LTX-Video checkpoint a directory holds, from its own configs, and the recipe it runs with:
the real 2B and 13B transformer configurations built on the meta device (no weights), the tiny
pipeline saved as each pipeline class, and the 0.9.1 decode checked against diffusers' own tail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import LTXConditionPipeline, LTXPipeline

from models.base import BackendOptions, GenerationRequest
from models.ltx.backend import LTXVideoBackend
from models.ltx.optimize import OptimizeOptions
from models.ltx.recipes import UnsupportedCheckpoint, recipe_from_configs, recipe_of
from models.ltx.shapes import TRANSFORMER_2B, TRANSFORMER_13B, on_meta, parameters
from models.ltx.tiny import LTXVideoTinyBackend, build_tiny_pipeline

REQUEST = GenerationRequest(prompt="a lighthouse at dusk", height=64, width=96, num_frames=17, num_inference_steps=4)


def _parameters_on_meta(shape: dict[str, Any]) -> int:
    return parameters(on_meta("transformer", shape))


def test_the_real_transformer_shapes_are_2b_and_13b_and_only_2b_is_served() -> None:
    assert 1.9e9 < _parameters_on_meta(TRANSFORMER_2B) < 2.0e9
    assert 13.0e9 < _parameters_on_meta(TRANSFORMER_13B) < 13.1e9
    assert recipe_from_configs("LTXPipeline", TRANSFORMER_2B, {"timestep_conditioning": True}).name == "0.9.1"
    assert recipe_from_configs("LTXPipeline", TRANSFORMER_2B, {"timestep_conditioning": False}).name == "0.9.0"
    with pytest.raises(
        UnsupportedCheckpoint, match=r"13B.*more than an L4's 24 GB; supported: LTX-Video 0.9.0 and 0.9.1"
    ):
        recipe_from_configs("LTXPipeline", TRANSFORMER_13B, {"timestep_conditioning": True})


def _reference_arguments() -> dict[str, Any]:
    """REQUEST as arguments of a diffusers LTX pipeline called whole."""
    return {
        "prompt": REQUEST.prompt,
        "negative_prompt": REQUEST.negative_prompt,
        "height": REQUEST.height,
        "width": REQUEST.width,
        "num_frames": REQUEST.num_frames,
        "frame_rate": REQUEST.fps,
        "num_inference_steps": REQUEST.num_inference_steps,
        "guidance_scale": REQUEST.guidance_scale,
        "generator": torch.Generator("cpu").manual_seed(REQUEST.seed),
    }


def _saved(directory: Path, pipeline: type, *, noisy_vae: bool = False) -> Path:
    tiny = build_tiny_pipeline(noisy_vae=noisy_vae)
    pipeline(**tiny.components).save_pretrained(directory)
    return directory


def test_a_directory_says_which_recipe_it_needs(tmp_path: Path) -> None:
    assert recipe_of(_saved(tmp_path / "a", LTXPipeline)).name == "0.9.0"
    recipe = recipe_of(_saved(tmp_path / "b", LTXPipeline, noisy_vae=True))
    assert (recipe.name, recipe.decode_timestep, recipe.decode_noise_scale) == ("0.9.1", 0.03, 0.025)
    with pytest.raises(UnsupportedCheckpoint, match=r"model_index.json is missing"):
        recipe_of(tmp_path)


def test_a_later_checkpoint_is_refused_before_its_weights_are_loaded(tmp_path: Path) -> None:
    """A 0.9.5+ directory (LTXConditionPipeline) used to load as LTXPipeline and generate with the
    wrong recipe; now the backend refuses it at load, saying what is supported."""
    directory = _saved(tmp_path / "later", LTXConditionPipeline)
    (directory / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"never read")
    backend = LTXVideoBackend(BackendOptions(device="cpu", model_path=str(directory)))
    with pytest.raises(UnsupportedCheckpoint, match=r"LTXConditionPipeline \(0.9.5 and later.*not served yet"):
        backend.load()


def test_the_0_9_1_decode_is_the_pipelines_own_with_its_recipe() -> None:
    """Our staged render (encode, denoise to latents, decode) against diffusers' LTXPipeline called
    whole with the recipe's decode_timestep and decode_noise_scale, on a timestep-conditioned,
    noise-injecting tiny VAE: the same frames."""

    class Noisy(LTXVideoTinyBackend):
        def _build_pipeline(self) -> Any:
            return build_tiny_pipeline(noisy_vae=True)

    backend = Noisy(BackendOptions(device="cpu", optimize=OptimizeOptions(compile="off", attention_backend="off")))
    backend.load()
    assert backend.recipe.name == "0.9.1"
    ours = backend.render(REQUEST, lambda step, total: None)

    reference = build_tiny_pipeline(noisy_vae=True)
    torch.manual_seed(REQUEST.seed)  # the decoder's injected noise: what our render seeds it with
    frames = reference(
        **_reference_arguments(),
        decode_timestep=0.03,
        decode_noise_scale=0.025,
        output_type="np",
    ).frames[0]
    theirs = np.round(frames * 255).astype(np.uint8)
    assert ours.shape == theirs.shape
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    # And the recipe matters: decoding at timestep 0 without noise gives another video.
    plain = Noisy(BackendOptions(device="cpu", optimize=OptimizeOptions(compile="off", attention_backend="off")))
    plain.load()
    plain.recipe = plain.recipe.__class__("0.9.1-at-0", 0.0, 0.0)
    assert np.abs(plain.render(REQUEST, lambda step, total: None).astype(int) - ours.astype(int)).max() > 1


def test_image_to_video_is_diffusers_image_to_video_pipeline(tmp_path: Path) -> None:
    """A picture conditioning the first frame: our staged render against diffusers'
    LTXImageToVideoPipeline called whole on the same components, and another video than without."""
    from diffusers import LTXImageToVideoPipeline
    from PIL import Image

    picture = tmp_path / "start.png"
    pixels = np.random.default_rng(3).integers(0, 256, (80, 120, 3), dtype=np.uint8)  # not the request's size
    Image.fromarray(pixels).save(picture)
    request = GenerationRequest(**{**REQUEST.__dict__, "image_path": picture})

    backend = LTXVideoTinyBackend(
        BackendOptions(device="cpu", optimize=OptimizeOptions(compile="off", attention_backend="off"))
    )
    backend.load()
    ours = backend.render(request, lambda step, total: None)
    without = backend.render(REQUEST, lambda step, total: None)
    assert np.abs(ours.astype(int) - without.astype(int)).max() > 1

    reference = LTXImageToVideoPipeline(**build_tiny_pipeline().components)
    frames = reference(
        image=Image.open(picture).convert("RGB"),
        **_reference_arguments(),
        output_type="np",
    ).frames[0]
    theirs = np.round(frames * 255).astype(np.uint8)
    assert ours.shape == theirs.shape == (REQUEST.num_frames, REQUEST.height, REQUEST.width, 3)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
