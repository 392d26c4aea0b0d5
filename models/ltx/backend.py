"""`ltx-video`: Lightricks LTX-Video through diffusers' `LTXPipeline` (0.9.0, 0.9.1) or
`LTXConditionPipeline` (0.9.5 and later), each checkpoint with its recipe (models/ltx/recipes.py)."""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import LTXConditionPipeline, LTXImageToVideoPipeline, LTXPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from models.base import BackendOptions, GenerationRequest, StepCallback, Video
from models.device import resolve_device, resolve_dtype
from models.ltx.offload import HostResident
from models.ltx.optimize import OptimizeOptions, Step, optimize
from models.ltx.recipes import Recipe, configs_of, declared_variant, fits_on_card, recipe_from_configs
from models.mp4 import encode_mp4

# A probe for the speedups: every layer and the guidance batch, in well under a second on a GPU.
PROBE_REQUEST = GenerationRequest(prompt="probe", height=64, width=64, num_frames=9, num_inference_steps=2)
# After compiling: another size (the compiler's automatic dynamic shapes then mark the token count
# dynamic), then the same without guidance (batch 1, a size the compiler always specialises), so
# these compiles happen at load rather than inside the first user request of a new size.
SETTLE_REQUESTS = (
    GenerationRequest(prompt="settle", height=96, width=128, num_frames=17, num_inference_steps=2),
    GenerationRequest(prompt="settle", height=96, width=128, num_frames=17, num_inference_steps=2, guidance_scale=1.0),
)

DEFAULT_HUB_ID = "Lightricks/LTX-Video"

# GPU memory a request needs beyond the weights: the VAE decode's activations at the largest
# admitted size dominate (the reference's 14.2 GiB whole-run peak at 704x1216x121 less ~4.4 GiB of
# transformer and VAE weights is ~10 GiB; BENCHMARKS.md), with 2 GiB of margin.
WORKING_RESERVE_BYTES = 12 * 2**30


def text_encoder_must_wait_on_host(card_bytes: int, weights_bytes: int) -> bool:
    """True when every component's weights and a request's working memory do not fit on the card
    together: then the text encoder (T5-XXL, 8.9 GiB in bf16) visits the GPU only to encode."""
    return weights_bytes + WORKING_RESERVE_BYTES > card_bytes


LTX_PIPELINES: dict[str, type[Any]] = {"LTXPipeline": LTXPipeline, "LTXConditionPipeline": LTXConditionPipeline}


