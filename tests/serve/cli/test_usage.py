"""python -m serve.cli.usage against the Firestore emulator and a local SQLite job file: per-tenant totals
for a period, the same from both."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serve.cli import usage

NOVEMBER = datetime(2026, 11, 10, tzinfo=UTC)
RECORDS = [
    ("alpha", "succeeded", NOVEMBER, 30.5, 1000),
    ("alpha", "succeeded", NOVEMBER, 10.0, 500),
    ("alpha", "failed", NOVEMBER, 2.0, 0),
    ("beta", "succeeded", NOVEMBER, 60.0, 4000),
    ("beta", "canceled", NOVEMBER, 1.5, 0),
    ("beta", "succeeded", datetime(2026, 10, 30, tzinfo=UTC), 99.0, 9999),  # before the period
    ("beta", "running", None, 0.0, 0),  # not finished
]
PERIOD = ["--since", "2026-11-01", "--until", "2026-12-01"]


def test_usage_report_totals_per_tenant(gcp_emulators: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    from google.cloud import firestore

    collection = f"jobs_{uuid.uuid4().hex[:8]}"
    jobs = firestore.Client(project="usage-test").collection(collection)
    for tenant, status, finished, seconds, size in RECORDS:
        jobs.add(
            {"tenant": tenant, "status": status, "finished_at": finished, "gpu_seconds": seconds, "bytes_out": size}
        )
    _check(["--project", "usage-test", "--collection", collection, *PERIOD], capsys)


def test_usage_report_from_a_local_job_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from serve.jobs.sqlite import Database, SqliteJobStore

    store = SqliteJobStore(Database(tmp_path / "jobs.sqlite"), ttl_days=365)
    for tenant, status, finished, seconds, size in RECORDS:
        job = {
            "job_id": uuid.uuid4().hex,
            "tenant": tenant,
            "status": status,
            "created_at": NOVEMBER - timedelta(days=20),
            "expire_at": datetime.now(UTC) + timedelta(days=365),
            "finished_at": finished,
            "gpu_seconds": seconds,
            "bytes_out": size,
        }
        assert store._insert(job)
    _check(["--sqlite", str(tmp_path / "jobs.sqlite"), *PERIOD], capsys)


def _check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert usage.main([*argv, "--csv"]) == 0
    csv_text = capsys.readouterr().out
    assert usage.main(argv) == 0
    table = capsys.readouterr().out
    assert csv_text.splitlines() == [
        "tenant,jobs,succeeded,failed,canceled,gpu_seconds,bytes_out",
        "alpha,3,2,1,0,42.5,1500",
        "beta,2,1,0,1,61.5,4000",
    ]
    assert table.splitlines()[-1].split() == [
        "TOTAL",
        "|",
        "5",
        "|",
        "3",
        "|",
        "1",
        "|",
        "1",
        "|",
        "104.0",
        "|",
        "5500",
    ]
