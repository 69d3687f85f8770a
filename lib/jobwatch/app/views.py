"""What the status page shows, read from the store in a few bounded queries: a page of the overview and one job's
detail. Read-only, typed records; the web front door renders them and never reaches the store itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from jobwatch.core.models import JobKey
from jobwatch.core.records import JobQuery, OutboxEntry, TrackedJob, Transition
from jobwatch.store import Store

MAX_PAGE = 500  # rows per overview page; more is never asked of the store at once
DEAD_LETTERS_SHOWN = 50


@dataclass(frozen=True)
class Overview:
    """One page of tracked jobs (problems first) with the numbers around it."""

    query: JobQuery
    jobs: list[TrackedJob]
    total: int  # jobs matching the query's filters, over all pages
    states: dict[str, int]  # tracked jobs per recorded state, over all jobs ("New" = not yet observed)
    outbox: dict[str, int]  # notices per outbox status
    buckets: list[str]
    tags: list[str]
    dead_letters: list[OutboxEntry]
    now: datetime
    progress: dict[JobKey, Any] = field(default_factory=dict)  # per job, when children progress is recorded


@dataclass(frozen=True)
class JobDetail:
    """One job: its record, its transitions, and the notices raised for it with their deliveries per sink."""

    job: TrackedJob
    history: list[Transition]
    notices: list[OutboxEntry]
    now: datetime
    progress: Any = None


def overview(store: Store, clock: Callable[[], datetime], query: JobQuery) -> Overview:
    q = JobQuery(query.state, query.bucket, query.tag, max(query.offset, 0), min(max(query.limit, 1), MAX_PAGE))
    page = store.query_jobs(q)
    states: dict[str, int] = {}
    outbox: dict[str, int] = {}
    for name, n in store.counts().items():
        group, _, label = name.partition(".")
        if group == "jobs":
            states[label] = n
        elif group == "outbox":
            outbox[label] = n
    facets = store.job_facets()
    dead = store.list_outbox(status="dead", limit=DEAD_LETTERS_SHOWN) if outbox.get("dead") else []
    return Overview(q, page.jobs, page.total, states, outbox, facets["buckets"], facets["tags"], dead, clock())


def job_detail(store: Store, clock: Callable[[], datetime], key: JobKey) -> JobDetail | None:
    tj = store.get(key)
    if tj is None:
        return None
    return JobDetail(tj, store.history(key), store.job_notices(key), clock())
