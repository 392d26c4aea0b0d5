"""ltx-video speedups at tiny size on the CPU: exact mode stays exact, fast-mode switches do what
they claim, a speedup that breaks the model is undone, the text encoder leaves the device."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import torch

from models.base import BackendOptions, GenerationRequest
from models.ltx.optimize import OptimizeOptions, optimize
from models.ltx.tiny import LTXVideoTinyBackend, build_tiny_pipeline

REQUEST = GenerationRequest(prompt="a lighthouse at dusk", height=64, width=96, num_frames=17, num_inference_steps=6)


class ThreeBlocks(LTXVideoTinyBackend):
    """The tiny model with three transformer blocks (block caching needs more than one)."""

    later = False  # a 0.9.5-style checkpoint (LTXConditionPipeline)

    def _build_pipeline(self) -> Any:
        return build_tiny_pipeline(layers=3, later=self.later)


class ThreeBlocksLater(ThreeBlocks):
    later = True


def _backend(later: bool = False, **optimize: Any) -> LTXVideoTinyBackend:
    kind = ThreeBlocksLater if later else ThreeBlocks
    backend = kind(BackendOptions(device="cpu", optimize=OptimizeOptions(**optimize)))
    backend.load()
    return backend


def _latents(backend: LTXVideoTinyBackend) -> torch.Tensor:
    backend.render(REQUEST, lambda step, total: None)
    assert backend.last_latents is not None
    return backend.last_latents.float().clone()


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def test_exact_mode_matches_the_plain_pipeline() -> None:
    plain = _latents(_backend(attention_backend="off", fuse_qkv="off", compile="off"))
    exact = _backend(attention_backend="native", fuse_qkv="on", compile="off")
    assert [(o.name, o.status) for o in exact.optimizations] == [
        ("attention:native", "on"),
        ("fuse_qkv", "on"),
        ("compile", "off"),
    ]
    assert _relative_error(plain, _latents(exact)) < 1e-5  # fp32 here; the GPU bound is bf16 noise


def test_first_block_cache_skips_blocks_and_changes_the_output_measurably() -> None:
    def block_calls(backend: LTXVideoTinyBackend) -> int:
        calls = []
        assert backend.pipe is not None
        # The cache hooks wrap the block's forward, so count a layer inside it: the attention.
        last = backend.pipe.transformer.transformer_blocks[-1].attn1
        handle = last.register_forward_hook(lambda *args: calls.append(1))
        try:
            backend.render(REQUEST, lambda step, total: None)
        finally:
            handle.remove()
        return len(calls)

    exact = _backend(attention_backend="off", fuse_qkv="off")
    # A huge threshold makes every step after the first reuse the cached residual.
    fast = _backend(mode="fast", attention_backend="off", fuse_qkv="off", cache_threshold=1e9)
    assert ("first_block_cache:1000000000.0", "on") in [(o.name, o.status) for o in fast.optimizations]
    assert ("fp8", "off") in [(o.name, o.status) for o in fast.optimizations]  # CUDA only
    exact_calls, fast_calls = block_calls(exact), block_calls(fast)
    assert fast_calls < exact_calls
    error = _relative_error(_latents(exact), _latents(fast))
    assert 0 < error < 10  # changed, and measurable (the benchmark reports this figure)


def test_a_speedup_that_breaks_the_model_is_undone_and_reported() -> None:
    backend = _backend(attention_backend="_native_cudnn")  # selectable, but no cuDNN attention on a CPU
    (attention, *_) = backend.optimizations
    assert (attention.name, attention.status) == ("attention:_native_cudnn", "failed")
    assert "No viable backend" in attention.detail
    frames = backend.render(REQUEST, lambda step, total: None)  # still serves
    assert frames.shape == (17, 64, 96, 3)
    unknown = _backend(attention_backend="no-such-backend").optimizations[0]
    assert unknown.status == "unavailable"


def test_text_encoder_waits_off_the_device_while_the_transformer_runs() -> None:
    backend = LTXVideoTinyBackend(BackendOptions(device="cpu", text_encoder_offload="on"))
    backend.load()
    assert backend.pipe is not None and backend.text_encoder_host is not None
    pipe, host = backend.pipe, backend.text_encoder_host
    events: list[str] = []
    visit = host.on_device

    @contextmanager
    def recorded() -> Iterator[Any]:
        events.append("on device")
        with visit() as module:
            yield module
        events.append("back on the host")

    host.on_device = recorded  # type: ignore[method-assign]
    pipe.text_encoder.register_forward_hook(lambda *args: events.append("encode"))
    pipe.transformer.register_forward_hook(lambda *args: events.append("transformer"))
    backend.render(REQUEST, lambda step, total: None)
    first_transformer = events.index("transformer")
    assert events[: events.index("back on the host") + 1] == ["on device", "encode", "encode", "back on the host"]
    assert events.index("back on the host") < first_transformer  # off the device before denoising
    assert events.count("on device") == 1


def test_a_host_resident_module_visits_the_device_without_a_copy_back() -> None:
    """The life cycle, on the CPU standing in for the card: inside, the module runs on copies of its
    weights; after, it holds the very host tensors it had (same storage: nothing was copied back,
    nothing re-allocated on the host), also after a failure. (Pinning is CUDA only.)"""
    from models.ltx.offload import HostResident

    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8)).eval()
    host = HostResident(module, torch.device("cpu"))
    tensors = [*module.parameters(), *module.buffers()]
    before = [t.data_ptr() for t in tensors]
    assert host.host_bytes == sum(t.numel() * t.element_size() for t in tensors) and not host.pinned
    x = torch.randn(3, 4)
    expected = module(x)
    with host.on_device() as visiting:
        assert all(t.data_ptr() != p for t, p in zip(tensors, before, strict=True))  # the device copies
        assert torch.equal(visiting(x), expected)
    assert [t.data_ptr() for t in tensors] == before
    with pytest.raises(RuntimeError, match="boom"), host.on_device():
        raise RuntimeError("boom")
    assert [t.data_ptr() for t in tensors] == before


def test_fused_qkv_stays_off_by_default_even_on_cuda_because_ltx_never_calls_it() -> None:
    """LTX's attention processor computes q, k and v with to_q/to_k/to_v; a fused projection
    would add a third of the attention weights again (1.31 GiB bf16 at 2B) and never run."""
    backend = _backend(attention_backend="off", fuse_qkv="on", compile="off")
    assert backend.pipe is not None
    fused = [m.to_qkv for m in backend.pipe.transformer.modules() if hasattr(m, "to_qkv")]
    assert fused, "fuse_qkv=on made no fused projection to watch"
    calls: list[int] = []
    handles = [layer.register_forward_hook(lambda *args: calls.append(1)) for layer in fused]
    try:
        backend.render(REQUEST, lambda step, total: None)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == []
    # The default, on the device where `auto` used to turn it on: off, with no fused weights made.
    pipe = build_tiny_pipeline(layers=2)
    report = optimize(pipe, torch.device("cuda"), OptimizeOptions(compile="off", attention_backend="off"), lambda: None)
    assert ("fuse_qkv", "off") in [(step.name, step.status) for step in report]
    assert not any(hasattr(m, "to_qkv") for m in pipe.transformer.modules())


@pytest.mark.parametrize("later", [False, True], ids=["LTXPipeline", "LTXConditionPipeline"])
def test_fast_mode_serves_other_sizes_after_an_aborted_generation(later: bool) -> None:
    """The first-block cache keeps per-call state that diffusers resets only at the end of a
    completed call; an aborted one (cancel, timeout) must not poison the next request. Both
    pipelines (0.9.5+ runs through the condition pipeline)."""
    fast = _backend(later, mode="fast", attention_backend="off", fuse_qkv="off", compile="off", cache_threshold=1e9)
    assert ("first_block_cache:1000000000.0", "on") in [(o.name, o.status) for o in fast.optimizations]
    assert fast.recipe.conditioned is later

    class Aborted(Exception):
        pass

    def abort_at_two(step: int, total: int) -> None:
        if step == 2:
            raise Aborted

    with pytest.raises(Aborted):
        fast.render(REQUEST, abort_at_two)
    other = GenerationRequest(prompt="a lighthouse at dusk", height=96, width=64, num_frames=9, num_inference_steps=4)
    frames = fast.render(other, lambda step, total: None)
    assert frames.shape == (9, 96, 64, 3)


def test_the_same_seed_gives_the_same_video_with_a_noise_injecting_vae() -> None:
    """The 0.9.1 VAE's decoder injects noise (and is timestep-conditioned); that noise must come
    from the request's seed, not from whatever the global RNG holds."""

    class NoisyVae(LTXVideoTinyBackend):
        def _build_pipeline(self) -> Any:
            return build_tiny_pipeline(noisy_vae=True)

    backend = NoisyVae(BackendOptions(device="cpu", optimize=OptimizeOptions(compile="off", attention_backend="off")))
    backend.load()
    assert backend.pipe is not None and backend.pipe.vae.config.timestep_conditioning
    first = backend.render(REQUEST, lambda step, total: None)
    torch.randn(1000)  # other work moves the global RNG between two requests
    second = backend.render(REQUEST, lambda step, total: None)
    assert (first == second).all()
    other_seed = backend.render(replace(REQUEST, seed=REQUEST.seed + 1), lambda step, total: None)
    assert not (first == other_seed).all()


