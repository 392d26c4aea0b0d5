"""GpuRunner and NullRunner constructed directly, with an in-process fake backend (the seam:
load/generate on the runner's thread), no HTTP. The served behaviour is in test_runner.py."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from models.base import GenerationRequest, InputError, StepCallback, Video
from serve.core.runner import Canceled, GpuRunner, NullRunner, QueueFull, Task
from serve.errors import ServeError
from serve.obs.metrics import Metrics
from serve.schemas import Lifecycle

REQUEST = GenerationRequest(prompt="p", height=32, width=32, num_frames=9, num_inference_steps=3)


class FakeBackend:
    """Records what it was asked; each generation waits at its first step until released;
    `fail` makes the next generation raise it."""

    name, task = "fake", "text-to-video"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.generated: list[str] = []
        self.fail: BaseException | None = None
        self.threads: set[str] = set()

    def load(self) -> None:
        self.threads.add(threading.current_thread().name)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "revision": "r"}

    def generate(self, request: Any, on_step: StepCallback, *, output: Path) -> Video:
        self.threads.add(threading.current_thread().name)
        if request.prompt == "warm-up":
            return Video(path=output, fps=1, frames=0, width=0, height=0, bytes=0)
        self.release.wait(10)
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        for step in range(1, request.num_inference_steps + 1):
            on_step(step, request.num_inference_steps)
        self.generated.append(request.prompt)
        output.write_bytes(b"mp4")
        return Video(path=output, fps=1, frames=9, width=32, height=32, bytes=3, timings={"denoise": 0.1})


def _runner(backend: FakeBackend, **overrides: Any) -> GpuRunner:
    values: dict[str, Any] = {
        "backend": backend,
        "metrics": Metrics(),
        "queue_size": 1,
        "queue_timeout": 60,
        "generation_timeout": 60,
        "warmup": GenerationRequest(prompt="warm-up", height=32, width=32, num_frames=9, num_inference_steps=2),
    }
    values.update(overrides)
    return GpuRunner(**values)


def _task(tmp_path: Path, prompt: str = "p", **overrides: Any) -> Task:
    request = GenerationRequest(**{**REQUEST.__dict__, "prompt": prompt, **overrides})
    future = asyncio.get_running_loop().create_future()
    return Task(request=request, request_id=prompt, output=tmp_path / f"{prompt}.mp4", future=future)


async def _ready(runner: GpuRunner) -> None:
    runner.start()
    for _ in range(500):
        if runner.state is not Lifecycle.STARTING:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError


def test_loads_warms_and_generates_on_its_own_thread(tmp_path: Path) -> None:
    async def main() -> Video:
        backend = FakeBackend()
        runner = _runner(backend)
        await _ready(runner)
        backend.release.set()
        task = _task(tmp_path)
        runner.submit(task)
        video = await task.future
        runner.stop()
        assert backend.threads == {"gpu-runner"}
        return video

    video = asyncio.run(main())
    assert video.path.read_bytes() == b"mp4" and video.timings["queue"] >= 0


def test_a_full_queue_refuses_at_once_with_retry_after(tmp_path: Path) -> None:
    async def main() -> None:
        backend = FakeBackend()
        runner = _runner(backend, queue_size=1)
        await _ready(runner)
        running, waiting = _task(tmp_path, "a"), _task(tmp_path, "b")
        runner.submit(running)
        runner.submit(waiting)
        with pytest.raises(QueueFull) as raised:
            runner.submit(_task(tmp_path, "c"))
        assert (raised.value.code, raised.value.status) == ("busy", 503) and raised.value.retry_after >= 1
        backend.release.set()
        await asyncio.gather(running.future, waiting.future)
        runner.stop()
        assert backend.generated == ["a", "b"]

    asyncio.run(main())


def test_a_withdrawn_task_never_runs(tmp_path: Path) -> None:
    async def main() -> None:
        backend = FakeBackend()
        runner = _runner(backend, queue_size=2)
        await _ready(runner)
        first, second = _task(tmp_path, "first"), _task(tmp_path, "second")
        runner.submit(first)
        runner.submit(second)
        assert runner.withdraw(second) is True
        backend.release.set()
        await first.future
        with pytest.raises(Canceled):
            await second.future
        runner.stop()
        assert backend.generated == ["first"]

    asyncio.run(main())


def test_cancel_stops_at_the_next_step_and_the_next_task_runs(tmp_path: Path) -> None:
    async def main() -> None:
        backend = FakeBackend()
        runner = _runner(backend)
        await _ready(runner)
        doomed, after = _task(tmp_path, "doomed"), _task(tmp_path, "after")
        runner.submit(doomed)
        doomed.cancel.set()
        backend.release.set()
        with pytest.raises(Canceled):
            await doomed.future
        runner.submit(after)
        await after.future
        runner.stop()
        assert backend.generated == ["after"]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("raised", "code", "status", "state"),
    [
        (InputError("no_face_detected", "no face"), "no_face_detected", 422, Lifecycle.READY),
        (InputError("not_a_code", "x"), "internal_error", 500, Lifecycle.READY),
        (OSError(28, "No space left on device"), "storage_failed", 500, Lifecycle.READY),
        (RuntimeError("CUDA error: an illegal memory access"), "generation_failed", 500, Lifecycle.GPU_FAILED),
        (ValueError("bug"), "generation_failed", 500, Lifecycle.READY),
    ],
)
def test_failures_become_catalogued_errors(
    tmp_path: Path, raised: BaseException, code: str, status: int, state: Lifecycle
) -> None:
    async def main() -> GpuRunner:
        backend = FakeBackend()
        runner = _runner(backend)
        await _ready(runner)
        backend.fail = raised
        backend.release.set()
        task = _task(tmp_path)
        runner.submit(task)
        with pytest.raises(ServeError) as error:
            await task.future
        runner.stop()
        assert (error.value.code, error.value.status) == (code, status)
        return runner

    assert asyncio.run(main()).state is state


def test_a_failed_load_is_reported_not_raised() -> None:
    backend = FakeBackend()
    backend.load = lambda: (_ for _ in ()).throw(RuntimeError("weights missing"))  # type: ignore[method-assign]

    async def main() -> GpuRunner:
        runner = _runner(backend)
        await _ready(runner)
        return runner

    runner = asyncio.run(main())
    assert runner.state is Lifecycle.SETUP_FAILED and "weights missing" in (runner.reason or "")


def test_the_gateway_runner_is_ready_and_runs_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        runner = NullRunner(model="ltx-video", metrics=Metrics())
        runner.start()
        assert runner.state.is_serving() and runner.in_flight == 0
        with pytest.raises(ServeError) as raised:
            runner.submit(_task(tmp_path))
        assert raised.value.code == "not_ready"
        assert runner.drain() == 0 and runner.draining

    asyncio.run(main())
