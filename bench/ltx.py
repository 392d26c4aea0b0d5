"""`python -m bench.ltx` (`make bench`): LTX-Video three ways, in one process, on the same inputs.

(a) `plain`: diffusers' LTXPipeline eager, nothing changed; (b) `exact`: the backend's default
mode; (c) `fast`: its opt-in mode, also with each of its switches alone (`fast-cache`,
`fast-fp8`) with the PSNR of their decoded frames against exact mode. For each: median seconds
per denoising step, the whole video split into text encoding, denoising, VAE decode and MP4
encode, the first request's extra cost (compile, warm-up), load time, peak GPU memory, and for
(b) and (c) the relative error of the final latents against (a). Weights are random and seeded
(compute does not depend on their values; real weights cannot be downloaded everywhere):
`--size full` builds diffusers' default
LTX-Video 2B transformer and VAE, `--size tiny` the test model. The text encoder is a one-layer
stand-in with T5-XXL's width (the reference figures exclude text encoding). `--recipe` picks the
checkpoint layout and recipe: 0.9.1 (default: LTXPipeline, its VAE), 0.9.5 (LTXConditionPipeline,
the 0.9.5+ VAE) or distilled (the same, 8 fixed steps without guidance, whatever --steps says).

    python -m bench.ltx                                    # full size on CUDA, tiny on a CPU
    python -m bench.ltx --height 512 --width 768 --frames 121 --steps 50
    python -m bench.ltx --model-path /var/lib/videogen/weights/ltx-video/0.9.1   # real weights
    python -m bench.ltx --recipe distilled --variants plain,exact,fast   # the distilled recipe
    python -m bench.ltx --plan                             # the L4 memory plan, from the meta device
    python -m bench.ltx --offload-copy                     # the text encoder's visit: pageable vs pinned

Each variant runs in a fresh process (`--no-isolate` to share one), so one variant's compiled code,
caches or memory do not flatter or burden the next. Spread: p50 and p90 over the runs after the
first (at least 5 runs by default); memory: peak allocated and peak reserved.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
import transformers

from models.base import BackendOptions, GenerationRequest
from models.ltx.backend import LTXVideoBackend
from models.ltx.optimize import OptimizeOptions
from models.ltx.shapes import VAE_091, VAE_095
from models.ltx.tiny import SCHEDULER_CONFIG, SCHEDULER_CONFIG_095, build_tiny_pipeline, build_tokenizer
from models.mp4 import encode_mp4

VARIANTS = {
    "plain": OptimizeOptions(mode="exact", compile="off", attention_backend="off", fuse_qkv="off"),
    "exact": OptimizeOptions(mode="exact"),
    # Exact mode with CUDA graphs (compile mode reduce-overhead); opt-in until measured.
    "exact-graphs": OptimizeOptions(mode="exact", cuda_graphs="on"),
    # Fast mode's switches one at a time, then together, so an operator can choose.
    "fast-cache": OptimizeOptions(mode="fast", fp8=False),
    "fast-fp8": OptimizeOptions(mode="fast", cache_threshold=0.0),
    "fast": OptimizeOptions(mode="fast"),
}


RECIPES = ("0.9.1", "0.9.5", "distilled")


def build_full_pipeline(seed: int = 0, recipe: str = "0.9.1") -> Any:
    """Diffusers' default LTX-Video (2B) transformer and `recipe`'s VAE (0.9.1's, or 0.9.5's for
    0.9.5 and distilled) in its pipeline, seeded random weights."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = LTXVideoTransformer3DModel()
        later = recipe != "0.9.1"
        vae = AutoencoderKLLTXVideo(**(VAE_095 if later else VAE_091))
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer),
                d_model=transformer.config.caption_channels,
                d_kv=64,
                d_ff=10240,
                num_layers=1,
                num_heads=64,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
    for module in (transformer, vae, text_encoder):
        module.eval()
    pipeline = LTXConditionPipeline if later else LTXPipeline
    return pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**(SCHEDULER_CONFIG_095 if later else SCHEDULER_CONFIG)),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )


