"""POST /uploads on a live server with production defaults (ENVIRONMENT=gce needs UPLOAD_BUCKET,
here the Cloud Storage emulator; local mode keeps a folder): sizes capped as bytes arrive,
kinds sniffed from the bytes, refusals with their codes, uploads per tenant and expiring."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve.io.uploads import GcsUploads, LocalUploads, sniff
from tests.support.emulators import GcsEmulator
from tests.support.server import live_server
from tests.support.settings import KEY, make_settings

A = {"X-API-Key": KEY}
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 200
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\0" * 200
MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00" + b"\0" * 200


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (PNG, "image"),
        (WAV, "audio"),
        (MP4, "video"),
        (b"\xff\xd8\xff\xe0", "image"),
        (b"ID3\x04", "audio"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm", "video"),
        (b"OggS\0", "audio"),
        (b"fLaC", "audio"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "image"),
        (b"\x00\x00\x00\x18ftypM4A ", "audio"),
    ],
)
def test_kinds_come_from_the_first_bytes(head: bytes, kind: str) -> None:
    sniffed = sniff(head)
    assert sniffed is not None and sniffed[0] == kind


@pytest.mark.parametrize("head", [b"", b"hello world", b"<html>", b"%PDF-1.7", b"#!/bin/sh\n", b"PK\x03\x04"])
def test_other_bytes_are_no_kind(head: bytes) -> None:
    assert sniff(head) is None


@pytest.fixture
def bucket(gcs_emulator: GcsEmulator) -> str:
    name = f"uploads-{uuid.uuid4().hex[:8]}"
    gcs_emulator.client().create_bucket(name)
    return name


@pytest.fixture
def live(tmp_path: Path, gcs_emulator: GcsEmulator, bucket: str) -> Iterator[httpx.Client]:
    settings = make_settings(
        tmp_path, upload_bucket=bucket, gcs_endpoint=gcs_emulator.url, upload_max_bytes=64 * 1024, warmup=False
    )
    with live_server(settings) as server, server.client() as client:
        yield client


def test_an_upload_lands_in_the_bucket_for_its_tenant(
    live: httpx.Client, gcs_emulator: GcsEmulator, bucket: str
) -> None:
    answer = live.post("/uploads", files={"file": ("x.png", PNG, "image/png")}, headers=A)
    assert answer.status_code == 201, answer.text
    upload = answer.json()
    assert upload["kind"] == "image" and upload["content_type"] == "image/png" and upload["bytes"] == len(PNG)
    names = [blob.name for blob in gcs_emulator.client().list_blobs(bucket)]
    assert len(names) == 1 and names[0].startswith("uploads/") and names[0].endswith(upload["upload_id"])
    assert gcs_emulator.client().bucket(bucket).blob(names[0]).download_as_bytes() == PNG


def test_refusals_have_their_codes(live: httpx.Client) -> None:
    big = MP4 + b"\0" * (64 * 1024)  # just over the cap: the framing allowance does not let it through
    answers = {
        "no key": live.post("/uploads", files={"file": ("x.png", PNG)}),
        "not multipart": live.post("/uploads", content=PNG, headers={**A, "Content-Type": "image/png"}),
        "no file field": live.post("/uploads", files={"other": ("x.png", PNG)}, headers=A),
        "unknown kind": live.post("/uploads", files={"file": ("x.mp4", b"just some text" * 20)}, headers=A),
        "too large": live.post("/uploads", files={"file": ("x.mp4", big)}, headers=A),
    }

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut as the bytes arrive
        boundary = b"--b0undary\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="x.mp4"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 4096

    streamed = live.post(
        "/uploads", content=chunks(), headers={**A, "Content-Type": "multipart/form-data; boundary=b0undary"}
    )
    codes = {name: (r.status_code, r.json()["error"]) for name, r in answers.items()}
    assert codes == {
        "no key": (401, "unauthorized"),
        "not multipart": (415, "unsupported_media_type"),
        "no file field": (422, "invalid_request"),
        "unknown kind": (415, "unsupported_media_type"),
        "too large": (413, "body_too_large"),
    }
    assert (streamed.status_code, streamed.json()["error"]) == (413, "body_too_large")
    assert live.get("/health").status_code == 200  # and it goes on serving
    assert live.post("/uploads", files={"file": ("x.png", PNG)}, headers=A).status_code == 201


def test_on_gce_without_a_bucket_there_are_no_uploads(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path, warmup=False)) as server, server.client() as client:
        answer = client.post("/uploads", files={"file": ("x.png", PNG)}, headers=A)
        refused = client.post("/predict", json={"prompt": "x", "image": "upload://" + "a" * 32}, headers=A)
    assert answer.status_code == 404
    assert refused.status_code == 422 and "not enabled" in refused.json()["message"]


def test_uploads_expire_and_are_swept(tmp_path: Path) -> None:
    store = LocalUploads(tmp_path / "uploads", ttl_seconds=0.5)
    source = tmp_path / "in.png"
    source.write_bytes(PNG)
    upload = store.save("alpha", source, "image", "image/png")
    assert store.find("alpha", upload.upload_id) is not None and store.find("beta", upload.upload_id) is None
    assert store.find("alpha", "../" + upload.upload_id) is None
    time.sleep(0.6)
    assert store.find("alpha", upload.upload_id) is None
    assert store.sweep() == 1 and list((tmp_path / "uploads").iterdir()) == []


def test_bucket_uploads_expire_and_belong_to_their_tenant(
    tmp_path: Path, gcs_emulator: GcsEmulator, bucket: str
) -> None:
    store = GcsUploads(gcs_emulator.client(), bucket, ttl_seconds=0.5)
    source = tmp_path / "in.wav"
    source.write_bytes(WAV)
    upload = store.save("alpha", source, "audio", "audio/wav")
    target = tmp_path / "copy"
    assert store.copy_to("beta", upload.upload_id, target) is None and not target.exists()
    assert store.copy_to("alpha", upload.upload_id, target) is not None and target.read_bytes() == WAV
    time.sleep(0.6)
    assert store.find("alpha", upload.upload_id) is None
