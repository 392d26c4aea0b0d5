"""JobRun over the real PredictionService and GpuRunner, with a counting backend and an
in-process fake of the Cloud Storage output (the seam whose failures we script): an upload
failure is retried as an upload of the kept video, never as a new generation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from models.base import GenerationRequest, StepCallback, Video
from serve.core.prediction import PredictionService
from serve.core.runner import GpuRunner
from serve.core.tasks import TaskContext, TextToVideo
from serve.errors import ServeError
from serve.io.gcs import Destination, UploadFailed
from serve.io.local_store import LocalStore
from serve.jobs.model import JobStatus
from serve.jobs.run import JobRun, outcome_of
from serve.obs.metrics import Metrics
from tests.support.settings import SMALL, make_settings


class CountingBackend:
    name, task = "counting", "text-to-video"

    def __init__(self) -> None:
        self.generations = 0

    def load(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "revision": "r"}

    def generate(self, request: GenerationRequest, on_step: StepCallback, *, output: Path) -> Video:
        self.generations += 1
        on_step(1, 1)
        output.write_bytes(b"\x00" * 100)
        return Video(path=output, fps=24, frames=9, width=96, height=64, bytes=100, timings={"denoise": 0.01})


class FakeGcsOutput:
    """The GcsOutput seam: `failures` uploads fail, then they succeed; uploads and background
    retries are recorded."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.uploads: list[str] = []
        self.background: list[Path] = []
        self.client = None

    def destination(self, request_id: str, requested: str | None) -> Destination:
        return Destination("out", f"videos/{request_id}.mp4")

    def upload(self, path: Path, destination: Destination) -> None:
        assert path.exists(), "the kept video must still be there"
        self.uploads.append(destination.uri)
        if len(self.uploads) <= self.failures:
            raise UploadFailed("503 from the fake")

    def url(self, destination: Destination) -> str:
        return f"https://signed.example/{destination.blob}"

    def console_url(self, destination: Destination) -> str:
        return self.url(destination)

    def retry_later(self, path: Path, destination: Destination, request_id: str) -> None:
        self.background.append(path)


def _run(tmp_path: Path, failures: int, attempts: int) -> tuple[Any, CountingBackend, FakeGcsOutput]:
    settings = make_settings(tmp_path)
    backend, gcs, metrics = CountingBackend(), FakeGcsOutput(failures), Metrics()
    store = LocalStore(tmp_path / "out")
    store.prepare()

    async def main() -> Any:
        runner = GpuRunner(
            backend=backend, metrics=metrics, queue_size=1, queue_timeout=60, generation_timeout=60, warmup=None
        )
        runner.start()
        while not runner.state.is_serving():
            await asyncio.sleep(0.01)
        context = TaskContext(settings=settings, metrics=metrics, gcs=gcs, storage_client=lambda: None)  # type: ignore[arg-type]
        service = PredictionService(spec=TextToVideo(), context=context, runner=runner, store=store, metrics=metrics)
        run = JobRun(service=service, metrics=metrics, upload_attempts=attempts, upload_delay=0.01)
        job = {"job_id": "job1", "tenant": "alpha", "request": {"prompt": "p", **SMALL}}
        try:
            return await run(job, lambda task: None)
        finally:
            runner.stop()

    return asyncio.run(main()), backend, gcs


def test_an_upload_failure_uploads_again_and_never_regenerates(tmp_path: Path) -> None:
    outcome, backend, gcs = _run(tmp_path, failures=2, attempts=3)
    assert outcome.status is JobStatus.SUCCEEDED and not outcome.retry
    assert backend.generations == 1  # the generation ran once
    assert len(gcs.uploads) == 3 and gcs.background == []
    assert outcome.result["video_url"] == "https://signed.example/videos/" + outcome.result["gcs_blob"].split("/")[-1]
    assert outcome.bytes_out == 100 and outcome.gpu_seconds > 0


def test_when_every_upload_fails_the_job_fails_final_and_the_video_is_kept(tmp_path: Path) -> None:
    outcome, backend, gcs = _run(tmp_path, failures=99, attempts=2)
    assert (outcome.status, outcome.error["code"], outcome.retry) == (JobStatus.FAILED, "upload_failed", False)
    assert backend.generations == 1 and len(gcs.uploads) == 3
    (kept,) = gcs.background  # handed to the background retry, still on disk
    assert kept.exists()


@pytest.mark.parametrize(
    ("code", "status", "retry"),
    [
        ("gpu_out_of_memory", JobStatus.FAILED, True),
        ("busy", JobStatus.FAILED, True),
        ("generation_failed", JobStatus.FAILED, True),
        ("upload_failed", JobStatus.FAILED, False),
        ("invalid_request", JobStatus.FAILED, False),
        ("generation_timeout", JobStatus.FAILED, False),
        ("canceled", JobStatus.CANCELED, False),
    ],
)
def test_retry_is_decided_by_the_error_kind(code: str, status: JobStatus, retry: bool) -> None:
    outcome = outcome_of(ServeError(code, "m"))
    assert (outcome.status, outcome.retry, outcome.error) == (status, retry, {"code": code, "message": "m"})
