"""`python -m serve`: start the API (and the metrics listener) with uvicorn."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

from serve.app import create_app
from serve.config import Settings
from serve.logs import configure_logging


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """How the API is served: keep-alive past the Google load balancer's 600 s, our own logs."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        timeout_keep_alive=settings.keep_alive_seconds,
        log_config=None,
        access_log=False,
        # On SIGTERM, let an in-flight generation finish before the process exits.
        timeout_graceful_shutdown=int(settings.generation_timeout_seconds),
    )


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
    configure_logging(settings.log_level)
    app = create_app(settings)
    if app.state.keys.generated:
        _announce_key(app.state.keys.generated, settings)
    uvicorn.Server(uvicorn_config(app, settings)).run()


if __name__ == "__main__":
    main()
