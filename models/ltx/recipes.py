"""Which LTX-Video checkpoint a model directory holds, read from its own configs before anything is
loaded, and how to run it: the recipe. A checkpoint this server cannot run correctly is refused
with a message naming what is supported, instead of loading with the wrong pipeline or recipe.

- 0.9.0 (`LTXPipeline`, VAE without timestep conditioning): decoded as it comes.
- 0.9.1 (`LTXPipeline`, timestep-conditioned VAE that injects noise): decoded at timestep 0.03
  with 2.5% of fresh noise (from the request's generator) mixed into the latents, the values
  diffusers' LTX documentation gives for it (`decode_timestep=0.03, decode_noise_scale=0.025`).
- 0.9.5 and later (the VAE with `LTXVideo095DownBlock3D` encoder blocks, saved as `LTXPipeline` by
  diffusers' converter for 0.9.5 and as `LTXConditionPipeline` from 0.9.7): `LTXConditionPipeline`
  (its own sigma schedule, per-token timesteps and frame-rate-scaled positions), decoded at 0.05
  with 0.025 noise, guidance rescaled by 0.7 and the first-frame image kept noise-free
  (`image_cond_noise_scale=0`), as diffusers' documentation runs 0.9.7 and 0.9.8.
- 0.9.5+ distilled (0.9.7 / 0.9.8 "distilled"): guidance and timestep distilled, so guidance off
  and the documented eight timesteps `[1000, 993, 987, 981, 975, 909, 725, 0.03]` whatever the
  request asks. Nothing in a checkpoint's configs says it is distilled: the model directory
  declares it in `videogen.json` (`{"variant": "distilled"}`), which `weights push --hub-id`
  writes for a hub repository whose name says "distilled".

The transformer's size is a separate question (`fits_on_card`): the 13B one runs where the card
holds it with a request's working memory (H100, H200), and is refused on an L4.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED = (
    "LTX-Video in diffusers layout: 0.9.0 and 0.9.1 (LTXPipeline), 0.9.5 and later including distilled "
    "checkpoints (LTXConditionPipeline; 13B only on a card that holds it)"
)
# The file in a model directory that declares what its configs cannot say (the variant).
MARKER = "videogen.json"
VARIANTS = ("dev", "distilled")
VAE_095_BLOCK = "LTXVideo095DownBlock3D"
PIPELINES = ("LTXPipeline", "LTXImageToVideoPipeline", "LTXConditionPipeline")
DISTILLED_TIMESTEPS = (1000.0, 993.0, 987.0, 981.0, 975.0, 909.0, 725.0, 0.03)


class UnsupportedCheckpoint(ValueError):
    """The directory is not an LTX-Video checkpoint this server runs; the message says why."""


@dataclass(frozen=True)
class Recipe:
    name: str
    decode_timestep: float
    decode_noise_scale: float
    pipeline: str = "LTXPipeline"
    # A fixed schedule (distilled checkpoints): the request's step count is not used.
    timesteps: tuple[float, ...] | None = None
    # A fixed guidance scale (1.0: guidance-distilled); None: the request's.
    guidance_scale: float | None = None
    guidance_rescale: float = 0.0
    image_cond_noise_scale: float = 0.0

    @property
    def conditioned(self) -> bool:
        return self.pipeline == "LTXConditionPipeline"

    def steps(self, requested: int) -> int:
        return len(self.timesteps) if self.timesteps else requested

    def guidance(self, requested: float) -> float:
        return requested if self.guidance_scale is None else self.guidance_scale

    def summary(self) -> str:
        """One line for /health and the logs: the version and what the recipe fixes."""
        fixed = []
        if self.timesteps:
            fixed.append(f"{len(self.timesteps)} fixed steps")
        if self.guidance_scale is not None:
            fixed.append(f"guidance {self.guidance_scale:g}")
        return f"{self.name} ({', '.join(fixed)})" if fixed else self.name


def recipe_from_configs(
    pipeline_class: str | None, transformer: dict[str, Any], vae: dict[str, Any], variant: str | None = None
) -> Recipe:
    """The recipe for a pipeline class, its transformer's and VAE's configs and the declared variant."""
    if pipeline_class is not None and pipeline_class not in PIPELINES:
        raise UnsupportedCheckpoint(f"{pipeline_class} is not an LTX-Video pipeline; supported: {SUPPORTED}")
    if variant is not None and variant not in VARIANTS:
        raise UnsupportedCheckpoint(f"variant {variant!r} in {MARKER}: expected one of {', '.join(VARIANTS)}")
    if "num_attention_heads" not in transformer or "attention_head_dim" not in transformer:
        raise UnsupportedCheckpoint(f"the transformer config is not LTX-Video's; supported: {SUPPORTED}")
    later = pipeline_class == "LTXConditionPipeline" or VAE_095_BLOCK in tuple(vae.get("down_block_types") or ())
    if not later:
        if variant == "distilled":
            raise UnsupportedCheckpoint(
                f"{MARKER} declares a distilled checkpoint, but its VAE is 0.9.0/0.9.1's and no distilled "
                "checkpoint of those exists: remove the declaration or check the directory"
            )
        if vae.get("timestep_conditioning"):
            return Recipe("0.9.1", decode_timestep=0.03, decode_noise_scale=0.025)
        return Recipe("0.9.0", decode_timestep=0.0, decode_noise_scale=0.0)
    if variant == "distilled":
        return Recipe(
            "0.9.5+ distilled",
            decode_timestep=0.05,
            decode_noise_scale=0.025,
            pipeline="LTXConditionPipeline",
            timesteps=DISTILLED_TIMESTEPS,
            guidance_scale=1.0,
            guidance_rescale=0.7,
        )
    return Recipe(
        "0.9.5+", decode_timestep=0.05, decode_noise_scale=0.025, pipeline="LTXConditionPipeline", guidance_rescale=0.7
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UnsupportedCheckpoint(f"{path} is missing: not a diffusers model directory ({SUPPORTED})") from None
    except (ValueError, TypeError) as error:
        raise UnsupportedCheckpoint(f"{path} is not a JSON object: {error}") from None


def declared_variant(source: str) -> str | None:
    """The variant a model directory declares in `videogen.json`; for a hub id, "distilled" when its
    name says so (Lightricks names its distilled repositories that way)."""
    directory = Path(source)
    if directory.is_dir():
        if not (directory / MARKER).is_file():
            return None
        variant = _json(directory / MARKER).get("variant")
        return None if variant is None else str(variant)
    return "distilled" if "distilled" in source.lower() else None


def configs_of(directory: Path) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """The pipeline class and the transformer's and VAE's configs of a diffusers model directory."""
    index = _json(directory / "model_index.json")
    return (
        index.get("_class_name"),
        _json(directory / "transformer" / "config.json"),
        _json(directory / "vae" / "config.json"),
    )


def recipe_of(directory: Path) -> Recipe:
    """The recipe for a diffusers model directory, from its configs and its declared variant."""
    return recipe_from_configs(*configs_of(directory), variant=declared_variant(str(directory)))


def fits_on_card(transformer: dict[str, Any], vae: dict[str, Any], card_bytes: int, reserve_bytes: int) -> None:
    """Refuse a checkpoint whose transformer and VAE (bf16) with a request's working memory do not
    fit the card (the text encoder can wait on the host), counting the real shapes on the meta
    device; the message gives the arithmetic, fp8 weight storage included."""
    from models.ltx.shapes import on_meta, parameters

    gib = 2**30
    transformer_bytes = 2 * parameters(on_meta("transformer", transformer))
    vae_bytes = 2 * parameters(on_meta("vae", vae))
    needed = transformer_bytes + vae_bytes + reserve_bytes
    if needed <= card_bytes:
        return
    fp8 = transformer_bytes // 2 + vae_bytes + reserve_bytes
    width = int(transformer["num_attention_heads"]) * int(transformer["attention_head_dim"])
    raise UnsupportedCheckpoint(
        f"a transformer {width} wide with {transformer.get('num_layers')} blocks does not fit this card: "
        f"{transformer_bytes / gib:.1f} GiB of bf16 weights + {vae_bytes / gib:.1f} GiB VAE + "
        f"{reserve_bytes / gib:.0f} GiB working memory = {needed / gib:.1f} GiB > {card_bytes / gib:.1f} GiB "
        f"(with fp8 weight storage still {fp8 / gib:.1f} GiB); serve a 2B checkpoint here, or this one "
        f"on a card with at least {needed / gib:.0f} GiB (H100, H200)"
    )
