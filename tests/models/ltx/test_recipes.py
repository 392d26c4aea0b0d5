"""Which LTX-Video checkpoint a directory holds, from its own configs, and the recipe it runs with:
the real 2B and 13B transformer and 0.9.0/0.9.1/0.9.5 VAE configurations built on the meta device
(no weights), the tiny pipeline saved in each layout, and each recipe's frames checked against
diffusers' own pipeline called whole with the values diffusers' LTX documentation gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import LTXConditionPipeline, LTXImageToVideoPipeline, LTXPipeline
from PIL import Image

from models.base import BackendOptions, GenerationRequest
from models.ltx.backend import WORKING_RESERVE_BYTES, LTXVideoBackend
from models.ltx.optimize import OptimizeOptions
from models.ltx.recipes import (
    MARKER,
    UnsupportedCheckpoint,
    fits_on_card,
    recipe_from_configs,
    recipe_of,
)
from models.ltx.shapes import TRANSFORMER_2B, TRANSFORMER_13B, VAE_091, VAE_095, on_meta, parameters
from models.ltx.tiny import LTXVideoTinyBackend, build_tiny_pipeline
from tests.models.ltx.test_memory import CARDS

EAGER = OptimizeOptions(compile="off", attention_backend="off")
# LTXConditionPipeline's arguments as diffusers' LTX documentation runs 0.9.7 / 0.9.8 (the distilled
# ones add their timesteps and guidance 1.0).
DOCUMENTED_0_9_5: dict[str, Any] = {
    "decode_timestep": 0.05,
    "decode_noise_scale": 0.025,
    "guidance_rescale": 0.7,
    "image_cond_noise_scale": 0.0,
}

REQUEST = GenerationRequest(prompt="a lighthouse at dusk", height=64, width=96, num_frames=17, num_inference_steps=4)


def _parameters_on_meta(shape: dict[str, Any]) -> int:
    return parameters(on_meta("transformer", shape))


def test_the_real_configs_map_to_their_recipes() -> None:
    assert 1.9e9 < _parameters_on_meta(TRANSFORMER_2B) < 2.0e9
    assert 13.0e9 < _parameters_on_meta(TRANSFORMER_13B) < 13.1e9
    vae_090 = dict(on_meta("vae").config)
    vae_091 = dict(on_meta("vae", VAE_091).config)
    vae_095 = dict(on_meta("vae", VAE_095).config)
    assert recipe_from_configs("LTXPipeline", TRANSFORMER_2B, vae_090).name == "0.9.0"
    assert recipe_from_configs("LTXPipeline", TRANSFORMER_2B, vae_091).name == "0.9.1"
    # diffusers' converter saves 0.9.5 as LTXPipeline: the VAE tells it apart.
    for pipeline_class in ("LTXPipeline", "LTXConditionPipeline"):
        recipe = recipe_from_configs(pipeline_class, TRANSFORMER_2B, vae_095)
        assert (recipe.name, recipe.pipeline, recipe.timesteps, recipe.guidance_scale) == (
            "0.9.5+",
            "LTXConditionPipeline",
            None,
            None,
        )
        assert (recipe.decode_timestep, recipe.decode_noise_scale, recipe.guidance_rescale) == (0.05, 0.025, 0.7)
    distilled = recipe_from_configs("LTXConditionPipeline", TRANSFORMER_2B, vae_095, "distilled")
    assert distilled.timesteps == (1000, 993, 987, 981, 975, 909, 725, 0.03)
    assert (distilled.guidance(3.0), distilled.steps(50), distilled.summary()) == (
        1.0,
        8,
        "0.9.5+ distilled (8 fixed steps, guidance 1)",
    )
    # 0.9.7 / 0.9.8 13B: the same recipes; whether it runs depends on the card.
    assert recipe_from_configs("LTXConditionPipeline", TRANSFORMER_13B, vae_095, "distilled") == distilled
    with pytest.raises(UnsupportedCheckpoint, match=r"no distilled checkpoint of those exists"):
        recipe_from_configs("LTXPipeline", TRANSFORMER_2B, vae_091, "distilled")
    with pytest.raises(UnsupportedCheckpoint, match=r"variant 'turbo' in videogen.json"):
        recipe_from_configs("LTXConditionPipeline", TRANSFORMER_2B, vae_095, "turbo")
    with pytest.raises(UnsupportedCheckpoint, match=r"StableDiffusionPipeline is not an LTX-Video pipeline"):
        recipe_from_configs("StableDiffusionPipeline", TRANSFORMER_2B, vae_090)


def test_the_13b_transformer_is_refused_on_an_l4_even_in_fp8_and_fits_an_h100() -> None:
    """Counted on the meta device: 24.3 GiB of bf16 weights, 12.1 GiB in fp8; with the 0.9.5 VAE
    (2.3 GiB) and the working reserve neither fits an L4; the 2B one does."""
    with pytest.raises(UnsupportedCheckpoint) as refused:
        fits_on_card(TRANSFORMER_13B, VAE_095, CARDS["L4"], WORKING_RESERVE_BYTES)
    message = str(refused.value)
    assert "4096 wide with 48 blocks" in message
    assert "24.3 GiB of bf16 weights + 2.3 GiB VAE + 12 GiB working memory = 38.6 GiB > 22.5 GiB" in message
    assert "with fp8 weight storage still 26.5 GiB" in message
    fits_on_card(TRANSFORMER_13B, VAE_095, CARDS["H100"], WORKING_RESERVE_BYTES)
    fits_on_card(TRANSFORMER_13B, VAE_095, CARDS["H200"], WORKING_RESERVE_BYTES)
    fits_on_card(TRANSFORMER_2B, VAE_095, CARDS["L4"], WORKING_RESERVE_BYTES)
    fits_on_card(TRANSFORMER_2B, VAE_091, CARDS["L4"], WORKING_RESERVE_BYTES)


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


def _saved(directory: Path, pipeline: type, *, noisy_vae: bool = False, later: bool = False) -> Path:
    tiny = build_tiny_pipeline(noisy_vae=noisy_vae, later=later)
    pipeline(**tiny.components).save_pretrained(directory)
    return directory


def _declare(directory: Path, variant: str) -> Path:
    (directory / MARKER).write_text(json.dumps({"variant": variant}))
    return directory


def test_a_directory_says_which_recipe_it_needs(tmp_path: Path) -> None:
    assert recipe_of(_saved(tmp_path / "a", LTXPipeline)).name == "0.9.0"
    recipe = recipe_of(_saved(tmp_path / "b", LTXPipeline, noisy_vae=True))
    assert (recipe.name, recipe.decode_timestep, recipe.decode_noise_scale) == ("0.9.1", 0.03, 0.025)
    # 0.9.5 as diffusers' converter saves it (LTXPipeline) and 0.9.7+ (LTXConditionPipeline).
    assert recipe_of(_saved(tmp_path / "c", LTXPipeline, later=True)).pipeline == "LTXConditionPipeline"
    later = _saved(tmp_path / "d", LTXConditionPipeline, later=True)
    assert recipe_of(later).name == "0.9.5+"
    assert recipe_of(_declare(later, "distilled")).name == "0.9.5+ distilled"
    assert recipe_of(_declare(later, "dev")).name == "0.9.5+"
    (later / MARKER).write_text("not json")
    with pytest.raises(UnsupportedCheckpoint, match=r"videogen.json is not a JSON object"):
        recipe_of(later)
    with pytest.raises(UnsupportedCheckpoint, match=r"model_index.json is missing"):
        recipe_of(tmp_path)


def test_a_foreign_checkpoint_is_refused_before_its_weights_are_loaded(tmp_path: Path) -> None:
    """A directory of another pipeline is refused at load, naming what is supported, before a
    weight is read."""
    directory = _saved(tmp_path / "other", LTXPipeline)
    index = json.loads((directory / "model_index.json").read_text())
    (directory / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    (directory / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"never read")
    backend = LTXVideoBackend(BackendOptions(device="cpu", model_path=str(directory)))
    with pytest.raises(UnsupportedCheckpoint, match=r"StableDiffusionPipeline is not an LTX-Video pipeline; supported"):
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


def _condition_reference(later: Path, request: GenerationRequest, **recipe: Any) -> np.ndarray:
    """diffusers' LTXConditionPipeline, loaded from `later` and called whole, as uint8 frames."""
    reference = LTXConditionPipeline.from_pretrained(later)
    reference.set_progress_bar_config(disable=True)
    arguments = _reference_arguments()
    arguments.update(
        prompt=request.prompt,
        num_inference_steps=request.num_inference_steps,
        guidance_scale=request.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(request.seed),
    )
    if request.image_path is not None:
        arguments["image"] = Image.open(request.image_path).convert("RGB")
    torch.manual_seed(request.seed)
    frames = reference(**arguments, **recipe, output_type="np").frames[0]
    return np.asarray(np.round(frames * 255), dtype=np.uint8)