class _Prebuilt(LTXVideoBackend):
    name = "ltx-video-bench"

    def __init__(self, options: BackendOptions, size: str, recipe: str = "0.9.1") -> None:
        super().__init__(options)
        self.size, self.bench_recipe = size, recipe

    def _variant(self) -> str | None:
        if self.options.model_path:
            return super()._variant()
        return "distilled" if self.bench_recipe == "distilled" else None

    def _build_pipeline(self) -> Any:
        if self.options.model_path:  # real weights: the served backend's own loading
            return super()._build_pipeline()
        if self.size == "full":
            pipe = build_full_pipeline(recipe=self.bench_recipe)
        else:
            pipe = build_tiny_pipeline(
                layers=2, noisy_vae=self.bench_recipe == "0.9.1", later=self.bench_recipe != "0.9.1"
            )
        return pipe.to(dtype=self.dtype)


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[8] if len(values) > 1 else values[0]


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures depend on: the card, its driver, CUDA, cuDNN and the libraries."""
    found: dict[str, Any] = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "driver": None,
    }
    if device.type == "cuda":
        try:
            import pynvml

            pynvml.nvmlInit()
            found["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as exc:  # report it rather than fail the benchmark
            found["driver"] = f"unknown ({type(exc).__name__})"
    return found


@dataclass
class Result:
    name: str
    load_seconds: float = 0.0
    runs: list[dict[str, float]] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    peak_gib: float | None = None
    reserved_gib: float | None = None
    stage_peak_gib: dict[str, float] = field(default_factory=dict)
    latent_error: float | None = None
    psnr_vs_exact: float | None = None
    optimizations: list[str] = field(default_factory=list)
    recipe: str = ""

    def summary(self) -> dict[str, Any]:
        warm = self.runs[1:] or self.runs
        median = {key: statistics.median(run[key] for run in warm) for key in warm[0]}
        return {
            "name": self.name,
            "recipe": self.recipe,
            "load_seconds": round(self.load_seconds, 3),
            "median_step_seconds": round(statistics.median(self.step_seconds), 4),
            "p90_step_seconds": round(_p90(self.step_seconds), 4),
            "median_video_seconds": {k: round(v, 3) for k, v in median.items()},
            "p90_video_seconds": round(_p90([run["total"] for run in warm]), 3),
            "first_request_extra_seconds": round(self.runs[0]["total"] - median["total"], 3),
            "peak_gib": self.peak_gib,
            "reserved_gib": self.reserved_gib,
            "stage_peak_gib": self.stage_peak_gib,
            "latent_relative_error": self.latent_error,
            "psnr_db_vs_exact": self.psnr_vs_exact,
            "optimizations": self.optimizations,
            "runs": len(self.runs),
        }


def run_variant(name: str, args: argparse.Namespace, request: GenerationRequest, device: torch.device) -> Any:
    options = BackendOptions(device=str(device), dtype=args.dtype, optimize=VARIANTS[name], model_path=args.model_path)
    backend = _Prebuilt(options, args.size, args.recipe)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    backend.load()
    result = Result(name, load_seconds=time.perf_counter() - started)
    result.optimizations = [f"{o.name}={o.status}" for o in backend.optimizations]
    result.recipe = backend.recipe.summary()
    stamps: list[float] = []

    def on_step(step: int, total: int) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    frames = None
    for _ in range(args.runs):
        stamps.clear()
        started = time.perf_counter()
        timings: dict[str, float] = {}
        frames = backend.render(request, on_step, timings)
        with tempfile.TemporaryDirectory() as scratch:
            mp4_started = time.perf_counter()
            encode_mp4(frames, request.fps, Path(scratch) / "bench.mp4")
            timings["encode_mp4"] = time.perf_counter() - mp4_started
        run = {k: timings[k] for k in ("encode_prompt", "denoise", "decode", "to_frames", "encode_mp4")}
        run["total"] = time.perf_counter() - started
        result.runs.append(run)
        result.step_seconds += [b - a for a, b in itertools.pairwise(stamps)]
    if device.type == "cuda":
        result.reserved_gib = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
        result.peak_gib = round(max(backend.last_stage_peaks.values(), default=0.0), 2)
        result.stage_peak_gib = {k: round(v, 2) for k, v in backend.last_stage_peaks.items()}
    assert backend.last_latents is not None
    latents = backend.last_latents.float().cpu()
    del backend
    return result, latents, frames


def _child(args: argparse.Namespace, request: GenerationRequest, device: torch.device) -> int:
    """One variant in this (fresh) process; its summary, latents and frames into --dump."""
    assert args.dump is not None
    result, latents, frames = run_variant(args.only, args, request, device)
    (args.dump / f"{args.only}.json").write_text(json.dumps(result.__dict__))
    torch.save(latents, args.dump / f"{args.only}.pt")
    np.save(args.dump / f"{args.only}.npy", frames)
    return 0


def _isolated(name: str, args: argparse.Namespace) -> Any:
    """run_variant in a child process, so no compiled code, cache or memory carries over."""
    with tempfile.TemporaryDirectory() as dump:
        argv = [sys.executable, "-m", "bench.ltx", "--only", name, "--dump", dump, "--size", args.size]
        argv += ["--height", str(args.height), "--width", str(args.width), "--frames", str(args.frames)]
        argv += ["--steps", str(args.steps), "--guidance", str(args.guidance), "--runs", str(args.runs)]
        argv += ["--dtype", args.dtype, "--recipe", args.recipe]
        if args.model_path:
            argv += ["--model-path", args.model_path]
        if args.memory_cap_gib is not None:
            argv += ["--memory-cap-gib", str(args.memory_cap_gib)]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"variant {name} failed in its process: {done.stderr.strip()[-2000:]}")
        folder = Path(dump)
        result = Result(**json.loads((folder / f"{name}.json").read_text()))
        return result, torch.load(folder / f"{name}.pt"), np.load(folder / f"{name}.npy")


def print_plan(out: Path) -> int:
    """Weights per component from the real configurations built on the meta device, and what each
    stage holds on the card, against an L4's 22 GiB budget, with the text-encoder decision."""
    from models.ltx.backend import WORKING_RESERVE_BYTES, text_encoder_must_wait_on_host
    from models.ltx.recipes import UnsupportedCheckpoint, fits_on_card
    from models.ltx.shapes import TRANSFORMER_2B, TRANSFORMER_13B, VAE_091, VAE_095, on_meta, parameters

    gib = 2**30
    components = {
        "T5-XXL encoder (24 layers, d_model 4096)": on_meta("t5"),
        "transformer 2B (28 blocks, 32 x 64)": on_meta("transformer"),
        "VAE 0.9.1 (timestep-conditioned, noise-injecting decoder)": on_meta("vae", VAE_091),
    }
    params = {name: parameters(module) for name, module in components.items()}
    weights = {name: 2 * count for name, count in params.items()}  # bf16
    t5, transformer, vae = weights.values()
    l4 = 23_034 * 2**20
    offload = text_encoder_must_wait_on_host(l4, sum(weights.values()))
    resident_t5 = 0 if offload else t5
    stages = {
        "encode prompt": t5 + transformer + vae,
        "denoise (weights; activations well under 1 GiB)": resident_t5 + transformer + vae,
        "decode (weights + the working reserve)": resident_t5 + transformer + vae + WORKING_RESERVE_BYTES,
    }
    print("| component | parameters | bf16 GiB |\n|---|---|---|")
    for name, count in params.items():
        print(f"| {name} | {count / 1e9:.3f} B | {weights[name] / gib:.2f} |")
    print(f"\nL4 (22 GiB budget): text encoder {'waits on the host' if offload else 'resident'}\n")
    print("| stage | on the card GiB | within 22 GiB |\n|---|---|---|")
    for name, size in stages.items():
        print(f"| {name} | {size / gib:.2f} | {'yes' if size <= 22 * gib else 'NO'} |")
    families = {
        "2B with the 0.9.1 VAE": (TRANSFORMER_2B, VAE_091),
        "2B with the 0.9.5+ VAE": (TRANSFORMER_2B, VAE_095),
        "13B with the 0.9.5+ VAE (0.9.7, 0.9.8)": (TRANSFORMER_13B, VAE_095),
    }
    verdicts: dict[str, str] = {}
    for name, (transformer_config, vae_config) in families.items():
        try:
            fits_on_card(transformer_config, vae_config, l4, WORKING_RESERVE_BYTES)
            verdicts[name] = "served"
        except UnsupportedCheckpoint as refused:
            verdicts[name] = f"refused: {refused}"
    print("\nOn an L4, per checkpoint family (transformer + VAE + working reserve; T5 can wait on the host):")
    for name, verdict in verdicts.items():
        print(f"- {name}: {verdict}")
    plan = {
        "l4_checkpoints": verdicts,
        "parameters": params,
        "bf16_gib": {k: round(v / gib, 3) for k, v in weights.items()},
        "l4_text_encoder_offloaded": offload,
        "stages_gib": {k: round(v / gib, 2) for k, v in stages.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(plan, indent=1) + "\n")
    return 0


def offload_copy(out: Path, gib: float, runs: int) -> int:
    """The text encoder's visit to the card when it waits on the host, per request: before, `.to(cuda)`
    then `.to("cpu")` (both ways, pageable memory); now `HostResident` (one way, pinned, no copy
    back). `gib` of bf16 weights in T5-XXL-like 64 MiB tensors (8.87 for T5-XXL's encoder); on a CPU
    the same code runs host to host, which only checks it."""
    from models.ltx.offload import HostResident

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = max(1, round(gib * 2**30 / (32 * 2**20 * 2)))
    module = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.zeros(32 * 2**20, dtype=torch.bfloat16), requires_grad=False) for _ in range(count)]
    )
    size = sum(p.numel() * p.element_size() for p in module.parameters())

    def synced(action: Any) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        action()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    def round_trip() -> None:
        module.to(device)
        module.to("cpu")

    pageable = [synced(round_trip) for _ in range(runs)]
    host = HostResident(module, device)

    def visit() -> None:
        with host.on_device():
            if device.type == "cuda":
                torch.cuda.synchronize(device)

    pinned = [synced(visit) for _ in range(runs)]
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (host to host)",
        "gib": round(size / 2**30, 3),
        "runs": runs,
        "pageable_round_trip_seconds": {"p50": round(statistics.median(pageable), 4), "p90": round(_p90(pageable), 4)},
        "pinned_visit_seconds": {"p50": round(statistics.median(pinned), 4), "p90": round(_p90(pinned), 4)},
    }
    print(
        f"| {report['device']}, {report['gib']} GiB | p50 s | p90 s |\n|---|---|---|\n"
        f"| .to(device) + .to(cpu), pageable | {report['pageable_round_trip_seconds']['p50']} "
        f"| {report['pageable_round_trip_seconds']['p90']} |\n"
        f"| HostResident visit, pinned{'' if host.pinned else ' (not pinned: CPU)'} "
        f"| {report['pinned_visit_seconds']['p50']} | {report['pinned_visit_seconds']['p90']} |"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def psnr(reference: Any, frames: Any) -> float:
    """Peak signal-to-noise ratio of decoded uint8 frames, in dB (inf when identical)."""
    mse = float(((reference.astype("float64") - frames.astype("float64")) ** 2).mean())
    return float("inf") if mse == 0 else round(10 * math.log10(255**2 / mse), 2)


def markdown(report: dict[str, Any]) -> str:
    rows = [
        "| variant | s/step p50 (vs plain) | s/step p90 | video s p50 | video s p90 | encode prompt | denoise "
        "| decode | MP4 | first request +s | load s | peak GiB (reserved) | latent error vs plain | PSNR vs exact (dB) "
        "| switches |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    plain_step = report["variants"][0]["median_step_seconds"]
    for v in report["variants"]:
        m = v["median_video_seconds"]
        speedup = plain_step / v["median_step_seconds"] if v["median_step_seconds"] else float("nan")
        error = "-" if v["latent_relative_error"] is None else f"{v['latent_relative_error']:.2e}"
        quality = "-" if v["psnr_db_vs_exact"] is None else str(v["psnr_db_vs_exact"])
        peak = "-" if v["peak_gib"] is None else f"{v['peak_gib']} ({v['reserved_gib']})"
        switches = ", ".join(v["optimizations"])
        rows.append(
            f"| {v['name']} | {v['median_step_seconds']} ({speedup:.2f}x) | {v['p90_step_seconds']} | {m['total']} "
            f"| {v['p90_video_seconds']} | {m['encode_prompt']} | {m['denoise']} | {m['decode']} | {m['encode_mp4']} "
            f"| {v['first_request_extra_seconds']} | {v['load_seconds']} | {peak} | {error} | {quality} | {switches} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ltx", description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--size", choices=["full", "tiny"], default="full" if cuda else "tiny")
    parser.add_argument("--height", type=int, default=704 if cuda else 256)
    parser.add_argument("--width", type=int, default=1216 if cuda else 384)
    parser.add_argument("--frames", type=int, default=121 if cuda else 25)
    parser.add_argument("--steps", type=int, default=50 if cuda else 20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5, help="per variant; the first also gives the first-request cost")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="plain must come first (the reference)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--recipe", choices=RECIPES, default="0.9.1", help="random-weight layout and recipe (ignored with --model-path)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/ltx.json"))
    parser.add_argument(
        "--memory-cap-gib",
        type=float,
        default=None,
        help="CUDA: cap this process with torch.cuda.set_per_process_memory_fraction (22 for the L4 plan)",
    )
    parser.add_argument("--model-path", default=None, help="a diffusers LTX-Video directory: real weights")
    parser.add_argument(
        "--isolate", action=argparse.BooleanOptionalAction, default=True, help="each variant in a fresh process"
    )
    parser.add_argument("--plan", action="store_true", help="print the L4 memory plan (meta device) and exit")
    parser.add_argument(
        "--offload-copy",
        type=float,
        nargs="?",
        const=8.87,
        default=None,
        metavar="GIB",
        help="time the text encoder's visit to the card (pageable round trip vs pinned), GIB of weights "
        "(default T5-XXL's 8.87), and exit",
    )
    parser.add_argument("--only", help=argparse.SUPPRESS)  # a child process: this variant, results into --dump
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plan:
        return print_plan(args.out.with_name("ltx_plan.json"))
    if args.offload_copy is not None:
        return offload_copy(args.out.with_name("ltx_offload_copy.json"), args.offload_copy, max(args.runs, 5))
    device = torch.device("cuda" if cuda else "cpu")
    if args.memory_cap_gib is not None and cuda:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total), device)
        print(f"memory capped at {args.memory_cap_gib} GiB of {total / 2**30:.1f}", file=sys.stderr)
    request = GenerationRequest(
        prompt="a red fox running through snow, cinematic",
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
    )
    if args.only:
        return _child(args, request, device)
    results, reference, exact_frames = [], None, None
    for name in args.variants.split(","):
        result, latents, frames = _isolated(name, args) if args.isolate else run_variant(name, args, request, device)
        if reference is None:
            reference = latents
        else:
            result.latent_error = float((latents - reference).norm() / reference.norm())
        if name == "exact":
            exact_frames = frames
        elif exact_frames is not None and name != "plain":
            result.psnr_vs_exact = psnr(exact_frames, frames)
        results.append(result.summary())
        print(f"{name}: {json.dumps(results[-1])}", file=sys.stderr)
    report = {
        "machine": torch.cuda.get_device_name(device)
        if cuda
        else f"CPU ({platform.processor() or platform.machine()})",
        "versions": environment(device),
        "isolated": args.isolate,
        "weights": args.model_path or f"seeded random ({args.size})",
        "size": args.size,
        "recipe": results[0]["recipe"],
        "memory_cap_gib": args.memory_cap_gib if cuda else None,
        "request": {
            "height": args.height,
            "width": args.width,
            "frames": args.frames,
            "steps": args.steps,
            "guidance_scale": args.guidance,
        },
        "variants": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    versions = report["versions"]
    print(
        f"{report['machine']}, driver {versions['driver'] or '-'}, CUDA {versions['cuda'] or '-'}, "
        f"cuDNN {versions['cudnn'] or '-'}, torch {versions['torch']}, diffusers {versions['diffusers']}, "
        f"transformers {versions['transformers']}; {report['weights']} weights, recipe {report['recipe']}, "
        f"{args.height}x{args.width}x{args.frames}, {args.steps} steps, guidance {args.guidance}, "
        f"{args.runs} runs per variant{', each in its own process' if args.isolate else ''}\n"
    )
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
