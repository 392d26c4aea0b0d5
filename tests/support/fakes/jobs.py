"""In-memory fakes of the job queue's seams, for unit tests of the worker: a Pub/Sub subscriber
that records its acks and nacks (a nack delivers again), a publisher. The contract suite covers
the real queues (SQLite, Pub/Sub on its emulator)."""

from __future__ import annotations

import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


@dataclass
class FakeSubscriber:
    """Pub/Sub's pull/ack/modify_ack_deadline; a nack (deadline 0) delivers the message again."""

    messages: deque[str] = field(default_factory=deque)
    acked: list[str] = field(default_factory=list)
    nacked: list[str] = field(default_factory=list)
    outstanding: dict[str, str] = field(default_factory=dict)

    def publish(self, job_id: str) -> None:
        self.messages.append(job_id)

    def pull(self, request: dict[str, Any], timeout: float) -> Any:
        received = []
        if self.messages:
            job_id = self.messages.popleft()
            ack_id = uuid.uuid4().hex
            self.outstanding[ack_id] = job_id
            received.append(SimpleNamespace(ack_id=ack_id, message=SimpleNamespace(data=job_id.encode())))
        else:
            threading.Event().wait(0.01)
        return SimpleNamespace(received_messages=received)

    def acknowledge(self, request: dict[str, Any]) -> None:
        for ack_id in request["ack_ids"]:
            self.acked.append(self.outstanding.pop(ack_id))

    def modify_ack_deadline(self, request: dict[str, Any]) -> None:
        if request["ack_deadline_seconds"] == 0:
            for ack_id in request["ack_ids"]:
                job_id = self.outstanding.pop(ack_id)
                self.nacked.append(job_id)
                self.messages.append(job_id)


@dataclass
class FakePublisher:
    published: list[str] = field(default_factory=list)

    def publish(self, job_id: str) -> None:
        self.published.append(job_id)
