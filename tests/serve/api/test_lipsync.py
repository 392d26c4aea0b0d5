"""Lip-sync over HTTP with `latentsync-tiny`: inputs from the Cloud Storage emulator (gs://) and a
plain-HTTP server on 127.0.0.1 (allowed only by the test-only FETCH_ALLOW_LOOPBACK), a real face
photograph (scikit-image's astronaut) moved a few pixels per frame, and the fixture's speech."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import torch

from models.base import BackendOptions
from models.latentsync.face import FaceAligner
from models.latentsync.landmarks import FaceLandmarker
from models.latentsync.media import MediaLimits
from models.latentsync.tiny import LatentSyncTinyBackend
from models.mp4 import Mp4Options, encode_mp4
from tests.support.emulators import GcsEmulator
from tests.support.fixtures import fixtures
from tests.support.jobs import ALPHA, JobsEnv
from tests.support.media import face_frames
from tests.support.server import LiveServer, live_server
from tests.support.settings import KEY, make_settings

SOURCE_FRAMES = 40  # 1.6 s of video for 2.0 s of speech: the clip plays forwards then backwards


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    encode_mp4(face_frames(SOURCE_FRAMES), 25, root / "face.mp4", Mp4Options(crf=12))
    (root / "speech.wav").write_bytes((fixtures() / "audio" / "speech.wav").read_bytes())
    import cv2
    from skimage import data

    coffee = cv2.resize(data.coffee(), (320, 240), interpolation=cv2.INTER_AREA)  # a real photo, no face
    encode_mp4(np.stack([coffee] * 10), 25, root / "noface.mp4")
    (root / "notavideo.mp4").write_bytes(b"this is a text file, not a video\n" * 50)
    return root


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def file_server(media: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(media)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def bucket(gcs_emulator: GcsEmulator, media: Path) -> str:
    name = f"inputs-{uuid.uuid4().hex[:8]}"
    client = gcs_emulator.client()
    client.create_bucket(name)
    for path in media.iterdir():
        client.bucket(name).blob(f"in/{path.name}").upload_from_filename(str(path))
    return name


@pytest.fixture(scope="module")
def backend() -> LatentSyncTinyBackend:
    return LatentSyncTinyBackend(BackendOptions(device="cpu"))


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, gcs_emulator: GcsEmulator, backend: LatentSyncTinyBackend, bucket: str
) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("lipsync"),
        model="latentsync-tiny",
        gcs_endpoint=gcs_emulator.url,
        fetch_allow_loopback=True,
        lipsync_max_seconds=10,
        input_buckets=bucket,
    )
    with live_server(settings, backend=backend) as server:
        assert server.container.runner.state.value == "ready", server.container.runner.reason
        yield server


def _predict(live: LiveServer, **body: object) -> tuple[int, dict]:
    with live.client() as client:
        response = client.post("/predict", json={"inference_steps": 10, **body}, headers={"X-API-Key": KEY})
    return response.status_code, response.json()


def _download(live: LiveServer, url: str) -> bytes:
    with live.client() as client:
        response = client.get(url, headers={"X-API-Key": KEY})
    assert response.status_code == 200
    return response.content


def _outside_face(frame: np.ndarray) -> np.ndarray:
    """Boolean mask of the pixels well away from the face box the model may change."""
    points = FaceLandmarker().points(frame)
    assert points is not None
    aligner = FaceAligner(64)
    matrix = aligner.matrix(points, smooth=False)
    w, h = aligner.face_size
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
    corners = inverse @ np.array([[0, w, 0, w], [0, 0, h, h], [1, 1, 1, 1]])
    x0, x1 = corners[0].min() - 8, corners[0].max() + 8
    y0, y1 = corners[1].min() - 8, corners[1].max() + 8
    ys, xs = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
    return ~((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1))


def test_lipsync_from_gcs_then_http_without_reloading(
    live: LiveServer, bucket: str, file_server: str, backend: LatentSyncTinyBackend, media: Path
) -> None:
    loads = backend.model_loads
    started = time.perf_counter()
    status, first = _predict(live, video_in=f"gs://{bucket}/in/face.mp4", audio_in=f"gs://{bucket}/in/speech.wav")
    first_seconds = time.perf_counter() - started
    assert status == 200, first
    started = time.perf_counter()
    status, second = _predict(live, video_in=f"{file_server}/face.mp4", audio_in=f"{file_server}/speech.wav", seed=7)
    second_seconds = time.perf_counter() - started
    assert status == 200, second
    print(
        f"lipsync latency: first {first_seconds:.2f} s (gs://), second {second_seconds:.2f} s (http), "
        f"model loads {loads} -> {backend.model_loads}; stages {second['metadata']['timings']}"
    )
    assert backend.model_loads == loads == 4  # unet, whisper, vae, face mesh: loaded once, at start

    with av.open(io.BytesIO(_download(live, first["video_url"]))) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.sample_rate == 16000
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video)])
        container.seek(0)
        samples = sum(f.samples for f in container.decode(audio=0))
    speech_seconds = 2.0
    # One frame per whisper chunk, as upstream: 2 past the speech's 50 frames at 25 fps.
    assert len(frames) == int(speech_seconds * 25) + 2 == 52
    assert abs(samples / 16000 - speech_seconds) < 0.1
    # Pixels away from the face are the input's (played forwards, then backwards), within codec noise.
    with av.open(str(media / "face.mp4")) as container:
        source = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    order = list(range(SOURCE_FRAMES)) + list(range(SOURCE_FRAMES))[::-1]
    for index in (0, 17, 39, 45, 49):
        keep = _outside_face(source[order[index]])
        assert keep.mean() > 0.3
        diff = np.abs(frames[index].astype(int) - source[order[index]].astype(int))[keep]
        print(f"frame {index}: outside the face, mean |diff| {diff.mean():.2f}, p99 {np.percentile(diff, 99):.0f}")
        assert diff.mean() < 3.0
        # ...and it is the right input frame: a neighbour (shifted by other pixels) differs more.
        wrong = np.abs(frames[index].astype(int) - source[(order[index] + 3) % SOURCE_FRAMES].astype(int))[keep]
        assert wrong.mean() > 2 * diff.mean()


def test_gcs_destination_without_cloud_storage_output_is_refused(live: LiveServer, file_server: str) -> None:
    # Drift fixed by the task specs: lip-sync /predict used to answer 200 and keep the video locally.
    status, answer = _predict(
        live,
        video_in=f"{file_server}/face.mp4",
        audio_in=f"{file_server}/speech.wav",
        gcs_destination="gs://somewhere/out.mp4",
    )
    assert (status, answer["error"]) == (422, "invalid_request"), answer
    assert answer["fields"][0]["field"] == "gcs_destination"


def test_timings_hold_seconds_only(live: LiveServer, file_server: str) -> None:
    status, answer = _predict(live, video_in=f"{file_server}/face.mp4", audio_in=f"{file_server}/speech.wav")
    assert status == 200, answer
    timings = answer["metadata"]["timings"]
    assert "output_bytes" not in timings and {"denoise", "vae_decode", "mux", "queue"} <= set(timings)
    assert all(0 <= seconds < 600 for seconds in timings.values()), timings
    import httpx

    scraped = httpx.get(live.metrics_url).text
    stages = {line.split('stage="')[1].split('"')[0] for line in scraped.splitlines() if 'stage="' in line}
    assert "output_bytes" not in stages and "denoise" in stages


def test_lipsync_output_honours_video_crf_and_preset(
    tmp_path: Path, file_server: str, gcs_emulator: GcsEmulator
) -> None:
    # Built by the server's own wiring (no injected backend), as `python -m serve` builds it.
    settings = make_settings(
        tmp_path, model="latentsync-tiny", fetch_allow_loopback=True, video_crf=40, video_preset="ultrafast"
    )
    with live_server(settings) as server:
        status, answer = _predict(server, video_in=f"{file_server}/face.mp4", audio_in=f"{file_server}/speech.wav")
        assert status == 200, answer
        data = _download(server, answer["video_url"])
    # x264 writes its settings into the stream: the CRF, and ultrafast's CABAC off.
    assert b"crf=40.0" in data and b"cabac=0" in data


@pytest.mark.parametrize(
    ("name", "field", "code", "status"),
    [
        ("notavideo.mp4", "video_in", "invalid_video", 422),
        ("noface.mp4", "video_in", "no_face_detected", 422),
        ("notavideo.mp4", "audio_in", "invalid_audio", 422),
    ],
)
def test_unusable_media_gets_a_clear_error(
    live: LiveServer, file_server: str, name: str, field: str, code: str, status: int
) -> None:
    body = {
        "video_in": f"{file_server}/face.mp4",
        "audio_in": f"{file_server}/speech.wav",
        field: f"{file_server}/{name}",
    }
    got, answer = _predict(live, **body)
    assert (got, answer["error"]) == (status, code), answer


def test_missing_input_and_redirect_to_the_metadata_server_are_refused(live: LiveServer, file_server: str) -> None:
    status, answer = _predict(live, video_in=f"{file_server}/nope.mp4", audio_in=f"{file_server}/speech.wav")
    assert (status, answer["error"]) == (422, "input_unreachable")
    for target in (
        "http://169.254.169.254/computeMetadata/v1/",
        "http://metadata.google.internal/",
        "file:///etc/passwd",
    ):
        status, answer = _predict(
            live, video_in=f"{file_server}/redirect?to={target}", audio_in=f"{file_server}/speech.wav"
        )
        assert (status, answer["error"]) == (422, "unsafe_url"), (target, answer)


def test_cuda_out_of_memory_fails_one_request_and_the_next_succeeds(
    live: LiveServer, file_server: str, backend: LatentSyncTinyBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = backend.unet.forward
    calls = {"n": 0}

    def once_out_of_memory(*args: object, **kwargs: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(backend.unet, "forward", once_out_of_memory)
    body = {"video_in": f"{file_server}/face.mp4", "audio_in": f"{file_server}/speech.wav"}
    status, answer = _predict(live, **body)
    assert (status, answer["error"]) == (503, "gpu_out_of_memory")
    status, answer = _predict(live, **body)
    assert status == 200, answer


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, backend: LatentSyncTinyBackend) -> Iterator[LiveServer]:
    """The production rules: no loopback, https only; small caps."""
    settings = make_settings(
        tmp_path_factory.mktemp("strict"), model="latentsync-tiny", warmup=False, fetch_max_bytes=4096
    )
    with live_server(settings, backend=backend) as server:
        yield server


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/a.mp4",
        "https://localhost/a.mp4",
        "https://10.1.2.3/a.mp4",
        "https://172.16.0.1/a.mp4",
        "https://192.168.0.10/a.mp4",
        "https://100.64.0.1/a.mp4",
        "https://169.254.169.254/computeMetadata/v1/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://metadata/computeMetadata/v1/",
        "https://0.0.0.0/a.mp4",
        "https://224.0.0.1/a.mp4",
        "https://2130706433/a.mp4",
        "https://0177.0.0.1/a.mp4",
        "https://0x7f.1/a.mp4",
        "https://2852039166/latest",
        "https://[::1]/a.mp4",
        "https://[::ffff:127.0.0.1]/a.mp4",
        "https://[::ffff:a9fe:a9fe]/a.mp4",
        "https://[64:ff9b::a9fe:a9fe]/a.mp4",
        "https://[fe80::1]/a.mp4",
        "https://[fd00::1]/a.mp4",
        "https://[ff02::1]/a.mp4",
        "http://93.184.216.34/a.mp4",
        "https://user:pw@127.0.0.1/a.mp4",
        "file:///etc/passwd",
        "ftp://example.com/a.mp4",
        "gopher://127.0.0.1:25/",
        "/etc/passwd",
    ],
)
def test_unsafe_input_urls_are_refused(strict: LiveServer, url: str) -> None:
    status, answer = _predict(strict, video_in=url, audio_in="https://127.0.0.1/a.wav")
    assert status == 422, answer
    assert answer["error"] in ("unsafe_url", "invalid_request"), answer
    assert "video_in" in (answer["message"] + str(answer.get("fields"))), answer


def test_oversize_and_overlong_inputs_are_refused(
    strict: LiveServer, live: LiveServer, file_server: str, media: Path
) -> None:
    from serve.errors import ServeError
    from serve.io.fetch import FetchPolicy, fetch_https

    with pytest.raises(ServeError) as caught:
        fetch_https(
            f"{file_server}/face.mp4", media / "copy", "video_in", FetchPolicy(max_bytes=4096, allow_loopback=True)
        )
    assert (caught.value.code, caught.value.status) == ("input_too_large", 413)
    backend = live.container.runner.backend
    original = backend.lipsync
    backend.lipsync = replace(original, limits=MediaLimits(max_seconds=1.0))  # the speech is 2.0 s
    try:
        status, answer = _predict(live, video_in=f"{file_server}/face.mp4", audio_in=f"{file_server}/speech.wav")
    finally:
        backend.lipsync = original
    assert (status, answer["error"]) == (413, "input_too_long"), answer


def test_lipsync_through_the_job_api(
    jobs_env: JobsEnv, tmp_path: Path, file_server: str, backend: LatentSyncTinyBackend
) -> None:
    settings = jobs_env.settings(tmp_path, model="latentsync-tiny", fetch_allow_loopback=True)
    headers = {"X-API-Key": ALPHA}
    with live_server(settings, backend=backend) as server, server.client() as client:
        bad = client.post("/jobs", json={"video_in": "file:///etc/passwd", "audio_in": "x"}, headers=headers)
        assert bad.status_code == 422
        unsafe = client.post(
            "/jobs", json={"video_in": "https://169.254.169.254/v1/", "audio_in": "https://[::1]/a"}, headers=headers
        )
        # Addresses are checked before queueing (and again when the worker fetches).
        assert (unsafe.status_code, unsafe.json()["error"]) == (422, "unsafe_url"), unsafe.text
        missing = {"video_in": f"{file_server}/missing.mp4", "audio_in": f"{file_server}/speech.wav"}
        unsafe = client.post("/jobs", json=missing, headers=headers)
        assert unsafe.status_code == 202  # a missing file is only found out by the worker's download...
        body = {"video_in": f"{file_server}/face.mp4", "audio_in": f"{file_server}/speech.wav", "inference_steps": 10}
        submitted = client.post("/jobs", json=body, headers=headers)
        assert submitted.status_code == 202, submitted.text
        jobs = {unsafe.json()["job_id"]: None, submitted.json()["job_id"]: None}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(jobs.values()):
            for job_id in jobs:
                state = client.get(f"/jobs/{job_id}", headers=headers).json()
                if state["status"] in ("succeeded", "failed", "canceled"):
                    jobs[job_id] = state
            time.sleep(0.3)
        failed, done = jobs[unsafe.json()["job_id"]], jobs[submitted.json()["job_id"]]
        assert failed["status"] == "failed" and failed["error"]["code"] == "input_unreachable"  # ...final
        assert failed["attempts"] == 1
        assert done["status"] == "succeeded", done
        assert done["progress"]["total"] == 4 * 10  # 52 frames: 4 chunks (16, 16, 16, 4) of 10 steps
        assert done["result"]["video_url"].startswith(server.url)  # stored relative, shown on this server
        video = client.get(done["result"]["video_url"], headers=headers)
    with av.open(io.BytesIO(video.content)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert container.streams.video[0].frames == 52


def test_https_input_is_fetched_from_the_checked_address_with_the_name_kept_for_tls(
    media: Path, tmp_path: Path
) -> None:
    """The production path: https://localhost:PORT resolves, is checked, the connection goes to the
    checked address, and TLS still verifies the certificate for the name (SNI + Host)."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from serve.errors import ServeError
    from serve.io.fetch import FetchPolicy, fetch_https

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(media)))
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    client_context = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    try:
        policy = FetchPolicy(allow_loopback=True, verify=client_context)
        size = fetch_https(f"https://localhost:{port}/speech.wav", tmp_path / "got.wav", "audio_in", policy)
        assert (tmp_path / "got.wav").read_bytes() == (media / "speech.wav").read_bytes() and size > 0
        # The certificate names localhost, not 127.0.0.1: the name, not the pinned address, is verified.
        with pytest.raises(ServeError) as caught:
            fetch_https(f"https://127.0.0.1:{port}/speech.wav", tmp_path / "x", "audio_in", policy)
        assert caught.value.code == "input_unreachable"
    finally:
        server.shutdown()