@pytest.mark.parametrize("later", [False, True], ids=["LTXPipeline", "LTXConditionPipeline"])
def test_no_user_request_compiles_after_load(later: bool) -> None:
    """The speedups' probe compiles the repeated block at one size; the first request of any other
    size (or without guidance: batch 1) used to compile again inside its own deadline (5.7 s here on
    the tiny model, minutes for the real one on a GPU). Load now settles the shapes as dynamic."""
    from torch._dynamo.utils import counters

    backend = _backend(later, attention_backend="off", fuse_qkv="off", compile="on")
    assert ("compile_repeated_blocks", "on") in [(o.name, o.status) for o in backend.optimizations]
    graphs = counters["stats"]["unique_graphs"]
    for request in (
        GenerationRequest(prompt="a", height=160, width=96, num_frames=25, num_inference_steps=2),
        GenerationRequest(prompt="b", height=64, width=64, num_frames=9, num_inference_steps=2, guidance_scale=1.0),
        GenerationRequest(prompt="c", height=128, width=160, num_frames=33, num_inference_steps=2, guidance_scale=1.0),
    ):
        backend.render(request, lambda step, total: None)
    assert counters["stats"]["unique_graphs"] == graphs


def test_fast_mode_compiles_the_blocks_around_the_first_block_cache() -> None:
    """The cache's hook decides per step through a compiler-disabled function, which a fullgraph
    compile refuses: fast mode used to fail the compile probe and run eager."""
    eager = _backend(mode="fast", attention_backend="off", compile="off", cache_threshold=0.05)
    compiled = _backend(mode="fast", attention_backend="off", compile="on", cache_threshold=0.05)
    steps = {o.name: (o.status, o.detail) for o in compiled.optimizations}
    assert steps["first_block_cache:0.05"][0] == "on"
    assert steps["compile_repeated_blocks"][0] == "on", steps
    assert _relative_error(_latents(eager), _latents(compiled)) < 1e-4
