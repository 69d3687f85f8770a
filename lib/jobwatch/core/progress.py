"""How far a batch job is, read from its children: counts by state, the failed children, a rate and an ETA; and
CI's per-child callbacks as typed records. Pure data and arithmetic, no I/O.

A batch job carries no counters of its own: its progress is what its children (one media job or workflow
execution per object) say, counted once each by :mod:`jobwatch.app.children`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobwatch.core.children import ChildJob, ChildKind, is_final_child_state
from jobwatch.core.models import iso

# The buckets a child's state is counted in (the keys of the "progress" object of notices and --json).
PROGRESS_KEYS = ("total", "succeeded", "failed", "running", "waiting", "cancelled")
PIC_TAGS = frozenset({"PicProcess", "PosterProduction"})  # picture-processing tags: children under /pic_jobs
_BUCKET = {"Success": "succeeded", "Failed": "failed", "Cancel": "cancelled", "Running": "running",
           "Submitted": "waiting", "Pause": "waiting"}


def bucket_of(state: str | None) -> str:
    """The counter a child in ``state`` adds to. A state added after this code is counted as running: it is not
    final (so it is refreshed again) and it is not waiting for a slot as far as we know."""
    return _BUCKET.get(state or "", "running")


def duration_text(seconds: float | None) -> str | None:
    """``3d 4h``, ``2h 5m``, ``1m 30s``, ``12s``: two units are enough to read at a glance."""
    if seconds is None or seconds < 0:
        return None
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (s, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{v}{u}" for v, u in parts[:2])


@dataclass(frozen=True)
class Progress:
    """A batch's children as last counted. ``total`` is the children seen so far (a batch may still be spawning
    them); times are the service's own (creation of the first and last child seen, end of the last one)."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    cancelled: int = 0
    first_child_at: datetime | None = None
    last_child_at: datetime | None = None
    last_end_at: datetime | None = None
    refreshed_at: datetime | None = None  # our clock: when the counts were last brought up to date
    complete: bool = False  # counted after the batch ended: these are the final numbers

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def remaining(self) -> int:
        return self.total - self.done

    def fraction(self) -> float | None:
        return None if self.total <= 0 else self.done / self.total

    def failed_share(self) -> float:
        return 0.0 if self.done <= 0 else self.failed / self.done

    def rate(self) -> float | None:
        """Children finished per second, from the first child's creation to the last end seen (or to the
        refresh): None until a child has finished and some time has passed."""
        end = self.last_end_at or self.refreshed_at
        if not self.done or self.first_child_at is None or end is None:
            return None
        try:
            seconds = (end - self.first_child_at).total_seconds()
        except TypeError:
            return None
        return self.done / seconds if seconds > 0 else None

    def eta_seconds(self) -> float | None:
        """Seconds until the children seen so far are finished at the current rate (0 when none are left)."""
        if self.total and not self.remaining:
            return 0.0
        r = self.rate()
        return None if not r else self.remaining / r

    def counts(self) -> dict[str, int]:
        """The ``progress`` object of notices, ``status --json`` and the API."""
        return {k: int(getattr(self, k)) for k in PROGRESS_KEYS}

    def to_json(self) -> dict[str, Any]:
        """:meth:`counts` plus what a person or page wants besides (percent, rate, ETA, times)."""
        frac = self.fraction()
        rate = self.rate()
        eta = self.eta_seconds()
        return {
            **self.counts(),
            "done": self.done,
            "percent": None if frac is None else round(100 * frac, 1),
            "rate_per_s": None if rate is None else round(rate, 3),
            "eta_s": None if eta is None else round(eta),
            "first_child_at": iso(self.first_child_at),
            "last_child_at": iso(self.last_child_at),
            "last_end_at": iso(self.last_end_at),
            "refreshed_at": iso(self.refreshed_at),
            "complete": self.complete,
        }

    def text(self) -> str:
        """``98% 11,960/12,000, 40 failed`` (the status table's PROGRESS column and chat notices)."""
        if self.total <= 0:
            return "no children yet"
        pct = int(100 * self.done / self.total)
        out = f"{pct}% {self.done:,}/{self.total:,}"
        if self.failed:
            out += f", {self.failed:,} failed"
        if self.cancelled:
            out += f", {self.cancelled:,} cancelled"
        return out

    def pace_text(self) -> str | None:
        """``120/min, about 3m 10s left`` while children are unfinished and a rate is known, else None."""
        rate, eta = self.rate(), self.eta_seconds()
        if self.complete or not self.remaining or not rate or eta is None:
            return None
        return f"{rate * 60:,.0f}/min, about {duration_text(eta)} left"

    def counted(self, state: str | None, n: int = 1) -> "Progress":
        """A copy with ``n`` more children in ``state``'s bucket (negative ``n`` takes them out)."""
        b = bucket_of(state)
        return _replace(self, **{b: getattr(self, b) + n})


