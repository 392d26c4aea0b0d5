"""`python -m serve.cli.usage`: per-tenant jobs, GPU seconds and bytes out for a period, from the job
records in Firestore (or, with --sqlite, a local server's job file), as a table (default) or CSV.

    python -m serve.cli.usage --project P --since 2026-11-01 --until 2026-12-01 [--csv]
    python -m serve.cli.usage --sqlite outputs/jobs.sqlite --since 2026-11-01

A job counts in the period in which it finished. The same settings as the server pick the
database and collection (FIRESTORE_DATABASE, JOBS_COLLECTION); FIRESTORE_EMULATOR_HOST points the
client at an emulator.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.cloud import firestore

from serve.jobs.sqlite import Database, SqliteJobStore


@dataclass
class TenantUsage:
    tenant: str
    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0
    gpu_seconds: float = 0.0
    bytes_out: int = 0


def summarize(jobs: Iterable[dict[str, Any]]) -> list[TenantUsage]:
    """Totals per tenant, sorted by tenant."""
    totals: dict[str, TenantUsage] = defaultdict(lambda: TenantUsage(""))
    for job in jobs:
        usage = totals[job["tenant"]]
        usage.tenant = job["tenant"]
        usage.jobs += 1
        status = job["status"]
        if status in ("succeeded", "failed", "canceled"):
            setattr(usage, status, getattr(usage, status) + 1)
        usage.gpu_seconds += float(job.get("gpu_seconds") or 0.0)
        usage.bytes_out += int(job.get("bytes_out") or 0)
    return sorted(totals.values(), key=lambda u: u.tenant)


def finished_jobs(client: firestore.Client, collection: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    query = (
        client.collection(collection)
        .where(filter=firestore.FieldFilter("finished_at", ">=", since))
        .where(filter=firestore.FieldFilter("finished_at", "<", until))
    )
    return [snapshot.to_dict() for snapshot in query.stream()]


def finished_local_jobs(path: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The same selection from a local server's SQLite job file."""
    store = SqliteJobStore(Database(Path(path)), ttl_days=1)
    return [job for job in store.all_jobs() if job.get("finished_at") and since <= job["finished_at"] < until]


def _cells(row: TenantUsage) -> list[str]:
    return [str(getattr(row, f.name)) if f.name != "gpu_seconds" else f"{row.gpu_seconds:.1f}" for f in fields(row)]


def render(rows: list[TenantUsage], as_csv: bool) -> str:
    header = [f.name for f in fields(TenantUsage)]
    if as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(_cells(row) for row in rows)
        return buffer.getvalue()
    total = TenantUsage("TOTAL")
    for row in rows:
        for name in header[1:]:
            setattr(total, name, getattr(total, name) + getattr(row, name))
    table = [header, *(_cells(row) for row in rows), _cells(total)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]

    def format_line(line: list[str]) -> str:
        return " | ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line))

    lines = [format_line(line) for line in table]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines) + "\n"


def _date(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    from serve.config import Settings

    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m serve.cli.usage", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=defaults.jobs_project or defaults.gcp_project, required=False)
    parser.add_argument("--database", default=defaults.firestore_database)
    parser.add_argument("--collection", default=defaults.jobs_collection)
    parser.add_argument("--since", type=_date, required=True, help="ISO date or time (UTC unless given)")
    parser.add_argument("--until", type=_date, default=datetime.now(UTC), help="exclusive; default: now")
    parser.add_argument("--csv", action="store_true", help="CSV instead of a table")
    parser.add_argument("--sqlite", help="a local server's job file (JOBS_DB) instead of Firestore")
    args = parser.parse_args(argv)
    if args.sqlite:
        if not Path(args.sqlite).is_file():
            parser.error(f"no such job file: {args.sqlite}")
        jobs = finished_local_jobs(args.sqlite, args.since, args.until)
    else:
        if not args.project:
            parser.error("--project (or JOBS_PROJECT / GCP_PROJECT) is required")
        client = firestore.Client(project=args.project, database=args.database)
        jobs = finished_jobs(client, args.collection, args.since, args.until)
    rows = summarize(jobs)
    sys.stdout.write(render(rows, args.csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
