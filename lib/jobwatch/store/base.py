"""The store interface: a few atomic primitives that the engine, the outbox and the CLI are built on.

Two primitives carry the guarantees. :meth:`Store.claim_due` takes due jobs under a lease in one atomic step,
so two function instances never poll the same job while a lease holds. :meth:`Store.record_polls` writes a
job's new state, its history rows and its outbox notices in one transaction, guarded by compare-and-set on the
lease owner and version, so a crash at any point leaves either all of it or none of it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

from ..models import Job, JobKey, Notice

VANISHED = "Vanished"  # the recorded state of a job the service no longer knows


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

    def evolve(self, **changes: Any) -> "TrackedJob":
        """A copy with ``changes``. Copies the instance dict instead of ``dataclasses.replace`` (which re-runs
        ``__init__`` field by field): a decision evolves a record several times per poll."""
        unknown = changes.keys() - _TRACKED_FIELDS
        if unknown:
            raise TypeError(f"TrackedJob has no field(s) {', '.join(sorted(unknown))}")
        new = object.__new__(TrackedJob)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

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
class PollRecord:
    """What one poll decided, to be written atomically: the record as claimed and as it is now."""

    before: TrackedJob
    after: TrackedJob
    transitions: Sequence[Transition] = ()
    notices: Sequence[Notice] = ()


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


class Store(abc.ABC):
    """Persistence for tracked jobs, history, the outbox and discovery watermarks."""

    url_scheme: str = ""

    # -- lifecycle -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version. Safe to call concurrently and repeatedly."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- tracked jobs ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def track(self, keys: Iterable[JobKey], now: datetime, tags: dict[str, str] | None = None) -> list[bool]:
        """Start watching; returns, per key, whether it was new. Re-tracking an untracked job re-activates it."""

    @abc.abstractmethod
    def untrack(self, keys: Iterable[JobKey]) -> int:
        """Stop polling (the record and its history are kept); returns how many were active."""

    @abc.abstractmethod
    def get(self, key: JobKey) -> TrackedJob | None: ...

    @abc.abstractmethod
    def list_jobs(self, *, active: bool | None = None, limit: int = 1000) -> list[TrackedJob]: ...

    @abc.abstractmethod
    def claim_due(
        self,
        owner: str,
        now: datetime,
        lease_seconds: float,
        limit: int,
        keys: Sequence[JobKey] | None = None,
        *,
        due_only: bool = False,
    ) -> list[TrackedJob]:
        """Atomically lease up to ``limit`` active jobs whose next poll is due (all of ``keys`` that are active
        and not leased, due or not, when keys are given; only the due ones with ``due_only``), earliest first."""

    @abc.abstractmethod
    def release(self, claimed: Iterable[TrackedJob], owner: str) -> None:
        """Give back leases without polling (work left for later)."""

    @abc.abstractmethod
    def record_polls(self, owner: str, records: Sequence[PollRecord]) -> list[bool]:
        """Write each record atomically with its history and notices; releases the lease. Returns, per record,
        whether it was written (False: the lease was lost to another instance, nothing was written for it)."""

    @abc.abstractmethod
    def count_due(self, now: datetime) -> int: ...

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Tracked jobs per recorded state, plus outbox totals, for status displays."""

    @abc.abstractmethod
    def history(self, key: JobKey) -> list[Transition]: ...

    # -- outbox ----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_notices(self, notices: Sequence[Notice], now: datetime) -> int:
        """Insert notices not tied to a poll (tests, `notify test`); duplicates by key are ignored."""

    @abc.abstractmethod
    def claim_notices(self, owner: str, now: datetime, lease_seconds: float, limit: int) -> list[OutboxEntry]:
        """Lease pending notices whose next attempt is due, oldest first, with their deliveries so far."""

    @abc.abstractmethod
    def record_delivery(self, notice_id: int, sink: str, ok: bool, error: str | None, now: datetime,
                        dead: bool = False) -> None: ...

    @abc.abstractmethod
    def finish_notice(self, notice_id: int, owner: str, status: str, attempts: int,
                      next_attempt_at: datetime | None, last_error: str | None, now: datetime) -> bool:
        """Set the notice's status (pending with a next attempt, done, dead) and release its lease, if ``owner``
        still holds it; False when another drain took the notice over (its outcome then stands)."""

    @abc.abstractmethod
    def list_outbox(self, *, status: str | None = None, limit: int = 100) -> list[OutboxEntry]: ...

    @abc.abstractmethod
    def retry_notice(self, notice_id: int, now: datetime) -> bool:
        """Put a dead (or pending) notice back for an immediate attempt at the sinks not yet delivered."""

    # -- discovery and retention -----------------------------------------------------------------------------
    @abc.abstractmethod
    def get_watermark(self, region: str, bucket: str) -> datetime | None: ...

    @abc.abstractmethod
    def set_watermark(self, region: str, bucket: str, created_after: datetime, now: datetime) -> None: ...

    @abc.abstractmethod
    def purge(self, before: datetime, *, batch: int = 1000,
              progress: Callable[[dict[str, int]], None] | None = None) -> dict[str, int]:
        """Delete inactive jobs whose last change is older than ``before`` (with their history) and finished
        notices created before it. Returns counts per table."""
