"""The LatentSync 3D UNet: an SD-1.5-shaped UNet run per frame, with temporal motion modules
and audio cross-attention on Whisper-tiny features.

Written from the published architecture (LatentSync 1.5/1.6, itself derived from AnimateDiff).
The module tree and attribute names are chosen so that `state_dict()` has exactly the keys,
shapes and order of the official checkpoint's `state_dict` entry, which is loaded strictly:
a checkpoint that does not match is refused with the keys that differ.

Shapes: latents are (batch, channels, frames, height, width). Spatial layers fold frames into
the batch; motion modules attend over frames at each pixel. Audio features arrive as
(batch * frames, 50, 384), frame-major within each batch entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True, kw_only=True)
class UNetConfig:
    """The fields of upstream's `model:` section that shape the network."""

    in_channels: int = 13
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 384
    # Upstream passes this as the NUMBER of heads (head size = channels / heads).
    attention_head_dim: int = 8
    motion_heads: int = 8
    motion_max_len: int = 24
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> UNetConfig:
        """Read upstream's config dict; refuse the variations this implementation does not build."""
        expected = {
            "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
            "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
            "mid_block_type": "UNetMidBlock3DCrossAttn",
            "use_motion_module": True,
            "motion_module_type": "Vanilla",
            "motion_module_resolutions": [1, 2, 4, 8],
            "motion_module_mid_block": False,
            "motion_module_decoder_only": False,
            "add_audio_layer": True,
            "resnet_time_scale_shift": "default",
            "act_fn": "silu",
            "center_input_sample": False,
            "downsample_padding": 1,
            "mid_block_scale_factor": 1,
        }
        for key, value in expected.items():
            if key in raw and _normalise(raw[key]) != _normalise(value):
                raise ValueError(f"unsupported UNet config {key}={raw[key]!r} (this build expects {value!r})")
        motion = raw.get("motion_module_kwargs", {})
        if motion.get("attention_block_types", ["Temporal_Self"] * 2) != ["Temporal_Self"] * 2:
            raise ValueError("unsupported motion module attention_block_types")
        if motion.get("num_transformer_block", 1) != 1 or motion.get("temporal_attention_dim_div", 1) != 1:
            raise ValueError("unsupported motion module depth or dim_div")
        if not motion.get("temporal_position_encoding", True):
            raise ValueError("unsupported: motion modules without temporal position encoding")
        return cls(
            in_channels=raw.get("in_channels", 13),
            out_channels=raw.get("out_channels", 4),
            block_out_channels=tuple(raw.get("block_out_channels", (320, 640, 1280, 1280))),
            layers_per_block=raw.get("layers_per_block", 2),
            norm_num_groups=raw.get("norm_num_groups", 32),
            norm_eps=raw.get("norm_eps", 1e-5),
            cross_attention_dim=raw.get("cross_attention_dim", 384),
            attention_head_dim=raw.get("attention_head_dim", 8),
            motion_heads=motion.get("num_attention_heads", 8),
            motion_max_len=motion.get("temporal_position_encoding_max_len", 24),
            flip_sin_to_cos=raw.get("flip_sin_to_cos", True),
            freq_shift=raw.get("freq_shift", 0),
        )


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class FrameConv(nn.Conv2d):
    """A 2D convolution applied to every frame of a (b, c, f, h, w) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, _, _ = x.shape
        y = super().forward(x.transpose(1, 2).flatten(0, 1))
        return y.unflatten(0, (b, f)).transpose(1, 2)


def _frames_first(x: torch.Tensor) -> torch.Tensor:
    """(b, c, f, h, w) -> (b f, c, h, w)."""
    return x.transpose(1, 2).flatten(0, 1)


def _frames_back(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(b f, c, h, w) -> (b, c, f, h, w)."""
    return x.unflatten(0, (-1, frames)).transpose(1, 2)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with the time embedding added in between. The norms see all
    frames of a clip at once (GroupNorm over a 5D tensor), as upstream's do."""

    def __init__(self, cin: int, cout: int, temb: int, groups: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = FrameConv(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = FrameConv(cout, cout, 3, padding=1)
        self.conv_shortcut = FrameConv(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return skip + h


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v projections and a biased output projection."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Identity()])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = (self._split(p(t)) for p, t in ((self.to_q, x), (self.to_k, context), (self.to_v, context)))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](out.transpose(1, 2).flatten(2))

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)


class FeedForward(nn.Module):
    """GEGLU feed-forward, 4x wide; named `net.0.proj` / `net.2` like diffusers' FeedForward."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GEGLU(dim, dim * 4), nn.Identity(), nn.Linear(dim * 4, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class _GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, audio_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim=audio_dim)
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        if audio is not None:  # no audio: the cross-attention is skipped, as upstream does
            x = self.attn2(self.norm2(x), context=audio) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Per-frame self-attention over pixels and cross-attention to that frame's audio."""

    def __init__(self, channels: int, heads: int, groups: int, audio_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(channels, heads, audio_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        frames = x.shape[2]
        x = _frames_first(x)
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(n, h * w, c)
        tokens = self.transformer_blocks[0](tokens, audio)
        y = self.proj_out(tokens.reshape(n, h, w, c).permute(0, 3, 1, 2)) + x
        return _frames_back(y, frames)


class PositionalEncoding(nn.Module):
    pe: torch.Tensor

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.register_buffer("pe", self.sinusoids(dim, max_len))

    @staticmethod
    def sinusoids(dim: int, max_len: int) -> torch.Tensor:
        """(1, max_len, dim): sin on even channels, cos on odd; a function of the shape only."""
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        return pe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]]


class TemporalAttention(Attention):
    """Self-attention across the frames of each pixel, with a sinusoidal frame position."""

    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__(dim, heads)
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:  # type: ignore[override]
        n, s, c = x.shape  # (b f, pixels, c) -> (b pixels, f, c)
        t = x.unflatten(0, (-1, frames)).transpose(1, 2).reshape(-1, frames, c)
        t = super().forward(self.pos_encoder(t))
        return t.reshape(-1, s, frames, c).transpose(1, 2).reshape(n, s, c)


class TemporalBlock(nn.Module):
    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads, max_len) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attention(norm(x), frames) + x
        return self.ff(self.ff_norm(x)) + x


class _TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, max_len: int) -> None:
        super().__init__()
        # Upstream hard-codes 32 groups here, whatever the UNet's norm_num_groups.
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(channels, heads, max_len)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        x = _frames_first(x)
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c))
        tokens = self.proj_out(self.transformer_blocks[0](tokens, frames))
        y = tokens.reshape(n, h, w, c).permute(0, 3, 1, 2) + x
        return _frames_back(y, frames)


