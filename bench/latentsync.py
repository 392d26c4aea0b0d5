"""`python -m bench.latentsync` (`make bench-lipsync`): one 16-frame LatentSync chunk, timed.

For each variant (`plain`: every step a full UNet pass; `deepcache`: upstream's default reuse,
a full pass every 3 steps) in one process on the same inputs: median seconds per chunk and per
step over the runs, the first run's extra cost, peak GPU memory, and the relative error of the
final latents against `plain`; plus the VAE (encode the masked and reference faces, decode) and
Whisper on 1 s of audio, which every chunk also pays. Weights are random and seeded (compute does
not depend on their values): `--size full` is the official 1.6 UNet (1.27 B parameters), SD's VAE
and Whisper tiny; `--size tiny` the `latentsync-tiny` shapes. A chunk is 0.64 s of video at 25 fps,
so `chunk seconds / 0.64` is the real-time factor.

    python -m bench.latentsync                 # full size in float16 on CUDA, tiny on a CPU
    python -m bench.latentsync --resolution 256  # LatentSync 1.5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch

from models.latentsync.audio import WhisperDims, WhisperEncoder, audio_features, feature_chunks
from models.latentsync.denoise import denoise, guided_audio, make_scheduler
from models.latentsync.tiny import SD_VAE, TINY_UNET, TINY_VAE, TINY_WHISPER, build_vae
from models.latentsync.unet import DeepCache, LatentSyncUNet, UNetConfig

CHUNK = 16


def build(size: str, device: torch.device, dtype: torch.dtype) -> tuple[LatentSyncUNet, Any, WhisperEncoder]:
    full = size == "full"
    torch.manual_seed(0)
    with torch.device(device):
        unet = LatentSyncUNet(UNetConfig() if full else UNetConfig.from_dict(TINY_UNET))
        vae = build_vae(SD_VAE if full else TINY_VAE)
        whisper = WhisperEncoder(WhisperDims() if full else TINY_WHISPER)
    unet = unet.to(dtype).eval().requires_grad_(False)
    vae = vae.to(dtype).eval().requires_grad_(False)
    return unet, vae, whisper.eval().requires_grad_(False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["full", "tiny"], default="full" if cuda else "tiny")
    parser.add_argument("--resolution", type=int, default=None, help="face size (default 512 full, 64 tiny)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/latentsync.json"))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda else torch.float32
    resolution = args.resolution or (512 if args.size == "full" else 64)
    started = time.perf_counter()
    unet, vae, whisper = build(args.size, device, dtype)
    load_seconds = time.perf_counter() - started
    latent = resolution // 2 ** (len(vae.config.block_out_channels) - 1)
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(1, 4, 1, latent, latent, generator=generator).repeat(1, 1, CHUNK, 1, 1)
    conditioning = torch.randn(1, 9, CHUNK, latent, latent, generator=generator)
    width = unet.config.cross_attention_dim
    audio = guided_audio(torch.randn(CHUNK, 50, width, generator=generator), args.guidance)
    noise, conditioning, audio = (t.to(device, dtype) for t in (noise, conditioning, audio))
    results: list[dict[str, Any]] = []
    reference = None
    for name in ("plain", "deepcache"):
        cache = DeepCache(3) if name == "deepcache" else None
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        seconds = []
        latents = None
        for _ in range(args.runs + 1):  # the first run also pays warm-up
            scheduler = make_scheduler()
            scheduler.set_timesteps(args.steps, device=device)
            _sync(device)
            mark = time.perf_counter()
            with torch.no_grad():
                latents = denoise(unet, scheduler, noise, conditioning, audio, args.guidance, cache)
            _sync(device)
            seconds.append(time.perf_counter() - mark)
        assert latents is not None
        final = latents.float().cpu()
        if reference is None:
            reference = final
        median = statistics.median(seconds[1:])
        results.append(
            {
                "name": name,
                "median_chunk_seconds": round(median, 4),
                "median_step_seconds": round(median / args.steps, 5),
                "first_run_extra_seconds": round(seconds[0] - median, 4),
                "realtime_factor": round(median / (CHUNK / 25), 3),
                "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
                "latent_relative_error": None
                if name == "plain"
                else float((final - reference).norm() / reference.norm()),
                "runs": args.runs,
            }
        )
        print(f"{name}: {json.dumps(results[-1])}", file=sys.stderr)
    # The per-chunk work around the UNet: VAE both ways and the audio encoder.
    faces = torch.rand(CHUNK, 3, resolution, resolution, generator=generator).to(device, dtype) * 2 - 1
    stage: dict[str, list[float]] = {"vae_encode_x2": [], "vae_decode": [], "whisper_1s": []}
    speech = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    whisper = whisper.to(device)
    for _ in range(args.runs + 1):
        with torch.no_grad():
            mark = time.perf_counter()
            encoded = [vae.encode(faces).latent_dist.sample() for _ in range(2)]
            _sync(device)
            stage["vae_encode_x2"].append(time.perf_counter() - mark)
            mark = time.perf_counter()
            vae.decode(encoded[0])
            _sync(device)
            stage["vae_decode"].append(time.perf_counter() - mark)
            mark = time.perf_counter()
            feature_chunks(audio_features(whisper, speech))
            _sync(device)
            stage["whisper_1s"].append(time.perf_counter() - mark)
    stages = {k: round(statistics.median(v[1:]), 4) for k, v in stage.items()}
    report = {
        "machine": torch.cuda.get_device_name(device)
        if cuda
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "size": args.size,
        "dtype": str(dtype).removeprefix("torch."),
        "resolution": resolution,
        "steps": args.steps,
        "guidance_scale": args.guidance,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "load_seconds": round(load_seconds, 2),
        "variants": results,
        "other_stages_median_seconds": stages,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"{report['machine']}, torch {torch.__version__}, {args.size} LatentSync UNet "
        f"({report['unet_parameters'] / 1e6:.1f} M parameters, {report['dtype']}), {resolution} px, "
        f"{args.steps} steps, guidance {args.guidance}, one 16-frame chunk, median of {args.runs}\n"
    )
    print("| variant | s / chunk | s / step | x real time | first-run extra s | peak GiB | latent error vs plain |")
    print("|---|---|---|---|---|---|---|")
    for v in results:
        error = "-" if v["latent_relative_error"] is None else f"{v['latent_relative_error']:.2e}"
        print(
            f"| {v['name']} | {v['median_chunk_seconds']} | {v['median_step_seconds']} | {v['realtime_factor']} "
            f"| {v['first_run_extra_seconds']} | {v['peak_gib'] if v['peak_gib'] is not None else '-'} | {error} |"
        )
    print("\nPer chunk besides the UNet (median s): " + ", ".join(f"{k} {v}" for k, v in stages.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
