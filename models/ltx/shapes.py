"""The real LTX-Video components' shapes (no weights): the 2B and 13B transformers, the 0.9.1 and
0.9.5+ VAEs and T5-XXL's encoder as Lightricks and Google publish them (the VAE and transformer
values as diffusers' `scripts/convert_ltx_to_diffusers.py` writes them for each version), for
counting parameters, planning memory and telling checkpoints apart on the meta device (tests,
`python -m bench.ltx --plan`)."""

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
# The VAE that 0.9.1 introduced: timestep-conditioned, a decoder that injects noise.
VAE_091: dict[str, Any] = {
    "block_out_channels": (128, 256, 512, 512),
    "decoder_block_out_channels": (256, 512, 1024),
    "layers_per_block": (4, 3, 3, 3, 4),
    "decoder_layers_per_block": (5, 6, 7, 8),
    "spatio_temporal_scaling": (True, True, True, False),
    "decoder_spatio_temporal_scaling": (True, True, True),
    "decoder_inject_noise": (True, True, True, False),
    "upsample_residual": (True, True, True),
    "upsample_factor": (2, 2, 2),
    "timestep_conditioning": True,
}
# 0.9.5 to 0.9.8 (2B and 13B alike): a new encoder (LTXVideo095DownBlock3D), no injected noise.
VAE_095: dict[str, Any] = {
    "block_out_channels": (128, 256, 512, 1024, 2048),
    "down_block_types": ("LTXVideo095DownBlock3D",) * 4,
    "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    "decoder_block_out_channels": (256, 512, 1024),
    "layers_per_block": (4, 6, 6, 2, 2),
    "decoder_layers_per_block": (5, 5, 5, 5),
    "spatio_temporal_scaling": (True, True, True, True),
    "decoder_spatio_temporal_scaling": (True, True, True),
    "decoder_inject_noise": (False, False, False, False),
    "upsample_residual": (True, True, True),
    "upsample_factor": (2, 2, 2),
    "timestep_conditioning": True,
    "spatial_compression_ratio": 32,
    "temporal_compression_ratio": 8,
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


def on_meta(component: str, config: dict[str, Any] | None = None) -> torch.nn.Module:
    """`transformer` (with `config`'s shape, 2B by default), `t5` or `vae` (with `config`'s shape,
    diffusers' default, 0.9.0's, without) built on the meta device: shapes and parameter counts, no
    memory. `config` may be a checkpoint's own config.json (its `_`-keys are ignored)."""
    config = {k: v for k, v in (config or {}).items() if not k.startswith("_")}
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    with torch.device("meta"):
        if component == "transformer":
            return LTXVideoTransformer3DModel(**{**TRANSFORMER_COMMON, **(config or TRANSFORMER_2B)})
        if component == "t5":
            return T5EncoderModel(T5Config(**T5_XXL_ENCODER))
        if component == "vae":
            return AutoencoderKLLTXVideo(**config)
    raise ValueError(f"no component {component!r}: transformer, t5 or vae")


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
