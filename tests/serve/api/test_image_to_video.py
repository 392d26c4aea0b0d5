"""Image-to-video over HTTP: `image` in the /predict body, fetched from an input bucket on the GCS
emulator (or refused) before the request queues, checked as a picture, and conditioning the video
with the real tiny LTX-Video pipeline."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.emulators import GcsEmulator
from tests.support.media import decode_mp4
from tests.support.server import LiveServer, live_server
from tests.support.settings import KEY, make_settings

HEADERS = {"X-API-Key": KEY}
BODY = {"prompt": "a boat", "height": 64, "width": 96, "num_frames": 9, "num_inference_steps": 2}


def _encoded(array: np.ndarray, kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=kind)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bucket(gcs_emulator: GcsEmulator) -> str:
    name = f"pictures-{uuid.uuid4().hex[:8]}"
    client = gcs_emulator.client()
    client.create_bucket(name)
    rng = np.random.default_rng(5)
    objects = {
        "start.png": _encoded(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), "PNG"),
        "start.jpg": _encoded(rng.integers(0, 256, (90, 90, 3), dtype=np.uint8), "JPEG"),
        "start.gif": _encoded(rng.integers(0, 256, (32, 32), dtype=np.uint8), "GIF"),
        "wide.png": _encoded(np.zeros((2, 9000, 3), dtype=np.uint8), "PNG"),
        "big.png": _encoded(np.zeros((200, 300, 3), dtype=np.uint8), "PNG"),  # over MAX_IMAGE_PIXELS below
        "notes.png": b"this is text, named like a picture",
        "cut.png": _encoded(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "PNG")[:300],
    }
    for key, data in objects.items():
        client.bucket(name).blob(f"in/{key}").upload_from_string(data)
    return name


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, gcs_emulator: GcsEmulator, bucket: str) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("i2v"), gcs_endpoint=gcs_emulator.url, input_buckets=bucket, max_image_pixels=50_000
    )
    with live_server(settings) as server:
        yield server


def _predict(live: LiveServer, **body: object) -> tuple[int, dict]:
    with live.client() as client:
        response = client.post("/predict", json={**BODY, **body}, headers=HEADERS)
    return response.status_code, response.json()


def _frames(live: LiveServer, result: dict) -> np.ndarray:
    with live.client() as client:
        video = client.get(result["video_url"], headers=HEADERS)
    assert video.status_code == 200
    return decode_mp4(video.content)[0]


@pytest.mark.parametrize("name", ["start.png", "start.jpg"])
def test_a_picture_starts_the_video(live: LiveServer, bucket: str, name: str) -> None:
    status, result = _predict(live, image=f"gs://{bucket}/in/{name}")
    assert status == 200, result
    with_image = _frames(live, result)
    assert with_image.shape == (9, 64, 96, 3)
    status, plain = _predict(live)
    assert status == 200
    assert np.abs(with_image.astype(int) - _frames(live, plain).astype(int)).max() > 8


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("start.gif", 422, "invalid_image"),
        ("notes.png", 422, "invalid_image"),
        ("cut.png", 422, "invalid_image"),
        ("wide.png", 413, "input_too_large"),
        ("big.png", 413, "input_too_large"),
        ("missing.png", 422, "input_unreachable"),
    ],
)
def test_an_unusable_picture_is_refused_naming_the_field(
    live: LiveServer, bucket: str, name: str, status: int, code: str
) -> None:
    got, answer = _predict(live, image=f"gs://{bucket}/in/{name}")
    assert (got, answer["error"]) == (status, code), answer
    assert "image" in answer["message"]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("gs://not-an-input-bucket/in/start.png", "unsafe_url"),
        ("https://127.0.0.1/start.png", "unsafe_url"),
        ("http://example.com/start.png", "unsafe_url"),
        ("gs://B_A_D/x.png", "invalid_request"),
    ],
)
def test_an_image_url_goes_only_where_inputs_may_come_from(live: LiveServer, url: str, code: str) -> None:
    got, answer = _predict(live, image=url)
    assert (got, answer["error"]) == (422, code), answer


def test_nothing_is_left_in_scratch_after_refusals(live: LiveServer, bucket: str, tmp_path: Path) -> None:
    for name in ("notes.png", "wide.png", "start.png"):
        _predict(live, image=f"gs://{bucket}/in/{name}")
    scratch = live.container.settings.scratch_dir
    assert not list(scratch.glob("videogen-inputs-*"))
