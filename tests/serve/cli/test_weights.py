"""The GCS weight cache against fake-gcs-server, through the real google-cloud-storage client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from models.base import BackendOptions, GenerationRequest
from models.ltx.backend import LTXVideoBackend
from models.ltx.tiny import LTXVideoTinyBackend, build_tiny_pipeline
from serve.cli import weights
from tests.support.emulators import GcsEmulator

ROOT = Path(__file__).resolve().parents[3]
REQUEST = GenerationRequest(prompt="cached", height=64, width=64, num_frames=9, num_inference_steps=2)


@pytest.fixture
def bucket(gcs_emulator: GcsEmulator) -> str:
    name = f"cache-{uuid.uuid4().hex[:12]}"
    gcs_emulator.client().create_bucket(name)
    return name


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-src")
    build_tiny_pipeline().save_pretrained(directory)
    return directory


def test_round_trip_serves_the_same_model(
    gcs_emulator: GcsEmulator, bucket: str, tiny_dir: Path, tmp_path: Path
) -> None:
    client = gcs_emulator.client()
    pushed = weights.push(client, bucket, "ltx-video-tiny", "v1", tiny_dir)
    pulled = weights.pull(client, bucket, "ltx-video-tiny", "v1", tmp_path / "pulled")
    assert pulled["files"] == pushed["files"] > 5
    assert pulled["bytes"] == pushed["bytes"]
    assert weights.verify(tmp_path / "pulled") == []
    backend = LTXVideoBackend(BackendOptions(model_path=str(tmp_path / "pulled"), device="cpu"))
    backend.load()
    reference = LTXVideoTinyBackend(BackendOptions(device="cpu"))
    reference.load()
    noop = lambda step, total: None  # noqa: E731
    assert np.array_equal(backend.render(REQUEST, noop), reference.render(REQUEST, noop))


def test_second_pull_skips_verified_files_and_repairs_a_corrupt_one(
    gcs_emulator: GcsEmulator, bucket: str, tiny_dir: Path, tmp_path: Path
) -> None:
    client = gcs_emulator.client()
    weights.push(client, bucket, "m", "r", tiny_dir)
    dest = tmp_path / "w"
    first = weights.pull(client, bucket, "m", "r", dest)
    victim = max(dest.rglob("*.safetensors"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert any("crc32c mismatch" in p for p in weights.verify(dest))
    second = weights.pull(client, bucket, "m", "r", dest)
    assert second["files"] == 1
    assert second["skipped_files"] == first["files"] - 1
    assert weights.verify(dest) == []


def test_prefix_without_manifest_is_refused(gcs_emulator: GcsEmulator, bucket: str, tmp_path: Path) -> None:
    client = gcs_emulator.client()
    client.bucket(bucket).blob("m/half-pushed/model_index.json").upload_from_string("{}")
    with pytest.raises(weights.CacheError, match=r"no manifest\.json"):
        weights.pull(client, bucket, "m", "half-pushed", tmp_path / "w")
    assert not (tmp_path / "w" / "model_index.json").exists()


def test_push_refuses_to_overwrite_a_revision(gcs_emulator: GcsEmulator, bucket: str, tiny_dir: Path) -> None:
    client = gcs_emulator.client()
    weights.push(client, bucket, "m", "r", tiny_dir)
    with pytest.raises(weights.CacheError, match="immutable"):
        weights.push(client, bucket, "m", "r", tiny_dir)


def test_unsafe_names_are_refused(gcs_emulator: GcsEmulator, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(weights.CacheError, match="invalid revision"):
        weights.pull(gcs_emulator.client(), bucket, "m", "../other", tmp_path)


def test_interrupted_pull_leaves_nothing_verify_accepts(gcs_emulator: GcsEmulator, bucket: str, tmp_path: Path) -> None:
    # A 96 MB file takes the chunked path and lasts long enough to be killed mid-way.
    source = tmp_path / "src"
    source.mkdir()
    (source / "model_index.json").write_text("{}")
    (source / "big.bin").write_bytes(os.urandom(96 * 1024 * 1024))
    client = gcs_emulator.client()
    weights.push(client, bucket, "big", "r", source)
    dest = tmp_path / "dest"
    command = [sys.executable, "-m", "serve.cli.weights", "pull", "--bucket", bucket, "--model", "big"]
    process = subprocess.Popen([*command, "--revision", "r", "--dir", str(dest)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not (dest / "big.bin.partial").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert weights.verify(dest) != []
    assert not (dest / "big.bin").exists() or weights.verify(dest)
    # Pulling again completes the copy.
    report = weights.pull(client, bucket, "big", "r", dest)
    assert weights.verify(dest) == []
    assert (dest / "big.bin").read_bytes() == (source / "big.bin").read_bytes()
    print(f"\npull of 96 MiB from the emulator: {report['mb_per_s']} MB/s")


def test_cli_exit_codes(gcs_emulator: GcsEmulator, bucket: str, tmp_path: Path) -> None:
    assert weights.main(["verify", "--dir", str(tmp_path)]) == 1
    pull = ["pull", "--bucket", bucket, "--model", "m", "--revision", "absent", "--dir", str(tmp_path / "w")]
    assert weights.main(pull) == 2


def test_hub_patterns_take_exactly_what_the_pipeline_loads(tiny_dir: Path, tmp_path: Path) -> None:
    """A hub repository laid out like Lightricks/LTX-Video (diffusers folders beside single-file
    checkpoints, .bin duplicates and docs): the patterns from its own model_index.json select the
    pipeline's files only, and LTXPipeline loads from that selection."""
    import fnmatch
    import json
    import shutil

    from diffusers import LTXPipeline

    repo = tmp_path / "repo"
    shutil.copytree(tiny_dir, repo)
    junk = ["ltx-video-2b-v0.9.safetensors", "ltxv-spatial-upscaler.safetensors", "README.md", "media/demo.mp4"]
    junk += ["text_encoder/pytorch_model.bin", "transformer/diffusion_pytorch_model.bin"]
    for name in junk:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(b"not loaded")
    patterns = weights.hub_patterns(json.loads((repo / "model_index.json").read_text()))
    assert patterns == ["model_index.json", "scheduler/*", "text_encoder/*", "tokenizer/*", "transformer/*", "vae/*"]

    files = [p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()]
    chosen = [
        f
        for f in files
        if any(fnmatch.fnmatch(f, p) for p in patterns) and not any(fnmatch.fnmatch(f, i) for i in weights.HUB_IGNORED)
    ]
    assert not set(chosen) & set(junk)
    expected = [p.relative_to(tiny_dir).as_posix() for p in tiny_dir.rglob("*") if p.is_file()]
    assert sorted(chosen) == sorted(expected)
    selection = tmp_path / "selection"
    for name in chosen:
        (selection / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, selection / name)
    LTXPipeline.from_pretrained(selection)


