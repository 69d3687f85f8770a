"""The records ci-jobwatch keeps about a watched job: what the state machine reads and decides, and what a store
persists. Pure data, no I/O: every layer above shares these, the store included."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Sequence

from jobwatch.core.models import Job, JobKey, JobState, Notice

VANISHED = "Vanished"  # the recorded state of a job the service no longer knows
# States after which a job is never polled again: the service's terminal states and our own vanished state.
FINAL_STATES = frozenset({JobState.SUCCESS.value, JobState.FAILED.value, JobState.CANCEL.value, VANISHED})


def is_final(state: str | None) -> bool:
    return state in FINAL_STATES


@dataclass(frozen=True)
class TrackedJob:
    """One watched job, as the store holds it."""

    key: JobKey
    first_seen: datetime
    next_poll_at: datetime
    state: str | None = None  # last recorded state (raw), VANISHED, or None before the first observation
    job: Job | None = None
    active: bool = True  # polled until terminal, vanished or untracked
    last_seen: datetime | None = None
    last_change: datetime | None = None
    poll_interval: float = 0.0  # the last delay chosen, which the next one grows from
    error_count: int = 0
    last_error: str | None = None
    lease_owner: str | None = None
    lease_expires: datetime | None = None
    version: int = 0
    pending_state: str | None = None  # an unconfirmed backward move or vanish
    pending_count: int = 0
    stalled: bool = False
    stall_notified_at: datetime | None = None
    transitions: int = 0  # number of history rows; the next transition's sequence number is this + 1
    polls: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    # The job's JSON text as the store holds it (set by a claim): lets a store tell an unchanged job from a
    # changed one without decoding it, and a light claim (``job`` a stub) decode it only when needed.
    job_json: str | None = field(default=None, compare=False, repr=False)
    light: bool = field(default=False, compare=False, repr=False)  # ``job`` is a stub: see Store.claim_due
    # The fingerprint of the answer ``job_json`` was read from (None: unknown, e.g. stored before schema 3).
    job_fp: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def restore(cls, **values: Any) -> "TrackedJob":
        """A record read back from a store, every field given, without the dataclass ``__init__`` (frozen, it
        sets each of 26 fields through ``object.__setattr__``; a bulk claim restores thousands)."""
        if values.keys() != _TRACKED_FIELDS:
            raise TypeError(f"TrackedJob.restore needs every field; missing {sorted(_TRACKED_FIELDS - values.keys())}"
                            f", unknown {sorted(values.keys() - _TRACKED_FIELDS)}")
        new = object.__new__(cls)
        new.__dict__.update(values)
        return new

    def evolve(self, **changes: Any) -> "TrackedJob":
        """A copy with ``changes``. Copies the instance dict instead of ``dataclasses.replace`` (which re-runs
        ``__init__`` field by field): a decision evolves a record several times per poll."""
        unknown = changes.keys() - _TRACKED_FIELDS
        if unknown:
            raise TypeError(f"TrackedJob has no field(s) {', '.join(sorted(unknown))}")
        new = object.__new__(TrackedJob)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        if self.light and "job" in changes and changes["job"] is not self.job:
            new.__dict__["light"] = False  # a full job replaced the stub
        return new

    def hydrated(self) -> "TrackedJob":
        """The record with its full ``job`` decoded, if a light claim left a stub there."""
        if not self.light:
            return self
        import json

        return self.evolve(job=Job.from_json(json.loads(self.job_json)) if self.job_json else None, light=False)

    def to_json(self, *, with_job: bool = False) -> dict[str, Any]:
        """The stable JSON form shown by ``jobwatch status --json`` and the API Gateway read."""
        out: dict[str, Any] = {
            "key": str(self.key), "region": self.key.region, "bucket": self.key.bucket, "job_id": self.key.job_id,
            "state": self.state, "active": self.active, "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "last_change": self.last_change.isoformat() if self.last_change else None,
            "next_poll_at": self.next_poll_at.isoformat() if self.active else None,
            "error_count": self.error_count, "last_error": self.last_error, "stalled": self.stalled,
            "transitions": self.transitions, "tags": dict(self.tags),
        }
        if with_job:
            out["job"] = self.job.to_json() if self.job else None
        return out


_TRACKED_FIELDS = frozenset(f.name for f in fields(TrackedJob))


@dataclass(frozen=True)
class Transition:
    """One history row: the job moved from one state to another, as we observed it."""

    key: JobKey
    seq: int
    from_state: str | None
    to_state: str
    observed_at: datetime
    service_time: datetime | None = None  # the service's own time for the change (start or end), when it has one
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class PollError:
    """One poll of a job that failed (the service or the network did not answer usefully), kept so the status
    page's timeline can show when a job's polls failed, not only the current run of failures."""

    key: JobKey
    at: datetime
    message: str


@dataclass(frozen=True)
class PollRecord:
    """What one poll decided, to be written atomically: the record as claimed and as it is now."""

    before: TrackedJob
    after: TrackedJob
    transitions: Sequence[Transition] = ()
    notices: Sequence[Notice] = ()
    errors: Sequence[PollError] = ()


@dataclass(frozen=True)
class OutboxEntry:
    """A notice with its delivery bookkeeping."""

    notice: Notice
    status: str  # pending | done | dead
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    deliveries: dict[str, "Delivery"] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    """One sink's delivery of one notice."""

    sink: str
    status: str  # delivered | failed | dead
    attempts: int
    last_error: str | None
    updated_at: datetime


@dataclass(frozen=True)
class JobQuery:
    """A page of tracked jobs as a status display asks for it: optional filters, problems first.

    ``state`` is a recorded state (``New`` for a job not yet observed); ``tag`` is ``name=value`` (or ``name``
    for any value). Rows come stalled first, then jobs whose polls fail, then failed jobs, then active ones, then
    the rest; within each, the most recent change first."""

    state: str | None = None
    bucket: str | None = None
    tag: str | None = None
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True)
class JobPage:
    """One page of a :class:`JobQuery` and how many jobs match it in all."""

    jobs: list[TrackedJob]
    total: int
