"""The job contract: every test runs on both job backends (the `any_jobs_env` fixture), the local
SQLite file and Pub/Sub + Firestore on the real gcloud emulators (127.0.0.1), through live servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.base import GenerationRequest, StepCallback, Video
from serve.cli.usage import summarize
from tests.support.backends import GatedBackend
from tests.support.jobs import ALPHA, BETA, KEYS, JobsEnv
from tests.support.media import decode_mp4, free_port
from tests.support.server import LiveServer, live_server
from tests.support.settings import SMALL, make_settings

ROOT = Path(__file__).resolve().parents[3]

A = {"X-API-Key": ALPHA}
B = {"X-API-Key": BETA}


def _submit(live: LiveServer, headers: dict[str, str], **body: Any) -> httpx.Response:
    with live.client() as client:
        return client.post("/jobs", json={"prompt": "a boat", **SMALL, **body}, headers=headers)


def _wait(live: LiveServer, job_id: str, statuses: set[str], headers: dict[str, str] = A, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    with live.client() as client:
        while True:
            job = client.get(f"/jobs/{job_id}", headers=headers).json()
            if job["status"] in statuses:
                return job
            assert time.monotonic() < deadline, f"job {job_id} stayed {job['status']}"
            time.sleep(0.1)


def test_submit_status_result_with_the_tiny_model(any_jobs_env: JobsEnv, tmp_path: Path) -> None:
    with live_server(any_jobs_env.settings(tmp_path)) as live:
        submitted = _submit(live, A)
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert job["status"] == "queued" and submitted.headers["Location"] == f"/jobs/{job['job_id']}"
        assert set(job["links"]) == {"self", "log", "events", "cancel", "result"}
        done = _wait(live, job["job_id"], {"succeeded", "failed"})
        with live.client() as client:
            log = client.get(f"/jobs/{job['job_id']}/log", headers=A).json()
            result = client.get(f"/result/{job['job_id']}", headers=A, follow_redirects=False)
            video = client.get(httpx.URL(result.headers["Location"]).path, headers=A)  # the server at its port
            alias = client.get(f"/status/{job['job_id']}", headers=A).json()
        metrics = httpx.get(live.metrics_url).text
    assert done["status"] == "succeeded", done
    assert 'videogen_jobs_total{event="submitted"} 1.0' in metrics
    assert 'videogen_jobs_total{event="succeeded"} 1.0' in metrics
    assert "videogen_job_wait_seconds_count 1.0" in metrics
    assert done["progress"] == {"step": 2, "total": 2, "fraction": 1.0} and done["attempts"] == 1
    assert done["result"]["metadata"]["request_id"] == job["job_id"]
    assert result.status_code == 303
    frames, *_ = decode_mp4(video.content)
    assert frames.shape == (SMALL["num_frames"], SMALL["height"], SMALL["width"], 3)
    messages = [line["message"] for line in log["lines"]]
    assert messages[0] == "queued" and messages[-1] == "succeeded" and any("attempt 1" in m for m in messages)
    assert alias["status"] == "succeeded"


def test_validation_tenants_and_idempotency(any_jobs_env: JobsEnv, tmp_path: Path) -> None:
    with live_server(any_jobs_env.settings(tmp_path, jobs_worker=False)) as live:
        with live.client() as client:
            bad = client.post("/jobs", json={"prompt": "x", "height": 100}, headers=A)
            unknown = client.post("/jobs", json={"prompt": "x", "webhook_url": "http://x"}, headers=A)
            nokey = client.post("/jobs", json={"prompt": "x"})
        first = _submit(live, A, idempotency_key="order-42")
        again = _submit(live, A, idempotency_key="order-42")
        other_tenant = _submit(live, B, idempotency_key="order-42")
        conflict = _submit(live, A, idempotency_key="order-42", prompt="another request")
        job_id = first.json()["job_id"]
        with live.client() as client:
            hidden = client.get(f"/jobs/{job_id}", headers=B)
            hidden_cancel = client.post(f"/jobs/{job_id}/cancel", headers=B)
            missing = client.get("/jobs/does-not-exist", headers=A)
            # Names Firestore refuses as document ids: 404 like any other unknown id, never 500.
            odd = [client.get(f"/jobs/{name}", headers=A) for name in ("__x__", "%2E", "%2E%2E", "a%2Fb", "x" * 64)]
            queued = client.get(f"/jobs/{job_id}", headers=A).json()
            pending = client.get(f"/result/{job_id}", headers=A)
    assert bad.status_code == 422 and unknown.status_code == 422 and nokey.status_code == 401
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["job_id"] == job_id and other_tenant.json()["job_id"] != job_id
    assert (conflict.status_code, conflict.json()["error"]) == (409, "idempotency_conflict")
    assert "order-42" in conflict.json()["message"]
    assert [(r.status_code, r.json()["error"], "x-request-id" in r.headers) for r in odd] == [
        (404, "not_found", True)
    ] * 5
    assert hidden.status_code == 404 and hidden_cancel.status_code == 404 and missing.status_code == 404
    assert queued["status"] == "queued" and queued["queue_position"] == 1
    assert pending.status_code == 409 and pending.json()["error"] == "not_finished"


def test_submitted_to_one_server_run_and_read_on_another(any_jobs_env: JobsEnv, tmp_path: Path) -> None:
    gateway_settings = any_jobs_env.settings(tmp_path / "gateway", jobs_worker=False)
    with live_server(gateway_settings) as gateway, live_server(any_jobs_env.settings(tmp_path / "gpu")) as gpu:
        job = _submit(gateway, A).json()
        done_on_gpu = _wait(gpu, job["job_id"], {"succeeded", "failed"})
        seen_on_gateway = _wait(gateway, job["job_id"], {"succeeded", "failed"})
    assert done_on_gpu["status"] == seen_on_gateway["status"] == "succeeded"


class CountingBackend(GatedBackend):
    """Released from the start; counts the generations each prompt got."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.release.set()

    def generate(self, request: GenerationRequest, on_step: StepCallback, *, output: Path) -> Video:
        if request.prompt == "poison":
            self.prompts.append(request.prompt)
            raise RuntimeError("this job always crashes")
        return super().generate(request, on_step, output=output)


