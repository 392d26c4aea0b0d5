"""Local video storage and download: names are the server's, tenants see their own, traversal is
impossible, and a killed server's leftovers are removed at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.io.local_store import LocalStore, owner_tag
from tests.support.server import live_server
from tests.support.settings import SMALL, make_settings


@pytest.mark.parametrize(
    "name", ["../secret.mp4", "..%2Fsecret.mp4", "a/b.mp4", "x.txt", ".hidden.mp4", "a" * 70 + ".mp4"]
)
def test_unsafe_names_are_not_found(tmp_path: Path, name: str) -> None:
    (tmp_path / "secret.mp4").write_bytes(b"x")
    store = LocalStore(tmp_path / "out")
    store.prepare()
    assert store.find(name, "default") is None


def test_a_video_is_found_only_for_its_tenant(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "out")
    store.prepare()
    path = store.new_path("alpha")
    path.write_bytes(b"mp4")
    assert path.name.startswith(owner_tag("alpha") + "-")
    assert store.find(path.name, "alpha") == path
    assert store.find(path.name, "beta") is None
    assert store.new_path("alpha") != path  # a fresh server id each time


def test_leftovers_of_a_killed_server_are_removed_at_start(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "out")
    store.prepare()
    kept = store.new_path("alpha")
    kept.write_bytes(b"finished video")
    (store.root / f".{store.new_path('alpha').name}.partial").write_bytes(b"half")
    (store.scratch / "videogen-inputs-x").mkdir()
    (store.scratch / "videogen-inputs-x" / "video_in").write_bytes(b"input")
    (store.scratch / "frames.npy").write_bytes(b"frames")
    LocalStore(tmp_path / "out").prepare()  # the restart
    assert sorted(p.name for p in store.root.iterdir()) == sorted([kept.name, ".tmp"])
    assert list(store.scratch.iterdir()) == [] and kept.read_bytes() == b"finished video"


@pytest.mark.parametrize("path", ["/videos/..%2F..%2Fetc%2Fpasswd", "/videos/../../etc/passwd", "/videos/missing.mp4"])
def test_download_of_unknown_or_traversing_names_is_404(tiny_server, path: str) -> None:  # type: ignore[no-untyped-def]
    from tests.support.settings import KEY

    with tiny_server.client() as client:
        response = client.get(path, headers={"X-API-Key": KEY})
    assert response.status_code == 404


def test_another_tenants_key_cannot_download_a_video(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys="alpha:key-of-alpha-0123456789,beta:key-of-beta-0123456789")
    with live_server(settings) as live, live.client() as client:
        alpha = {"X-API-Key": "key-of-alpha-0123456789"}
        made = client.post("/predict", json={"prompt": "mine", **SMALL}, headers=alpha)
        assert made.status_code == 200, made.text
        url = made.json()["video_url"]
        theirs = client.get(url, headers={"X-API-Key": "key-of-beta-0123456789"})
        mine = client.get(url, headers={"X-API-Key": "key-of-alpha-0123456789"})
    assert (theirs.status_code, theirs.json()["error"]) == (404, "not_found")
    assert mine.status_code == 200 and mine.content[4:8] == b"ftyp"
