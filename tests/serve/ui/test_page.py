"""The page at /ui in a real headless Chromium (Debian's chromium + chromium-driver, driven by
selenium) against a live server with the tiny model and the local job backend: enter the key,
write a prompt, submit, watch the progress bar move, play the video. A screenshot of the end is
kept in .cache/test-artifacts/ (CI keeps that folder)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.media import face_and_speech
from tests.support.server import LiveServer, live_server
from tests.support.settings import KEY, make_settings

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / ".cache" / "test-artifacts"


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        message = "needs Debian's chromium and chromium-driver (make test installs them as root with apt)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1300"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path, jobs_enabled=True, jobs_backend="sqlite")
    with live_server(settings) as live:
        yield live


def _until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_page_submits_a_job_shows_progress_and_plays_the_video(browser, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page = httpx.get(f"{server.url}/ui")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    browser.get(f"{server.url}/ui")
    _until(lambda: browser.find_element(By.ID, "t2v-form").is_displayed(), 30, "the form")
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.ID, "prompt").send_keys("a red fox running through snow")
    # Small (704x480, 97 frames, 30 steps): about 8 s on a 2-core CPU with the tiny model, long
    # enough for several progress events at the default heartbeat.
    Select(browser.find_element(By.ID, "preset")).select_by_index(1)
    browser.find_element(By.ID, "generate").click()
    video_state = "const v = document.getElementById('video'); return [v.readyState, v.duration, v.videoWidth];"
    _until(lambda: browser.execute_script(video_state)[0] >= 1, 240, "the video to load")
    ready, duration, width = browser.execute_script(video_state)
    seen = browser.execute_script("return window.progressSeen")
    bar = browser.execute_script("const p = document.getElementById('progress'); return [p.value, p.max];")
    status = browser.find_element(By.ID, "job-status").text
    log = browser.find_element(By.ID, "job-log").text
    recent = browser.find_element(By.ID, "recent").text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "ui-text-to-video.png"))
    assert status == "succeeded" and "queued" in log and "succeeded" in log
    assert seen == sorted(seen), seen  # forwards only
    print(f"\nprogress the page showed: {seen}")
    assert any(0 < step < 30 for step in seen) and seen[-1] == 30  # the bar moved through the run
    assert bar == [30, 30]
    assert width == 704 and duration > 0.5, (ready, duration, width)
    assert "a red fox" in recent
    assert errors == [], errors


@pytest.fixture
def lipsync_server(tmp_path: Path) -> Iterator[LiveServer]:
    """Local mode (jobs in SQLite, uploads in a folder) with the tiny lip-sync model."""
    settings = make_settings(tmp_path, model="latentsync-tiny", environment="local")
    with live_server(settings) as live:
        yield live


def test_the_page_lip_syncs_two_local_files(browser, lipsync_server: LiveServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    face, speech = face_and_speech(tmp_path)
    browser.get(f"{lipsync_server.url}/ui")
    _until(lambda: browser.find_element(By.ID, "lipsync-form").is_displayed(), 30, "the lip-sync form")
    assert not browser.find_element(By.ID, "t2v-form").is_displayed()
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.ID, "face").send_keys(str(face))
    browser.find_element(By.ID, "speech").send_keys(str(speech))
    browser.find_element(By.ID, "lipsync").click()
    video_state = "const v = document.getElementById('video'); return [v.readyState, v.duration, v.videoWidth];"
    _until(lambda: browser.execute_script(video_state)[0] >= 1, 240, "the video to load")
    _, duration, width = browser.execute_script(video_state)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "ui-lip-sync.png"))
    assert browser.find_element(By.ID, "job-status").text == "succeeded"
    assert width == 256 and duration > 1.5  # 2 s of speech (52 frames at 25 fps)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
