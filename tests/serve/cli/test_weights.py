"""The GCS weight cache against fake-gcs-server, through the real google-cloud-storage client."""

from __future__ import annotations

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
