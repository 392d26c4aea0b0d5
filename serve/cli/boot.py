"""What the VM startup script (`startup/startup.sh`) needs from Python: `python -m serve.cli.boot`.

- `bundle`: build the app bundle, a reproducible tar.gz of the code, and print its sha256.
- `configure`: turn the instance's metadata into the server's environment file and systemd
  unit, validated by the server's own Settings; print `changed` or `unchanged`.
- `wait`: poll /health until the server is ready; fail at once, with the reason, when its
  setup failed.
- `run`: start the server with an environment file, as systemd does (tests, debugging).

Every failure ends with one plain line on stderr, `error: <what is wrong>`, which the startup
script quotes in its own log line.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serve.config import Settings

ROOT = Path(__file__).resolve().parents[2]
BUNDLE_PATHS = ("serve", "models", "startup", "requirements.txt", "requirements-nodeps.txt")
UNIT_NAME = "videogen.service"
SERVICE_USER = "videogen"
# What the unit allows for stopping beyond the drain: the last response, then some slack.
STOP_MARGIN_SECONDS = 120
_SKIP = re.compile(r"(^|/)(__pycache__|\.pytest_cache|\.mypy_cache)(/|$)|\.py[co]$")
_UNSAFE_VALUE = re.compile(r"[\"\\$`\x00-\x1f\x7f]")
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


class BootError(Exception):
    """The instance's configuration cannot produce a working server."""


# -- the app bundle --------------------------------------------------------------------------


def _bundle_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for name in BUNDLE_PATHS:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file())
        else:
            raise BootError(f"{path} is missing; run from the repository root")
    return sorted(f for f in files if not _SKIP.search(f.relative_to(root).as_posix()))


def build_bundle(root: Path, out: Path) -> str:
    """Write the bundle to `out` and return its sha256 (hex). The same tree gives the same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _bundle_files(root):
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size = path.stat().st_size
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    data = gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".partial")
    temporary.write_bytes(data)
    os.replace(temporary, out)
    return hashlib.sha256(data).hexdigest()


# -- configuration from metadata ------------------------------------------------------------


def parse_server_env(text: str) -> dict[str, str]:
    """The `server-env` attribute: `NAME=value` lines (blank lines and # comments allowed)."""
    fields = {name.upper() for name in Settings.model_fields}
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise BootError(f"server-env line {number} is not NAME=value: {line!r}")
        if name not in fields:
            raise BootError(f"server-env line {number}: {name} is not a server setting (see docs/settings.md)")
        values[name] = value.strip()
    return values


def server_environment(
    *,
    state_dir: Path,
    model: str,
    revision: str,
    weights_dir: Path | None,
    port: str,
    device: str,
    output_bucket: str,
    api_key_secret: str,
    project: str,
    server_env: str,
    role: str = "all",
) -> dict[str, str]:
    """The server's environment on a VM; `server_env` lines override the rest."""
    env = {
        "ENVIRONMENT": "gce",
        "HOST": "0.0.0.0",
        "PORT": port or "8080",
        "MODEL": model,
        "DEVICE": device or "auto",
        "OUTPUT_DIR": str(state_dir / "outputs"),
        # torch.compile's artefacts: on the persistent disk, not /tmp (the unit has PrivateTmp, a
        # fresh /tmp per start), so a restart loads them instead of compiling again.
        "COMPILE_CACHE_DIR": str(state_dir / "compile-cache"),
        "LOG_LEVEL": "INFO",
        "ROLE": role or "all",
    }
    if revision:
        env["MODEL_REVISION"] = revision
    if weights_dir is not None:
        env["MODEL_PATH"] = str(weights_dir)
    if output_bucket:
        env["GCS_OUTPUT_BUCKET"] = output_bucket.removeprefix("gs://").strip("/")
    if api_key_secret:
        if not api_key_secret.startswith("projects/"):
            if not project:
                raise BootError(f"api-key-secret {api_key_secret!r} needs a project: give projects/P/secrets/NAME")
            api_key_secret = f"projects/{project}/secrets/{api_key_secret}"
        env["API_KEY_SECRET"] = api_key_secret
    if project:
        env["GCP_PROJECT"] = env["GCS_PROJECT"] = project
    env.update(parse_server_env(server_env))
    check_environment(env)
    return env


class _Given(Settings):
    """Settings from the values given only: this process's environment and .env play no part."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, *args: Any, **kwargs: Any) -> Any:
        return (init_settings,)


def check_environment(env: dict[str, str]) -> Settings:
    """The server's own validation, run before anything starts; BootError names the problem."""
    for name, value in env.items():
        if _UNSAFE_VALUE.search(value):
            raise BootError(f"{name}: quotes, backslashes, '$', backticks and control characters are not allowed")
    try:
        values: dict[str, Any] = {name.lower(): value for name, value in env.items()}
        settings: Settings = _Given(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper() or 'settings'}: {e['msg']}" for e in exc.errors())
        raise BootError(f"invalid server settings: {problems}") from None
    if not (settings.api_key_secret or settings.api_keys or settings.api_key_file):
        raise BootError("no API keys: set the metadata attribute api-key-secret (or API_KEYS in server-env)")
    return settings


def render_env_file(env: dict[str, str]) -> str:
    """`NAME="value"` lines, read the same by systemd's EnvironmentFile= and by `run`."""
    return "".join(f'{name}="{value}"\n' for name, value in env.items())


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        if name:
            values[name] = value.removeprefix('"').removesuffix('"')
    return values


def render_unit(*, app_dir: Path, python: Path, env_file: Path, settings: Settings, user: str | None) -> str:
    stop_seconds = int(settings.drain_timeout_seconds) + STOP_MARGIN_SECONDS
    account = f"User={user}\nGroup={user}\n" if user else ""
    return f"""# Written by startup/startup.sh (python -m serve.cli.boot configure); changes are overwritten.
[Unit]
Description=videogen inference server ({settings.model})
Wants=network-online.target
After=network-online.target
# Stops after the shutdown script (run when google-shutdown-scripts.service stops) drained it.
Before=google-shutdown-scripts.service
StartLimitIntervalSec=0

[Service]
Type=exec
{account}WorkingDirectory={app_dir}
EnvironmentFile={env_file}
ExecStart={python} -m serve
Restart=on-failure
RestartSec=5
RestartSteps=6
RestartMaxDelaySec=300
KillSignal=SIGTERM
TimeoutStopSec={stop_seconds}
StandardOutput=journal
StandardError=journal
SyslogIdentifier=videogen
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=full
ProtectHome=yes
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text)
    os.replace(temporary, path)
    return True


# -- the Ops Agent ------------------------------------------------------------------------------


def ops_agent_config(env: dict[str, str]) -> str:
    """Google Cloud Ops Agent configuration: scrape the server's Prometheus port (the metrics land
    in Cloud Monitoring as Managed Service for Prometheus metrics, prometheus.googleapis.com/...)
    and ship the journal (the server's JSON lines, the startup script's stage lines)."""
    settings = check_environment(env)
    target = f"127.0.0.1:{settings.metrics_port}"
    return f"""# Written by startup/startup.sh (python -m serve.cli.boot ops-agent-config); changes are overwritten.
