"""`ltx-video-tiny`: the LTX-Video pipeline with a tiny random configuration built in code.

It produces noise-like video. It exists so that the whole serving path (validation, the
runner, the real diffusers pipeline, decoding, MP4 encoding, storage) runs on a laptop CPU
in seconds with nothing downloaded. The VAE keeps the real model's compression (32x in
space, 8x in time), so request sizes behave as they will on the real model.
"""

from __future__ import annotations

import string
from typing import Any

import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    FlowMatchEulerDiscreteScheduler,
    LTXConditionPipeline,
    LTXPipeline,
    LTXVideoTransformer3DModel,
)
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from models.ltx.backend import LTXVideoBackend

TEXT_WIDTH = 32
LATENT_CHANNELS = 8
# LTX-Video's published scheduler configuration (dynamic shifting on sequence length).
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
}
# 0.9.5 and later: a fixed schedule shape (the condition pipeline computes its own sigmas).
SCHEDULER_CONFIG_095 = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer made in code: every prompt gets its own tokens."""
    specials = ["<pad>", "</s>", "<unk>"]
    symbols = sorted(set(string.ascii_lowercase + string.digits + string.punctuation + " "))
    vocab = {token: index for index, token in enumerate(specials + symbols)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def _vae(noisy: bool) -> AutoencoderKLLTXVideo:
    return AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(noisy,) * 5,
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=noisy,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )


def _vae_095() -> AutoencoderKLLTXVideo:
    """0.9.5's VAE layout (models/ltx/shapes.py VAE_095), narrow: the same blocks, downsampling
    kinds and compression (32x, 8x), residual upsampling, timestep-conditioned, no injected noise."""
    return AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(8, 8, 16, 16, 32),
        down_block_types=("LTXVideo095DownBlock3D",) * 4,
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, True),
        decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(False, False, False, False),
        upsample_residual=(True, True, True),
        upsample_factor=(2, 2, 2),
        timestep_conditioning=True,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
        spatial_compression_ratio=32,
        temporal_compression_ratio=8,
    )


def build_tiny_pipeline(seed: int = 0, layers: int = 2, noisy_vae: bool = False, later: bool = False) -> Any:
    """All five LTX pipeline components, tiny and seeded; the global RNG is left untouched.
    `layers` transformer blocks (block caching needs at least two). `noisy_vae`: a decoder like
    0.9.1's, timestep-conditioned and injecting noise in every block. `later`: a 0.9.5-style
    checkpoint (its VAE layout and scheduler) as an `LTXConditionPipeline`."""
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer),
                d_model=TEXT_WIDTH,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
        transformer = LTXVideoTransformer3DModel(
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=1,
            attention_head_dim=16,
            cross_attention_dim=16,
            num_layers=layers,
            caption_channels=TEXT_WIDTH,
        )
        vae = _vae_095() if later else _vae(noisy_vae)
        if noisy_vae:
            # The noise scales start at zero (no noise at all); trained checkpoints have learned ones.
            with torch.no_grad():
                for name, parameter in vae.named_parameters():
                    if "per_channel_scale" in name:
                        parameter.uniform_(0.05, 0.2)
    # Modules built in code start in training mode (T5 dropout would make outputs random);
    # from_pretrained() returns them in eval mode, so match it.
    for module in (text_encoder, transformer, vae):
        module.eval()
    scheduler = FlowMatchEulerDiscreteScheduler(**(SCHEDULER_CONFIG_095 if later else SCHEDULER_CONFIG))
    pipeline = LTXConditionPipeline if later else LTXPipeline
    return pipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )


class LTXVideoTinyBackend(LTXVideoBackend):
    """The `ltx-video` backend over the tiny pipeline instead of downloaded weights."""

    name = "ltx-video-tiny"

    def _build_pipeline(self) -> LTXPipeline:
        pipe = build_tiny_pipeline()
        return pipe if self.dtype == torch.float32 else pipe.to(dtype=self.dtype)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "source": "built-in tiny random model", "revision": "tiny-v2"}
