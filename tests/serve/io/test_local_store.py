"""Local video storage and download: names are checked, traversal is impossible."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.io.local_store import LocalStore
from tests.support.settings import KEY


@pytest.mark.parametrize(
    "name", ["../secret.mp4", "..%2Fsecret.mp4", "a/b.mp4", "x.txt", ".hidden.mp4", "a" * 70 + ".mp4"]
)
def test_unsafe_names_are_not_found(tmp_path: Path, name: str) -> None:
    (tmp_path / "secret.mp4").write_bytes(b"x")
    store = LocalStore(tmp_path / "out")
    store.prepare()
    assert store.find(name) is None


def test_path_for_rejects_unsafe_request_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalStore(tmp_path).path_for("../x")


@pytest.mark.parametrize("path", ["/videos/..%2F..%2Fetc%2Fpasswd", "/videos/../../etc/passwd", "/videos/missing.mp4"])
def test_download_of_unknown_or_traversing_names_is_404(tiny_server, path: str) -> None:
    with tiny_server.client() as client:
        response = client.get(path, headers={"X-API-Key": KEY})
    assert response.status_code == 404
