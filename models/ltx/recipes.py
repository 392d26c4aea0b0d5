"""Which LTX-Video checkpoint a model directory holds, read from its own configs before anything is
loaded, and how to run it: the recipe. A checkpoint this server cannot run correctly is refused
with a message naming what is supported, instead of loading as `LTXPipeline` and generating with
the wrong recipe (0.9.5 and later) or running out of memory at load (13B).

- 0.9.0 (`LTXPipeline`, VAE without timestep conditioning): decoded as it comes.
- 0.9.1 (`LTXPipeline`, timestep-conditioned VAE that injects noise): decoded at timestep 0.03
  with 2.5% of fresh noise (from the request's generator) mixed into the latents, the values
  diffusers' LTX documentation gives for it (`decode_timestep=0.03, decode_noise_scale=0.025`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED = "LTX-Video 0.9.0 and 0.9.1 in diffusers layout (LTXPipeline with the 2B transformer)"
# The 2B transformer's width (32 heads x 64); the 13B one is 32 x 128 wide and 48 blocks deep.
WIDTH_2B = 2048


class UnsupportedCheckpoint(ValueError):
    """The directory is not an LTX-Video checkpoint this server runs; the message says why."""


@dataclass(frozen=True)
class Recipe:
    name: str
    decode_timestep: float
    decode_noise_scale: float


def recipe_from_configs(pipeline_class: str | None, transformer: dict[str, Any], vae: dict[str, Any]) -> Recipe:
    """The recipe for a pipeline class and its transformer's and VAE's configs."""
    if pipeline_class is not None and pipeline_class != "LTXPipeline":
        later = " (0.9.5 and later, distilled ones included)" if pipeline_class == "LTXConditionPipeline" else ""
        raise UnsupportedCheckpoint(f"{pipeline_class}{later} is not served yet; supported: {SUPPORTED}")
    width = int(transformer.get("num_attention_heads", 0)) * int(transformer.get("attention_head_dim", 0))
    if width > WIDTH_2B:
        layers = transformer.get("num_layers")
        raise UnsupportedCheckpoint(
            f"a transformer {width} wide with {layers} blocks (13B) needs about 26 GB for its bf16 weights "
            f"alone, more than an L4's 24 GB; supported: {SUPPORTED}"
        )
    if vae.get("timestep_conditioning"):
        return Recipe("0.9.1", decode_timestep=0.03, decode_noise_scale=0.025)
    return Recipe("0.9.0", decode_timestep=0.0, decode_noise_scale=0.0)


def _json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UnsupportedCheckpoint(f"{path} is missing: not a diffusers model directory ({SUPPORTED})") from None


def recipe_of(directory: Path) -> Recipe:
    """The recipe for a diffusers model directory, from its model_index.json and component configs."""
    index = _json(directory / "model_index.json")
    return recipe_from_configs(
        index.get("_class_name"),
        _json(directory / "transformer" / "config.json"),
        _json(directory / "vae" / "config.json"),
    )
