"""The one GPU runner: a worker thread that loads the model, then runs one generation at a
time from a bounded queue, while the event loop stays free."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.base import Backend, GenerationRequest, InputError, LipSyncRequest, Video
from serve.errors import CATALOGUE, ServeError
from serve.obs.metrics import Metrics
from serve.schemas import Lifecycle

log = logging.getLogger("serve.core.runner")


class RunnerError(ServeError):
    """A generation that did not produce a video; each subclass is one catalogued code."""

    code_name = "generation_failed"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(self.code_name, message, retry_after=retry_after)


class QueueFull(RunnerError):
    code_name = "busy"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the GPU queue is full; retry in about {retry_after} s", retry_after=retry_after)


class NotReady(RunnerError):
    code_name = "not_ready"


class Draining(RunnerError):
    code_name = "draining"


class QueueTimeout(RunnerError):
    code_name = "queue_timeout"


class GenerationTimeout(RunnerError):
    code_name = "generation_timeout"


class Canceled(RunnerError):
    code_name = "canceled"


class ShuttingDown(RunnerError):
    code_name = "shutting_down"


class GpuOutOfMemory(RunnerError):
    code_name = "gpu_out_of_memory"


@dataclass(eq=False, kw_only=True)
class Task:
    """One request on its way through the runner; `step`/`total` are its progress."""

    request: GenerationRequest | LipSyncRequest
    request_id: str
    output: Path  # where the backend writes the MP4
    future: asyncio.Future[Video]
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0
    steps_total: int | None = None  # as the backend reports it (lip-sync: chunks x steps)
    cancel: threading.Event = field(default_factory=threading.Event)
    abort: ServeError | None = None  # raised at the next step once `cancel` is set; default Canceled

    @property
    def total(self) -> int:
        return self.steps_total or self.request.num_inference_steps


def _is_cuda_fault(exc: BaseException) -> bool:
    """Errors after which the CUDA context cannot be trusted: the VM should be replaced."""
    text = str(exc)
    return any(marker in text for marker in ("CUDA error", "CUBLAS_STATUS", "cuDNN error", "device-side assert"))


class GpuRunner:
    """Owns the backend. Only its thread touches the model, so CUDA state stays on one thread."""

    def __init__(
        self,
        *,
        backend: Backend,
        metrics: Metrics,
        queue_size: int,
        queue_timeout: float,
        generation_timeout: float,
        warmup: GenerationRequest | LipSyncRequest | None,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.generation_timeout = generation_timeout
        self.warmup = warmup
        self.state = Lifecycle.STARTING
        self.reason: str | None = "loading the model"
        self.current: Task | None = None
        self._queue: deque[Task] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.draining = False
        self._mean_seconds: float | None = None
        self._thread = threading.Thread(target=self._main, name="gpu-runner", daemon=True)

    # -- called from the event loop ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def drain(self) -> int:
        """Take no new work; what is queued and running still completes. Returns that count."""
        self.draining = True
        self.metrics.ready.set(0)
        log.info("draining: no new work accepted", extra={"in_flight": self.in_flight})
        return self.in_flight

    @property
    def model_name(self) -> str:
        return self.backend.name

    def describe(self) -> dict[str, Any]:
        return self.backend.describe()

    @property
    def in_flight(self) -> int:
        """Requests queued or running."""
        return len(self._queue) + (1 if self.current else 0)

    @property
    def depth(self) -> int:
        """Requests waiting, not counting the one running."""
        return len(self._queue)

    def position(self, task: Task) -> int | None:
        with self._cond:
            try:
                return self._queue.index(task) + 1
            except ValueError:
                return None

    def submit(self, task: Task) -> None:
        """Queue `task`, or raise NotReady/QueueFull at once; never waits."""
        if self.draining:
            raise Draining("this server is shutting down; retry on another")
        if not self.state.is_serving():
            raise NotReady(f"the model is not ready ({self.state.value}: {self.reason})")
        with self._cond:
            in_system = len(self._queue) + (1 if self.current else 0)
            if in_system >= self.queue_size + 1:
                self.metrics.rejected.labels("queue_full").inc()
                raise QueueFull(self._retry_after(in_system))
            self._queue.append(task)
            self.metrics.queue_depth.set(len(self._queue))
            self._cond.notify()

    def withdraw(self, task: Task, error: ServeError | None = None) -> bool:
        """Take a task out of the queue before it runs; False when it already started."""
        with self._cond:
            try:
                self._queue.remove(task)
            except ValueError:
                return False
            self.metrics.queue_depth.set(len(self._queue))
        task.cancel.set()
        self._resolve(task, error=error or Canceled("withdrawn before it ran"))
        return True

    def abort_all(self, error: ServeError) -> None:
        """Fail everything queued with `error`, and stop the running generation with it at its
        next step (a shutdown that cannot wait any longer)."""
        with self._cond:
            queued, running = list(self._queue), self.current
        for task in queued:
            self.withdraw(task, error)
        if running is not None:
            running.abort = error
            running.cancel.set()

    def _retry_after(self, ahead: int) -> int:
        mean = self._mean_seconds or 30.0
        return max(1, min(3600, math.ceil(mean * ahead)))

    # -- the worker thread ---------------------------------------------------------------

    def _main(self) -> None:
        if not self._setup():
            return
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                task = self._queue.popleft()
                self.current = task
                self.metrics.queue_depth.set(len(self._queue))
            try:
                self._run(task)
            finally:
                with self._cond:
                    self.current = None

    def _setup(self) -> bool:
        started = time.monotonic()
        try:
            self.backend.load()
            if self.warmup is not None:
                self.reason = "warm-up generation"
                with tempfile.TemporaryDirectory(prefix="videogen-warmup-") as scratch:
                    self.backend.generate(self.warmup, lambda step, total: None, output=Path(scratch) / "warmup.mp4")
        except Exception as exc:  # any failure is reported by /health, not by a crash loop
            self.state, self.reason = Lifecycle.SETUP_FAILED, f"{type(exc).__name__}: {exc}"
            log.error("model setup failed", exc_info=exc, extra={"reason": self.reason})
            return False
        self.state, self.reason = Lifecycle.READY, None
        self.metrics.ready.set(1)
        log.info("model ready", extra={"seconds": round(time.monotonic() - started, 3), **self.backend.describe()})
        return True

    def _run(self, task: Task) -> None:
        waited = time.monotonic() - task.enqueued_at
        if task.cancel.is_set() or task.future.done():
            self._resolve(task, error=Canceled("canceled before it ran"))
            return
        if waited > self.queue_timeout:
            self.metrics.generations.labels("queue_timeout").inc()
            self._resolve(task, error=QueueTimeout(f"waited {waited:.0f} s for the GPU"))
            return
        task.started_at = time.monotonic()
        deadline = task.started_at + self.generation_timeout
        self.state = Lifecycle.BUSY
        self.metrics.busy.set(1)

        def on_step(step: int, total: int) -> None:
            task.step, task.steps_total = step, total
            if task.cancel.is_set():
                raise task.abort or Canceled(f"canceled at step {step} of {total}")
            if time.monotonic() > deadline:
                raise GenerationTimeout(f"stopped at step {step} of {total} after {self.generation_timeout:.0f} s")

        try:
            video = self.backend.generate(task.request, on_step, output=task.output)
        except ServeError as exc:
            self.metrics.generations.labels(exc.code).inc()
            self._resolve(task, error=exc)
        except InputError as exc:
            # The backend's code is a catalogued one; anything else is our bug, reported as one.
            code = exc.code if exc.code in CATALOGUE else "internal_error"
            self.metrics.generations.labels(code).inc()
            log.info("input rejected", extra={"request_id": task.request_id, "error": code, "reason": str(exc)})
            self._resolve(task, error=ServeError(code, str(exc)))
        except Exception as exc:
            self._resolve(task, error=self._classify(exc, task))
        else:
            seconds = time.monotonic() - task.started_at
            self._mean_seconds = seconds if self._mean_seconds is None else 0.7 * self._mean_seconds + 0.3 * seconds
            video.timings["queue"] = waited
            self._resolve(task, video=video)
        finally:
            task.finished_at = time.monotonic()
            self.metrics.busy.set(0)
            if self.state is Lifecycle.BUSY:
                self.state = Lifecycle.READY

    def _classify(self, exc: Exception, task: Task) -> ServeError:
        import torch

        extra = {"request_id": task.request_id}
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
            self.metrics.generations.labels("gpu_out_of_memory").inc()
            log.warning("GPU out of memory; the server keeps serving", extra=extra)
            return GpuOutOfMemory("the GPU ran out of memory for this request; try a smaller size")
        if isinstance(exc, OSError):  # disk full, output directory gone: fail this request, keep serving
            self.metrics.generations.labels("storage_failed").inc()
            log.error("could not write the video", exc_info=exc, extra=extra)
            return ServeError("storage_failed", "the video could not be written on the server")
        if _is_cuda_fault(exc):
            # The CUDA context is poisoned: fail /health so the autohealer replaces the VM.
            self.state, self.reason = Lifecycle.GPU_FAILED, f"{type(exc).__name__}: {exc}"
            self.metrics.ready.set(0)
        self.metrics.generations.labels("error").inc()
        log.error("generation failed", exc_info=exc, extra=extra)
        return RunnerError(f"the generation failed ({type(exc).__name__}); quote the request id when reporting it")

    def _resolve(self, task: Task, *, video: Video | None = None, error: ServeError | None = None) -> None:
        """Hand the outcome to the event loop that waits on the task's future."""

        def settle() -> None:
            if task.future.done():
                return
            if error is not None:
                task.future.set_exception(error)
            else:
                task.future.set_result(video)  # type: ignore[arg-type]

        # A closed loop means the server is shutting down and nobody waits for the answer.
        with contextlib.suppress(RuntimeError):
            task.future.get_loop().call_soon_threadsafe(settle)


class NullRunner:
    """The runner of a gateway (ROLE=api): no model, no GPU; every generation goes through the job
    queue, so this one is always ready and never takes work itself."""

    def __init__(self, *, model: str, metrics: Metrics) -> None:
        self.model_name = model
        self.metrics = metrics
        self.state, self.reason = Lifecycle.READY, None
        self.draining = False
        self.in_flight = self.depth = 0

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_name, "role": "api", "revision": "gateway"}

    def start(self) -> None:
        self.metrics.ready.set(1)

    def stop(self, timeout: float = 5.0) -> None:
        pass

    def drain(self) -> int:
        self.draining = True
        self.metrics.ready.set(0)
        return 0

    def submit(self, task: Task) -> None:
        raise NotReady("this server is a gateway (ROLE=api): it runs no generations")

    def withdraw(self, task: Task, error: ServeError | None = None) -> bool:
        return False

    def abort_all(self, error: ServeError) -> None:
        pass

    def position(self, task: Task) -> int | None:
        return None


Runner = GpuRunner | NullRunner