def test_two_workers_run_every_job_exactly_once(any_jobs_env: JobsEnv, tmp_path: Path) -> None:
    first, second = CountingBackend(), CountingBackend()
    with (
        live_server(any_jobs_env.settings(tmp_path / "1"), backend=first) as one,
        live_server(any_jobs_env.settings(tmp_path / "2"), backend=second) as two,
    ):
        ids = [_submit(one if i % 2 else two, A, prompt=f"job {i}").json()["job_id"] for i in range(10)]
        finished = [_wait(one, job_id, {"succeeded", "failed"}) for job_id in ids]
    assert [job["status"] for job in finished] == ["succeeded"] * 10
    assert [job["attempts"] for job in finished] == [1] * 10
    prompts = first.prompts + second.prompts
    assert sorted(prompts) == sorted(f"job {i}" for i in range(10))  # each ran once, on one of them
    assert first.prompts and second.prompts  # and both GPUs took work


def test_crashing_job_fails_after_three_attempts_and_is_dead_lettered(any_jobs_env: JobsEnv, tmp_path: Path) -> None:
    backend = CountingBackend()
    with live_server(any_jobs_env.settings(tmp_path), backend=backend) as live:
        job_id = _submit(live, A, prompt="poison").json()["job_id"]
        failed = _wait(live, job_id, {"failed", "succeeded"})
        after = _submit(live, A, prompt="fine").json()["job_id"]
        assert _wait(live, after, {"succeeded", "failed"})["status"] == "succeeded"  # still serving
        with live.client() as client:
            finished = [live.container.jobs.store.get(j) for j in (job_id, after)]
            result = client.get(f"/result/{job_id}", headers=A)
    assert failed["status"] == "failed" and failed["attempts"] == 3
    assert failed["error"]["code"] == "generation_failed" and "after 3 attempts" in failed["error"]["message"]
    assert backend.prompts.count("poison") == 3
    assert any_jobs_env.dead_lettered() == [job_id]
    # /result answers a failed job with its code's status in the one catalogue, as /predict would.
    assert result.status_code == 500 and result.json()["error"] == "generation_failed"
    # Usage is counted once, on the job records; the usage report sums exactly those.
    (usage,) = summarize([job for job in finished if job is not None])
    assert (usage.tenant, usage.jobs, usage.failed, usage.succeeded) == ("alpha", 2, 1, 1)
    assert usage.bytes_out > 0 and usage.gpu_seconds > 0


