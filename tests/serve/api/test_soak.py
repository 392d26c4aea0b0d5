"""A bounded soak: 200 requests from 8 clients, valid and hostile mixed, against the tiny model on
127.0.0.1. No 5xx, no video lost or overwritten, file descriptors and scratch space back where they
started. The figures are printed (run with -s to see them)."""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.support.server import live_server
from tests.support.settings import KEY, SMALL, make_settings

CLIENTS, REQUESTS = 8, 200
HEADERS = {"X-API-Key": KEY}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _hostile(client: httpx.Client, rng: random.Random, seed: int) -> httpx.Response:
    kind = rng.randrange(8)
    if kind == 0:
        return client.post("/predict", json={"prompt": "x", "height": 100}, headers=HEADERS)
    if kind == 1:
        return client.post("/predict", content=b"{not json", headers={**HEADERS, "Content-Type": "application/json"})
    if kind == 2:
        return client.post("/predict", json={"prompt": "x" * 70_000}, headers=HEADERS)  # over the body cap
    if kind == 3:
        return client.post("/predict", json={"prompt": "x"}, headers={"X-API-Key": "wrong"})
    if kind == 4:
        return client.get("/videos/..%2F..%2Fetc%2Fpasswd", headers=HEADERS)
    if kind == 5:
        # A valid request with a hostile correlation id: served, under an id of the server's.
        unsafe = {**HEADERS, "X-Request-ID": "../../" * 30}
        return client.post("/predict", json={"prompt": "x", "seed": seed, **SMALL}, headers=unsafe)
    if kind == 6:
        return client.get(f"/videos/{'a' * 12}-{'b' * 32}.mp4", headers=HEADERS)
    return client.post("/predict", json={"prompt": "x", "num_frames": 10}, headers=HEADERS)


def test_soak_mixed_clients(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, queue_size=6)
    with live_server(settings) as live:
        scratch = live.container.store.scratch
        fds_before, scratch_before = _open_fds(), _tree_bytes(scratch)
        statuses: Counter[int] = Counter()
        latencies: list[float] = []
        made: list[tuple[int, str]] = []  # (seed, video_url) of every 200
        errors: list[str] = []
        lock = threading.Lock()
        seeds = iter(range(1, REQUESTS + 1))

        def client_loop(index: int) -> None:
            rng = random.Random(index)
            with live.client(timeout=60) as client:
                while True:
                    with lock:
                        seed = next(seeds, None)
                    if seed is None:
                        return
                    started = time.perf_counter()
                    try:
                        if rng.random() < 0.6:
                            body = {"prompt": f"soak {seed}", "seed": seed, **SMALL}
                            rid = {"X-Request-ID": "shared-id-0001"} if seed % 5 == 0 else {}
                            response = client.post("/predict", json=body, headers={**HEADERS, **rid})
                        else:
                            response = _hostile(client, rng, seed)
                    except httpx.HTTPError as exc:  # counted, not lost: a transport error fails the test
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    if response.status_code == 200:
                        with lock:
                            made.append((seed, response.json()["video_url"]))
                    with lock:
                        statuses[response.status_code] += 1
                        latencies.append(time.perf_counter() - started)

        started = time.monotonic()
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        elapsed = time.monotonic() - started
        with live.client() as client:
            videos = {url: client.get(url, headers=HEADERS).content for _, url in made}
        live.wait_until(lambda: live.container.runner.in_flight == 0, timeout=30)
        fds_after, scratch_after = _open_fds(), _tree_bytes(scratch)
        stored = sorted(live.container.store.root.glob("*.mp4"))

    latencies.sort()
    print(
        f"\nsoak: {sum(statuses.values())} requests from {CLIENTS} clients in {elapsed:.1f} s; "
        f"statuses {dict(sorted(statuses.items()))}; latency median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {latencies[int(0.95 * len(latencies))] * 1000:.0f} ms; videos {len(made)} made, {len(stored)} on disk; "
        f"fds {fds_before} -> {fds_after}; scratch bytes {scratch_before} -> {scratch_after}"
    )
    assert errors == [] and sum(statuses.values()) == REQUESTS and elapsed < 120
    assert not [status for status in statuses if status >= 500 and status != 503]  # 503 busy is allowed
    assert all(status in (200, 401, 404, 413, 422, 503) for status in statuses)
    assert len({url for _, url in made}) == len(made) == len(stored)  # none lost, none overwritten
    assert all(data[4:8] == b"ftyp" for data in videos.values())
    assert len(set(videos.values())) == len(videos)  # every video its own bytes (its own seed)
    assert fds_after <= fds_before + 2 and scratch_after == scratch_before == 0
