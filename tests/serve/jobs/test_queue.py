"""Jobs of several models on one topic carry what each model's subscription filters on: every server
publishes with its MODEL_ALIAS as the `model` attribute, and the filter Terraform writes for a model
(evaluated from terraform/ on the example tfvars) matches that model's messages and no other's.

NOTE: the Pub/Sub emulator accepts a subscription filter but does not apply it (both filtered
subscriptions received all six messages when this was tried), so the filtering itself can only be
seen on a real project; here the attributes are checked against the filter expressions.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from serve.jobs.queue import gcp_backend
from tests.support.jobs import PROJECT, JobsEnv
from tests.support.terraform import EXAMPLE, console


def _pull(subscriber: pubsub_v1.SubscriberClient, path: str) -> list[tuple[str, dict[str, str]]]:
    got: list[tuple[str, dict[str, str]]] = []
    for _ in range(5):  # the emulator may hand out fewer than are waiting per pull
        response = subscriber.pull(request={"subscription": path, "max_messages": 10}, timeout=10)
        if not response.received_messages:
            break
        got += [(m.message.data.decode(), dict(m.message.attributes)) for m in response.received_messages]
        subscriber.acknowledge(
            request={"subscription": path, "ack_ids": [m.ack_id for m in response.received_messages]}
        )
    return got


def _matches(expression: str, attributes: dict[str, str]) -> bool:
    """The one filter form terraform/models.tf writes: attributes.model = "NAME"."""
    match = re.fullmatch(r'attributes\.model = "([a-z0-9-]+)"', expression)
    assert match, f"a filter form this test does not know: {expression}"
    return attributes.get("model") == match.group(1)


def test_each_models_jobs_match_its_subscription_filter_only(jobs_env: JobsEnv, tmp_path: Path) -> None:
    filters: dict[str, str] = console("local.job_filters", EXAMPLE.read_text())
    assert len(filters) == 2
    subscriber = pubsub_v1.SubscriberClient()
    topic = pubsub_v1.PublisherClient.topic_path(PROJECT, jobs_env.names["pubsub_topic"])
    watch = subscriber.subscription_path(PROJECT, f"watch-{jobs_env.suffix}")
    subscriber.create_subscription(request={"name": watch, "topic": topic})

    sent: dict[str, str] = {}
    for name in filters:
        # What terraform gives each model's servers: MODEL_ALIAS = its name in the models map.
        settings = jobs_env.settings(tmp_path, model="ltx-video-tiny", model_alias=name)
        _, queue, _, _, _ = gcp_backend(settings)
        for _ in range(3):
            job_id = f"job-{uuid.uuid4().hex[:8]}"
            queue.publish(job_id)
            sent[job_id] = name

    received = _pull(subscriber, watch)
    assert {job_id for job_id, _ in received} == set(sent)
    for job_id, attributes in received:
        takers = [name for name, expression in filters.items() if _matches(expression, attributes)]
        assert takers == [sent[job_id]], (job_id, attributes)


def test_without_an_alias_jobs_carry_the_model_name(jobs_env: JobsEnv, tmp_path: Path) -> None:
    _, queue, dead_letter, _, _ = gcp_backend(jobs_env.settings(tmp_path, model="ltx-video-tiny"))
    assert queue.model == dead_letter.model == "ltx-video-tiny"
