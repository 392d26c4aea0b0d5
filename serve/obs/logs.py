"""Logs as Cloud Logging reads them: google-cloud-logging's StructuredLogHandler writes one JSON
object per line (severity, message, trace, httpRequest, labels), which the Ops Agent and Cloud
Run/GKE agents lift into log entries; locally the same lines are just readable JSON.

Call sites pass context the standard way, `log.info("...", extra={"request_id": ...})`; a filter
here moves those fields into the handler's `json_fields`, so every field reaches the line. The
HTTP and trace fields go by the handler's own names (`http_request`, `trace`, `span_id`,
`trace_sampled`).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from google.cloud.logging_v2.handlers import StructuredLogHandler

# LogRecord's own attributes and the structured handler's (`extra` may not use them).
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}
_HANDLER_FIELDS = {"json_fields", "http_request", "trace", "span_id", "trace_sampled", "labels", "resource"}


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        return str(o)


class ExtraFields(logging.Filter):
    """Copies a record's `extra` fields (and its logger's name) into `json_fields`."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = dict(getattr(record, "json_fields", None) or {})
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in _HANDLER_FIELDS and not name.startswith("_"):
                fields[name] = value
        fields.setdefault("logger", record.name)
        if record.exc_info and "exception" not in fields:
            fields["exception"] = logging.Formatter().formatException(record.exc_info)
        record.json_fields = fields
        return True


class _PlainMessage(logging.Formatter):
    """The message alone: the traceback goes to the `exception` field, not into the message."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def make_handler(stream: TextIO | None = None, project: str | None = None) -> logging.Handler:
    """The server's log handler: structured JSON lines on `stream` (stderr)."""
    handler = StructuredLogHandler(stream=stream or sys.stderr, project_id=project, json_encoder_cls=_Encoder)
    handler.addFilter(ExtraFields())
    handler.setFormatter(_PlainMessage())
    return handler


def configure_logging(level: str = "INFO", *, project: str | None = None, model_libraries: bool = True) -> None:
    """JSON lines on stderr; `model_libraries=False` skips importing diffusers/transformers
    (command-line tools that never touch a model start faster)."""
    root = logging.getLogger()
    root.handlers[:] = [make_handler(project=project)]
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