def test_two_different_destinations_are_refused(strict: LiveServer) -> None:
    status, answer = _predict(
        strict,
        video_in="https://example.invalid/a.mp4",
        audio_in="https://example.invalid/a.wav",
        gcs_destination="gs://bucket-a/x.mp4",
        out="gs://bucket-b/y.mp4",
    )
    assert (status, answer["error"]) == (422, "invalid_request") and "not two different ones" in answer[
        "message"
    ] + str(answer.get("fields"))


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("gs://B_A_D/x.mp4", "invalid_request"),
        ("gs://a..b/x.mp4", "invalid_request"),
        ("gs://ab/", "invalid_request"),
        ("gs://not-an-input-bucket/in/face.mp4", "unsafe_url"),  # e.g. the outputs bucket: not listed
    ],
)
def test_gs_inputs_come_only_from_input_buckets_with_valid_names(live: LiveServer, url: str, code: str) -> None:
    status, answer = _predict(live, video_in=url, audio_in="https://8.8.8.8/a.wav")
    assert (status, answer["error"]) == (422, code), answer
    assert "video_in" in answer["message"]


class _Drip(SimpleHTTPRequestHandler):
    """Announces a large body, then sends one byte a second."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(1)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


class _DripHeaders(SimpleHTTPRequestHandler):
    """Sends its status line and headers one byte a second (the body never comes); gives up after
    15 s, so that a fetcher without a deadline fails this test instead of hanging it."""

    def do_GET(self) -> None:
        self.started = time.monotonic()
        try:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Padding: " + b"x" * 1000:
                if time.monotonic() - self.started > 15:
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(1)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_an_input_dripping_its_headers_is_cut_at_its_deadline(tmp_path: Path) -> None:
    from serve.errors import ServeError
    from serve.io.fetch import FetchPolicy, fetch_https

    server = ThreadingHTTPServer(("127.0.0.1", 0), _DripHeaders)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(ServeError) as raised:
            url = f"http://127.0.0.1:{server.server_address[1]}/slow.mp4"
            fetch_https(url, tmp_path / "x", "video_in", FetchPolicy(timeout=2, allow_loopback=True))
    finally:
        server.shutdown()
    elapsed = time.monotonic() - started
    print(f"header drip cut after {elapsed:.2f} s (deadline 2 s)")
    assert raised.value.code == "input_unreachable" and elapsed < 3.0


@pytest.fixture
def drip() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slow.mp4"
    server.shutdown()


def test_a_dripping_input_is_cut_at_its_deadline(drip: str, tmp_path: Path) -> None:
    from serve.errors import ServeError
    from serve.io.fetch import FetchPolicy, fetch_https

    started = time.monotonic()
    with pytest.raises(ServeError) as raised:
        fetch_https(drip, tmp_path / "x", "video_in", FetchPolicy(timeout=2, allow_loopback=True))
    elapsed = time.monotonic() - started
    print(f"drip cut after {elapsed:.2f} s (deadline 2 s)")
    assert raised.value.code == "input_unreachable" and "longer than 2 s" in raised.value.message
    assert elapsed < 3.0


def test_downloads_are_bounded_and_the_next_one_is_told_to_retry(
    drip: str, tmp_path: Path, file_server: str, backend: LatentSyncTinyBackend
) -> None:
    settings = make_settings(
        tmp_path,
        model="latentsync-tiny",
        warmup=False,
        fetch_allow_loopback=True,
        fetch_max_concurrent=1,
        fetch_timeout_seconds=3,
    )
    with live_server(settings, backend=backend) as server:
        held: dict[str, tuple[int, dict]] = {}
        first = threading.Thread(target=lambda: held.setdefault("r", _predict(server, video_in=drip, audio_in=drip)))
        first.start()
        time.sleep(0.5)  # the drip holds the only download slot
        with server.client() as client:
            busy = client.post(
                "/predict",
                json={"video_in": f"{file_server}/face.mp4", "audio_in": f"{file_server}/speech.wav"},
                headers={"X-API-Key": KEY},
            )
        first.join(30)
        assert (busy.status_code, busy.json()["error"]) == (503, "downloads_busy") and "Retry-After" in busy.headers
        assert held["r"][0] == 422 and held["r"][1]["error"] == "input_unreachable"
        status, answer = _predict(server, video_in=f"{file_server}/face.mp4", audio_in=f"{file_server}/speech.wav")
        assert status == 200, answer  # the slot came back
        assert list((tmp_path / "outputs" / ".tmp").iterdir()) == []  # no scratch left behind


def test_an_oversized_clip_is_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    from models.base import InputError
    from models.latentsync.media import read_video

    clip = tmp_path / "black.mp4"
    encode_mp4(np.zeros((125, 360, 640, 3), np.uint8), 25, clip)  # 5 s of black: ~86 MB decoded, a few KB here
    scratch = tmp_path / "scratch"
    limits = MediaLimits(max_seconds=60, scratch_dir=scratch, max_scratch_bytes=50 * 1024**2)
    with pytest.raises(InputError) as raised, read_video(clip, limits):
        pass
    assert raised.value.code == "input_too_large" and "would take" in str(raised.value)
    assert clip.stat().st_size < 100_000 and list(scratch.iterdir()) == []  # nothing decoded, nothing left
    with read_video(clip, MediaLimits(max_seconds=60, scratch_dir=scratch, max_scratch_bytes=200 * 1024**2)) as frames:
        assert frames.shape == (125, 360, 640, 3)  # within the budget it decodes
    assert list(scratch.iterdir()) == []


def test_lipsync_from_local_files_through_uploads_and_a_job_with_no_cloud(
    tmp_path: Path, media: Path, backend: LatentSyncTinyBackend
) -> None:
    """A newcomer's lip-sync: ENVIRONMENT=local defaults (jobs in SQLite, uploads in a local
    folder), two local files uploaded, a job naming them, the video back."""
    alpha, beta = "alpha-key-0123456789", "beta-key-0123456789"
    settings = make_settings(
        tmp_path, model="latentsync-tiny", environment="local", api_keys=f"alpha:{alpha},beta:{beta}"
    )
    a, b = {"X-API-Key": alpha}, {"X-API-Key": beta}

    def upload(client: httpx.Client, name: str, headers: dict[str, str]) -> httpx.Response:
        with (media / name).open("rb") as handle:
            # The client's filename and content type are ignored: the kind comes from the bytes.
            return client.post("/uploads", files={"file": ("whatever.bin", handle, "text/plain")}, headers=headers)

    with live_server(settings, backend=backend) as server, server.client() as client:
        face, speech = upload(client, "face.mp4", a), upload(client, "speech.wav", a)
        text = upload(client, "notavideo.mp4", a)
        assert (face.status_code, speech.status_code) == (201, 201), face.text
        assert (face.json()["kind"], speech.json()["kind"]) == ("video", "audio")
        assert (
            face.json()["url"].startswith("upload://") and face.json()["bytes"] == (media / "face.mp4").stat().st_size
        )
        body = {"video_in": face.json()["url"], "audio_in": speech.json()["url"], "inference_steps": 10}
        swapped = client.post("/jobs", json={**body, "video_in": speech.json()["url"]}, headers=a)
        foreign = client.post("/jobs", json=body, headers=b)  # another tenant's uploads do not exist for it
        submitted = client.post("/jobs", json=body, headers=a)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        deadline = time.monotonic() + 120
        while (done := client.get(f"/jobs/{job_id}", headers=a).json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        video = client.get(done["result"]["video_url"], headers=a) if done["status"] == "succeeded" else None
    assert (text.status_code, text.json()["error"]) == (415, "unsupported_media_type")
    assert (swapped.status_code, swapped.json()["fields"][0]["field"]) == (422, "video_in")
    assert "audio" in swapped.json()["message"]
    assert (foreign.status_code, foreign.json()["error"]) == (422, "input_unreachable")
    assert done["status"] == "succeeded", done
    assert video is not None
    with av.open(io.BytesIO(video.content)) as container:
        assert container.streams.video[0].frames == 52


def test_a_portrait_phone_video_is_processed_upright_and_comes_back_upright(
    tmp_path: Path, backend: LatentSyncTinyBackend
) -> None:
    """A phone's portrait clip: its pixels stored sideways, a display matrix turning them upright.
    The face is found (only upright is it a face), and the output's pixels are upright, so it shows
    as the input did; outside the face they are the input's as displayed."""
    upright = np.stack([np.pad(frame, ((32, 32), (0, 0), (0, 0)), mode="edge") for frame in face_frames(SOURCE_FRAMES)])
    source = tmp_path / "portrait.mp4"
    with av.open(str(source), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt, stream.options = 320, 256, "yuv420p", {"crf": "12"}
        stream.set_display_rotation(270)  # shown turned a quarter clockwise: upright
        for frame in upright:
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(frame, 1)), format="rgb24")
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    settings = make_settings(tmp_path / "server", model="latentsync-tiny", environment="local")
    with live_server(settings, backend=backend) as server, server.client() as client:
        with source.open("rb") as video, (fixtures() / "audio" / "speech.wav").open("rb") as speech:
            face = client.post("/uploads", files={"file": video}, headers={"X-API-Key": KEY}).json()["url"]
            audio = client.post("/uploads", files={"file": speech}, headers={"X-API-Key": KEY}).json()["url"]
        answer = client.post(
            "/predict", json={"video_in": face, "audio_in": audio, "inference_steps": 10}, headers={"X-API-Key": KEY}
        )
        assert answer.status_code == 200, answer.text
        data = client.get(answer.json()["video_url"], headers={"X-API-Key": KEY}).content
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        size = container.streams.video[0].codec_context.width, container.streams.video[0].codec_context.height
    assert size == (256, 320) and frames[0].shape == (320, 256, 3)  # upright, no display matrix needed
    keep = _outside_face(upright[0])
    assert np.abs(frames[0].astype(int) - upright[0].astype(int))[keep].mean() < 5.0  # two encodes apart
