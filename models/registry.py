"""Backends by name: the setting MODEL picks one. Imports are lazy, so choosing one model never
imports another's libraries (MediaPipe, diffusers' LTX classes)."""

from __future__ import annotations

import importlib

from models.base import Backend, BackendOptions

# name -> (module, class, task). The task decides the request body the server takes.
BACKENDS: dict[str, tuple[str, str, str]] = {
    "ltx-video": ("models.ltx.backend", "LTXVideoBackend", "text-to-video"),
    "ltx-video-tiny": ("models.ltx.tiny", "LTXVideoTinyBackend", "text-to-video"),
    "latentsync": ("models.latentsync.backend", "LatentSyncBackend", "lip-sync"),
    "latentsync-tiny": ("models.latentsync.tiny", "LatentSyncTinyBackend", "lip-sync"),
}


def _known() -> str:
    return ", ".join(sorted(BACKENDS))


def task_of(name: str) -> str:
    """The task of the backend called `name`, without importing it."""
    try:
        return BACKENDS[name][2]
    except KeyError:
        raise ValueError(f"unknown MODEL {name!r}; known: {_known()}") from None


def create_backend(name: str, options: BackendOptions) -> Backend:
    task_of(name)
    module, cls, _ = BACKENDS[name]
    backend: Backend = getattr(importlib.import_module(module), cls)(options)
    return backend
