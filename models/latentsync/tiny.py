"""`latentsync-tiny`: LatentSync's architecture shrunk, with seeded random weights built in code.

It writes its checkpoints in the official layout (see models/latentsync/backend.py) to a private
temporary directory and loads them through the same strict loading path as the real model, so
local runs and tests exercise that path too. Its output face is noise; everything around the
mouth region, the audio and the timing are real.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from models.base import BackendOptions
from models.latentsync.audio import WhisperDims, WhisperEncoder
from models.latentsync.backend import (
    MASK_FILE,
    UNET_CONFIG_FILE,
    UNET_FILE,
    VAE_DIR,
    WHISPER_FILE,
    LatentSyncBackend,
    LipSyncOptions,
    lower_face_mask,
)
from models.latentsync.unet import LatentSyncUNet

TINY_WIDTH = 64  # whisper width = UNet cross-attention width
TINY_UNET = {
    "in_channels": 13,
    "out_channels": 4,
    "block_out_channels": [32, 32, 32, 32],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": TINY_WIDTH,
    "attention_head_dim": 2,
    "motion_module_kwargs": {"num_attention_heads": 2, "temporal_position_encoding_max_len": 24},
}
TINY_WHISPER = WhisperDims(n_mels=80, n_audio_ctx=1500, n_audio_state=TINY_WIDTH, n_audio_head=2, n_audio_layer=4)
# AutoencoderKL configurations: Stable Diffusion's VAE (sd-vae-ft-mse's shapes) and a tiny one
# with the same 8x compression.
SD_VAE: dict[str, Any] = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2}
TINY_VAE: dict[str, Any] = {"block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 8}


def build_vae(config: dict[str, Any]) -> Any:
    """An AutoencoderKL with four levels (8x), 4 latent channels, the given widths."""
    from diffusers import AutoencoderKL

    levels = len(config["block_out_channels"])
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=4,
        **config,
    )


def write_tiny_checkpoints(root: Path, seed: int = 0) -> Path:
    """The three checkpoints and the UNet config, seeded; returns `root`."""
    from models.latentsync.unet import UNetConfig

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = LatentSyncUNet(UNetConfig.from_dict(TINY_UNET))
        whisper = WhisperEncoder(TINY_WHISPER)
        vae = build_vae(TINY_VAE)
    finally:
        torch.random.set_rng_state(generator_state)
    root.mkdir(parents=True, exist_ok=True)
    (root / UNET_CONFIG_FILE).write_text(json.dumps(TINY_UNET))
    torch.save({"state_dict": unet.state_dict(), "global_step": 0}, root / UNET_FILE)
    (root / WHISPER_FILE).parent.mkdir(exist_ok=True)
    encoder = {f"encoder.{k}": v for k, v in whisper.state_dict().items()}
    torch.save({"dims": asdict(TINY_WHISPER), "model_state_dict": encoder}, root / WHISPER_FILE)
    vae.save_pretrained(root / VAE_DIR)
    return root


class LatentSyncTinyBackend(LatentSyncBackend):
    name = "latentsync-tiny"

    def __init__(self, options: BackendOptions) -> None:
        lipsync = getattr(options, "lipsync", None) or LipSyncOptions()
        super().__init__(options)
        self.lipsync = LipSyncOptions(**{**lipsync.__dict__, "variant": "1.5"})
        self.resolution = 64
        self._tmp = tempfile.TemporaryDirectory(prefix="latentsync-tiny-")

    def _mask(self, root: Path) -> torch.Tensor:
        """A drawn mask: the tiny model has no upstream file (one in its directory still wins)."""
        return super()._mask(root) if (root / MASK_FILE).is_file() else lower_face_mask(self.resolution)

    def weights_dir(self) -> Path:
        root = Path(self._tmp.name)
        if not (root / UNET_FILE).is_file():
            write_tiny_checkpoints(root)
        return root
