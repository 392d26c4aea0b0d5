"""startup/startup.sh booted in a sandbox on this machine.

A local metadata server gives the attributes; the GCS emulator holds the app bundle (built
from this working tree), the wheelhouse (`serve.cli.wheelhouse build --here`: this machine's
wheels) and the tiny model's weight cache; the fake Secret Manager holds the API key. The
script's state lives under a temporary directory and it runs the server directly instead of
through systemd. The first boot really creates the virtual environment (pip, as on a VM) with
every package index unreachable, from the wheelhouse alone, so this module takes a few minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from models.ltx.tiny import build_tiny_pipeline
from serve.cli import wheelhouse
from serve.cli.boot import build_bundle, process_alive
from serve.cli.weights import push
from tests.support.emulators import GcsEmulator, start_fake_gcs
from tests.support.fakes.metadata import FakeMetadataServer
from tests.support.fakes.secret_manager import FakeSecretManager
from tests.support.media import decode_mp4, free_port
from tests.support.settings import KEY, SMALL

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "startup" / "startup.sh"
PROJECT = "test-project"
SECRET = f"projects/{PROJECT}/secrets/videogen-api-keys"
STAGE_LINE = re.compile(r"^startup stage=(\w+) result=(\w+)(?: seconds=([\d.]+))?(.*)$", re.MULTILINE)
RESULTS_FILE = ROOT / "bench" / "results" / "startup_boot_times.json"

pytestmark = pytest.mark.skipif(
    shutil.which("gcloud") is None and os.environ.get("CI") != "true",
    reason="the Google Cloud CLI (gcloud storage) is not installed; startup.sh downloads the bundle with it",
)


@dataclass
class Boot:
    returncode: int
    output: str
    seconds: float

    @property
    def stages(self) -> dict[str, tuple[str, str]]:
        """Stage name -> (result, the rest of its line)."""
        return {m[1]: (m[2], m[4]) for m in STAGE_LINE.finditer(self.output)}

    @property
    def stage_seconds(self) -> dict[str, float]:
        return {m[1]: float(m[3]) for m in STAGE_LINE.finditer(self.output) if m[3]}

    @property
    def failures(self) -> list[str]:
        return [line for line in self.output.splitlines() if "result=failed" in line]


@dataclass
class Sandbox:
    tmp: Path
    gcs: GcsEmulator
    metadata: FakeMetadataServer
    port: int
    attributes: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def boot(self, state: Path | None = None, path: Path | None = None, **changes: str) -> Boot:
        """Run startup.sh once with the baseline attributes plus `changes` ('' removes one);
        `path`: a folder of programs found first (a fake nvidia-smi)."""
        attributes = {**self.attributes, **changes}
        self.metadata.set_attributes({k: v for k, v in attributes.items() if v != ""})
        env = {**self.env, "STARTUP_STATE_DIR": str(state or self.state)}
        if path is not None:
            env["PATH"] = f"{path}:{env['PATH']}"
        started = time.monotonic()
        done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=1200)
        return Boot(done.returncode, done.stdout + done.stderr, time.monotonic() - started)

    def server_pid(self) -> int | None:
        pid_file = self.state / "server.pid"
        if not pid_file.is_file():
            return None
        pid = int(pid_file.read_text())
        return pid if process_alive(pid) else None

    def stop_server(self) -> None:
        """What a reboot does to the server: SIGTERM, and it drains and exits."""
        pid = self.server_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while process_alive(pid):
            assert time.monotonic() < deadline, "the server did not stop on SIGTERM"
            time.sleep(0.1)

    def predict(self) -> httpx.Response:
        body = {"prompt": "a boat on a lake", **SMALL}
        return httpx.post(f"{self.url}/predict", json=body, headers={"X-API-Key": KEY}, timeout=300)


def _push_tiny_weights(gcs: GcsEmulator, directory: Path, revision: str, seed: int) -> None:
    build_tiny_pipeline(seed=seed).save_pretrained(directory)
    push(gcs.client(), "weights", "ltx-video", revision, directory)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    tmp = tmp_path_factory.mktemp("boot")
    gcs = start_fake_gcs()
    metadata = FakeMetadataServer({"project/project-id": PROJECT})
    secrets = FakeSecretManager()
    secrets.secrets[SECRET] = [(KEY, "ENABLED")]
    client = gcs.client()
    for bucket in ("deploy", "weights", "videos"):
        client.create_bucket(bucket)
    sha256 = build_bundle(ROOT, tmp / "app.tar.gz")
    client.bucket("deploy").blob(f"app/{sha256}.tar.gz").upload_from_filename(str(tmp / "app.tar.gz"))
    _push_tiny_weights(gcs, tmp / "tiny-1", "tiny-1", seed=0)
    wheels = wheelhouse.build(ROOT, tmp / "wheelhouse", python_version=None, platform=None)
    wheelhouse.push(client, "weights", wheels)
    port = free_port()
    attributes = {
        "model": "ltx-video",
        "model-revision": "tiny-1",
        "weights-bucket": "weights",
        "app-bundle": f"gs://deploy/app/{sha256}.tar.gz",
        "app-bundle-sha256": sha256,
        "wheelhouse": "gs://weights/wheelhouse",
        "pypi-fallback": "false",
        "device": "cpu",
        "port": str(port),
        "output-bucket": "videos",
        "api-key-secret": "videogen-api-keys",  # a short name: the project comes from metadata
        "server-env": "\n".join(
            [
                "# where the sandbox differs from a VM",
                "HOST=127.0.0.1",
                "METRICS_PORT=0",
                f"GCS_ENDPOINT={gcs.url}",
                "GCS_SIGN_URLS=false",
                f"SECRET_MANAGER_ENDPOINT={secrets.url}",
            ]
        ),
    }
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH") and not k.startswith("PIP_")},
        # No package index, no local wheels, no pip configuration: only the wheelhouse can install.
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple/",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "METADATA_BASE_URL": metadata.base_url,
        "STARTUP_RUN_MODE": "direct",
        "STARTUP_PYTHON": sys.executable,
        "STARTUP_HEALTH_TIMEOUT": "300",
        "STORAGE_EMULATOR_HOST": gcs.url,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE": gcs.url + "/",
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "True",
        "CLOUDSDK_CORE_PROJECT": PROJECT,
        "CLOUDSDK_CONFIG": str(tmp / "gcloud"),
    }
    box = Sandbox(tmp=tmp, gcs=gcs, metadata=metadata, port=port, attributes=attributes, env=env)
    try:
        yield box
    finally:
        box.stop_server()
        secrets.close()
        metadata.close()
        gcs.stop()


@pytest.fixture(scope="module")
def first_boot(sandbox: Sandbox) -> Boot:
    boot = sandbox.boot()
    print(f"\nfirst boot: {boot.seconds:.1f} s")
    return boot


def test_first_boot_installs_pulls_and_serves(sandbox: Sandbox, first_boot: Boot) -> None:
    assert first_boot.returncode == 0, first_boot.output[-3000:]
    stages = first_boot.stages
    assert [name for name in stages] == [
        "config",
        "gpu",
        "install_app",
        "cuda",
        "pull_weights",
        "configure",
        "ops_agent",
        "start",
        "healthy",
        "total",
    ], first_boot.output
    assert stages["gpu"][0] == "skipped" and stages["ops_agent"][0] == "skipped"  # direct mode
    assert stages["install_app"][0] == "installed" and "venv=created" in stages["install_app"][1]
    assert "source=wheelhouse" in stages["install_app"][1]  # with every package index unreachable
    assert stages["pull_weights"][0] == "ok" and re.search(r"bytes=[1-9]\d+", stages["pull_weights"][1])
    assert (stages["configure"][0], stages["start"][0], stages["total"][0]) == ("changed", "started", "healthy")

    weights = sandbox.state / "weights" / "ltx-video" / "tiny-1"
    env_file = (sandbox.state / "server.env").read_text()
    assert f'MODEL_PATH="{weights}"' in env_file and f'API_KEY_SECRET="{SECRET}"' in env_file
    unit = (sandbox.state / "videogen.service").read_text()
    assert f"EnvironmentFile={sandbox.state / 'server.env'}" in unit
    assert re.search(r"^ExecStart=\S+/venvs/\w+/bin/python -m serve$", unit, re.MULTILINE)
    assert "Restart=on-failure" in unit and "TimeoutStopSec=180" in unit  # drain 60 s + 120 s

    response = sandbox.predict()
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["metadata"]["revision"] == "tiny-1"
    assert result["gcs_bucket"] == "videos"
    blob = sandbox.gcs.client().bucket("videos").blob(result["gcs_blob"])
    frames, *_ = decode_mp4(blob.download_as_bytes())
    assert frames.shape == (SMALL["num_frames"], SMALL["height"], SMALL["width"], 3)
    assert httpx.post(f"{sandbox.url}/predict", json={"prompt": "x"}, headers={"X-API-Key": "wrong"}).status_code == 401


def test_second_boot_skips_install_and_pull_and_is_faster(sandbox: Sandbox, first_boot: Boot) -> None:
    assert first_boot.returncode == 0, first_boot.output[-3000:]
    sandbox.stop_server()  # a reboot
    second = sandbox.boot()
    assert second.returncode == 0, second.output[-3000:]
    stages = second.stages
    assert stages["install_app"][0] == "cached" and "venv=reused" in stages["install_app"][1]
    assert stages["pull_weights"][0] == "cached"
    assert (stages["configure"][0], stages["start"][0]) == ("unchanged", "started")
    assert sandbox.predict().status_code == 200

    rerun = sandbox.boot()  # the script again while the server runs: nothing to do
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert rerun.stages["start"][0] == "running"

    figures = {
        "first_boot_seconds": round(first_boot.seconds, 1),
        "second_boot_seconds": round(second.seconds, 1),
        "rerun_seconds": round(rerun.seconds, 1),
        "first_boot_stages": first_boot.stage_seconds,
        "second_boot_stages": second.stage_seconds,
    }
    print(f"\nsandboxed boot times: {figures}")
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(figures, indent=1) + "\n")
    assert second.seconds < first_boot.seconds / 2


def test_new_model_revision_pulls_it_and_restarts_the_server(sandbox: Sandbox, first_boot: Boot) -> None:
    assert first_boot.returncode == 0, first_boot.output[-3000:]
    _push_tiny_weights(sandbox.gcs, sandbox.tmp / "tiny-2", "tiny-2", seed=1)
    try:
        boot = sandbox.boot(**{"model-revision": "tiny-2"})
        assert boot.returncode == 0, boot.output[-3000:]
        stages = boot.stages
        assert (stages["install_app"][0], stages["pull_weights"][0]) == ("cached", "ok")
        assert (stages["configure"][0], stages["start"][0]) == ("changed", "started")
        assert not (sandbox.state / "weights" / "ltx-video" / "tiny-1").exists()  # the old revision is gone
        response = sandbox.predict()
        assert response.status_code == 200 and response.json()["metadata"]["revision"] == "tiny-2"
    finally:
        sandbox.stop_server()


def _assert_failed_cleanly(boot: Boot, stage: str, message: str, sandbox: Sandbox) -> None:
    assert boot.returncode != 0
    assert len(boot.failures) == 1, boot.output
    assert boot.failures[0].startswith(f"startup stage={stage} result=failed error=")
    assert message in boot.failures[0], boot.failures[0]
    assert "stage=start" not in boot.output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{sandbox.url}/health", timeout=2)


def test_missing_model_fails_at_config(sandbox: Sandbox, tmp_path: Path) -> None:
    boot = sandbox.boot(state=tmp_path / "state", model="")
    _assert_failed_cleanly(boot, "config", "metadata attribute model is missing", sandbox)


def test_wrong_bundle_hash_fails_before_installing(sandbox: Sandbox, tmp_path: Path) -> None:
    boot = sandbox.boot(state=tmp_path / "state", **{"app-bundle-sha256": "0" * 64})
    _assert_failed_cleanly(boot, "install_app", "but metadata app-bundle-sha256 is 0000", sandbox)
    assert not list((tmp_path / "state").glob("app/*"))  # nothing half-installed is left


def test_no_gpu_driver_fails_with_a_hint(sandbox: Sandbox, tmp_path: Path) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi")
    boot = sandbox.boot(state=tmp_path / "state", device="auto")
    _assert_failed_cleanly(boot, "gpu", "nvidia-smi not found", sandbox)
    assert "install-nvidia-driver" in boot.failures[0]


def test_empty_cache_prefix_fails_before_starting(sandbox: Sandbox, first_boot: Boot) -> None:
    assert first_boot.returncode == 0, first_boot.output[-3000:]
    sandbox.stop_server()
    boot = sandbox.boot(**{"model-revision": "never-pushed"})
    _assert_failed_cleanly(boot, "pull_weights", "gs://weights/ltx-video/never-pushed/ has no manifest.json", sandbox)
    assert sandbox.server_pid() is None


def test_bad_server_setting_fails_at_configure(sandbox: Sandbox, first_boot: Boot) -> None:
    assert first_boot.returncode == 0, first_boot.output[-3000:]
    sandbox.stop_server()
    server_env = sandbox.attributes["server-env"] + "\nQUEUE_SIZE=-1"
    boot = sandbox.boot(**{"server-env": server_env})
    _assert_failed_cleanly(boot, "configure", "QUEUE_SIZE", sandbox)


def test_a_torch_that_cannot_use_the_gpu_fails_the_boot_naming_build_and_driver(
    sandbox: Sandbox, first_boot: Boot, tmp_path: Path
) -> None:
    """A VM whose torch was built for a newer CUDA than its driver (torch 2.13's PyPI wheel is
    CUDA 13, an R570 image supports 12.x) finds no GPU: the boot stops at the `cuda` stage with
    both versions, instead of a server that never turns healthy. Here the GPU is a fake
    nvidia-smi and torch is the CPU build, which finds no GPU the same way."""
    assert first_boot.returncode == 0, first_boot.output[-3000:]
    sandbox.stop_server()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA L4, 23034 MiB, 570.172.08'\n")
    (fake / "nvidia-smi").chmod(0o755)
    boot = sandbox.boot(path=fake, device="cuda")  # the first boot's state: the environment is reused
    assert boot.stages["gpu"][0] == "ok" and "NVIDIA L4" in boot.stages["gpu"][1]
    _assert_failed_cleanly(boot, "cuda", "finds no usable GPU with NVIDIA driver 570.172.08", sandbox)
    assert "torch 2.13.0+cpu (built for CUDA none)" in boot.failures[0]


def test_without_its_wheelhouse_a_boot_fails_saying_what_to_push(sandbox: Sandbox, tmp_path: Path) -> None:
    boot = sandbox.boot(state=tmp_path / "state", wheelhouse="gs://weights/elsewhere")
    _assert_failed_cleanly(boot, "install_app", "no wheelhouse at gs://weights/elsewhere/", sandbox)
    assert "make wheelhouse-push" in boot.failures[0] and "pypi-fallback=true" in boot.failures[0]


def test_pypi_fallback_installs_from_the_index_only_when_allowed(sandbox: Sandbox, tmp_path: Path) -> None:
    # Allowed: it goes to the package index, which this sandbox makes unreachable.
    boot = sandbox.boot(state=tmp_path / "state", wheelhouse="gs://weights/elsewhere", **{"pypi-fallback": "true"})
    assert "installing from the package index (no wheelhouse at gs://weights/elsewhere/" in boot.output
    _assert_failed_cleanly(boot, "install_app", "pip install failed", sandbox)
