"""The layout's rules, checked on the source: HTTP lives in serve/api only, the container is read
only through serve/api/deps.py, imports point down the layers, and modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each layer may import the ones after it in this list (and the shared top-level modules).
LAYERS = ["serve.api", "serve.wiring", "serve.jobs", "serve.core", "serve.io", "serve.obs", "models"]
SHARED = {"serve.config", "serve.errors", "serve.schemas"}
# unet.py mirrors the official checkpoint's module tree, one class per block type; splitting it
# would scatter one state-dict layout over files.
TOO_LONG_ALLOWED = {"models/latentsync/unet.py"}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _layer(module: str) -> int | None:
    for index, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return index
    return None


def _sources(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


@pytest.mark.parametrize("folder", ["serve/core", "serve/jobs", "serve/io", "serve/obs", "models", "bench"])
def test_no_web_framework_below_the_api(folder: str) -> None:
    offenders = [
        f"{p.relative_to(ROOT)}: {name}"
        for p in _sources(folder)
        for name in _imports(p)
        if name.split(".")[0] in ("fastapi", "starlette")
    ]
    assert offenders == []


def test_app_state_is_read_only_in_the_api_layer() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in _sources("serve") if "app.state" in p.read_text()]
    assert offenders == ["serve/api/app.py", "serve/api/deps.py"]


def test_no_import_runs_up_the_layers() -> None:
    upward = []
    for path in _sources("serve", "models"):
        here = _layer(_module(path))
        for name in _imports(path):
            there = _layer(name)
            if here is not None and there is not None and there < here:
                upward.append(f"{_module(path)} -> {name}")
    assert upward == []


def test_shared_modules_import_no_layer() -> None:
    for name in SHARED:
        path = ROOT / (name.replace(".", "/") + ".py")
        assert [i for i in _imports(path) if _layer(i) is not None] == [], name


def test_bench_depends_on_models_only() -> None:
    assert [n for p in _sources("bench") for n in _imports(p) if n.split(".")[0] == "serve"] == []


def test_modules_stay_short() -> None:
    long = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for p in _sources("serve", "models")
        if len(p.read_text().splitlines()) > 400
    }
    assert set(long) <= TOO_LONG_ALLOWED, long