def test_a_repository_that_is_not_diffusers_is_refused() -> None:
    with pytest.raises(weights.CacheError, match="_class_name"):
        weights.hub_patterns({"scheduler": ["diffusers", "X"]})


def test_push_declares_a_distilled_checkpoint_and_the_pulled_copy_runs_its_recipe(
    gcs_emulator: GcsEmulator, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing in a distilled checkpoint's configs says so: `push --variant distilled` (the default
    for a hub repository named distilled) writes videogen.json, which travels in the manifest, and
    the VM's pulled copy runs the distilled recipe."""
    from diffusers import LTXConditionPipeline

    source = tmp_path / "src"
    LTXConditionPipeline(**build_tiny_pipeline(later=True).components).save_pretrained(source)
    client = gcs_emulator.client()
    monkeypatch.setattr(weights.storage, "Client", lambda **_: client)
    args = ["push", "--bucket", bucket, "--model", "ltx-video", "--revision", "d1", "--dir", str(source)]
    with pytest.raises(SystemExit):  # argparse refuses a variant it does not know
        weights.main([*args, "--variant", "turbo"])
    assert weights.main([*args, "--variant", "distilled"]) == 0
    pulled = tmp_path / "pulled"
    weights.pull(client, bucket, "ltx-video", "d1", pulled)
    assert weights.verify(pulled) == []
    assert json.loads((pulled / "videogen.json").read_text()) == {"variant": "distilled"}
    backend = LTXVideoBackend(BackendOptions(model_path=str(pulled), device="cpu"))
    backend.load()
    assert backend.describe()["recipe"] == "0.9.5+ distilled (8 fixed steps, guidance 1)"
    # The hub id decides when --variant is not given.
    assert weights.declared_variant("Lightricks/LTX-Video-0.9.8-2B-distilled") == "distilled"
    assert weights.declared_variant("Lightricks/LTX-Video-0.9.7-dev") is None
