"""The `ltx-video` backend's real loading path, exercised with the tiny model saved to disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.base import BackendOptions, GenerationRequest
from models.ltx.backend import LTXVideoBackend
from models.ltx.tiny import LTXVideoTinyBackend, build_tiny_pipeline
from models.registry import BACKENDS, create_backend
from tests.support.media import decode_mp4
from tests.support.server import live_server
from tests.support.settings import KEY, make_settings

REQUEST = GenerationRequest(prompt="a lighthouse", height=64, width=96, num_frames=9, num_inference_steps=3, seed=5)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ltx-tiny")
    build_tiny_pipeline().save_pretrained(directory)
    return directory


def test_saved_tiny_pipeline_loads_through_ltx_video_and_matches(saved_tiny: Path) -> None:
    tiny = LTXVideoTinyBackend(BackendOptions(device="cpu"))
    tiny.load()
    loaded = LTXVideoBackend(BackendOptions(model_path=str(saved_tiny), device="cpu"))
    loaded.load()
    expected = tiny.render(REQUEST, lambda step, total: None)
    actual = loaded.render(REQUEST, lambda step, total: None)
    assert np.array_equal(expected, actual)
    assert loaded.describe()["source"] == str(saved_tiny)


def test_ltx_video_backend_serves_a_local_directory_over_http(saved_tiny: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, model="ltx-video", model_path=str(saved_tiny), model_revision="r1")
    with live_server(settings) as live, live.client() as client:
        response = client.post(
            "/predict",
            json={"prompt": "a lighthouse", "height": 64, "width": 96, "num_frames": 9, "num_inference_steps": 2},
            headers={"X-API-Key": KEY},
        )
        assert response.status_code == 200, response.text
        assert response.json()["metadata"]["model"] == "ltx-video"
        assert response.json()["metadata"]["revision"] == "r1"
        video = client.get(response.json()["video_url"], headers={"X-API-Key": KEY})
    frames, _, _, _ = decode_mp4(video.content)
    assert frames.shape == (9, 64, 96, 3)


def test_on_step_reports_every_step_in_order() -> None:
    backend = LTXVideoTinyBackend(BackendOptions(device="cpu"))
    backend.load()
    seen: list[tuple[int, int]] = []
    backend.render(REQUEST, lambda step, total: seen.append((step, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_exception_in_on_step_stops_the_generation() -> None:
    backend = LTXVideoTinyBackend(BackendOptions(device="cpu"))
    backend.load()
    seen: list[int] = []

    def stop_at_two(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            raise InterruptedError("stop")

    with pytest.raises(InterruptedError):
        backend.render(REQUEST, stop_at_two)
    assert seen == [1, 2]


def test_tiny_vae_keeps_the_real_compression() -> None:
    pipe = build_tiny_pipeline()
    assert pipe.vae_spatial_compression_ratio == 32
    assert pipe.vae_temporal_compression_ratio == 8


def test_registry_knows_both_backends_and_rejects_unknown_names() -> None:
    assert {"ltx-video", "ltx-video-tiny"} <= set(BACKENDS)
    with pytest.raises(ValueError, match="unknown MODEL 'nope'"):
        create_backend("nope", BackendOptions())


def test_missing_local_directory_fails_load(tmp_path: Path) -> None:
    backend = LTXVideoBackend(BackendOptions(model_path=str(tmp_path / "absent"), device="cpu"))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        backend.load()


def test_a_distilled_checkpoint_is_served_with_its_recipe_and_says_so(tmp_path: Path) -> None:
    """Over HTTP with the local defaults (jobs on SQLite): a declared-distilled 0.9.5-style directory
    runs eight steps whatever the body asks; the job's progress counts them and the response's
    metadata names the recipe beside the parameters as sent."""
    import json
    import time

    from diffusers import LTXConditionPipeline

    directory = tmp_path / "distilled"
    LTXConditionPipeline(**build_tiny_pipeline(later=True).components).save_pretrained(directory)
    (directory / "videogen.json").write_text(json.dumps({"variant": "distilled"}))
    settings = make_settings(tmp_path, model="ltx-video", model_path=str(directory), environment="local")
    body = {"prompt": "a lighthouse", "height": 64, "width": 96, "num_frames": 9, "num_inference_steps": 3}
    with live_server(settings) as live, live.client() as client:
        predicted = client.post("/predict", json=body, headers={"X-API-Key": KEY})
        job = client.post("/jobs", json=body, headers={"X-API-Key": KEY}).json()
        deadline = time.monotonic() + 60
        while (done := client.get(f"/jobs/{job['job_id']}", headers={"X-API-Key": KEY}).json())["status"] not in {
            "succeeded",
            "failed",
        }:
            assert time.monotonic() < deadline, done
            time.sleep(0.1)
        described = client.get("/").json()
    assert predicted.status_code == 200, predicted.text
    recipe = "0.9.5+ distilled (8 fixed steps, guidance 1)"
    metadata = predicted.json()["metadata"]
    assert metadata["recipe"] == recipe and metadata["parameters"]["num_inference_steps"] == 3
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"step": 8, "total": 8, "fraction": 1.0}
    assert done["result"]["metadata"]["recipe"] == recipe
    assert recipe in json.dumps(described)
