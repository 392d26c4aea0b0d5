"""serve.cli.boot: the bundle, the server's environment from metadata, the unit, waiting for health."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from serve.cli import boot
from serve.cli.boot import BootError
from tests.support.backends import GatedBackend
from tests.support.server import live_server
from tests.support.settings import make_settings

ROOT = Path(__file__).resolve().parents[3]


def _environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    values = {
        "state_dir": tmp_path,
        "model": "ltx-video",
        "revision": "r1",
        "weights_dir": tmp_path / "weights",
        "port": "8080",
        "device": "cuda",
        "output_bucket": "gs://videos",
        "api_key_secret": "keys",
        "project": "p1",
        "server_env": "",
    }
    values.update(overrides)
    return boot.server_environment(**values)  # type: ignore[arg-type]


def test_bundle_is_reproducible_and_holds_only_the_code(tmp_path: Path) -> None:
    first = boot.build_bundle(ROOT, tmp_path / "a.tar.gz")
    second = boot.build_bundle(ROOT, tmp_path / "b.tar.gz")
    assert first == second == hashlib.sha256((tmp_path / "a.tar.gz").read_bytes()).hexdigest()
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        names = tar.getnames()
        script = tar.getmember("startup/startup.sh")
    assert {"requirements.txt", "serve/cli/boot.py", "models/base.py", "startup/startup.sh"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests", ".venv"))]
    assert script.mode == 0o755 and script.mtime == 0


def test_environment_from_metadata(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    assert env["ENVIRONMENT"] == "gce" and env["HOST"] == "0.0.0.0"
    assert env["MODEL_PATH"] == str(tmp_path / "weights") and env["MODEL_REVISION"] == "r1"
    assert env["GCS_OUTPUT_BUCKET"] == "videos"
    assert env["API_KEY_SECRET"] == "projects/p1/secrets/keys"
    assert env["GCP_PROJECT"] == "p1"


def test_server_env_overrides_and_is_checked_by_the_server_settings(tmp_path: Path) -> None:
    env = _environment(tmp_path, server_env="# comment\n\nQUEUE_SIZE=4\nHOST=127.0.0.1\n")
    assert (env["QUEUE_SIZE"], env["HOST"]) == ("4", "127.0.0.1")
    with pytest.raises(BootError, match="NOT_A_SETTING is not a server setting"):
        _environment(tmp_path, server_env="NOT_A_SETTING=1")
    with pytest.raises(BootError, match="line 2 is not NAME=value"):
        _environment(tmp_path, server_env="QUEUE_SIZE=1\nlower=2")
    with pytest.raises(BootError, match="invalid server settings: QUEUE_SIZE"):
        _environment(tmp_path, server_env="QUEUE_SIZE=-1")
    with pytest.raises(BootError, match="MAX_HEIGHT must be a multiple of 32"):
        _environment(tmp_path, server_env="MAX_HEIGHT=100")
    with pytest.raises(BootError, match="PUBLIC_URL: quotes, backslashes"):
        _environment(tmp_path, server_env='PUBLIC_URL=http://x/"$(reboot)"')


def test_no_api_keys_and_no_project_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BootError, match="no API keys"):
        _environment(tmp_path, api_key_secret="")
    with pytest.raises(BootError, match="needs a project"):
        _environment(tmp_path, project="")


def test_env_file_round_trips_and_unit_has_the_stop_budget(tmp_path: Path) -> None:
    env = _environment(tmp_path, server_env="PUBLIC_URL=https://videos.example.com/a b")
    path = tmp_path / "server.env"
    path.write_text(boot.render_env_file(env))
    assert boot.read_env_file(path) == env
    settings = boot.check_environment({**env, "DRAIN_TIMEOUT_SECONDS": "30"})
    unit = boot.render_unit(
        app_dir=tmp_path / "app", python=tmp_path / "py", env_file=path, settings=settings, user="videogen"
    )
    assert "TimeoutStopSec=150\n" in unit and "User=videogen\n" in unit
    assert f"ExecStart={tmp_path / 'py'} -m serve\n" in unit
    assert "Before=google-shutdown-scripts.service" in unit


def test_configure_reports_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["configure", "--state-dir", str(tmp_path), "--app-dir", "/app", "--python", "/py"]
    argv += ["--model", "ltx-video-tiny", "--server-env", "API_KEYS=k1", "--user", ""]
    assert boot.main(argv) == 0
    assert boot.main(argv) == 0
    assert boot.main([*argv[:-4], "--server-env", "API_KEYS=k2", "--user", ""]) == 0
    assert boot.main([*argv[:-4], "--server-env", "PORT=0", "--user", ""]) == 2
    out, err = capsys.readouterr()
    assert out.split() == ["changed", "unchanged", "changed"]
    assert err.strip().splitlines()[-1].startswith("error: invalid server settings: PORT")
    assert "User=" not in (tmp_path / "videogen.service").read_text()


def test_wait_returns_when_healthy_and_fails_fast_on_setup_failure(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path), backend=GatedBackend()) as live:
        assert boot.wait_healthy(f"{live.url}/health", timeout=10)["status"] == "ready"
    failing = GatedBackend(fail_load="no weights here")
    with (
        live_server(make_settings(tmp_path), backend=failing) as live,
        pytest.raises(BootError, match="setup_failed: RuntimeError: no weights here"),
    ):
        boot.wait_healthy(f"{live.url}/health", timeout=10)
    with pytest.raises(BootError, match="not healthy after 1 s"):
        boot.wait_healthy("http://127.0.0.1:1/health", timeout=1, interval=0.2)


def test_ops_agent_config_scrapes_the_metrics_port_and_ships_the_journal(tmp_path: Path) -> None:
    import yaml

    env = _environment(tmp_path, server_env="METRICS_PORT=9400")
    config = yaml.safe_load(boot.ops_agent_config(env))
    receiver = config["metrics"]["receivers"]["videogen_prometheus"]
    assert receiver["type"] == "prometheus"
    (scrape,) = receiver["config"]["scrape_configs"]
    assert scrape["static_configs"] == [{"targets": ["127.0.0.1:9400"]}] and scrape["metrics_path"] == "/metrics"
    assert config["metrics"]["service"]["pipelines"]["videogen"]["receivers"] == ["videogen_prometheus"]
    assert config["logging"]["receivers"]["videogen_journal"]["type"] == "systemd_journald"


def test_compile_artefacts_live_in_the_state_directory_and_survive_restarts(tmp_path: Path) -> None:
    """The unit has PrivateTmp (a fresh /tmp per start), so a cache left to torch's default under
    /tmp is gone at every restart and every restart compiles again."""
    env = _environment(tmp_path)
    assert env["COMPILE_CACHE_DIR"] == str(tmp_path / "compile-cache")
    assert _environment(tmp_path, server_env="COMPILE_CACHE_DIR=/data/cc")["COMPILE_CACHE_DIR"] == "/data/cc"
