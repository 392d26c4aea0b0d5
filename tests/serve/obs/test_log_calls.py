"""Log calls never pass a reserved LogRecord attribute in `extra` (logging raises KeyError for
those, at INFO and above only: `POST /jobs` once answered 500 at the production log level because
of `extra={"created": ...}` while every test, at pytest's WARNING level, passed)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def test_no_log_call_uses_a_reserved_extra_key() -> None:
    offenders, calls = [], 0
    for path in [*ROOT.glob("serve/**/*.py"), *ROOT.glob("models/**/*.py"), *ROOT.glob("bench/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                    calls += 1
                    for key in keyword.value.keys:
                        if isinstance(key, ast.Constant) and key.value in RESERVED:
                            offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {key.value}")
    assert calls > 30  # the scan sees the log calls
    assert offenders == []