def _replace(p: Progress, **changes: Any) -> Progress:
    data = dict(p.__dict__)
    data.update(changes)
    return Progress(**data)


@dataclass(frozen=True)
class FailedChild:
    """One failed child as a notice shows it (``failed_sample``)."""

    object: str | None
    child_id: str
    code: str | None
    message: str | None

    @classmethod
    def of(cls, child: ChildJob) -> "FailedChild":
        return cls(child.object_key, child.child_id, child.code, child.message)

    def to_json(self) -> dict[str, Any]:
        return {"object": self.object, "child_id": self.child_id, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class ChildCallback:
    """CI's notice that one child of a batch ended (``TaskFinish`` for a media/picture job, ``WorkflowFinish``
    for a workflow execution). It names a child, never a batch, carries nothing naming the batch, and is
    unauthenticated: a hint of which child to read back (or which batches to refresh), never a fact to record."""

    event_name: str  # TaskFinish | WorkflowFinish
    child_id: str  # JobId (j...) or RunId (i...)
    kind: ChildKind
    bucket: str
    region: str | None  # WorkflowFinish carries none; the URL's ?region= or the default may
    state: str | None = None
    object_key: str | None = None
    queue_id: str | None = None
    tag: str | None = None
    workflow_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_final(self) -> bool:
        return is_final_child_state(self.state)

    def to_json(self) -> dict[str, Any]:
        return {"event": self.event_name, "child_id": self.child_id, "kind": self.kind.value,
                "bucket": self.bucket, "region": self.region, "state": self.state, "object": self.object_key,
                "queue_id": self.queue_id, "tag": self.tag, "workflow_id": self.workflow_id}


__all__ = ["PROGRESS_KEYS", "PIC_TAGS", "bucket_of", "duration_text", "ChildrenWork", "ChildrenUpdate", "Progress", "FailedChild", "ChildCallback"]


@dataclass(frozen=True)
class ChildrenWork:
    """A batch whose children are due for a refresh, as claimed (under a lease) from the store."""

    key: Any  # JobKey
    job: Any  # Job | None: the batch as last read (type and operation say which lists to read)
    batch_state: str | None
    batch_active: bool
    progress: Progress
    cursor: dict[str, Any]  # per list: watermark and tokens (opaque to the store)
    failed_notified: int = 0  # 0: nothing told yet; 1: first failed child told; 2: threshold passed told
    lease_owner: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChildrenUpdate:
    """What one step of a children refresh writes atomically: the children read (inserted or updated), the
    counts and cursor after them, notices, and (for an ended batch) the detail of its held final notice."""

    progress: Progress
    cursor: dict[str, Any]
    children: tuple[ChildJob, ...] = ()
    failed_notified: int = 0
    notices: tuple[Any, ...] = ()  # Notice
    final_detail: dict[str, Any] | None = None  # patched into the batch's unsent final notice
    release_final: bool = False  # and that notice may go now
    release: bool = True  # give the lease back (the last step of this refresh)
    # The settle pass of one list (kind, workflow ID): ``touched_pass`` marks every child written here as seen
    # in that pass; ``close`` (kind, workflow ID, pass, after, before) marks the unfinished children created
    # strictly between ``after`` and ``before`` (epoch seconds) that the pass did not see as gone (final, state
    # not read yet); ``resolve`` (kind, workflow ID) records the gone ones no Failed/Cancel list named as Success.
    touched_pass: int = 0
    close: tuple[str, str | None, int, float, float] | None = None
    resolve: tuple[str, str | None] | None = None
