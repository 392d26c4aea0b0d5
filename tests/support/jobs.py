"""A job backend set up for one test, with settings that point servers at it: the GCP one on the
Pub/Sub and Firestore emulators (its own topics, subscriptions and collection), or the local one in
a fresh SQLite file. Both have the same interface, so one contract suite runs on either."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve.config import Settings
from tests.support.settings import make_settings

PROJECT = "test-project"
ALPHA, BETA = "key-alpha-0123456789", "key-beta-0123456789"
KEYS = f"alpha:{ALPHA},beta:{BETA}"


@dataclass
class JobsEnv:
    suffix: str
    emulators: dict[str, str]
    backend = "gcp"

    @property
    def names(self) -> dict[str, Any]:
        return {
            "pubsub_topic": f"jobs-{self.suffix}",
            "pubsub_subscription": f"jobs-worker-{self.suffix}",
            "pubsub_dead_letter_topic": f"jobs-dead-{self.suffix}",
            "jobs_collection": f"jobs_{self.suffix}",
        }

    def settings(self, tmp_path: Path, **overrides: Any) -> Settings:
        values = {
            "jobs_enabled": True,
            "jobs_project": PROJECT,
            "api_keys": KEYS,
            "job_heartbeat_seconds": 0.3,
            "job_lease_seconds": 10,
            **self.names,
            **overrides,
        }
        return make_settings(tmp_path, **values)

    def environment(self) -> dict[str, str]:
        """The same settings as environment variables, for a `python -m serve` process."""
        names = {name.upper(): str(value) for name, value in self.names.items()}
        return {**names, "JOBS_ENABLED": "true", "JOBS_PROJECT": PROJECT, "JOBS_BACKEND": self.backend}

    def dead_lettered(self) -> list[str]:
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        path = subscriber.subscription_path(PROJECT, f"jobs-dead-watch-{self.suffix}")
        response = subscriber.pull(request={"subscription": path, "max_messages": 10}, timeout=10)
        return [m.message.data.decode() for m in response.received_messages]


def make_jobs_env(emulators: dict[str, str]) -> JobsEnv:
    """Fresh topics, subscriptions and collection names on the emulators, for one test."""
    from google.cloud import pubsub_v1

    env = JobsEnv(uuid.uuid4().hex[:8], emulators)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    names = env.names
    topic = publisher.topic_path(PROJECT, names["pubsub_topic"])
    dead = publisher.topic_path(PROJECT, names["pubsub_dead_letter_topic"])
    publisher.create_topic(name=topic)
    publisher.create_topic(name=dead)
    subscriber.create_subscription(
        request={
            "name": subscriber.subscription_path(PROJECT, names["pubsub_subscription"]),
            "topic": topic,
            "ack_deadline_seconds": 10,
        }
    )
    subscriber.create_subscription(
        request={"name": subscriber.subscription_path(PROJECT, f"jobs-dead-watch-{env.suffix}"), "topic": dead}
    )
    return env


@dataclass
class SqliteJobsEnv(JobsEnv):
    """The local backend: one SQLite file every server of the test shares."""

    db: Path | None = None
    backend = "sqlite"

    @property
    def names(self) -> dict[str, Any]:
        return {**super().names, "jobs_backend": "sqlite", "jobs_db": self.db}

    def dead_lettered(self) -> list[str]:
        from serve.jobs.sqlite import Database, SqliteQueue

        assert self.db is not None
        return SqliteQueue(Database(self.db), self.names["pubsub_dead_letter_topic"], "").pending()


def make_sqlite_jobs_env(folder: Path) -> SqliteJobsEnv:
    return SqliteJobsEnv(uuid.uuid4().hex[:8], {}, db=folder / "shared-jobs.sqlite")
