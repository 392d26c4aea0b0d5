"""End to end over HTTP with the real tiny LTX-Video pipeline."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from tests.support.media import decode_mp4
from tests.support.server import LiveServer, live_server
from tests.support.settings import KEY, make_settings

HEADERS = {"X-API-Key": KEY}


def _generate(live: LiveServer, **body: object) -> tuple[dict, np.ndarray, Fraction]:
    with live.client() as client:
        response = client.post("/predict", json=body, headers=HEADERS)
        assert response.status_code == 200, response.text
        result = response.json()
        video = client.get(result["video_url"], headers=HEADERS)
        assert video.status_code == 200
        assert video.headers["content-type"] == "video/mp4"
    frames, rate, codec, pix_fmt = decode_mp4(video.content)
    assert (codec, pix_fmt) == ("h264", "yuv420p")
    return result, frames, rate


def test_predict_returns_mp4_with_requested_frames_size_and_fps(tiny_server: LiveServer) -> None:
    result, frames, rate = _generate(
        tiny_server, prompt="a red fox", height=96, width=160, num_frames=17, num_inference_steps=3, fps=12
    )
    assert frames.shape == (17, 96, 160, 3)
    assert rate == 12
    assert result["seed"] == 171198
    assert result["gcs_bucket"] is None and result["gcs_blob"] is None
    assert result["video_path"].endswith(".mp4")
    meta = result["metadata"]
    assert meta["model"] == "ltx-video-tiny" and meta["revision"] == "tiny-v2"
    assert meta["parameters"]["num_frames"] == 17
    assert {"queue", "encode_prompt", "denoise", "decode", "encode_mp4"} <= set(meta["timings"])
    assert result["generation_time_seconds"] > 0


def test_same_seed_gives_identical_frames(tiny_server: LiveServer) -> None:
    body = {"prompt": "waves", "height": 64, "width": 64, "num_frames": 9, "num_inference_steps": 3, "seed": 7}
    _, first, _ = _generate(tiny_server, **body)
    _, second, _ = _generate(tiny_server, **body)
    assert np.array_equal(first, second)


def test_different_seed_gives_different_frames(tiny_server: LiveServer) -> None:
    body = {"prompt": "waves", "height": 64, "width": 64, "num_frames": 9, "num_inference_steps": 3}
    _, first, _ = _generate(tiny_server, seed=1, **body)
    _, second, _ = _generate(tiny_server, seed=2, **body)
    assert not np.array_equal(first, second)


def test_prompt_only_request_uses_the_documented_defaults(tiny_server: LiveServer) -> None:
    # The newcomer's request: every default (704x1216, 121 frames, 50 steps, 24 fps).
    result, frames, rate = _generate(tiny_server, prompt="a newcomer's first video")
    assert frames.shape == (121, 704, 1216, 3)
    assert rate == 24
    assert result["metadata"]["parameters"]["num_inference_steps"] == 50


def test_request_id_header_is_echoed_and_reported(tiny_server: LiveServer) -> None:
    with tiny_server.client() as client:
        response = client.post(
            "/predict",
            json={"prompt": "x", "height": 64, "width": 64, "num_frames": 9, "num_inference_steps": 2},
            headers={**HEADERS, "X-Request-ID": "client-chosen-id-42"},
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "client-chosen-id-42"
    assert response.json()["metadata"]["request_id"] == "client-chosen-id-42"


def test_storage_failure_is_a_clean_500_and_the_server_keeps_serving(tiny_server: LiveServer) -> None:
    root = tiny_server.container.store.root
    shutil.rmtree(root)
    root.write_text("not a directory any more")  # every write under it now fails
    with tiny_server.client() as client:
        response = client.post(
            "/predict",
            json={"prompt": "x", "height": 64, "width": 64, "num_frames": 9, "num_inference_steps": 2},
            headers=HEADERS,
        )
        health = client.get("/health")
    assert response.status_code == 500
    assert response.json()["error"] == "storage_failed"
    assert "Traceback" not in response.text
    assert health.status_code == 200


def test_fast_mode_serves_with_the_first_block_cache_on(tmp_path: Path) -> None:
    """The built-in tiny model has two transformer blocks, so LTX_MODE=fast really runs the
    first-block cache when served; requests of two sizes in a row both succeed."""
    with live_server(make_settings(tmp_path, ltx_mode="fast")) as live:
        with live.client() as client:
            described = client.get("/").json()["model"]
        assert "first_block_cache:0.05=on" in described["optimizations"], described
        for height, width in ((64, 96), (96, 64)):
            _, frames, _ = _generate(
                live, prompt="a red fox", height=height, width=width, num_frames=9, num_inference_steps=3
            )
            assert frames.shape == (9, height, width, 3)
