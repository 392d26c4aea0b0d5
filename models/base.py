"""The contract every model backend implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# Called after each denoising step with (step, total) where step counts from 1.
# It may raise to stop the generation at that step (cancellation, deadlines).
StepCallback = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """How a backend loads: where from, on which device, in which precision."""

    model_path: str | None = None
    revision: str | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    vae_tiling: bool = False
    # ltx-video: speedups (see models/ltx_optimize.py) and the text encoder's place between requests.
    optimize: Any = None  # models.ltx_optimize.OptimizeOptions; None: the defaults
    text_encoder_offload: str = "auto"  # auto (on CUDA) | on | off
    lipsync: Any = None  # models.latentsync.backend.LipSyncOptions; None: the defaults


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """A validated text-to-video request, in the units the model uses."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 171198
    height: int = 704
    width: int = 1216
    num_frames: int = 121
    num_inference_steps: int = 50
    fps: int = 24
    guidance_scale: float = 3.0


@dataclass(frozen=True, kw_only=True)
class LipSyncRequest:
    """A validated lip-sync request: local copies of the inputs and where the MP4 goes.

    `warmup` runs every model once on synthetic inputs and writes nothing."""

    video_path: Path
    audio_path: Path
    output_path: Path
    guidance_scale: float = 1.5
    num_inference_steps: int = 20
    seed: int = 1247
    warmup: bool = False


class InputError(Exception):
    """The request's media cannot be used (bad file, no face, too long): a 4xx, not a fault."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.status = code, status


@dataclass(kw_only=True)
class Video:
    """Decoded frames, uint8 RGB of shape (frames, height, width, 3), and their rate; or, from a
    backend that streams its output (lip-sync), the finished MP4 at `path` and no frames."""

    frames: np.ndarray
    fps: int
    timings: dict[str, float] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            return
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (F, H, W, 3), got {self.frames.dtype} {self.frames.shape}")


class Backend(Protocol):
    """A model that loads once and then turns requests into videos, one at a time."""

    name: str

    def load(self) -> None:
        """Load weights onto the device. Called once, in the runner thread."""

    def generate(self, request: Any, on_step: StepCallback) -> Video:
        """Run one generation; call `on_step` after every denoising step."""

    def describe(self) -> dict[str, Any]:
        """Model name, revision, device and dtype, for responses and `/`."""