def _rendered(directory: Path, request: GenerationRequest) -> tuple[np.ndarray, list[tuple[int, int]], LTXVideoBackend]:
    backend = LTXVideoBackend(BackendOptions(device="cpu", model_path=str(directory), optimize=EAGER))
    backend.load()
    steps: list[tuple[int, int]] = []
    frames = backend.render(request, lambda step, total: steps.append((step, total)))
    return frames, steps, backend


def _largest_difference(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_a_0_9_5_checkpoint_runs_the_condition_pipelines_recipe(tmp_path: Path) -> None:
    """A 0.9.5 directory as diffusers' converter saves it (model_index says LTXPipeline) used to run
    as LTXPipeline with 0.9.1's decode: other frames. Now: LTXConditionPipeline's own loop and the
    recipe's decode (0.05, 0.025), guidance rescale (0.7) and noise-free first frame."""
    directory = _saved(tmp_path / "0.9.5", LTXPipeline, later=True)
    ours, steps, backend = _rendered(directory, REQUEST)
    assert type(backend.pipe) is LTXConditionPipeline and backend.image_pipe is backend.pipe
    assert backend.describe()["recipe"] == "0.9.5+"
    assert steps == [(i, REQUEST.num_inference_steps) for i in range(1, REQUEST.num_inference_steps + 1)]
    assert _largest_difference(ours, _condition_reference(directory, REQUEST, **DOCUMENTED_0_9_5)) <= 1
    # The old path (LTXPipeline on the same weights, 0.9.1's decode) gives another video.
    reference = LTXPipeline.from_pretrained(directory)
    reference.set_progress_bar_config(disable=True)
    torch.manual_seed(REQUEST.seed)
    old = reference(**_reference_arguments(), decode_timestep=0.03, decode_noise_scale=0.025, output_type="np")
    assert _largest_difference(ours, np.asarray(np.round(old.frames[0] * 255), dtype=np.uint8)) > 1


def test_a_distilled_checkpoint_runs_its_eight_steps_without_guidance(tmp_path: Path) -> None:
    """Declared distilled: the documented timesteps and guidance 1.0 whatever the request asks
    (here 4 steps, guidance 3), the progress counts the eight steps, and the frames are diffusers'
    with those values."""
    directory = _declare(_saved(tmp_path / "distilled", LTXConditionPipeline, later=True), "distilled")
    ours, steps, backend = _rendered(directory, REQUEST)
    assert backend.describe()["recipe"] == "0.9.5+ distilled (8 fixed steps, guidance 1)"
    assert steps == [(i, 8) for i in range(1, 9)]
    distilled = GenerationRequest(**{**REQUEST.__dict__, "guidance_scale": 1.0})
    recipe = {**DOCUMENTED_0_9_5, "timesteps": [1000, 993, 987, 981, 975, 909, 725, 0.03]}
    assert _largest_difference(ours, _condition_reference(directory, distilled, **recipe)) <= 1
    # Undeclared, the same weights run the dev recipe: another video.
    (directory / MARKER).unlink()
    assert _largest_difference(ours, _rendered(directory, REQUEST)[0]) > 1


def test_image_to_video_on_a_later_checkpoint_is_the_condition_pipelines_image(tmp_path: Path) -> None:
    picture = tmp_path / "start.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (80, 120, 3), dtype=np.uint8)).save(picture)
    request = GenerationRequest(**{**REQUEST.__dict__, "image_path": picture})
    directory = _saved(tmp_path / "later", LTXConditionPipeline, later=True)
    ours, _, _ = _rendered(directory, request)
    assert _largest_difference(ours, _condition_reference(directory, request, **DOCUMENTED_0_9_5)) <= 1
    assert _largest_difference(ours, _rendered(directory, REQUEST)[0]) > 1


def test_the_condition_pipelines_schedule_warning_is_dropped_only_where_it_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """diffusers warns on every LTXConditionPipeline call that timesteps came without sigmas; with
    the 0.9.5+ scheduler (shift 1, nothing dynamic) the sigmas are the timesteps / 1000, so that
    line would only fill the logs (and trip a warning alert) on every request."""
    import logging

    from models.ltx.backend import _IDENTITY_SHIFT, _SCHEDULER_LOG, shift_is_identity

    _SCHEDULER_LOG.removeFilter(_IDENTITY_SHIFT)
    directory = _saved(tmp_path / "later", LTXConditionPipeline, later=True)
    with caplog.at_level(logging.WARNING, logger=_SCHEDULER_LOG.name):
        _rendered(directory, REQUEST)
    assert not [r for r in caplog.records if "without `sigmas`" in r.getMessage()]
    assert shift_is_identity(dict(LTXConditionPipeline.from_pretrained(directory).scheduler.config))
    assert not shift_is_identity({"shift": 1.0, "use_dynamic_shifting": True})
    assert not shift_is_identity({"shift": 3.0})
