"""python -m serve.cli.usage against the Firestore emulator: per-tenant totals for a period."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from serve.cli import usage


def test_usage_report_totals_per_tenant(gcp_emulators: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    from google.cloud import firestore

    collection = f"jobs_{uuid.uuid4().hex[:8]}"
    jobs = firestore.Client(project="usage-test").collection(collection)
    november = datetime(2026, 11, 10, tzinfo=UTC)
    records = [
        ("alpha", "succeeded", november, 30.5, 1000),
        ("alpha", "succeeded", november, 10.0, 500),
        ("alpha", "failed", november, 2.0, 0),
        ("beta", "succeeded", november, 60.0, 4000),
        ("beta", "canceled", november, 1.5, 0),
        ("beta", "succeeded", datetime(2026, 10, 30, tzinfo=UTC), 99.0, 9999),  # before the period
        ("beta", "running", None, 0.0, 0),  # not finished
    ]
    for tenant, status, finished, seconds, size in records:
        jobs.add(
            {"tenant": tenant, "status": status, "finished_at": finished, "gpu_seconds": seconds, "bytes_out": size}
        )

    argv = ["--project", "usage-test", "--collection", collection, "--since", "2026-11-01", "--until", "2026-12-01"]
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
