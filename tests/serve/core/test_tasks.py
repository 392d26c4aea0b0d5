"""The task specs, unit by unit: what each refuses before queueing, and what it hands the backend."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from models.base import GenerationRequest
from models.registry import BACKENDS, task_of
from serve.core.tasks import TASKS, LipSync, TaskContext, TextToVideo, spec_for
from serve.errors import ServeError
from serve.io.gcs import GcsOutput
from serve.obs.metrics import Metrics
from serve.schemas import LipSyncPredictRequest, PredictRequest
from tests.support.settings import SMALL, make_settings


def _context(tmp_path: Path, *, gcs: bool = False, **settings: object) -> TaskContext:
    output = None
    if gcs:  # a real GcsOutput: destination checks need no client calls
        output = GcsOutput(
            client=None,  # type: ignore[arg-type]
            bucket="out",
            allowed_buckets={"also"},
            sign_urls=False,
            url_lifetime=timedelta(hours=1),
            retry_attempts=0,
            retry_delay=1,
            upload_timeout=1,
        )
    return TaskContext(
        settings=make_settings(tmp_path, **settings), metrics=Metrics(), gcs=output, storage_client=lambda: None
    )


LIPSYNC = {"video_in": "https://8.8.8.8/face.mp4", "audio_in": "https://8.8.8.8/speech.wav"}


def test_every_backend_has_a_spec_for_its_task() -> None:
    assert {task_of(name) for name in BACKENDS} == set(TASKS)
    assert spec_for("lip-sync").predict_body is LipSyncPredictRequest
    with pytest.raises(ValueError, match="no task spec"):
        spec_for("image-to-3d")


@pytest.mark.parametrize(
    ("spec", "body"),
    [(TextToVideo(), PredictRequest(prompt="x", **SMALL)), (LipSync(), LipSyncPredictRequest(**LIPSYNC))],
    ids=["text-to-video", "lip-sync"],
)
def test_a_destination_needs_cloud_storage_output_for_every_task(spec, body, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with_destination = body.model_copy(update={"gcs_destination": "gs://out/v.mp4"})
    with pytest.raises(ServeError) as raised:
        spec.check(with_destination, _context(tmp_path), tenant="alpha")
    assert (raised.value.status, raised.value.fields[0]["field"]) == (422, "gcs_destination")
    spec.check(with_destination, _context(tmp_path, gcs=True), tenant="alpha")  # allowed bucket: fine
    elsewhere = body.model_copy(update={"gcs_destination": "gs://not-ours/v.mp4"})
    with pytest.raises(ServeError, match="not one this server may write to"):
        spec.check(elsewhere, _context(tmp_path, gcs=True), tenant="alpha")


def test_text_to_video_checks_the_configured_bounds(tmp_path: Path) -> None:
    with pytest.raises(ServeError) as raised:
        TextToVideo().check(
            PredictRequest(prompt="x", **{**SMALL, "height": 640}), _context(tmp_path, max_height=512), tenant="alpha"
        )
    assert raised.value.fields == [{"field": "height", "message": raised.value.fields[0]["message"]}]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://8.8.8.8/a.mp4", "unsafe_url"),  # plain http only for tests (FETCH_ALLOW_LOOPBACK)
        ("https://169.254.169.254/computeMetadata/v1/", "unsafe_url"),
        ("https://metadata.google.internal/x", "unsafe_url"),
        ("https://user:pw@8.8.8.8/a.mp4", "unsafe_url"),
    ],
)
def test_lip_sync_refuses_unsafe_inputs_before_queueing(url: str, code: str, tmp_path: Path) -> None:
    with pytest.raises(ServeError) as raised:
        LipSync().check(LipSyncPredictRequest(**{**LIPSYNC, "video_in": url}), _context(tmp_path), tenant="alpha")
    assert raised.value.code == code and "video_in" in raised.value.message


def test_text_to_video_hands_the_backend_the_request_without_the_destination(tmp_path: Path) -> None:
    body = PredictRequest(prompt="a fox", seed=3, gcs_destination="gs://out/v.mp4", **SMALL)
    prepared = asyncio.run(TextToVideo().prepare(body, _context(tmp_path), "rid", tenant="alpha"))
    assert prepared.request == GenerationRequest(prompt="a fox", seed=3, fps=24, guidance_scale=3.0, **SMALL)
    assert prepared.scratch is None


def test_lip_sync_inputs_are_downloaded_into_a_scratch_folder_removed_on_failure(tmp_path: Path) -> None:
    body = LipSyncPredictRequest(video_in="http://127.0.0.1:9/none.mp4", audio_in="http://127.0.0.1:9/a.wav")
    context = _context(tmp_path, fetch_allow_loopback=True, fetch_timeout_seconds=2)
    before = set(Path("/tmp").glob("videogen-inputs-*"))
    with pytest.raises(ServeError) as raised:
        asyncio.run(LipSync().prepare(body, context, "rid", tenant="alpha"))
    assert raised.value.code == "input_unreachable"
    assert set(Path("/tmp").glob("videogen-inputs-*")) == before  # nothing left behind
