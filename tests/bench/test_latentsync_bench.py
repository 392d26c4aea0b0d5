"""`make bench-lipsync` works on a CPU at tiny size: both variants, a JSON report and a table (no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import latentsync


def test_lipsync_bench_runs_both_variants_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "latentsync.json"
    assert latentsync.main(["--size", "tiny", "--steps", "4", "--runs", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    plain, cached = report["variants"]
    assert (plain["name"], cached["name"]) == ("plain", "deepcache")
    assert plain["latent_relative_error"] is None
    assert 0 < cached["latent_relative_error"] < 1  # reuse changes the result, measurably and boundedly
    assert set(report["other_stages_median_seconds"]) == {"vae_encode_x2", "vae_decode", "whisper_1s"}
    assert "| deepcache |" in capsys.readouterr().out