def test_cancel_queued_and_running_frees_the_gpu(any_jobs_env: JobsEnv, tmp_path: Path) -> None:
    backend = CountingBackend(step_seconds=0.2)
    with live_server(any_jobs_env.settings(tmp_path), backend=backend) as live:
        running = _submit(live, A, prompt="long", num_inference_steps=90).json()["job_id"]
        _wait(live, running, {"running"})
        queued = _submit(live, A, prompt="never").json()["job_id"]
        with live.client() as client:
            canceled_queued = client.post(f"/jobs/{queued}/cancel", headers=A).json()
            client.post(f"/jobs/{running}/cancel", headers=A)
        stopped = _wait(live, running, {"canceled", "succeeded", "failed"}, timeout=30)
        later = _submit(live, A, prompt="next").json()["job_id"]
        assert _wait(live, later, {"succeeded", "failed"})["status"] == "succeeded"
        time.sleep(1)  # the canceled job's message has been delivered and acked by now
    assert canceled_queued["status"] == "canceled"
    assert stopped["status"] == "canceled" and stopped["progress"]["step"] < 90
    assert "never" not in backend.prompts and backend.prompts == ["long", "next"]


@pytest.fixture
def doomed_worker(any_jobs_env: JobsEnv, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A separate `python -m serve` worker process, to be killed with SIGKILL mid-job."""
    env = {
        **os.environ,
        **any_jobs_env.environment(),
        "API_KEYS": KEYS,
        "JOB_HEARTBEAT_SECONDS": "0.3",
        "JOB_LEASE_SECONDS": "10",
        "PORT": str(free_port()),
        "METRICS_PORT": "0",
        "OUTPUT_DIR": str(tmp_path / "doomed"),
        "MODEL": "ltx-video-tiny",
        "DEVICE": "cpu",
    }
    process = subprocess.Popen([sys.executable, "-m", "serve"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_worker_killed_mid_job_leads_to_redelivery_and_one_completion(
    any_jobs_env: JobsEnv, tmp_path: Path, doomed_worker: subprocess.Popen[bytes]
) -> None:
    with live_server(any_jobs_env.settings(tmp_path, jobs_worker=False)) as gateway:
        slow = {"height": 384, "width": 640, "num_frames": 49, "num_inference_steps": 40}
        submitted = _submit(gateway, A, prompt="interrupted", **slow)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        _wait(gateway, job_id, {"running"}, timeout=120)
        time.sleep(1)
        doomed_worker.send_signal(signal.SIGKILL)
        doomed_worker.wait(10)
        with live_server(any_jobs_env.settings(tmp_path / "rescuer")) as rescuer:
            done = _wait(rescuer, job_id, {"succeeded", "failed"}, timeout=180)
    assert done["status"] == "succeeded" and done["attempts"] == 2
    log = [line["message"] for line in gateway.container.jobs.store.get(job_id)["log"]]
    assert any("(took over)" in line for line in log) and log.count("succeeded") == 1


def test_predict_in_queue_mode_returns_the_normal_response(any_jobs_env: JobsEnv, tmp_path: Path) -> None:
    gateway_settings = any_jobs_env.settings(tmp_path / "gateway", jobs_worker=False, predict_via_queue=True)
    with (
        live_server(gateway_settings) as gateway,
        live_server(any_jobs_env.settings(tmp_path / "gpu")),
        gateway.client() as client,
    ):
        response = client.post("/predict", json={"prompt": "queued predict", **SMALL}, headers=A)
        invalid = client.post("/predict", json={"prompt": "x", "height": 4000}, headers=A)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "video_url",
        "video_path",
        "seed",
        "gcs_bucket",
        "gcs_blob",
        "generation_time_seconds",
        "metadata",
    }
    assert Path(body["video_path"]).stat().st_size > 0  # written by the GPU server
    assert invalid.status_code == 422


WEBHOOK_KEY = b"test-webhook-secret-0123456789"


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """A webhook receiver on 127.0.0.1 that answers 500 the first time, then 200."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: dict[str, Any] = {"requests": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen["requests"].append((dict(self.headers), body))
            self.send_response(500 if len(seen["requests"]) == 1 else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen["url"] = f"http://127.0.0.1:{server.server_port}/hook"
    yield seen
    server.shutdown()
    server.server_close()


def test_webhook_is_signed_and_retried_after_a_500(
    any_jobs_env: JobsEnv, tmp_path: Path, receiver: dict[str, Any]
) -> None:
    import base64
    import hashlib
    import hmac
    import json

    secret = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()
    settings = any_jobs_env.settings(tmp_path, webhook_secret=secret, webhook_allow_private=True)
    with live_server(settings) as live:
        job_id = _submit(live, A, webhook_url=receiver["url"]).json()["job_id"]
        _wait(live, job_id, {"succeeded", "failed"})
        deadline = time.monotonic() + 30
        while len(receiver["requests"]) < 2:
            assert time.monotonic() < deadline, "the webhook was not retried"
            time.sleep(0.1)
    (first_headers, first_body), (headers, body) = receiver["requests"][:2]
    assert first_headers["webhook-id"] == headers["webhook-id"] == f"{job_id}-job.succeeded"
    assert first_body == body  # the same event, re-sent
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(WEBHOOK_KEY, signed, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers["webhook-signature"], expected)
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    event = json.loads(body)
    assert event["type"] == "job.succeeded" and event["data"]["job_id"] == job_id
    assert event["data"]["result"]["video_url"]


def test_webhook_urls_to_private_link_local_or_metadata_addresses_are_refused(
    any_jobs_env: JobsEnv, tmp_path: Path
) -> None:
    settings = any_jobs_env.settings(tmp_path, webhook_secret="s3cret", jobs_worker=False)
    with live_server(settings) as live:
        refused = {
            url: _submit(live, A, webhook_url=url)
            for url in (
                "http://169.254.169.254/computeMetadata/v1/",
                "http://metadata.google.internal/",
                "http://10.1.2.3/hook",
                "http://127.0.0.1:9/hook",
                "ftp://example.com/hook",
            )
        }
    for url, response in refused.items():
        assert response.status_code == 422, url
        assert response.json()["fields"][0]["field"] == "webhook_url"
    with live_server(any_jobs_env.settings(tmp_path / "off", jobs_worker=False)) as live:
        unconfigured = _submit(live, A, webhook_url="https://example.com/hook")
    assert unconfigured.status_code == 422 and "not configured" in unconfigured.json()["message"]


def test_api_role_serves_without_a_model_and_sends_work_to_the_queue(any_jobs_env: JobsEnv, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ROLE=api needs JOBS_ENABLED and PREDICT_VIA_QUEUE"):
        make_settings(tmp_path, role="api")
    api = any_jobs_env.settings(tmp_path / "api", role="api", predict_via_queue=True)
    with live_server(api) as gateway:
        with gateway.client() as client:
            health = client.get("/health")
        # No model at all: a gateway's runner is the NullRunner, which cannot take work itself.
        assert type(gateway.container.runner).__name__ == "NullRunner"
        assert gateway.container.runner.describe()["role"] == "api"
        with live_server(any_jobs_env.settings(tmp_path / "gpu")), gateway.client() as client:
            response = client.post("/predict", json={"prompt": "through the gateway", **SMALL}, headers=A)
    assert health.status_code == 200 and health.json()["status"] == "ready"
    assert response.status_code == 200, response.text


def test_a_message_back_while_another_worker_holds_the_job_is_kept_until_its_lease_ends(
    any_jobs_env: JobsEnv, tmp_path: Path
) -> None:
    """A worker's message deadline and its job lease are renewed together, so when it dies the
    message can come back a moment before the lease ends. That delivery finds the job busy; were it
    acked, the job would stay `running` for ever with nothing left to run it. It must come back."""
    import asyncio
    import threading
    from collections.abc import Callable

    from serve.core.runner import Task
    from serve.jobs.model import JobStatus, Outcome
    from serve.jobs.worker import JobWorker
    from serve.wiring import job_backend

    settings = any_jobs_env.settings(tmp_path)
    store, queue, dead_letter, subscriber, subscription = job_backend(settings)
    job, _ = store.create("alpha", {"prompt": "p", "num_inference_steps": 2}, None)
    queue.publish(job["job_id"])
    # The first worker takes the message and the job with a 3 s lease, then dies; its message's
    # deadline has run out first (a nack stands for that).
    pulled = subscriber.pull(request={"subscription": subscription, "max_messages": 1}, timeout=10)
    assert [m.message.data.decode() for m in pulled.received_messages] == [job["job_id"]]
    store.claim(job["job_id"], "dead-worker", 3)
    subscriber.modify_ack_deadline(
        request={
            "subscription": subscription,
            "ack_ids": [pulled.received_messages[0].ack_id],
            "ack_deadline_seconds": 0,
        }
    )

    runs: list[str] = []

    async def run_job(job: dict[str, Any], on_task: Callable[[Task], None]) -> Outcome:
        runs.append(job["job_id"])
        return Outcome(JobStatus.SUCCEEDED, result={"video_url": "/videos/x.mp4"})

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    worker = JobWorker(
        store=store,
        subscriber=subscriber,
        subscription=subscription,
        is_idle=lambda: True,
        run_job=run_job,
        loop=loop,
        dead_letter=dead_letter,
        max_attempts=3,
        lease_seconds=10,
        heartbeat_seconds=0.2,
        name="rescuer",
    )
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while (store.get(job["job_id"]) or {}).get("status") != "succeeded":
            assert time.monotonic() < deadline, f"the job was lost: {store.get(job['job_id'])}"
            time.sleep(0.1)
    finally:
        worker.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    final = store.get(job["job_id"])
    assert final is not None and final["attempts"] == 2 and runs == [job["job_id"]]
    assert any("(took over)" in line["message"] for line in final["log"])


def _events(live: LiveServer, job_id: str, headers: dict[str, str] = A, last: str | None = None) -> list[Any]:
    from httpx_sse import connect_sse

    extra = {"Last-Event-ID": last} if last else {}
    with (
        live.client(timeout=60) as client,
        connect_sse(client, "GET", f"/jobs/{job_id}/events", headers={**headers, **extra}) as source,
    ):
        source.response.raise_for_status()
        return list(source.iter_sse())


def test_events_stream_status_log_progress_and_the_result_then_resume(any_jobs_env: JobsEnv, tmp_path: Path) -> None:
    import json

    backend = CountingBackend(step_seconds=0.15)
    settings = any_jobs_env.settings(tmp_path, job_heartbeat_seconds=0.2)
    with live_server(settings, backend=backend) as live:
        job_id = _submit(live, A, prompt="watched", num_inference_steps=12).json()["job_id"]
        events = _events(live, job_id)
        resumed = _events(live, job_id, last=events[2].id)
        after_the_end = _events(live, job_id, last=events[-1].id)
        with live.client() as client:
            hidden = client.get(f"/jobs/{job_id}/events", headers=B)
            unknown = client.get(f"/jobs/{'0' * 32}/events", headers=A)
    kinds = [event.event for event in events]
    data = [json.loads(event.data) for event in events]
    assert kinds[0] == "status" and kinds[-1] == "result", kinds
    assert [d["status"] for k, d in zip(kinds, data, strict=True) if k == "status"][-2:] == ["running", "succeeded"]
    steps = [d["step"] for k, d in zip(kinds, data, strict=True) if k == "progress"]
    assert len(steps) >= 3 and steps == sorted(steps) and steps[-1] == 12, steps  # the bar moves, then is full
    etas = [d["eta_seconds"] for k, d in zip(kinds, data, strict=True) if k == "progress"]
    assert any(eta is not None and eta > 0 for eta in etas) and etas[-1] == 0.0, etas
    messages = [d["message"] for k, d in zip(kinds, data, strict=True) if k == "log"]
    assert messages[0] == "queued" and messages[-1] == "succeeded"
    assert data[-1]["job_id"] == job_id and data[-1]["result"]["video_url"].startswith("http")
    assert len({event.id for event in events}) == len(events)  # every id a distinct cursor
    # Resumed after the third event (the job has ended since): only what it had not seen.
    lines_seen = int(events[2].id.split(".")[1])
    resumed_kinds = [e.event for e in resumed]
    resumed_messages = [json.loads(e.data)["message"] for e in resumed if e.event == "log"]
    assert resumed_messages == messages[lines_seen:] and lines_seen >= 1
    assert resumed_kinds[0] == "status" and resumed_kinds[-1] == "result" and resumed_kinds.count("result") == 1
    assert after_the_end == []
    assert hidden.status_code == 404 and unknown.status_code == 404
