"""Videos to Cloud Storage through the real client and fake-gcs-server on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.cloud import storage
from google.oauth2 import service_account

from serve.errors import ServeError
from serve.io.gcs import Destination, GcsOutput, parse_destination
from tests.support.emulators import GcsEmulator, start_fake_gcs
from tests.support.media import decode_mp4
from tests.support.server import LiveServer, live_server
from tests.support.settings import KEY, SMALL, make_settings

HEADERS = {"X-API-Key": KEY}


def _bucket(emulator: GcsEmulator) -> str:
    name = f"out-{uuid.uuid4().hex[:12]}"
    emulator.client().create_bucket(name)
    return name


def _gcs_settings(tmp_path: Path, emulator: GcsEmulator, bucket: str, **more: object):
    return make_settings(tmp_path, gcs_output_bucket=bucket, gcs_endpoint=emulator.url, gcs_sign_urls=False, **more)


def _predict(live: LiveServer, **body: object) -> httpx.Response:
    with live.client() as client:
        return client.post("/predict", json={"prompt": "to the cloud", **SMALL, **body}, headers=HEADERS)


def test_video_lands_in_the_bucket_under_the_dated_name(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    bucket = _bucket(gcs_emulator)
    with live_server(_gcs_settings(tmp_path, gcs_emulator, bucket)) as live:
        response = _predict(live, num_frames=17)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["gcs_bucket"] == bucket
    # Dated, and named by the server's own id (never by a client's X-Request-ID).
    assert re.fullmatch(rf"videos/{datetime.now(UTC):%Y/%m/%d}/[0-9a-f]{{12}}-[0-9a-f]{{32}}\.mp4", result["gcs_blob"])
    assert result["metadata"]["request_id"] not in result["gcs_blob"]
    assert result["video_path"] == f"gs://{bucket}/{result['gcs_blob']}"
    assert result["video_url"] == f"https://storage.cloud.google.com/{bucket}/{result['gcs_blob']}"
    assert "upload" in result["metadata"]["timings"]
    blob = gcs_emulator.client().bucket(bucket).get_blob(result["gcs_blob"])
    assert blob is not None and blob.content_type == "video/mp4"
    frames, _, _, _ = decode_mp4(blob.download_as_bytes())
    assert frames.shape == (17, 64, 96, 3)
    assert not list((tmp_path / "outputs").glob("*.mp4"))  # the local copy goes once uploaded


def test_gcs_destination_in_the_allow_list_is_honoured(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    bucket, other = _bucket(gcs_emulator), _bucket(gcs_emulator)
    settings = _gcs_settings(tmp_path, gcs_emulator, bucket, gcs_allowed_buckets=other)
    with live_server(settings) as live:
        honoured = _predict(live, gcs_destination=f"gs://{other}//clips/./a.mp4".replace("/./", "/"))
        outside = _predict(live, gcs_destination="gs://someone-elses-bucket/a.mp4")
    assert honoured.status_code == 200, honoured.text
    assert (honoured.json()["gcs_bucket"], honoured.json()["gcs_blob"]) == (other, "clips/a.mp4")
    assert gcs_emulator.client().bucket(other).get_blob("clips/a.mp4") is not None
    assert outside.status_code == 422
    assert outside.json()["fields"][0]["field"] == "gcs_destination"


def test_existing_destination_is_never_overwritten(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    bucket = _bucket(gcs_emulator)
    gcs_emulator.client().bucket(bucket).blob("taken.mp4").upload_from_string(b"someone else's")
    with live_server(_gcs_settings(tmp_path, gcs_emulator, bucket)) as live:
        response = _predict(live, gcs_destination=f"gs://{bucket}/taken.mp4")
    assert response.status_code == 409
    assert response.json()["error"] == "destination_exists"
    assert gcs_emulator.client().bucket(bucket).blob("taken.mp4").download_as_bytes() == b"someone else's"
    assert len(list((tmp_path / "outputs").glob("*.mp4"))) == 1


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("gs://b-1/../x.mp4", "'..'"),
        ("gs://b-1/a/./x.mp4", "'.'"),
        ("gs://b-1/", "empty"),
        ("gs://b-1/x.mov", ".mp4"),
        ("gs://b-1/a\x07.mp4", "control"),
        ("gs://b-1/" + "a" * 1100 + ".mp4", "longer than"),
        ("gs://B_1/x.mp4", "not a valid bucket"),
        ("gs://other/x.mp4", "not one this server may write to"),
        ("https://b-1/x.mp4", "gs://"),
    ],
)
def test_path_tricks_are_rejected(value: str, text: str) -> None:
    with pytest.raises(ServeError) as raised:
        parse_destination(value, {"b-1"})
    assert raised.value.status == 422
    assert raised.value.fields == [{"field": "gcs_destination", "message": raised.value.fields[0]["message"]}]
    assert text in raised.value.message


def test_leading_and_doubled_slashes_are_normalised() -> None:
    assert parse_destination("gs://b-1///a//b/c.mp4", {"b-1"}) == Destination("b-1", "a/b/c.mp4")


def test_storage_down_mid_request_keeps_the_video_and_retries(tmp_path: Path) -> None:
    emulator = start_fake_gcs(root=tmp_path / "gcs")
    port = int(emulator.url.rsplit(":", 1)[1])
    bucket = _bucket(emulator)
    settings = _gcs_settings(
        tmp_path,
        emulator,
        bucket,
        gcs_upload_timeout_seconds=2,
        gcs_upload_retry_delay_seconds=1,
        gcs_upload_retry_attempts=8,
    )
    restarted = None
    try:
        with live_server(settings) as live:
            body = {"height": 256, "width": 384, "num_frames": 25, "num_inference_steps": 20}
            with live.client() as client:
                pending = client.build_request("POST", "/predict", json={"prompt": "x", **body}, headers=HEADERS)
                answer: dict[str, httpx.Response] = {}
                thread = threading.Thread(target=lambda: answer.setdefault("r", client.send(pending)))
                thread.start()
                live.wait_until(lambda: live.container.runner.state.value == "busy", timeout=30)
                emulator.stop()  # storage goes down while the video is being generated
                thread.join(60)
            response = answer["r"]
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "upload_failed"
            assert response.json()["request_id"]
            (kept,) = (tmp_path / "outputs").glob("*.mp4")  # the video is kept on disk
            kept_bytes = kept.read_bytes()
            restarted = start_fake_gcs(port=port, root=tmp_path / "gcs")
            name = f"videos/{datetime.now(UTC):%Y/%m/%d}/{kept.name}"
            deadline = time.monotonic() + 60
            while restarted.client().bucket(bucket).get_blob(name) is None:
                assert time.monotonic() < deadline, "the background retry never uploaded the video"
                time.sleep(0.2)
            uploaded = restarted.client().bucket(bucket).blob(name).download_as_bytes()
            assert uploaded == kept_bytes
            live.wait_until(lambda: not kept.exists(), timeout=10)  # the bucket holds it now
    finally:
        for server in (emulator, restarted):
            if server is not None and server.process.poll() is None:
                server.stop()


def test_signed_url_is_v4_and_its_signature_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)  # sign for the real endpoint
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    email = "videos@test-project.iam.gserviceaccount.com"
    credentials = service_account.Credentials.from_service_account_info(
        {
            "client_email": email,
            "private_key": pem.decode(),
            "token_uri": "http://127.0.0.1:1/token",
            "project_id": "test-project",
            "type": "service_account",
        }
    )
    client = storage.Client(project="test-project", credentials=credentials)
    output = GcsOutput(
        client=client,
        bucket="b-1",
        allowed_buckets=set(),
        sign_urls=True,
        url_lifetime=timedelta(minutes=15),
        retry_attempts=0,
        retry_delay=1,
        upload_timeout=5,
    )
    url = output.url(Destination("b-1", "videos/2026/01/02/a b.mp4"))
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    assert parts.scheme == "https" and parts.netloc == "storage.googleapis.com"
    assert parts.path == "/b-1/videos/2026/01/02/a%20b.mp4"
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-Expires"] == "900"
    assert query["X-Goog-Credential"].startswith(email + "/")
    # Rebuild the V4 string-to-sign and check the RSA signature with the public key.
    signed = sorted((k, v) for k, v in query.items() if k != "X-Goog-Signature")
    canonical_query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in signed)
    canonical = "\n".join(
        [
            "GET",
            parts.path,
            canonical_query,
            f"host:{parts.netloc}",
            "",
            query["X-Goog-SignedHeaders"],
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = query["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        ["GOOG4-RSA-SHA256", query["X-Goog-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    signature = bytes.fromhex(query["X-Goog-Signature"])
    key.public_key().verify(signature, to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert json.dumps(query)  # the URL carries no private material beyond the signature
    assert base64.b64encode(pem) not in url.encode()


def test_signing_failure_after_upload_returns_the_console_url(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    # Anonymous emulator credentials cannot sign: the upload stands and the link falls back.
    bucket = _bucket(gcs_emulator)
    settings = make_settings(tmp_path, gcs_output_bucket=bucket, gcs_endpoint=gcs_emulator.url, gcs_sign_urls=True)
    with live_server(settings) as live:
        response = _predict(live)
    assert response.status_code == 200, response.text
    assert response.json()["video_url"].startswith(f"https://storage.cloud.google.com/{bucket}/videos/")
