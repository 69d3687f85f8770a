"""The cost rule of a bulk refresh, pure: for one bucket's due jobs, list them (``GET /inventorytriggerjob``, up to
100 jobs per request) or query them one by one (``GET /inventorytriggerjob/<id>``), and if listing, over which
time windows. No I/O and no clock: the engine's refresh module feeds it what it claimed.

A listing filters by ``type`` (one variant per listing: the service has no "both") and by an inclusive creation
time range, whole seconds in CI's format. So the due jobs of a bucket are grouped by type, sorted by creation
time, and cut into windows of whole pages that never share a second (the windows are disjoint and every due job
lies in exactly one). A window pages sequentially (``nextToken``); windows page in parallel.

Jobs never observed (no type or creation time recorded yet) are always queried one by one.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

PAGE_SIZE = 100  # the list API's cap
LIST_TYPES = ("Workflow", "Job")


class RefreshPath(str, enum.Enum):
    LIST = "list"
    SINGLE = "single"


@dataclass(frozen=True)
class DueJob:
    """What the rule needs of one due job: its ID and, once observed, its variant and creation time."""

    job_id: str
    type: str | None
    created_at: datetime | None

    @property
    def listable(self) -> bool:
        return self.type in LIST_TYPES and self.created_at is not None


@dataclass(frozen=True)
class Window:
    """One listing: ``type``, creation time from ``start`` to ``end`` (both inclusive, whole seconds).
    ``due`` due jobs lie inside; ``page_budget`` pages may be spent on it before its unseen due jobs are
    queried one by one instead (a span denser with other jobs than expected must not cost more than it saves)."""

    type: str
    start: datetime
    end: datetime
    due: int
    page_budget: int


@dataclass(frozen=True)
class RefreshRule:
    """The knobs of the rule. ``min_due``: fewer listable due jobs than this in a bucket are queried one by one
    (a handful of jobs saves a few requests at most, and their span may be busy with jobs we do not watch).
    ``min_saving``: list only when the estimated pages are at most ``1/min_saving`` of the single queries.
    ``density``: how many listed jobs to expect per due job in a window (1.0: the span holds only due jobs);
    the page budget allows ``slack`` times the estimate, plus one page."""

    page_size: int = PAGE_SIZE
    min_due: int = 20
    min_saving: float = 4.0
    density: float = 1.0
    slack: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= PAGE_SIZE:
            raise ValueError(f"page_size must be 1 to {PAGE_SIZE}, got {self.page_size}")
        if self.min_due < 1 or self.min_saving <= 0 or self.density < 1 or self.slack < 1:
            raise ValueError("min_due >= 1, min_saving > 0, density >= 1 and slack >= 1 are required")


@dataclass(frozen=True)
class BucketPlan:
    """The rule's answer for one bucket: the path, the windows to list (empty on the single path), the jobs to
    query one by one from the start, and the estimated requests of both paths."""

    path: RefreshPath
    windows: tuple[Window, ...]
    single: tuple[str, ...]  # job IDs queried one by one whatever the path (never observed, or single path)
    list_requests: int  # estimated requests of the chosen plan if listing (pages + single queries)
    single_requests: int  # requests of querying every due job one by one

    @property
    def estimated_requests(self) -> int:
        return self.list_requests if self.path is RefreshPath.LIST else self.single_requests


def _second(dt: datetime) -> datetime:
    return dt.replace(microsecond=0)


def plan_windows(jobs: Sequence[DueJob], slots: int, rule: RefreshRule) -> list[Window]:
    """Cut listable jobs into windows per type: about ``ceil(n / page_size)`` pages over at most ``slots``
    windows, each a whole number of pages, cut only between two different seconds."""
    windows: list[Window] = []
    by_type: dict[str, list[datetime]] = {}
    for j in jobs:
        if j.listable:
            by_type.setdefault(j.type, []).append(_second(j.created_at))  # type: ignore[arg-type]
    if not by_type:
        return windows
    total_pages = sum(math.ceil(len(v) / rule.page_size) for v in by_type.values())
    slots = max(1, slots)
    for typ in LIST_TYPES:
        times = sorted(by_type.get(typ, ()))
        if not times:
            continue
        pages = math.ceil(len(times) / rule.page_size)
        # this type's share of the slots, at least one window
        n_windows = max(1, min(pages, round(slots * pages / total_pages)))
        per = math.ceil(pages / n_windows) * rule.page_size
        i = 0
        while i < len(times):
            j = min(len(times), i + per)
            while j < len(times) and times[j] == times[j - 1]:  # never split one second between two windows
                j += 1
            due = j - i
            expected = due * rule.density
            budget = math.ceil(rule.slack * expected / rule.page_size) + 1
            windows.append(Window(typ, times[i], times[j - 1], due, budget))
            i = j
    return windows


def plan_bucket(jobs: Sequence[DueJob], slots: int, rule: RefreshRule = RefreshRule()) -> BucketPlan:
    """List when the bucket's listable due jobs are many and the estimated pages are few enough; otherwise
    query every due job one by one. ``slots``: requests that may be in flight (the concurrency limit)."""
    single_requests = len(jobs)
    unlisted = tuple(j.job_id for j in jobs if not j.listable)
    listable = len(jobs) - len(unlisted)
    windows = plan_windows(jobs, slots, rule) if listable >= rule.min_due else []
    pages = sum(math.ceil(w.due * rule.density / rule.page_size) for w in windows)
    list_requests = pages + len(unlisted)
    if windows and pages * rule.min_saving <= listable:
        return BucketPlan(RefreshPath.LIST, tuple(windows), unlisted, list_requests, single_requests)
    return BucketPlan(RefreshPath.SINGLE, (), tuple(j.job_id for j in jobs),
                      list_requests if windows else single_requests, single_requests)


def window_contains(w: Window, created_at: datetime) -> bool:
    """Whether a job created at ``created_at`` lies in the window (inclusive at both ends, to the second)."""
    t = _second(created_at)
    return w.start <= t <= w.end


__all__ = ["BucketPlan", "DueJob", "LIST_TYPES", "PAGE_SIZE", "RefreshPath", "RefreshRule", "Window",
           "plan_bucket", "plan_windows", "window_contains"]
