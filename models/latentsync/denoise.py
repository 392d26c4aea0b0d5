"""The denoising loop of one 16-frame chunk: DDIM (diffusers' DDIMScheduler with upstream's
configuration), classifier-free guidance against silent audio, optional DeepCache reuse."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler

from models.latentsync.unet import DeepCache, LatentSyncUNet

# Upstream's configs/scheduler_config.json.
SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def make_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULER_CONFIG)


def guided_audio(audio: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """(frames, 50, 384) -> the UNet's context: silent audio first when guidance is on."""
    return torch.cat([torch.zeros_like(audio), audio]) if guidance_scale > 1.0 else audio


def denoise(
    unet: LatentSyncUNet,
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    conditioning: torch.Tensor,
    audio: torch.Tensor | None,
    guidance_scale: float,
    deep_cache: DeepCache | None = None,
    on_step: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> torch.Tensor:
    """Run every timestep set on `scheduler` over one chunk.

    latents: (1, 4, f, h, w) noise; conditioning: (1, 9, f, h, w) = mask + masked-image latents +
    reference latents; audio: the context from `guided_audio`. `on_step(j, tensors)` sees the raw
    UNet output, the guided noise and the new latents of step j (and may raise to stop).
    """
    cfg = guidance_scale > 1.0
    cond = torch.cat([conditioning] * 2) if cfg else conditioning
    if deep_cache is not None:
        deep_cache.reset()
    for j, t in enumerate(scheduler.timesteps):
        x = torch.cat([latents] * 2) if cfg else latents
        x = torch.cat([scheduler.scale_model_input(x, t), cond], dim=1)
        raw = unet(x, t, audio, deep_cache=deep_cache)
        if cfg:
            uncond, with_audio = raw.chunk(2)
            noise = uncond + guidance_scale * (with_audio - uncond)
        else:
            noise = raw
        latents = scheduler.step(noise, t, latents, eta=0.0).prev_sample
        if on_step is not None:
            on_step(j, {"raw": raw, "guided": noise, "latents": latents})
    return latents
