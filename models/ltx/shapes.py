"""The real LTX-Video components' shapes (no weights): the 2B and 13B transformers and T5-XXL's
encoder as Lightricks and Google publish them, for counting parameters and planning memory on the
meta device (tests, `python -m bench.ltx --plan`)."""

from __future__ import annotations

from typing import Any

import torch

TRANSFORMER_COMMON: dict[str, Any] = {
    "in_channels": 128,
    "out_channels": 128,
    "patch_size": 1,
    "patch_size_t": 1,
    "caption_channels": 4096,
}
# 0.9.0 to 0.9.8 2B, and 0.9.7 / 0.9.8 13B.
TRANSFORMER_2B: dict[str, Any] = {
    "num_attention_heads": 32,
    "attention_head_dim": 64,
    "cross_attention_dim": 2048,
    "num_layers": 28,
}
TRANSFORMER_13B: dict[str, Any] = {
    "num_attention_heads": 32,
    "attention_head_dim": 128,
    "cross_attention_dim": 4096,
    "num_layers": 48,
}
T5_XXL_ENCODER: dict[str, Any] = {
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu",
}


def on_meta(component: str, transformer: dict[str, Any] | None = None) -> torch.nn.Module:
    """`transformer` (with `transformer`'s shape, 2B by default), `t5` or `vae` (diffusers' default,
    0.9.0's) built on the meta device: shapes and parameter counts, no memory."""
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    with torch.device("meta"):
        if component == "transformer":
            return LTXVideoTransformer3DModel(**TRANSFORMER_COMMON, **(transformer or TRANSFORMER_2B))
        if component == "t5":
            return T5EncoderModel(T5Config(**T5_XXL_ENCODER))
        if component == "vae":
            return AutoencoderKLLTXVideo()
    raise ValueError(f"no component {component!r}: transformer, t5 or vae")


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
