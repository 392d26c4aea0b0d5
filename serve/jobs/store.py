"""Job records in Firestore (the production store; serve.jobs.sqlite is the local one).

A job document moves queued -> running -> succeeded | failed | canceled, each change in a
Firestore transaction, so whatever the number of Pub/Sub deliveries a job starts and ends once.
The operations and their rules are serve.jobs.records' and serve.jobs.model's, shared with the
SQLite store. Its log is bounded (serve.jobs.model.MAX_LOG_LINES). Usage is counted here once: the
transaction that ends a job writes its GPU seconds and bytes out onto the job, and the usage
report (`python -m serve.cli.usage`) sums exactly those fields. A Firestore TTL policy on
`expire_at` deletes old jobs.
"""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from serve.jobs.model import heartbeat_changes
from serve.jobs.records import Decide, JobRecords, T


class JobStore(JobRecords):
    """Job documents in one Firestore collection."""

    def __init__(self, client: firestore.Client, collection: str, ttl_days: int) -> None:
        super().__init__(ttl_days)
        self.client = client
        self.jobs = client.collection(collection)

    def _insert(self, job: dict[str, Any]) -> bool:
        try:
            self.jobs.document(job["job_id"]).create(job)
        except gexc.AlreadyExists:
            return False
        return True

    def get(self, job_id: str) -> dict[str, Any] | None:
        snapshot = self.jobs.document(job_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    def position(self, job: dict[str, Any]) -> int:
        query = self.jobs.where(filter=firestore.FieldFilter("status", "==", "queued")).where(
            filter=firestore.FieldFilter("created_at", "<", job["created_at"])
        )
        result = query.count().get()
        return int(result[0][0].value) + 1

    def _change(self, job_id: str, decide: Decide[T]) -> T:
        ref = self.jobs.document(job_id)

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> T:
            snapshot = ref.get(transaction=transaction)
            changes, answer = decide(snapshot.to_dict() if snapshot.exists else None)
            if changes:
                transaction.update(ref, changes)
            return answer

        return attempt(self.client.transaction())

    def heartbeat(self, job_id: str, worker: str, lease_seconds: float, step: int, total: int) -> bool:
        """A plain update and one field read, cheaper than a transaction every few seconds."""
        ref = self.jobs.document(job_id)
        ref.update(heartbeat_changes(lease_seconds, step, total))
        snapshot = ref.get(["cancel_requested"])
        return bool(snapshot.get("cancel_requested"))
