"""Backends by name: the setting MODEL picks one."""

from __future__ import annotations

from collections.abc import Callable

from models.base import Backend, BackendOptions
from models.latentsync.backend import LatentSyncBackend
from models.latentsync.tiny import LatentSyncTinyBackend
from models.ltx_video import LTXVideoBackend
from models.ltx_video_tiny import LTXVideoTinyBackend

BACKENDS: dict[str, Callable[[BackendOptions], Backend]] = {
    LTXVideoBackend.name: LTXVideoBackend,
    LTXVideoTinyBackend.name: LTXVideoTinyBackend,
    LatentSyncBackend.name: LatentSyncBackend,
    LatentSyncTinyBackend.name: LatentSyncTinyBackend,
}


def create_backend(name: str, options: BackendOptions) -> Backend:
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown MODEL {name!r}; known: {', '.join(sorted(BACKENDS))}") from None
    return factory(options)