class MotionModule(nn.Module):
    def __init__(self, channels: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.temporal_transformer = _TemporalTransformer(channels, heads, max_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal_transformer(x)


class _Resample(nn.Module):
    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.conv = FrameConv(channels, channels, 3, stride=stride, padding=1)


class Downsample(_Resample):
    def __init__(self, channels: int) -> None:
        super().__init__(channels, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(_Resample):
    def __init__(self, channels: int) -> None:
        super().__init__(channels, stride=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        dtype = x.dtype
        x = x.float() if dtype == torch.bfloat16 else x
        if size is None:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        else:
            x = F.interpolate(x, size=(x.shape[2], *size), mode="nearest")
        return self.conv(x.to(dtype))


class Layer:
    """One resnet (+ spatial transformer) (+ motion module) step of a block, run in order."""

    @staticmethod
    def run(block: Any, i: int, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        x = block.resnets[i](x, temb)
        attentions = getattr(block, "attentions", None)
        if attentions is not None:
            x = attentions[i](x, audio)
        return block.motion_modules[i](x)


class DownBlock(nn.Module):
    def __init__(self, cfg: UNetConfig, cin: int, cout: int, temb: int, attention: bool, downsample: bool) -> None:
        super().__init__()
        if attention:
            heads = cfg.attention_head_dim
            self.attentions = nn.ModuleList(
                [
                    SpatialTransformer(cout, heads, cfg.norm_num_groups, cfg.cross_attention_dim)
                    for _ in range(cfg.layers_per_block)
                ]
            )
        self.resnets = nn.ModuleList(
            [
                ResBlock(cin if i == 0 else cout, cout, temb, cfg.norm_num_groups, cfg.norm_eps)
                for i in range(cfg.layers_per_block)
            ]
        )
        self.motion_modules = nn.ModuleList(
            [MotionModule(cout, cfg.motion_heads, cfg.motion_max_len) for _ in range(cfg.layers_per_block)]
        )
        self.downsamplers = nn.ModuleList([Downsample(cout)]) if downsample else None

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i in range(len(self.resnets)):
            x = Layer.run(self, i, x, temb, audio)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    def __init__(
        self, cfg: UNetConfig, cin: int, cprev: int, cout: int, temb: int, attention: bool, upsample: bool
    ) -> None:
        super().__init__()
        n = cfg.layers_per_block + 1
        if attention:
            self.attentions = nn.ModuleList(
                [
                    SpatialTransformer(cout, cfg.attention_head_dim, cfg.norm_num_groups, cfg.cross_attention_dim)
                    for _ in range(n)
                ]
            )
        self.resnets = nn.ModuleList(
            [
                ResBlock(
                    (cprev if i == 0 else cout) + (cin if i == n - 1 else cout),
                    cout,
                    temb,
                    cfg.norm_num_groups,
                    cfg.norm_eps,
                )
                for i in range(n)
            ]
        )
        self.motion_modules = nn.ModuleList(
            [MotionModule(cout, cfg.motion_heads, cfg.motion_max_len) for _ in range(n)]
        )
        self.upsamplers = nn.ModuleList([Upsample(cout)]) if upsample else None

    def forward(
        self,
        x: torch.Tensor,
        skips: list[torch.Tensor],
        temb: torch.Tensor,
        audio: torch.Tensor | None,
        size: tuple[int, int] | None,
        layers: range | None = None,
    ) -> torch.Tensor:
        for i in layers if layers is not None else range(len(self.resnets)):
            x = Layer.run(self, i, torch.cat([x, skips.pop()], dim=1), temb, audio)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, size)
        return x


class MidBlock(nn.Module):
    def __init__(self, cfg: UNetConfig, channels: int, temb: int) -> None:
        super().__init__()
        heads, groups = cfg.attention_head_dim, cfg.norm_num_groups
        self.attentions = nn.ModuleList([SpatialTransformer(channels, heads, groups, cfg.cross_attention_dim)])
        self.resnets = nn.ModuleList([ResBlock(channels, channels, temb, groups, cfg.norm_eps) for _ in range(2)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, audio), temb)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(cin, cout)
        self.linear_2 = nn.Linear(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


@dataclass
class DeepCache:
    """DeepCache-style reuse (branch 0): every `interval` steps a full pass stores the input of the
    final up block's last layer; the steps in between run only conv_in, the time embedding, that
    last layer (fed the fresh conv_in output as its skip) and the output head."""

    interval: int = 3
    step: int = 0
    hidden: torch.Tensor | None = None

    def full_pass(self) -> bool:
        return self.hidden is None or self.step % self.interval == 0

    def reset(self) -> None:
        self.step, self.hidden = 0, None


class LatentSyncUNet(nn.Module):
    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.config = cfg
        ch = cfg.block_out_channels
        temb = ch[0] * 4
        self.conv_in = FrameConv(cfg.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        n = len(ch)
        self.down_blocks = nn.ModuleList(
            [
                DownBlock(cfg, ch[max(i - 1, 0)], ch[i], temb, attention=i < n - 1, downsample=i < n - 1)
                for i in range(n)
            ]
        )
        rev = list(reversed(ch))
        self.up_blocks = nn.ModuleList(
            [
                UpBlock(
                    cfg,
                    cin=rev[min(i + 1, n - 1)],
                    cprev=rev[max(i - 1, 0)],
                    cout=rev[i],
                    temb=temb,
                    attention=i > 0,
                    upsample=i < n - 1,
                )
                for i in range(n)
            ]
        )
        self.mid_block = MidBlock(cfg, ch[-1], temb)
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
        self.conv_out = FrameConv(ch[0], cfg.out_channels, 3, padding=1)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def time_features(self, timestep: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=device)
        t = t[None] if t.ndim == 0 else t
        half = self.config.block_out_channels[0] // 2
        exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=device)
        freqs = torch.exp(exponent / (half - self.config.freq_shift))
        args = t.expand(batch)[:, None].float() * freqs[None]
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
        if self.config.flip_sin_to_cos:
            emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
        return self.time_embedding(emb.to(self.dtype))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        audio: torch.Tensor | None = None,
        deep_cache: DeepCache | None = None,
    ) -> torch.Tensor:
        temb = self.time_features(timestep, sample.shape[0], sample.device)
        x = self.conv_in(sample)
        last: Any = self.up_blocks[-1]
        if deep_cache is not None and not deep_cache.full_pass():
            deep_cache.step += 1
            out = last(
                deep_cache.hidden, [x], temb, audio, None, layers=range(len(last.resnets) - 1, len(last.resnets))
            )
            return self._head(out)
        skips = [x]
        for down in self.down_blocks:
            x, block_skips = down(x, temb, audio)
            skips += block_skips
        x = self.mid_block(x, temb, audio)
        upsample_size = None
        odd = any(s % 2 ** (len(self.up_blocks) - 1) for s in sample.shape[-2:])
        for i, up in enumerate(self.up_blocks):
            block: Any = up
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            if odd and i < len(self.up_blocks) - 1:
                upsample_size = tuple(skips[-1].shape[-2:])
            if deep_cache is not None and block is last:
                x = block(x, block_skips, temb, audio, upsample_size, layers=range(n - 1))
                deep_cache.hidden, deep_cache.step = x, deep_cache.step + 1
                x = block(x, block_skips, temb, audio, upsample_size, layers=range(n - 1, n))
            else:
                x = block(x, block_skips, temb, audio, upsample_size)
        return self._head(x)

    def complete_derived_buffers(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Add the motion modules' positional encodings to a checkpoint that lacks them: they
        are fixed sinusoids (a function of the shape, never trained), so a checkpoint saved
        without buffers is still complete. Returns the keys added; anything else must match."""
        added = []
        for key, buffer in self.named_buffers():
            if key.endswith("pos_encoder.pe") and key not in state:
                state[key] = PositionalEncoding.sinusoids(buffer.shape[2], buffer.shape[1])
                added.append(key)
        return added

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.conv_norm_out(x)))
