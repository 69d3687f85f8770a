"""Typed records for the children of a batch job: the media/picture jobs (``Type=Job``) or workflow executions
(``Type=Workflow``) it spawned, one per object. The batch job itself carries no counters: its progress is what
its children say. Pure data, no I/O; the CI client builds these, the store and notices read them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobwatch.core.errors import ValidationError
from jobwatch.core.models import from_iso, iso

__all__ = ["ChildKind", "ChildJob", "ChildPage", "ChildLookup", "CHILD_STATES", "FINAL_CHILD_STATES", "is_final_child_state",
           "MAX_CHILD_PAGE_SIZE"]

# The documented states of a media job; a workflow execution uses a subset (no Submitted/Pause).
CHILD_STATES = ("Submitted", "Running", "Success", "Failed", "Pause", "Cancel")
# A child in one of these never changes again, so it is never fetched again.
FINAL_CHILD_STATES = frozenset({"Success", "Failed", "Cancel"})
# The list APIs' documented maximum page size.
MAX_CHILD_PAGE_SIZE = 100
# IDs per GET /jobs/<id,id,...>: the service's own limit is UNCONFIRMED, so ask for no more than a page's worth.
MAX_CHILD_LOOKUP = 100


def is_final_child_state(state: str | None) -> bool:
    """True for Success, Failed and Cancel (exact, as the service writes them). Unknown states are not final:
    a state added later is refreshed rather than frozen."""
    return state in FINAL_CHILD_STATES


class ChildKind(str, enum.Enum):
    """Which list API a child comes from, and so how its ID and error are read."""

    JOB = "job"  # media job, GET /jobs (ID j...)
    PIC_JOB = "pic_job"  # picture-processing job, GET /pic_jobs (ID j...)
    WORKFLOW = "workflow"  # workflow execution, GET /workflowexecution (RunId i...)

    @classmethod
    def parse(cls, raw: Any) -> "ChildKind":
        try:
            return cls(raw)
        except ValueError:
            raise ValidationError("kind", raw, "expected job, pic_job or workflow") from None


@dataclass(frozen=True)
class ChildJob:
    """One child as last read from CI. ``state`` is the raw string (documented: Submitted, Running, Success,
    Failed, Pause, Cancel); ``code``/``message`` are meaningful only when it failed. A workflow execution read
    from the list has no end time, code or message: those come from its detail call."""

    child_id: str
    kind: ChildKind
    object_key: str | None
    state: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    code: str | None = None
    message: str | None = None
    workflow_id: str | None = None
    queue_id: str | None = None
    tag: str | None = None

    @property
    def is_final(self) -> bool:
        return is_final_child_state(self.state)

    @property
    def failed(self) -> bool:
        return self.state == "Failed"

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form (``object`` as in notices and ``jobwatch children --json``)."""
        return {
            "child_id": self.child_id,
            "kind": self.kind.value,
            "object": self.object_key,
            "state": self.state,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "code": self.code,
            "message": self.message,
            "workflow_id": self.workflow_id,
            "queue_id": self.queue_id,
            "tag": self.tag,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ChildJob":
        """Inverse of :meth:`to_json`."""
        return cls(
            child_id=data["child_id"],
            kind=ChildKind.parse(data.get("kind")),
            object_key=data.get("object"),
            state=data.get("state") or "",
            created_at=from_iso(data.get("created_at")),
            started_at=from_iso(data.get("started_at")),
            ended_at=from_iso(data.get("ended_at")),
            code=data.get("code"),
            message=data.get("message"),
            workflow_id=data.get("workflow_id"),
            queue_id=data.get("queue_id"),
            tag=data.get("tag"),
        )


@dataclass(frozen=True)
class ChildPage:
    """One page of a child list. ``next_token`` is None on the last page: the client already stops on an empty
    token *and* on an empty or short page (the documented samples show a token on their last page)."""

    items: list[ChildJob] = field(default_factory=list)
    next_token: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class ChildLookup:
    """The answer for some media/picture jobs by ID: those found, and ``missing`` (``NonExistJobIds``)."""

    items: list[ChildJob] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    request_id: str | None = None
