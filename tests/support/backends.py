"""Backends built for tests of the server around the model."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.base import GenerationRequest, StepCallback, Video
from models.mp4 import encode_mp4


class GatedBackend:
    """A stand-in model for runner behaviour: each generation waits at step 1 until released.

    Only for tests of queueing and concurrency, where the model's output does not matter
    and a generation must last exactly as long as the test needs. It writes a real (black) MP4.
    """

    name = "gated"
    task = "text-to-video"

    def __init__(self, *, fail_load: str | None = None, step_seconds: float = 0.0) -> None:
        self.fail_load = fail_load
        self.step_seconds = step_seconds
        self.release = threading.Event()
        self.started = threading.Event()
        self.prompts: list[str] = []

    def load(self) -> None:
        if self.fail_load:
            raise RuntimeError(self.fail_load)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "revision": "test"}

    def generate(self, request: GenerationRequest, on_step: StepCallback, *, output: Path) -> Video:
        if request.prompt != "warm-up":
            self.prompts.append(request.prompt)
            self.started.set()
            if not self.release.wait(60):
                raise RuntimeError("test never released the generation")
        for step in range(1, request.num_inference_steps + 1):
            time.sleep(self.step_seconds)
            on_step(step, request.num_inference_steps)
        frames = np.zeros((request.num_frames, request.height, request.width, 3), dtype=np.uint8)
        size = encode_mp4(frames, request.fps, output)
        return Video(
            path=output,
            fps=request.fps,
            frames=request.num_frames,
            width=request.width,
            height=request.height,
            bytes=size,
        )
