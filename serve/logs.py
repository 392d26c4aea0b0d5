"""One JSON object per log line, with whatever `extra` fields the caller attached."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    """Cloud Logging reads `severity`, `message` and `time` from such lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", *, model_libraries: bool = True) -> None:
    """JSON lines on stderr; `model_libraries=False` skips importing diffusers/transformers
    (command-line tools that never touch a model start faster)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # serve.access writes one line per request
    if model_libraries:
        _route_library_logs()


def _route_library_logs() -> None:
    """diffusers and transformers print through handlers and progress bars of their own; send
    their records through ours instead, so that every line on stderr is JSON."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.disable_default_handler()
        library.enable_propagation()
        library.disable_progress_bar()
