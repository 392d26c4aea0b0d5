"""The `videogen` client (its console script, as `make run` installs it) against live servers
with production defaults and the tiny models: generate with a progress bar, lip-sync from local
files, status/log/cancel, one-line errors with the documented exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from tests.support.backends import GatedBackend
from tests.support.media import face_and_speech, free_port
from tests.support.server import LiveServer, live_server
from tests.support.settings import KEY, make_settings

ROOT = Path(__file__).resolve().parents[3]


def _videogen(live_url: str, *args: str, key: str = KEY, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script when there is one (make installs it), else the module."""
    script = shutil.which("videogen", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "serve.cli.videogen"]
    env = {**os.environ, "VIDEOGEN_URL": live_url, "VIDEOGEN_API_KEY": key, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*command, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_console_script_is_declared_and_installed() -> None:
    assert 'videogen = "serve.cli.videogen:main"' in (ROOT / "pyproject.toml").read_text()
    if os.environ.get("CI") == "true":  # make test installs the project; a bare checkout may not have
        assert shutil.which("videogen", path=str(Path(sys.executable).parent)) is not None


@pytest.fixture
def server(tmp_path: Path) -> LiveServer:  # type: ignore[misc]
    with live_server(make_settings(tmp_path / "server", jobs_enabled=True, jobs_backend="sqlite")) as live:
        yield live


def test_generate_follows_the_job_with_a_progress_bar_and_writes_the_mp4(server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "fox.mp4"
    done = _videogen(server.url, "generate", "a red fox running through snow", "--steps", "6", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert "job " in done.stderr and "succeeded" in done.stderr and "6/6" in done.stderr  # tqdm's bar
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.frames) == (384, 256, 25)
    job_id = done.stderr.split("job ", 1)[1].split()[0]
    status = _videogen(server.url, "status", job_id)
    log = _videogen(server.url, "log", job_id)
    assert status.returncode == 0 and '"status": "succeeded"' in status.stdout
    assert log.returncode == 0 and log.stdout.splitlines()[-1].endswith("succeeded")


def test_errors_are_one_line_with_their_exit_codes(server: LiveServer, tmp_path: Path) -> None:
    bad_key = _videogen(server.url, "generate", "x", key="wrong-key-0123456789")
    bad_field = _videogen(server.url, "generate", "x", "--height", "100")
    no_file = _videogen(server.url, "lipsync", "--video", str(tmp_path / "missing.mp4"), "--audio", "x.wav")
    unknown = _videogen(server.url, "status", "0" * 32)
    down = _videogen(f"http://127.0.0.1:{free_port()}", "status", "0" * 32)
    no_key = _videogen(server.url, "status", "x", key="")
    assert (bad_key.returncode, bad_key.stderr.strip()) == (
        3,
        "videogen: unauthorized: missing or invalid API key (header X-API-Key)",
    )
    assert bad_field.returncode == 3 and bad_field.stderr.startswith("videogen: invalid_request:")
    assert "(height)" in bad_field.stderr and len(bad_field.stderr.strip().splitlines()) == 1
    assert no_file.returncode == 2 and "no such file" in no_file.stderr
    assert unknown.returncode == 3 and unknown.stderr.startswith("videogen: not_found:")
    assert down.returncode == 4 and "unreachable" in down.stderr
    assert no_key.returncode == 2 and "VIDEOGEN_API_KEY" in no_key.stderr
    assert "Traceback" not in "".join(r.stderr for r in (bad_key, bad_field, no_file, unknown, down, no_key))


def test_a_job_canceled_while_followed_exits_1_with_its_reason(tmp_path: Path) -> None:
    backend = GatedBackend(step_seconds=0.05)  # holds each generation at step 1 until released
    settings = make_settings(tmp_path, jobs_enabled=True, jobs_backend="sqlite")
    with live_server(settings, backend=backend) as live:
        script = shutil.which("videogen", path=str(Path(sys.executable).parent))
        command = [script] if script else [sys.executable, "-m", "serve.cli.videogen"]
        env = {**os.environ, "VIDEOGEN_URL": live.url, "VIDEOGEN_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
        follower = subprocess.Popen(
            [*command, "generate", "held"], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert follower.stderr is not None
        first = follower.stderr.readline()
        job_id = first.split("job ", 1)[1].strip()
        assert backend.started.wait(30)
        canceled = _videogen(live.url, "cancel", job_id)
        time.sleep(1.5)  # the worker's next heartbeat (1 s) hands the cancel to the generation...
        backend.release.set()  # ...which stops at its next step
        _out, err = follower.communicate(timeout=60)
    assert canceled.returncode == 0
    assert follower.returncode == 1, err
    assert err.strip().splitlines()[-1] == f"videogen: canceled: canceled at step 1 of 10 (job {job_id})"


def test_lipsync_uploads_local_files_and_writes_the_mp4(tmp_path: Path) -> None:
    face, speech = face_and_speech(tmp_path)
    settings = make_settings(tmp_path / "server", model="latentsync-tiny", environment="local")
    with live_server(settings) as live:
        out = tmp_path / "synced.mp4"
        done = _videogen(
            live.url, "lipsync", "--video", str(face), "--audio", str(speech), "--steps", "10", "-o", str(out)
        )
    assert done.returncode == 0, done.stderr
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert container.streams.video[0].frames == 52
