"""Speedups for the `ltx-video` backend, each tried and kept only if the model still runs.

Exact mode (the default) keeps the output within bf16 noise of the plain pipeline: the fastest
attention backend the card supports, fused QKV projections, and regional compilation of the
repeated transformer block (compile artefacts cached on local disk). Fast mode adds speedups
that trade measured fidelity: first-block caching, and fp8 matmuls when torchao is installed.

Every step is applied, then probed with a tiny generation; one that raises (an unsupported
kernel, a compiler error, a missing library) is undone, logged and reported, and the server
starts without it. Nothing here is required for correctness.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("models.ltx.optimize")

# Tried in order on CUDA; the first that runs is kept. cuDNN's fused attention and flash
# attention both cover head dim 64; "native" is PyTorch's SDPA (its own dispatch).
ATTENTION_BACKENDS = ("_native_cudnn", "flash", "native")


@dataclass(frozen=True, kw_only=True)
class OptimizeOptions:
    mode: str = "exact"  # exact | fast
    compile: str = "auto"  # auto (on CUDA) | on | off
    attention_backend: str = "auto"  # auto (try ATTENTION_BACKENDS on CUDA) | off | a backend name
    # NOTE: off by default: LTX's attention processor computes q, k, v with to_q/to_k/to_v and
    # never calls a fused projection, which would only add a third of the attention weights
    # (1.31 GiB bf16 at 2B). `on` stays for measuring; `auto` means off.
    fuse_qkv: str = "off"  # off | on
    cache_threshold: float = 0.05  # fast mode: first-block cache threshold (0 turns it off)
    fp8: bool = True  # fast mode: fp8 matmuls through torchao, when installed and on CUDA
    compile_cache_dir: Path | None = None
    # CUDA graphs through torch.compile's "reduce-overhead" mode: replays each compiled block's
    # kernels without launch overhead; shapes are fixed per request size (a new size records
    # new graphs). Opt-in until measured on a GPU.
    cuda_graphs: str = "off"  # on | off (CUDA only; needs compile)


@dataclass
class Step:
    name: str
    status: str  # on | off | failed | unavailable
    detail: str = ""


def _wanted(setting: str, device: torch.device) -> bool:
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def optimize(pipe: Any, device: torch.device, options: OptimizeOptions, probe: Callable[[], None]) -> list[Step]:
    """Apply what `options` asks for to `pipe.transformer`; return what happened to each."""
    transformer = pipe.transformer
    report: list[Step] = []

    def attempt(name: str, enable: Callable[[], object], undo: Callable[[], object]) -> bool:
        try:
            enable()
        except Exception as exc:
            report.append(Step(name, "unavailable", f"{type(exc).__name__}: {exc}"))
            log.info("optimisation unavailable", extra={"optimisation": name, "error": str(exc)})
            return False
        try:
            probe()
        except Exception as exc:
            try:
                undo()
            except Exception as undo_exc:  # still broken: say so; the probe below decides
                log.error("could not undo optimisation", extra={"optimisation": name, "error": str(undo_exc)})
            report.append(Step(name, "failed", f"{type(exc).__name__}: {exc}"))
            log.warning("optimisation failed its probe; continuing without it", extra={"optimisation": name})
            return False
        report.append(Step(name, "on"))
        log.info("optimisation on", extra={"optimisation": name})
        return True

    # Attention backend.
    if options.attention_backend != "off" and (options.attention_backend != "auto" or device.type == "cuda"):
        names = ATTENTION_BACKENDS if options.attention_backend == "auto" else (options.attention_backend,)
        for backend in names:

            def use(name: str = backend) -> None:
                transformer.set_attention_backend(name)

            if attempt(f"attention:{backend}", use, lambda: _reset_attention(transformer)):
                break
    else:
        report.append(Step("attention", "off", "PyTorch SDPA as diffusers chooses"))

    # Fused QKV projections (one GEMM instead of three).
    if options.fuse_qkv == "on":
        attempt("fuse_qkv", transformer.fuse_qkv_projections, transformer.unfuse_qkv_projections)
    else:
        report.append(Step("fuse_qkv", "off"))

    # Fast mode: fp8 matmuls, then first-block caching.
    cached = False
    if options.mode == "fast":
        if options.fp8 and device.type == "cuda":
            attempt("fp8", lambda: _fp8(transformer), lambda: None)
        else:
            report.append(Step("fp8", "off", "needs CUDA" if options.fp8 else "disabled"))
        if options.cache_threshold > 0:
            from diffusers import FirstBlockCacheConfig

            cached = attempt(
                f"first_block_cache:{options.cache_threshold}",
                lambda: transformer.enable_cache(FirstBlockCacheConfig(threshold=options.cache_threshold)),
                transformer.disable_cache,
            )

    # Regional compilation: the repeated block compiled once and reused for every layer.
    if _wanted(options.compile, device):
        if options.compile_cache_dir is not None:
            options.compile_cache_dir.mkdir(parents=True, exist_ok=True)
            # Inductor reads its cache location from the environment; set it before compiling.
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(options.compile_cache_dir))
        # NOTE: the first-block cache's hook decides per step in a compiler-disabled function; a
        # fullgraph compile refuses it, so with the cache on the blocks compile with that one break.
        whole = not cached
        graphs = options.cuda_graphs == "on" and device.type == "cuda"
        if graphs and attempt(
            "compile_repeated_blocks:cuda_graphs",
            lambda: transformer.compile_repeated_blocks(fullgraph=whole, mode="reduce-overhead"),
            lambda: _uncompile(transformer),
        ):
            return report
        attempt(
            "compile_repeated_blocks",
            lambda: transformer.compile_repeated_blocks(fullgraph=whole),
            lambda: _uncompile(transformer),
        )
    else:
        report.append(Step("compile", "off"))
    return report


def _reset_attention(transformer: Any) -> None:
    # set_attention_backend also sets diffusers' global active backend, which reset does not undo.
    transformer.set_attention_backend("native")
    transformer.reset_attention_backend()


def _fp8(transformer: Any) -> None:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_  # optional dependency

    quantize_(transformer, Float8DynamicActivationFloat8WeightConfig())


def _uncompile(module: torch.nn.Module) -> None:
    for sub in module.modules():
        if getattr(sub, "_compiled_call_impl", None) is not None:
            sub._compiled_call_impl = None
