"""`python -m serve`: start the API (and the metrics listener) with uvicorn."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from serve.api.app import create_app
from serve.config import Settings
from serve.core.runner import Runner, ShuttingDown
from serve.obs.logs import configure_logging
from serve.wiring import build

log = logging.getLogger("serve.main")

# After the last generation ends, the time its response may take to encode and store the video.
FINISH_SECONDS = 90


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """How the API is served: keep-alive past the Google load balancer's 600 s, our own logs."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        timeout_keep_alive=settings.keep_alive_seconds,
        log_config=None,
        access_log=False,
        # Once the runner is idle, responses still being written may finish.
        timeout_graceful_shutdown=FINISH_SECONDS,
    )


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM drains before shutting down.

    Draining keeps the listener open: new requests get 503 `draining` (and /health 503, so the
    load balancer moves on) while queued and running generations finish, for at most
    `drain_timeout` seconds; what is still running then stops at its next step with 503
    `shutting_down`. Then uvicorn's graceful shutdown lets the last responses go out, and the
    process exits 0. A second signal falls through to uvicorn (stop now).
    """

    def __init__(self, config: uvicorn.Config, runner: Runner, drain_timeout: float) -> None:
        super().__init__(config)
        self.runner = runner
        self.drain_timeout = drain_timeout
        self._drain: threading.Thread | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._drain is not None:
            super().handle_exit(sig, frame)
            return
        self._drain = threading.Thread(target=self._drain_then_exit, name="drain", daemon=True)
        self._drain.start()

    def _drain_then_exit(self) -> None:
        started = time.monotonic()
        self.runner.drain()
        while self.runner.in_flight and time.monotonic() - started < self.drain_timeout:
            time.sleep(0.1)
        if self.runner.in_flight:
            log.error(
                "drain limit reached; failing the remaining work",
                extra={"in_flight": self.runner.in_flight, "drain_timeout_seconds": self.drain_timeout},
            )
            self.runner.abort_all(ShuttingDown("the server stopped before this generation finished; retry"))
            while self.runner.in_flight and time.monotonic() - started < self.drain_timeout + 60:
                time.sleep(0.1)
        log.info("drained; shutting down", extra={"seconds": round(time.monotonic() - started, 3)})
        self.should_exit = True


# A request that finishes in seconds with the built-in tiny model on a CPU (the defaults, 704x1216x121
# and 50 steps, take minutes there).
QUICK_REQUEST = (
    '{"prompt": "a red fox running through snow", "height": 256, "width": 384, "num_frames": 25, '
    '"num_inference_steps": 10}'
)


def _announce_key(key: str, settings: Settings, task: str) -> None:
    # Shown once, on the terminal, never through the logger.
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    lines = [
        f"\nNo API key configured; generated one for this run:\n\n    {key}\n",
        f"The page (submit, watch, play; paste the key): {base}/ui\n",
        f"API and try-it page: {base}/docs\n",
    ]
    if task == "text-to-video":
        lines.append(
            "A small video (seconds on a CPU with the tiny model):\n\n"
            f"    curl -sS -X POST {base}/predict -H 'X-API-Key: {key}' "
            f"-H 'Content-Type: application/json' -d '{QUICK_REQUEST}'\n"
        )
        lines.append(
            "The same from the command line, with a progress bar (the venv's bin/videogen):\n\n"
            f"    VIDEOGEN_URL={base} VIDEOGEN_API_KEY={key} videogen generate 'a red fox running through snow' "
            "-o fox.mp4\n"
        )
    else:
        lines.append(
            "Lip-sync two local files from the command line (the venv's bin/videogen):\n\n"
            f"    VIDEOGEN_URL={base} VIDEOGEN_API_KEY={key} videogen lipsync --video face.mp4 --audio speech.wav "
            "-o out.mp4\n"
        )
    print("\n".join(lines), file=sys.stdout, flush=True)


def _help_text() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        default = "(none)" if field.default is None else str(field.default)
        rows.append(f"  {name.upper()} = {default}\n      {field.description or ''}")
    return "settings, from the environment or a .env file in the working directory:\n\n" + "\n".join(rows)


def _parse_arguments(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serve",
        description="Serve the video-generation API (and its Prometheus metrics) with uvicorn. "
        "There are no command-line options: every setting comes from the environment.",
        epilog=_help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)


def _listen(settings: Settings) -> socket.socket:
    """The API's socket, bound before anything loads, so a taken port is one clear error."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} "
            f"(another server there? stop it, or choose another port: PORT=8081)"
        ) from None
    return sock


def main(argv: list[str] | None = None) -> None:
    _parse_arguments(sys.argv[1:] if argv is None else argv)
    settings = Settings()
    configure_logging(settings.log_level, project=settings.gcp_project)
    sock = _listen(settings)
    container = build(settings)
    app = create_app(container)
    if container.keys.generated:
        _announce_key(container.keys.generated, settings, container.spec.name)
    server = DrainingServer(uvicorn_config(app, settings), container.runner, settings.drain_timeout_seconds)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
