"""`python -m serve`: start the API (and the metrics listener) with uvicorn."""

from __future__ import annotations

import logging
import signal
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


def _announce_key(key: str, settings: Settings) -> None:
    # Shown once, on the terminal, never through the logger.
    base = f"http://{settings.host}:{settings.port}"
    print(
        f"\nNo API key configured; generated one for this run:\n\n    {key}\n\n"
        f"Try it (the first answer takes about a minute on a CPU):\n\n"
        f"    curl -sS -X POST {base}/predict -H 'X-API-Key: {key}' "
        f"-H 'Content-Type: application/json' -d '{{\"prompt\": \"a red fox running through snow\"}}'\n",
        file=sys.stdout,
        flush=True,
    )


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, project=settings.gcp_project)
    container = build(settings)
    app = create_app(container)
    if container.keys.generated:
        _announce_key(container.keys.generated, settings)
    server = DrainingServer(uvicorn_config(app, settings), container.runner, settings.drain_timeout_seconds)
    server.run()


if __name__ == "__main__":
    main()
