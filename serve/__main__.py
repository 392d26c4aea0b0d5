"""`python -m serve`: start the API (and the metrics listener) with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from serve.app import create_app
from serve.config import Settings
from serve.logs import configure_logging


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    generated = app.state.keys.generated
    if generated:
        # Shown once, on the terminal, never through the logger.
        base = f"http://{settings.host}:{settings.port}"
        print(
            f"\nNo API key configured; generated one for this run:\n\n    {generated}\n\n"
            f"Try it (the first answer takes about a minute on a CPU):\n\n"
            f"    curl -sS -X POST {base}/predict -H 'X-API-Key: {generated}' "
            f"-H 'Content-Type: application/json' -d '{{\"prompt\": \"a red fox running through snow\"}}'\n",
            file=sys.stdout,
            flush=True,
        )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        timeout_keep_alive=settings.keep_alive_seconds,
        log_config=None,
        access_log=False,
        # Allow an in-flight generation to finish on SIGTERM before the process exits.
        timeout_graceful_shutdown=int(settings.generation_timeout_seconds),
    )


if __name__ == "__main__":
    main()
