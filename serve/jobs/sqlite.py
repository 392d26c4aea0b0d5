"""The local job backend: job records and the job queue in one SQLite file, for a server with no
cloud (`make run`). It keeps the production backend's semantics, so the same worker runs on both
and one contract suite tests both (tests/serve/jobs/test_contract.py):

- records: serve.jobs.records' operations, each change in a `BEGIN IMMEDIATE` transaction; old
  jobs (past `expire_at`) are deleted as new ones are created.
- queue: at-least-once delivery like a Pub/Sub pull subscription. A pulled message is invisible
  until its ack deadline; the worker extends it while a job runs and acknowledges it at the end;
  a process killed mid-job leaves the message to come back when its deadline passes, and the
  job's lease (in the record) lets the next worker take it over. Messages carry the model they
  are for, and a subscriber pulls only its model's, as the filtered subscriptions do on GCP.

Several processes may share the file (WAL mode, a busy timeout); it must be on a local disk.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from serve.jobs.model import now
from serve.jobs.records import Decide, JobRecords, T

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expire_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    model TEXT NOT NULL,
    data TEXT NOT NULL,
    published_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    ack_id TEXT UNIQUE,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (topic, model, visible_at);
"""


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$time": value.isoformat()}
    raise TypeError(f"cannot store {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$time" in obj:
        return datetime.fromisoformat(obj["$time"])
    return obj


def _key(moment: datetime) -> str:
    """A time as text that sorts as the time does (UTC, always with microseconds)."""
    return moment.isoformat(timespec="microseconds")


def dumps(job: dict[str, Any]) -> str:
    return json.dumps(job, default=_encode, separators=(",", ":"))


def loads(text: str) -> dict[str, Any]:
    return dict(json.loads(text, object_hook=_decode))


class Database:
    """One SQLite file; a connection per thread, transactions that take the write lock first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")  # an accepted job survives a power cut too
            self._local.connection = connection
        return connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._connection().execute(sql, parameters).fetchall()


class SqliteJobStore(JobRecords):
    """Job records as JSON documents in the `jobs` table."""

    def __init__(self, db: Database, ttl_days: int) -> None:
        super().__init__(ttl_days)
        self.db = db

    def _insert(self, job: dict[str, Any]) -> bool:
        with self.db.transaction() as db:
            db.execute("DELETE FROM jobs WHERE expire_at < ?", (_key(now()),))
            inserted = db.execute(
                "INSERT OR IGNORE INTO jobs (job_id, status, created_at, expire_at, doc) VALUES (?, ?, ?, ?, ?)",
                (job["job_id"], job["status"], _key(job["created_at"]), _key(job["expire_at"]), dumps(job)),
            )
            return inserted.rowcount == 1

    def get(self, job_id: str) -> dict[str, Any] | None:
        rows = self.db.read("SELECT doc FROM jobs WHERE job_id = ?", (job_id,))
        return loads(rows[0][0]) if rows else None

    def position(self, job: dict[str, Any]) -> int:
        rows = self.db.read(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND created_at < ?", (_key(job["created_at"]),)
        )
        return int(rows[0][0]) + 1

    def _change(self, job_id: str, decide: Decide[T]) -> T:
        with self.db.transaction() as db:
            rows = db.execute("SELECT doc FROM jobs WHERE job_id = ?", (job_id,)).fetchall()
            job = loads(rows[0][0]) if rows else None
            changes, answer = decide(job)
            if changes and job is not None:
                job.update(changes)
                db.execute("UPDATE jobs SET status = ?, doc = ? WHERE job_id = ?", (job["status"], dumps(job), job_id))
            return answer

    def all_jobs(self) -> list[dict[str, Any]]:
        """Every stored job (the usage report reads them)."""
        return [loads(doc) for (doc,) in self.db.read("SELECT doc FROM jobs ORDER BY created_at")]


class SqliteQueue:
    """Publishes job ids to one topic of the file's queue, for one model."""

    def __init__(self, db: Database, topic: str, model: str) -> None:
        self.db, self.topic, self.model = db, topic, model

    def publish(self, job_id: str) -> None:
        moment = time.time()
        with self.db.transaction() as db:
            db.execute(
                "INSERT INTO messages (topic, model, data, published_at, visible_at) VALUES (?, ?, ?, ?, ?)",
                (self.topic, self.model, job_id, moment, moment),
            )

    def pending(self) -> list[str]:
        """The job ids waiting on this topic (for tests and operators)."""
        rows = self.db.read("SELECT data FROM messages WHERE topic = ? ORDER BY id", (self.topic,))
        return [data for (data,) in rows]


@dataclass
class Message:
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class ReceivedMessage:
    ack_id: str
    message: Message
    delivery_attempt: int


@dataclass
class PullResponse:
    received_messages: list[ReceivedMessage]


class SqliteSubscriber:
    """The subset of Pub/Sub's SubscriberClient the worker uses (pull, acknowledge,
    modify_ack_deadline), on the file's queue; `subscription` names the topic."""

    def __init__(self, db: Database, model: str, ack_deadline_seconds: float, poll_seconds: float = 0.1) -> None:
        self.db, self.model = db, model
        self.ack_deadline_seconds, self.poll_seconds = ack_deadline_seconds, poll_seconds

    def pull(self, request: dict[str, Any], timeout: float = 1.0) -> PullResponse:
        """Up to `max_messages` messages, waiting at most `timeout` (and never more than a second,
        so a stopping worker is not held up) for the first."""
        deadline = time.monotonic() + min(timeout, 1.0)
        while True:
            received = self._take(request["subscription"], int(request.get("max_messages", 1)))
            if received or time.monotonic() >= deadline:
                return PullResponse(received)
            time.sleep(self.poll_seconds)

    def _take(self, topic: str, limit: int) -> list[ReceivedMessage]:
        moment = time.time()
        waiting = "SELECT 1 FROM messages WHERE topic = ? AND model = ? AND visible_at <= ? LIMIT 1"
        if not self.db.read(waiting, (topic, self.model, moment)):
            return []  # an idle poll reads without taking the write lock
        taken = []
        with self.db.transaction() as db:
            rows = db.execute(
                "SELECT id, data, deliveries FROM messages WHERE topic = ? AND model = ? AND visible_at <= ? "
                "ORDER BY id LIMIT ?",
                (topic, self.model, moment, limit),
            ).fetchall()
            for message_id, data, deliveries in rows:
                ack_id = uuid.uuid4().hex
                db.execute(
                    "UPDATE messages SET ack_id = ?, visible_at = ?, deliveries = ? WHERE id = ?",
                    (ack_id, moment + self.ack_deadline_seconds, deliveries + 1, message_id),
                )
                taken.append(ReceivedMessage(ack_id, Message(data.encode(), {"model": self.model}), deliveries + 1))
        return taken

    def acknowledge(self, request: dict[str, Any]) -> None:
        with self.db.transaction() as db:
            db.executemany("DELETE FROM messages WHERE ack_id = ?", [(a,) for a in request["ack_ids"]])

    def modify_ack_deadline(self, request: dict[str, Any]) -> None:
        """A new deadline for delivered messages; 0 makes them visible again at once (a nack). An
        ack id of an earlier delivery no longer counts once the message was delivered again."""
        visible_at = time.time() + float(request["ack_deadline_seconds"])
        with self.db.transaction() as db:
            db.executemany(
                "UPDATE messages SET visible_at = ? WHERE ack_id = ?", [(visible_at, a) for a in request["ack_ids"]]
            )