class _IdentityShiftWarning(logging.Filter):
    """LTXConditionPipeline always hands its scheduler timesteps without sigmas, and the scheduler
    warns that its shifting may then disagree with them: on every request. With a shift of 1 and
    no dynamic or terminal shift (0.9.5+ checkpoints' scheduler) the shifting is the identity and
    the two agree, so the warning says nothing; it is dropped only while such a scheduler is loaded."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("`timesteps` were passed without `sigmas`")


_SCHEDULER_LOG = logging.getLogger("diffusers.schedulers.scheduling_flow_match_euler_discrete")
_IDENTITY_SHIFT = _IdentityShiftWarning()


def shift_is_identity(config: dict[str, Any]) -> bool:
    return (
        float(config.get("shift", 1.0)) == 1.0
        and not config.get("use_dynamic_shifting")
        and not config.get("shift_terminal")
    )


def _weight_bytes(pipe: Any) -> int:
    modules = (pipe.text_encoder, pipe.transformer, pipe.vae)
    return sum(p.numel() * p.element_size() for module in modules for p in module.parameters())


class LTXVideoBackend:
    """Text-to-video with LTX-Video, from a local diffusers directory or the hub."""

    name = "ltx-video"
    task = "text-to-video"

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        self.device = resolve_device(options.device)
        self.dtype = resolve_dtype(options.dtype, self.device)
        # LTXPipeline or LTXConditionPipeline, as the recipe says.
        self.pipe: Any = None
        # Image-to-video: the same components (no second copy of any weight) in diffusers'
        # LTXImageToVideoPipeline, or the condition pipeline itself, which takes an image.
        self.image_pipe: Any = None
        self.optimize_options: OptimizeOptions = options.optimize or OptimizeOptions()
        self.optimizations: list[Step] = []
        # on | off | auto: decided at load from the card's memory and the weights (see load()).
        self.offload_text_encoder = options.text_encoder_offload == "on"
        # The text encoder's weights on the host (pinned on CUDA) when it waits there.
        self.text_encoder_host: HostResident | None = None
        self.last_latents: torch.Tensor | None = None
        # How this checkpoint is run (models/ltx/recipes.py), known once loaded.
        self.recipe = Recipe("unloaded", decode_timestep=0.0, decode_noise_scale=0.0)
        # CUDA only: peak GiB allocated during each stage of the last request (the benchmark's).
        self.last_stage_peaks: dict[str, float] = {}

    @property
    def source(self) -> str:
        return self.options.model_path or DEFAULT_HUB_ID

    def _variant(self) -> str | None:
        """What the checkpoint declares of itself (models/ltx/recipes.py: a distilled one)."""
        return declared_variant(self.source)

    def _card_bytes(self) -> int | None:
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.get_device_properties(self.device).total_memory)

    def _build_pipeline(self) -> Any:
        source = self.source
        local = Path(source).is_dir()
        if not local and source.startswith(("/", ".", "~")):
            raise FileNotFoundError(f"MODEL_PATH {source} is not a directory (expected a diffusers model directory)")
        pipeline: type[Any] = LTXPipeline
        if local:
            # Refuse a checkpoint this server cannot run, or this card cannot hold, before reading
            # its weights, and load it with the pipeline its recipe names.
            pipeline_class, transformer, vae = configs_of(Path(source))
            recipe = recipe_from_configs(pipeline_class, transformer, vae, self._variant())
            card = self._card_bytes()
            if card is not None:
                fits_on_card(transformer, vae, card, WORKING_RESERVE_BYTES)
            pipeline = LTX_PIPELINES[recipe.pipeline]
        return pipeline.from_pretrained(
            source,
            revision=None if local else self.options.revision,
            dtype=self.dtype,
            local_files_only=local,
        )

    def load(self) -> None:
        pipe = self._build_pipeline()
        transformer, vae = dict(pipe.transformer.config), dict(pipe.vae.config)
        self.recipe = recipe_from_configs(type(pipe).__name__, transformer, vae, self._variant())
        card = self._card_bytes()
        if card is not None and not Path(self.source).is_dir():  # a directory was checked before loading
            fits_on_card(transformer, vae, card, WORKING_RESERVE_BYTES)
        wanted = LTX_PIPELINES[self.recipe.pipeline]
        if type(pipe) is not wanted:  # the same components in the pipeline the recipe names
            pipe = wanted(**pipe.components)
        if self.recipe.conditioned and shift_is_identity(dict(pipe.scheduler.config)):
            _SCHEDULER_LOG.addFilter(_IDENTITY_SHIFT)  # once: a filter is added only if absent
        if self.options.text_encoder_offload == "auto" and card is not None:
            self.offload_text_encoder = text_encoder_must_wait_on_host(card, _weight_bytes(pipe))
        if self.offload_text_encoder:
            # It never lands on the card at load; it visits it from pinned memory to encode.
            self.text_encoder_host = HostResident(pipe.text_encoder, self.device)
            pipe.transformer.to(self.device)
            pipe.vae.to(self.device)
        else:
            pipe.to(self.device)
        if self.options.vae_tiling:
            pipe.vae.enable_tiling()
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.image_pipe = pipe if self.recipe.conditioned else LTXImageToVideoPipeline(**pipe.components)
        self.image_pipe.set_progress_bar_config(disable=True)
        self.optimizations = optimize(pipe, self.device, self.optimize_options, self._probe)
        if any(step.name.startswith("compile") and step.status == "on" for step in self.optimizations):
            for request in SETTLE_REQUESTS:
                self.render(request, lambda step, total: None)

    def _probe(self) -> None:
        self.render(PROBE_REQUEST, lambda step, total: None)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "source": self.options.model_path or DEFAULT_HUB_ID,
            "revision": self.options.revision or "unversioned",
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "mode": self.optimize_options.mode,
            "recipe": self.recipe.summary(),
            "text_encoder": self._text_encoder_place(),
            "optimizations": [f"{o.name}={o.status}" for o in self.optimizations],
        }

    def _sync(self, stage: str | None = None) -> None:
        """Wait for the GPU; with `stage`, record its peak memory and start the next stage's."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            if stage is not None:
                self.last_stage_peaks[stage] = torch.cuda.max_memory_allocated(self.device) / 2**30
                torch.cuda.reset_peak_memory_stats(self.device)

    def generate(self, request: GenerationRequest, on_step: StepCallback, *, output: Path) -> Video:
        """Steps 1-5 in `render`, then 6: the MP4, through the one writer (VIDEO_CRF, VIDEO_PRESET)."""
        timings: dict[str, float] = {}
        frames = self.render(request, on_step, timings)
        start = time.perf_counter()
        size = encode_mp4(frames, request.fps, output, self.options.video)
        timings["encode_mp4"] = time.perf_counter() - start
        count, height, width, _ = frames.shape
        return Video(
            path=output, fps=request.fps, frames=count, width=width, height=height, bytes=size, timings=timings
        )

    @torch.inference_mode()
    def render(
        self, request: GenerationRequest, on_step: StepCallback, timings: dict[str, float] | None = None
    ) -> np.ndarray:
        """The frames, uint8 (F, H, W, 3); seconds per stage go into `timings`."""
        pipe = self.pipe
        if pipe is None:
            raise RuntimeError("generate() called before load()")
        timings = {} if timings is None else timings

        # 1. Validate: the VAE compresses 32x in space and 8x in time.
        spatial = pipe.vae_spatial_compression_ratio
        temporal = pipe.vae_temporal_compression_ratio
        if request.height % spatial or request.width % spatial or (request.num_frames - 1) % temporal:
            raise ValueError(
                f"height and width must be multiples of {spatial} and num_frames of the form {temporal}k+1"
            )
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        # A distilled checkpoint fixes its guidance (off) and its schedule whatever the request asks.
        recipe = self.recipe
        guidance_scale = recipe.guidance(request.guidance_scale)
        guided = guidance_scale > 1.0
        total_steps = recipe.steps(request.num_inference_steps)
        self.last_stage_peaks = {}
        self._sync("before")

        # 2. Encode prompt (and the negative prompt for classifier-free guidance).
        start = time.perf_counter()
        with self._text_encoder_on_device():
            embeds, mask, neg_embeds, neg_mask = pipe.encode_prompt(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                do_classifier_free_guidance=guided,
                device=self.device,
            )
        self._sync("encode_prompt")
        timings["encode_prompt"] = time.perf_counter() - start

        # 3. Denoise: the pipeline prepares latents and timesteps, we keep the latents.
        start = time.perf_counter()

        def step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1, total_steps)
            return {}

        try:
            # Image-to-video: the same components through diffusers' image-to-video loop (or the
            # condition pipeline's image at frame 0), which encodes the picture (fitted to
            # height x width) as the first latent frame.
            denoise: Any = pipe
            extra: dict[str, Any] = {}
            if recipe.conditioned:
                extra = {
                    "timesteps": list(recipe.timesteps) if recipe.timesteps else None,
                    "guidance_rescale": recipe.guidance_rescale,
                    "image_cond_noise_scale": recipe.image_cond_noise_scale,
                }
            if request.image_path is not None:
                denoise = self.image_pipe
                with Image.open(request.image_path) as picture:
                    extra["image"] = picture.convert("RGB")
            latents = denoise(
                **extra,
                prompt_embeds=embeds,
                prompt_attention_mask=mask,
                negative_prompt_embeds=neg_embeds,
                negative_prompt_attention_mask=neg_mask,
                height=request.height,
                width=request.width,
                num_frames=request.num_frames,
                frame_rate=request.fps,
                num_inference_steps=request.num_inference_steps,
                guidance_scale=guidance_scale,
                generator=generator,
                output_type="latent",
                return_dict=False,
                callback_on_step_end=step_end,
            )[0]
        finally:
            # The first-block cache (fast mode) keeps per-call state that diffusers resets only at
            # the end of a completed call: after a canceled or timed-out one, the next request of
            # another size would fail. Reset it whatever happened.
            pipe.transformer._reset_stateful_cache()
        self._sync("denoise")
        timings["denoise"] = time.perf_counter() - start
        self.last_latents = latents  # for the benchmark's comparison of modes

        # 4. Decode latents to pixels, exactly as the pipeline's own tail does.
        start = time.perf_counter()
        pixels = self._decode(latents, request, generator, embeds.dtype)
        self._sync("decode")
        timings["decode"] = time.perf_counter() - start

        # 5. Convert to uint8 frames (F, H, W, 3) on the device, then copy once.
        start = time.perf_counter()
        # (x / 2 + 0.5) * 255 == x * 127.5 + 127.5, done in place to spare passes over memory.
        frames = pixels[0].mul_(127.5).add_(127.5).clamp_(0, 255).round_().to(torch.uint8)
        array = frames.permute(1, 2, 3, 0).contiguous().cpu().numpy()
        timings["to_frames"] = time.perf_counter() - start
        return array

    def _text_encoder_place(self) -> str:
        host = self.text_encoder_host
        if host is None:
            return "resident"
        return "waits on the host (pinned)" if host.pinned else "waits on the host"

    def _text_encoder_on_device(self) -> AbstractContextManager[Any]:
        host = self.text_encoder_host
        return host.on_device() if host is not None else nullcontext()

    def _decode(
        self, latents: torch.Tensor, request: GenerationRequest, generator: torch.Generator, dtype: torch.dtype
    ) -> torch.Tensor:
        pipe = self.pipe
        assert pipe is not None
        latent_frames = (request.num_frames - 1) // pipe.vae_temporal_compression_ratio + 1
        latent_height = request.height // pipe.vae_spatial_compression_ratio
        latent_width = request.width // pipe.vae_spatial_compression_ratio
        if latents.ndim == 3:  # LTXPipeline's are packed (batch, tokens, channels); the condition pipeline's are not
            latents = pipe._unpack_latents(
                latents,
                latent_frames,
                latent_height,
                latent_width,
                pipe.transformer_spatial_patch_size,
                pipe.transformer_temporal_patch_size,
            )
        latents = pipe._denormalize_latents(
            latents, pipe.vae.latents_mean, pipe.vae.latents_std, pipe.vae.config.scaling_factor
        ).to(dtype)
        timestep = None
        if pipe.vae.config.timestep_conditioning:
            # The recipe's decode timestep, with that much fresh noise (from the request's generator,
            # as the pipeline draws it) mixed into the latents: 0.9.1's 0.03 and 0.025, 0.05 and
            # 0.025 from 0.9.5.
            recipe = self.recipe
            noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
            timestep = torch.full(
                (latents.shape[0],), recipe.decode_timestep, device=latents.device, dtype=latents.dtype
            )
            latents = (1 - recipe.decode_noise_scale) * latents + recipe.decode_noise_scale * noise
        # A noise-injecting decoder (0.9.1's) draws from the global RNG (diffusers passes it no
        # generator): seed it from the request, in a fork, so the same seed gives the same video.
        devices = [latents.device] if latents.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(request.seed)
            return pipe.vae.decode(latents.to(pipe.vae.dtype), timestep, return_dict=False)[0]
