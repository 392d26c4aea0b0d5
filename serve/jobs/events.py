"""A job's life as a stream of events, for GET /jobs/{id}/events (Server-Sent Events).

The stream is computed from the stored job, read again every fraction of a second, so it is the
same whichever server or VM runs the job and whichever backend stores it. Each event carries as
its id a cursor, `<status>.<log lines>.<step>.<final>`, of everything the client has been sent
with it; a client that reconnects with `Last-Event-ID` gets only what it has not seen.

Events, in order of appearance:
- `status`: {"status", "attempts", "queue_position"} when the status changes (the first event is
  always one);
- `log`: {"time", "message"} for each new log line;
- `progress`: {"step", "total", "fraction", "eta_seconds"} when the step changes (`eta_seconds`:
  from the rate this stream has seen, null until it has seen two steps);
- `result` (succeeded: the job as GET /jobs/{id} shows it) or `error` (failed or canceled:
  {"code", "message"}): the last event; the stream ends with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from serve.jobs.model import JobStatus, is_terminal


@dataclass
class Event:
    event: str
    data: dict[str, Any]
    id: str


@dataclass
class Cursor:
    """What the client has been sent; the id of each event."""

    status: str = ""
    lines: int = 0
    step: int = -1
    final: bool = False
    # Where this stream first saw a step, for the ETA (not part of the id).
    first: tuple[float, int] | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, last_event_id: str | None) -> Cursor:
        """The cursor of an event id; a missing or foreign id starts from the beginning."""
        try:
            status, lines, step, final = (last_event_id or "").split(".")
            JobStatus(status)
            return cls(status, max(int(lines), 0), int(step), final == "1")
        except ValueError:
            return cls()

    def id(self) -> str:
        return f"{self.status}.{self.lines}.{self.step}.{int(self.final)}"


def _eta(cursor: Cursor, step: int, total: int, moment: float) -> float | None:
    """Seconds left at the rate seen since this stream first saw a step (not counting the wait in
    the queue or the text encoding before step 1)."""
    if total and step >= total:
        return 0.0
    if step <= 0:
        return None
    if cursor.first is None:
        cursor.first = (moment, step)
        return None
    started, first_step = cursor.first
    if step <= first_step:
        return None
    return round((moment - started) / (step - first_step) * (total - step), 1)


def events_since(
    cursor: Cursor, job: dict[str, Any], described: dict[str, Any], moment: float | None = None
) -> list[Event]:
    """The events between `cursor` and `job` (advancing `cursor`); `described` is the job as the
    API shows it (GET /jobs/{id}), which the `result` event carries."""
    moment = time.monotonic() if moment is None else moment
    out: list[Event] = []

    def emit(kind: str, data: dict[str, Any]) -> None:
        out.append(Event(kind, data, cursor.id()))

    if cursor.final:
        return out
    status = job["status"]
    if status != cursor.status:
        cursor.status = status
        emit(
            "status",
            {"status": status, "attempts": job.get("attempts", 0), "queue_position": described.get("queue_position")},
        )
    lines = job.get("log") or []
    for line in lines[cursor.lines :]:
        cursor.lines += 1
        emit("log", {"time": line.get("time"), "message": line.get("message")})
    progress = described["progress"]
    step, total = int(progress["step"]), int(progress["total"])
    if step != cursor.step and (step > 0 or cursor.step < 0):
        cursor.step = step
        eta = _eta(cursor, step, total, moment)
        emit("progress", {"step": step, "total": total, "fraction": progress["fraction"], "eta_seconds": eta})
    if is_terminal(status):
        cursor.final = True
        if status == JobStatus.SUCCEEDED:
            emit("result", described)
        else:
            error = job.get("error") or {"code": "canceled", "message": f"the job was {status}"}
            emit("error", {"code": error["code"], "message": error["message"]})
    return out