metrics:
  receivers:
    videogen_prometheus:
      type: prometheus
      config:
        scrape_configs:
          - job_name: videogen
            scrape_interval: 30s
            metrics_path: /metrics
            static_configs:
              - targets: ["{target}"]
  service:
    pipelines:
      videogen:
        receivers: [videogen_prometheus]
logging:
  receivers:
    videogen_journal:
      type: systemd_journald
  service:
    pipelines:
      videogen:
        receivers: [videogen_journal]
"""


# -- waiting for health ---------------------------------------------------------------------

_TERMINAL = {"setup_failed", "gpu_failed", "no_api_keys"}


def wait_healthy(url: str, timeout: float, pid: int | None = None, interval: float = 0.5) -> dict[str, object]:
    """Poll `url` until 200; BootError at once on a terminal state or a dead process."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if pid is not None and not process_alive(pid):
            raise BootError(f"the server process {pid} exited before it was healthy (last: {last})")
        try:
            status, body = _get_json(url)
        except (OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return body
            last = f"{body.get('status')}: {body.get('reason')}"
            if body.get("status") in _TERMINAL:
                raise BootError(f"the server reports {last}")
        time.sleep(interval)
    raise BootError(f"not healthy after {timeout:.0f} s (last: {last})")


def _get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503 while starting: its body says why
        return exc.code, json.loads(exc.read())


def process_alive(pid: int) -> bool:
    """Linux: the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# -- the command line -----------------------------------------------------------------------


def _configure(args: argparse.Namespace) -> str:
    env = server_environment(
        state_dir=args.state_dir,
        model=args.model,
        revision=args.model_revision,
        weights_dir=args.weights_dir,
        port=args.port,
        device=args.device,
        output_bucket=args.output_bucket,
        api_key_secret=args.api_key_secret,
        project=args.project,
        server_env=args.server_env,
        role=args.role,
    )
    settings = check_environment(env)
    env_file = args.state_dir / "server.env"
    unit = render_unit(
        app_dir=args.app_dir, python=args.python, env_file=env_file, settings=settings, user=args.user or None
    )
    changed = _write_if_changed(env_file, render_env_file(env))
    changed = _write_if_changed(args.state_dir / UNIT_NAME, unit) or changed
    return "changed" if changed else "unchanged"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serve.cli.boot", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bundle = commands.add_parser("bundle", help="build the app bundle; prints PATH SHA256")
    bundle.add_argument("--out", type=Path, default=Path("dist/app.tar.gz"))
    configure = commands.add_parser("configure", help="write server.env and the systemd unit into --state-dir")
    for name in ("model", "model-revision", "port", "device", "output-bucket", "api-key-secret", "project", "role"):
        configure.add_argument(f"--{name}", default="")
    configure.add_argument("--server-env", default="", help="the server-env attribute's text")
    configure.add_argument("--state-dir", type=Path, required=True)
    configure.add_argument("--app-dir", type=Path, required=True)
    configure.add_argument("--python", type=Path, required=True)
    configure.add_argument("--weights-dir", type=Path)
    configure.add_argument("--user", default=SERVICE_USER, help="the unit's User= ('' for none)")
    wait = commands.add_parser("wait", help="wait until /health is 200")
    wait.add_argument("--url", required=True)
    wait.add_argument("--timeout", type=float, default=900)
    wait.add_argument("--pid", type=int)
    agent = commands.add_parser("ops-agent-config", help="print the Ops Agent configuration for server.env")
    agent.add_argument("--env-file", type=Path, required=True)
    run = commands.add_parser("run", help="exec the server with an environment file")
    run.add_argument("--env-file", type=Path, required=True)
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    args = _parser().parse_args(None if argv is None else list(argv))
    try:
        if args.command == "bundle":
            print(args.out, build_bundle(ROOT, args.out))
        elif args.command == "configure":
            print(_configure(args))
        elif args.command == "ops-agent-config":
            print(ops_agent_config(read_env_file(args.env_file)), end="")
        elif args.command == "wait":
            print(json.dumps(wait_healthy(args.url, args.timeout, args.pid)))
        else:
            os.environ.update(read_env_file(args.env_file))
            os.execv(sys.executable, [sys.executable, "-m", "serve"])
    except BootError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
