"""Speech -> per-video-frame audio features, as LatentSync conditions on them.

log-mel (Whisper's: 16 kHz, 25 ms window, 10 ms hop, 80 Slaney mel bands, log10 clipped to
8 decades) -> Whisper-tiny's audio encoder, 30 s windows -> for every encoder frame the input
after the positional embedding plus each block's output (5 x 384; no final LayerNorm; 50
frames per second) -> for video frame i at 25 fps, the 10 feature frames around 2i, clamped to
the ends: a (50, 384) chunk. Written from Whisper's published architecture; the weights load
from the official `tiny.pt` ({"dims", "model_state_dict"}), encoder entries only, strictly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.latentsync.checkpoint import strict_load

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
WINDOW_FRAMES = 3000  # mel frames in one 30 s encoder window
FEATURES_PER_SECOND = 50


def mel_filters(n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Triangular filters on the Slaney mel scale with Slaney area normalisation (the bank
    Whisper ships, equal to librosa.filters.mel's defaults), float32 (n_mels, 1 + n_fft // 2)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        mel = hz / f_sp
        return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-12) / min_log_hz) / logstep, mel)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)

    fft_freqs = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2)), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.astype(np.float32)


def log_mel(samples: np.ndarray) -> torch.Tensor:
    """float32 mono 16 kHz samples in [-1, 1] -> (80, n) log-mel, n = len(samples) // 160."""
    audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    stft = torch.stft(audio, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = torch.from_numpy(mel_filters()) @ power
    spec = torch.clamp(mel, min=1e-10).log10()
    spec = torch.maximum(spec, spec.max() - 8.0)
    return (spec + 4.0) / 4.0


class _Linear(nn.Linear):
    """Runs in the input's dtype (Whisper keeps LayerNorms in float32 and casts the rest)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class _LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = _Linear(dim, dim)
        self.key = _Linear(dim, dim, bias=False)
        self.value = _Linear(dim, dim)
        self.out = _Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        scale = (d // self.heads) ** -0.25
        q = self.query(x).view(n, t, self.heads, -1).permute(0, 2, 1, 3) * scale
        k = self.key(x).view(n, t, self.heads, -1).permute(0, 2, 3, 1) * scale
        v = self.value(x).view(n, t, self.heads, -1).permute(0, 2, 1, 3)
        weights = F.softmax((q @ k).float(), dim=-1).to(q.dtype)
        return self.out((weights @ v).permute(0, 2, 1, 3).flatten(2))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = _SelfAttention(dim, heads)
        self.attn_ln = _LayerNorm(dim)
        self.mlp = nn.Sequential(_Linear(dim, dim * 4), nn.GELU(), _Linear(dim * 4, dim))
        self.mlp_ln = _LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class _Conv1d(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, self.weight.to(x.dtype), bias)


def _sinusoids(length: int, channels: int) -> torch.Tensor:
    increment = np.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


@dataclass(frozen=True)
class WhisperDims:
    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder; `forward` returns every layer's activations (frames, 5, 384)."""

    positional_embedding: torch.Tensor

    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        self.dims = dims
        d = dims.n_audio_state
        self.conv1 = _Conv1d(dims.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = _Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", _sinusoids(dims.n_audio_ctx, d))
        self.blocks = nn.ModuleList([_Block(d, dims.n_audio_head) for _ in range(dims.n_audio_layer)])
        self.ln_post = _LayerNorm(d)  # part of the checkpoint; LatentSync does not apply it

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(n, 80, 3000) -> (n, 1500, layers + 1, 384)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        x = (x + self.positional_embedding).to(x.dtype)
        layers = [x]
        for block in self.blocks:
            x = block(x)
            layers.append(x)
        return torch.stack(layers, dim=2)


def load_whisper(path: Path, device: torch.device) -> WhisperEncoder:
    """Build the encoder from the official `tiny.pt` and load its encoder entries strictly."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, Mapping) or "model_state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Whisper checkpoint (no 'model_state_dict')")
    dims = WhisperDims(**{k: v for k, v in dict(ckpt.get("dims", {})).items() if k in WhisperDims.__dataclass_fields__})
    return whisper_from_state_dict(ckpt["model_state_dict"], dims, device, source=str(path))


def whisper_from_state_dict(
    state: Mapping[str, torch.Tensor], dims: WhisperDims, device: torch.device, source: str
) -> WhisperEncoder:
    """Kept in float32 on every device: 8 M parameters, and upstream's fp16 encoder on CUDA only
    saves time it does not need."""
    encoder = WhisperEncoder(dims)
    own = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    strict_load(encoder, own, source)
    return encoder.to(device=device).eval().requires_grad_(False)


@torch.no_grad()
def audio_features(encoder: WhisperEncoder, samples: np.ndarray) -> torch.Tensor:
    """16 kHz mono samples -> (T, 5, 384) float32 features, 50 per second of audio."""
    mel = log_mel(samples)
    frames = mel.shape[1]
    device = encoder.positional_embedding.device
    out = []
    for seek in range(0, frames, WINDOW_FRAMES):
        end = min(seek + WINDOW_FRAMES, frames)
        window = F.pad(mel[:, seek:end], (0, WINDOW_FRAMES - (end - seek)))
        layers = encoder(window[None].to(device))[0]
        out.append(layers[: (end - seek) // 2].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, encoder.dims.n_audio_layer + 1, encoder.dims.n_audio_state)


def chunk_indices(num_features: int, fps: int = 25, left: int = 2, right: int = 2) -> list[list[int]]:
    """The feature frames each video frame sees (upstream's rule, including its loop running two
    frames past the end of the audio)."""
    per_frame = FEATURES_PER_SECOND / fps
    chunks = []
    i = 0
    while True:
        start = int(i * per_frame)
        center = int(i * FEATURES_PER_SECOND / fps)
        chunks.append(
            [min(max(idx, 0), num_features - 1) for idx in range(center - left * 2, center + (right + 1) * 2)]
        )
        i += 1
        if start > num_features:
            return chunks


def feature_chunks(features: torch.Tensor, fps: int = 25) -> torch.Tensor:
    """(T, 5, 384) -> (frames, 50, 384): one chunk per video frame."""
    index = torch.tensor(chunk_indices(len(features), fps))
    return features[index].reshape(len(index), -1, features.shape[-1])
