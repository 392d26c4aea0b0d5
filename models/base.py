"""The contract every model backend implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from models.mp4 import Mp4Options

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
    # ltx-video: speedups (see models/ltx/optimize.py) and the text encoder's place between requests.
    optimize: Any = None  # models.ltx.optimize.OptimizeOptions; None: the defaults
    text_encoder_offload: str = "auto"  # auto (on CUDA when the card lacks room for all weights + a request) | on | off
    lipsync: Any = None  # models.latentsync.backend.LipSyncOptions; None: the defaults
    video: Mp4Options = field(default_factory=Mp4Options)  # VIDEO_CRF / VIDEO_PRESET, for every backend


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
    # Image-to-video: a local picture (checked by the server) the video starts from.
    image_path: Path | None = None


@dataclass(frozen=True, kw_only=True)
class LipSyncRequest:
    """A validated lip-sync request: local copies of the inputs.

    `warmup` runs every model once on synthetic inputs and writes nothing."""

    video_path: Path
    audio_path: Path
    guidance_scale: float = 1.5
    num_inference_steps: int = 20
    seed: int = 1247
    warmup: bool = False


class InputError(Exception):
    """The request's media cannot be used (bad file, no face, too long): a 4xx, not a fault.

    `code` is one of serve.errors.CATALOGUE's (the server decides the status from it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(kw_only=True)
class Video:
    """What every backend returns: the finished MP4 at `path`, what it holds, and how long each
    stage took. `timings` holds seconds only (they feed the stage-duration histogram)."""

    path: Path
    fps: int
    frames: int
    width: int
    height: int
    bytes: int
    timings: dict[str, float] = field(default_factory=dict)


class Backend(Protocol):
    """A model that loads once and then turns requests into videos, one at a time."""

    name: str
    task: str  # "text-to-video" | "lip-sync": which request body the server takes (serve.core.tasks)

    def load(self) -> None:
        """Load weights onto the device. Called once, in the runner thread."""

    def generate(self, request: Any, on_step: StepCallback, *, output: Path) -> Video:
        """Run one generation into the MP4 file `output`; call `on_step` after every denoising step."""

    def describe(self) -> dict[str, Any]:
        """Model name, revision, device and dtype, for responses and `/`."""
