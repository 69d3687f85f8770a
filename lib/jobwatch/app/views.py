"""What the status page shows, read from the store in a few bounded queries: a page of the overview and one job's
detail. Read-only, typed records; the web front door renders them and never reaches the store itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from jobwatch.core.children import ChildJob
from jobwatch.core.models import JobKey
from jobwatch.core.progress import Progress
from jobwatch.core.records import JobQuery, OutboxEntry, PollError, TrackedJob, Transition
from jobwatch.store import Store

MAX_PAGE = 500  # rows per overview page; more is never asked of the store at once
DEAD_LETTERS_SHOWN = 50
POLL_ERRORS_SHOWN = 200  # the latest failed polls drawn on a job's timeline
FAILED_CHILDREN_SHOWN = 100  # the rest: `jobwatch children JOB_ID --failed` or GET /jobs/{jobId}/children


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
    progress: dict[JobKey, Progress] = field(default_factory=dict)  # batches whose children have been counted


@dataclass(frozen=True)
class JobDetail:
    """One job: its record, its transitions, the notices raised for it with their deliveries per sink, and its
    children as counted (progress and the first failed ones)."""

    job: TrackedJob
    history: list[Transition]
    notices: list[OutboxEntry]
    now: datetime
    progress: Progress | None = None
    failed_children: list[ChildJob] = field(default_factory=list)
    poll_errors: list[PollError] = field(default_factory=list)


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
    progress = store.progress_of([tj.key for tj in page.jobs]) if page.jobs else {}
    return Overview(q, page.jobs, page.total, states, outbox, facets["buckets"], facets["tags"], dead, clock(),
                    progress)


def job_detail(store: Store, clock: Callable[[], datetime], key: JobKey) -> JobDetail | None:
    tj = store.get(key)
    if tj is None:
        return None
    progress = store.get_progress(key)
    failed = store.list_children(key, failed_only=True, limit=FAILED_CHILDREN_SHOWN) \
        if progress is not None and progress.failed else []
    return JobDetail(tj, store.history(key), store.job_notices(key), clock(), progress, failed,
                     store.poll_errors(key, POLL_ERRORS_SHOWN))
