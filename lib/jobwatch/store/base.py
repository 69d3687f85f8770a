"""The store interface: a few atomic primitives that the engine, the outbox and the CLI are built on.

Two primitives carry the guarantees. :meth:`Store.claim_due` takes due jobs under a lease in one atomic step,
so two function instances never poll the same job while a lease holds. :meth:`Store.record_polls` writes a
job's new state, its history rows and its outbox notices in one transaction, guarded by compare-and-set on the
lease owner and version, so a crash at any point leaves either all of it or none of it.
"""

from __future__ import annotations

import abc
from datetime import datetime
from typing import Callable, Iterable, Sequence

from jobwatch.core.children import ChildJob, ChildKind
from jobwatch.core.models import Job, JobKey, Notice
from jobwatch.core.progress import ChildrenUpdate, ChildrenWork, Progress
from jobwatch.core.records import JobPage, JobQuery, OutboxEntry, PollError, PollRecord, TrackedJob, Transition

# How many children of one list are in a group, and their oldest and newest creation times.
ChildSpan = tuple[int, datetime | None, datetime | None]


class Store(abc.ABC):
    """Persistence for tracked jobs, history, the outbox and discovery watermarks."""

    # -- lifecycle -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version. Safe to call concurrently and repeatedly."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- tracked jobs ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def track(self, keys: Iterable[JobKey], now: datetime, tags: dict[str, str] | None = None, *,
              reactivate: bool = True) -> list[bool]:
        """Start watching; returns, per key, whether it was new. Re-tracking an untracked job re-activates it,
        unless ``reactivate`` is False (discovery: an operator's untrack stands until they track again)."""

    @abc.abstractmethod
    def untrack(self, keys: Iterable[JobKey]) -> int:
        """Stop polling (the record and its history are kept); returns how many were active."""

    @abc.abstractmethod
    def get(self, key: JobKey) -> TrackedJob | None: ...

    @abc.abstractmethod
    def list_jobs(self, *, active: bool | None = None, limit: int = 1000,
                  after: JobKey | None = None) -> list[TrackedJob]:
        """Up to ``limit`` jobs in key order, starting after ``after`` (a page's last key: keyset paging)."""

    @abc.abstractmethod
    def count_jobs(self, *, active: bool | None = None) -> int: ...

    @abc.abstractmethod
    def lease_holders(self, now: datetime) -> list[tuple[str, int, datetime]]:
        """Who holds live leases on active jobs: (owner, jobs, latest expiry), most jobs first. A poll that finds
        nothing due while these hold says so instead of a bare "polled 0"."""

    @abc.abstractmethod
    def find_keys(self, job_id: str) -> list[JobKey]:
        """Every tracked key with this job ID (a bare ID from an operator; normally one, in key order)."""

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
        light: bool = False,
        by_creation: bool = False,
    ) -> list[TrackedJob]:
        """Atomically lease up to ``limit`` active jobs whose next poll is due (all of ``keys`` that are active
        and not leased, due or not, when keys are given; only the due ones with ``due_only``), earliest first.
        ``light``: each record's ``job`` is a stub (ID, name, type, state, creation time) and its stored JSON is
        kept undecoded in ``job_json`` (:meth:`TrackedJob.hydrated` decodes it): a steady refresh needs no more.
        ``by_creation`` takes due jobs by bucket in the order they were tracked (near their creation order), not
        by due time, so that a bulk refresh lists dense windows; the engine asks for it only once listing pays,
        because that order has no index to follow: concurrent claimers in it (MariaDB, FOR UPDATE SKIP LOCKED)
        found each other's rows locked and one poller took most of a backlog of first sights."""

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
    def list_due(self, now: datetime, limit: int) -> list[JobKey]:
        """Keys of due, unleased jobs, earliest first, without claiming them (fan-out hands them to shards)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Tracked jobs per recorded state, plus outbox totals, for status displays."""

    @abc.abstractmethod
    def history(self, key: JobKey) -> list[Transition]: ...

    # -- status displays -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def query_jobs(self, query: JobQuery) -> JobPage:
        """One page of tracked jobs matching ``query``, problems first, with the total that match."""

    @abc.abstractmethod
    def job_facets(self, limit: int = 500) -> dict[str, list[str]]:
        """The values a status display can filter on: ``{"buckets": [...], "tags": ["name=value", ...]}``."""

    @abc.abstractmethod
    def poll_errors(self, key: JobKey, limit: int = 200) -> list[PollError]:
        """The job's latest ``limit`` failed polls, oldest first (written by :meth:`record_polls`)."""

    @abc.abstractmethod
    def job_notices(self, key: JobKey, limit: int = 200) -> list[OutboxEntry]:
        """The notices raised for one job, oldest first, with their deliveries per sink."""

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

    # -- status page sessions --------------------------------------------------------------------------------
    @abc.abstractmethod
    def revoke_session(self, nonce: str, until: float, now: float) -> None:
        """Record that the status-page session ``nonce`` logged out: refused on every instance until ``until``
        (epoch seconds, when its cookie expires anyway). Records already past their ``until`` are dropped."""

    @abc.abstractmethod
    def session_revoked(self, nonce: str, now: float) -> bool:
        """Whether the session ``nonce`` logged out and its cookie has not expired yet."""

    # -- discovery and retention -----------------------------------------------------------------------------
    @abc.abstractmethod
    def get_watermark(self, region: str, bucket: str) -> datetime | None: ...

    @abc.abstractmethod
    def set_watermark(self, region: str, bucket: str, created_after: datetime, now: datetime) -> None: ...

    @abc.abstractmethod
    def purge(self, before: datetime, *, batch: int = 1000,
              progress: Callable[[dict[str, int]], None] | None = None, dry_run: bool = False) -> dict[str, int]:
        """Delete inactive jobs whose last change is older than ``before`` (with their history) and finished
        notices created before it. Returns counts per table; ``dry_run`` counts what would go and deletes
        nothing."""

    # -- children of batch jobs ------------------------------------------------------------------------------
    @abc.abstractmethod
    def claim_children(self, owner: str, now: datetime, lease_seconds: float, limit: int,
                       keys: Sequence[JobKey] | None = None, *, due_only: bool = True) -> list[ChildrenWork]:
        """Lease batches whose children are due for a refresh (least recently refreshed first): active ones
        polled since their last refresh, with a pass to carry on, or asked for by a callback; ended ones whose
        final count is not done. Only among ``keys`` when given. ``due_only=False`` (with ``keys``) leases the
        named batches due or not, if tracked (active, or ended within the last day), and not leased by another
        owner: for writing what a callback prompted (its child read back) under the same lease as a refresh."""

    @abc.abstractmethod
    def release_children(self, keys: Iterable[JobKey], owner: str) -> None: ...

    @abc.abstractmethod
    def record_children(self, owner: str, key: JobKey, update: ChildrenUpdate, now: datetime) -> bool:
        """Write one refresh step atomically (children, counts, cursor, notices, the held final notice's
        detail) if ``owner`` still holds the lease; False (nothing written) when it was lost."""

    @abc.abstractmethod
    def request_children_refresh(self, keys: Iterable[JobKey], now: datetime) -> int:
        """Make these batches due for a children refresh (a callback named one of their children)."""

    @abc.abstractmethod
    def get_progress(self, key: JobKey) -> Progress | None: ...

    @abc.abstractmethod
    def progress_of(self, keys: Sequence[JobKey]) -> dict[JobKey, Progress]: ...

    @abc.abstractmethod
    def known_children(self, key: JobKey, child_ids: Sequence[str]) -> dict[str, str]:
        """The recorded state of each of ``child_ids`` already seen under this batch."""

    @abc.abstractmethod
    def unsettled_children(self, key: JobKey, kind: ChildKind, workflow_id: str | None = None) \
            -> tuple[ChildSpan, ChildSpan]:
        """Children of one list not final yet, and those gone (final, state not read yet): for each, how many and
        their oldest and newest creation times, in one read (a refresh asks both of every list)."""

    def pending_children(self, key: JobKey, kind: ChildKind, workflow_id: str | None = None, *,
                         gone: bool = False) -> ChildSpan:
        """One of the two counts of :meth:`unsettled_children`: the unfinished ones, or with ``gone`` the gone."""
        unfinished, gone_ones = self.unsettled_children(key, kind, workflow_id)
        return gone_ones if gone else unfinished

    @abc.abstractmethod
    def gone_children(self, key: JobKey, kind: ChildKind, workflow_id: str | None = None) -> dict[str, int]:
        """The gone children of one list, counted by the state last recorded for them."""

    @abc.abstractmethod
    def list_children(self, key: JobKey, *, failed_only: bool = False, limit: int = 100,
                      after: str | None = None) -> list[ChildJob]:
        """Children in child-ID order after ``after`` (keyset paging)."""

    @abc.abstractmethod
    def failed_children_missing_detail(self, key: JobKey, limit: int) -> list[ChildJob]: ...

    @abc.abstractmethod
    def find_child(self, bucket: str, child_id: str) -> list[JobKey]:
        """The batches a child is recorded under."""

    @abc.abstractmethod
    def active_in_bucket(self, bucket: str, limit: int = 200) -> list[tuple[JobKey, Job | None]]:
        """Active batches of a bucket with their last-read detail."""
