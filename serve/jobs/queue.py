"""The job queue on Pub/Sub: publishing job ids, and the clients of the production backend."""

from __future__ import annotations

from typing import Any

from google.cloud import firestore, pubsub_v1  # type: ignore[attr-defined]

from serve.config import Settings
from serve.jobs.store import JobStore


class JobQueue:
    """Publishes job ids to the topic the workers' subscriptions read. Each message carries the
    model it is for as the attribute `model`: with several models on one topic, each model's
    subscription is filtered on it (terraform/jobs.tf), so a job reaches only its model's workers."""

    def __init__(self, publisher: pubsub_v1.PublisherClient, topic: str, model: str) -> None:
        self.publisher = publisher
        self.topic = topic
        self.model = model

    def publish(self, job_id: str) -> None:
        self.publisher.publish(self.topic, job_id.encode(), job_id=job_id, model=self.model).result(timeout=30)


def jobs_project(settings: Settings) -> str:
    project = settings.jobs_project or settings.gcp_project
    if not project:
        raise RuntimeError("JOBS_ENABLED needs JOBS_PROJECT or GCP_PROJECT")
    return project


def gcp_backend(settings: Settings) -> tuple[JobStore, JobQueue, JobQueue, Any, str]:
    """Store, queue, dead-letter queue, subscriber and subscription path. The client libraries
    pick emulators up from FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST themselves."""
    project = jobs_project(settings)
    client = firestore.Client(project=project, database=settings.firestore_database)
    store = JobStore(client, settings.jobs_collection, settings.job_ttl_days)
    publisher = pubsub_v1.PublisherClient()
    model = settings.model_alias or settings.model
    queue = JobQueue(publisher, publisher.topic_path(project, settings.pubsub_topic), model)
    dead_letter = JobQueue(publisher, publisher.topic_path(project, settings.pubsub_dead_letter_topic), model)
    subscriber = pubsub_v1.SubscriberClient()
    subscription = subscriber.subscription_path(project, settings.pubsub_subscription)
    return store, queue, dead_letter, subscriber, subscription
