"""The one place that decides what /health says (the load balancer and the MIG autohealer read it)."""

from __future__ import annotations

from serve.core.keys import KeyStore
from serve.core.runner import Runner
from serve.io.local_store import LocalStore
from serve.io.secrets import SecretKeyRefresher
from serve.schemas import HealthResponse, Lifecycle


def health(
    runner: Runner, keys: KeyStore, refresher: SecretKeyRefresher | None, store: LocalStore, min_free_bytes: int
) -> HealthResponse:
    """Serving (200) only when the model is ready, keys are loaded, the disk has room for videos
    and no drain has begun."""
    state, reason = runner.state, runner.reason
    if state.is_serving() and not keys.available:
        # Fail closed: with no key every call would be a 401, so take this VM out of serving.
        state, reason = Lifecycle.NO_API_KEYS, (refresher.last_error if refresher else None) or "no API keys"
    if state.is_serving() and (free := store.low_on_space(min_free_bytes)) is not None:
        # Every video would fail to store: let the load balancer send work elsewhere until space returns.
        state, reason = Lifecycle.DISK_FULL, f"{free} bytes free, below MIN_FREE_DISK_BYTES={min_free_bytes}"
    if runner.draining:
        state, reason = Lifecycle.DRAINING, "shutting down: finishing in-flight work, taking no new work"
    return HealthResponse(
        status=state, reason=reason, model=runner.model_name, queue_depth=runner.depth, in_flight=runner.in_flight
    )
