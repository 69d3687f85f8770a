"""Bulk refresh: turn a claimed batch into observations read from listings (``GET /inventorytriggerjob``, up to
100 jobs per request) plus the jobs left for one query each (``GET /inventorytriggerjob/<id>``).

Per bucket, :func:`jobwatch.core.refresh.plan_bucket` decides the path. On the list path each window (one type,
an inclusive creation-time range) pages through ``nextToken`` on a worker thread, the windows in parallel within
the engine's adaptive limit; a window stops as soon as it has seen all of its due jobs, when its page budget is
spent, or when a page fails. Whatever a listing did not return (deleted, never observed, a failed or cut window)
and any listed answer older than what the store already recorded is left for a single query, so nothing is
missed and a deleted job is still confirmed vanished by the query path.

The engine applies the same decision (:func:`jobwatch.core.statemachine.decide`) to listed observations as to
queried ones: the confirmation rule covers listed answers too. A listed job whose answer is the recorded one
(same fingerprint) is not parsed: its observation is the claimed record's own job, so the decision sees no
change and the store writes only the poll bookkeeping.
"""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Mapping, Protocol, Sequence

import structlog

from jobwatch.core.models import Job, ListingPage
from jobwatch.core.records import TrackedJob
from jobwatch.core.refresh import BucketPlan, DueJob, RefreshPath, RefreshRule, Window, plan_bucket
from jobwatch.core.retry import AdaptiveLimit, throttled_by
from jobwatch.core.statemachine import Observation

log = structlog.get_logger("jobwatch.app.refresh")


class PageLister(Protocol):
    """What a bulk refresh needs of the CI client."""

    def list_changes(self, bucket: str, region: str, recorded: Mapping[str, str | None],
                     **filters: Any) -> ListingPage: ...


Emit = Callable[[list[tuple[TrackedJob, Observation]]], None]
# one window to list: (region, bucket), the window, its type's due jobs by ID, their recorded fingerprints by ID
_Work = tuple[tuple[str, str], Window, dict[str, TrackedJob], Mapping[str, "str | None"]]


@dataclass
class BucketReport:
    """Which path one bucket took in one batch and what it cost."""

    region: str
    bucket: str
    path: str
    due: int
    windows: int = 0
    pages: int = 0  # list requests sent
    listed: int = 0  # due jobs refreshed from a listing
    single: int = 0  # due jobs left for one query each
    failed_pages: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"region": self.region, "bucket": self.bucket, "path": self.path, "due": self.due,
                "windows": self.windows, "list_requests": self.pages, "listed": self.listed, "single": self.single,
                "failed_pages": self.failed_pages}


@dataclass
class RefreshOutcome:
    listed: list[tuple[TrackedJob, Observation]] = field(default_factory=list)
    leftovers: list[TrackedJob] = field(default_factory=list)
    buckets: list[BucketReport] = field(default_factory=list)
    pages: int = 0
    throttled: int = 0


@dataclass
class _WindowResult:
    found: dict[str, tuple[Job | None, datetime]] = field(default_factory=dict)  # None: the recorded answer
    pages: int = 0
    listed: int = 0  # jobs the pages held, due or not
    error: BaseException | None = None


class Refresher:
    """Lists what is cheaper to list. ``client`` needs ``list_changes``; ``clock`` stamps each page with the time
    it was asked for, so an answer older than a recorded one is never applied."""

    def __init__(self, client: PageLister, *, rule: RefreshRule = RefreshRule(),
                 clock: Callable[[], datetime], monotonic: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.rule = rule
        self.clock = clock
        self.monotonic = monotonic
        # Listed jobs per due job found, per (region, bucket, type), learnt from earlier windows (a warm instance
        # keeps it): a span busy with jobs not due, or not watched, makes listing dearer, and the rule knows it.
        self._density: dict[tuple[str, str, str], float] = {}

    def density(self, region: str, bucket: str) -> float:
        """The bucket's expected listed jobs per due job (1.0 until a listing has shown otherwise)."""
        return max([1.0] + [d for (r, b, _), d in self._density.items() if (r, b) == (region, bucket)])

    def split(self, claimed: Sequence[TrackedJob], *, pool: Executor, limit: AdaptiveLimit,
              out_of_time: Callable[[], bool] = lambda: False, emit: Emit | None = None) -> RefreshOutcome:
        """List what the rule says to list. ``emit``, when given, receives the listed observations of each window
        as soon as that window is done, on the calling thread, so that deciding and writing them overlaps the
        listing of the other windows (``RefreshOutcome.listed`` then stays empty); without it they are
        collected in ``RefreshOutcome.listed``. An exception from ``emit`` stops the listing: no further page
        is asked for, the windows under way are waited for, and it propagates."""
        out = RefreshOutcome()
        if emit is None:
            emit = out.listed.extend
        by_bucket: dict[tuple[str, str], list[TrackedJob]] = {}
        for tj in claimed:
            by_bucket.setdefault((tj.key.region, tj.key.bucket), []).append(tj)
        work: list[_Work] = []
        reports: dict[tuple[str, str], BucketReport] = {}
        plans: dict[tuple[str, str], BucketPlan] = {}
        for rb, jobs in by_bucket.items():
            due = [_due(tj) for tj in jobs]
            rule = self.rule
            learnt = self.density(*rb)
            if learnt > rule.density:
                rule = replace(rule, density=learnt)
            plan = plan_bucket(due, limit.allowed, rule)
            plans[rb] = plan
            reports[rb] = BucketReport(rb[0], rb[1], plan.path.value, len(jobs), windows=len(plan.windows))
            if plan.path is RefreshPath.SINGLE:
                continue
            wanted: dict[str, dict[str, TrackedJob]] = {}
            recorded: dict[str, dict[str, str | None]] = {}  # per type: job ID -> fingerprint of its stored answer
            for tj, d in zip(jobs, due):
                if d.listable:
                    wanted.setdefault(d.type, {})[tj.key.job_id] = tj  # type: ignore[index]
                    # a stub (light claim) stands for the stored answer; without one the answer must be parsed
                    recorded.setdefault(d.type, {})[tj.key.job_id] = (  # type: ignore[index]
                        tj.job_fp if tj.job is not None else None)
            for w in plan.windows:
                work.append((rb, w, wanted[w.type], recorded[w.type]))
        applied: dict[tuple[str, str], set[str]] = {rb: set() for rb in by_bucket}

        def window_done(i: int, res: _WindowResult) -> None:
            rb, w, wanted, _ = work[i]
            rep = reports[rb]
            self._learn(rb, w.type, res)
            rep.pages += res.pages
            rep.failed_pages += 1 if res.error is not None else 0
            seen = applied[rb]
            pairs: list[tuple[TrackedJob, Observation]] = []
            for job_id, (job, asked_at) in res.found.items():
                tj = wanted[job_id]
                # A listed answer asked for before the recorded one was made is older: query instead.
                if job_id not in seen and (tj.last_seen is None or asked_at >= tj.last_seen):
                    seen.add(job_id)
                    pairs.append((tj, Observation.seen(tj.job if job is None else job)))  # type: ignore[arg-type]
            rep.listed += len(pairs)
            if pairs:
                emit(pairs)

        self._run(work, pool, limit, out_of_time, out, window_done)
        for rb, jobs in by_bucket.items():
            rep = reports[rb]
            if plans[rb].path is RefreshPath.SINGLE:
                out.leftovers.extend(tj.hydrated() for tj in jobs)
                rep.single = len(jobs)
            else:
                seen = applied[rb]
                left = [tj.hydrated() for tj in jobs if tj.key.job_id not in seen]
                out.leftovers.extend(left)
                rep.single = len(left)
            out.pages += rep.pages
            out.buckets.append(rep)
            # One line per listed bucket; a bucket queried job by job (the usual few due jobs) only at debug.
            (log.info if rep.path == RefreshPath.LIST.value else log.debug)(
                "bucket_refreshed", region=rep.region, bucket=rep.bucket, path=rep.path, due=rep.due,
                windows=rep.windows, list_requests=rep.pages, listed=rep.listed, single=rep.single,
                failed_pages=rep.failed_pages)
        return out

    def _learn(self, rb: tuple[str, str], typ: str, res: _WindowResult) -> None:
        if not res.listed:
            return
        observed = res.listed / max(1, len(res.found))
        key = (rb[0], rb[1], typ)
        old = self._density.get(key)
        self._density[key] = observed if old is None else (old + observed) / 2

    def _run(self, work: list[_Work], pool: Executor,
             limit: AdaptiveLimit, out_of_time: Callable[[], bool], out: RefreshOutcome,
             done_cb: Callable[[int, _WindowResult], None]) -> None:
        """Page every window, at most ``limit.allowed`` at once, handing each finished window to ``done_cb`` (on
        this thread); a window not started in time is never handed over."""
        running: dict[Future[_WindowResult], int] = {}
        stop = threading.Event()
        nxt = 0
        try:
            while nxt < len(work) or running:
                while nxt < len(work) and len(running) < max(1, limit.allowed) and not out_of_time():
                    (region, bucket), w, _, recorded = work[nxt]
                    fut = pool.submit(contextvars.copy_context().run, self._page_window, region, bucket, w,
                                      recorded, stop)
                    running[fut] = nxt
                    nxt += 1
                if not running:
                    break  # out of time: the rest is left for the query path (and released there)
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = running.pop(fut)
                    res = fut.result()
                    err = res.error
                    if throttled_by(err):
                        out.throttled += 1
                    if limit.answered(err):
                        log.warning("ci_throttled", in_flight=limit.allowed, code=getattr(err, "code", None),
                                    status=getattr(err, "status", None))
                    done_cb(i, res)
        except BaseException:
            stop.set()  # no further page; the pages under way end before the fault propagates
            wait(running)
            raise

    def _page_window(self, region: str, bucket: str, w: Window, recorded: Mapping[str, str | None],
                     stop: threading.Event | None = None) -> _WindowResult:
        res = _WindowResult()
        token: str | None = None
        while res.pages < w.page_budget and not (stop is not None and stop.is_set()):
            asked_at = self.clock()
            try:
                page = self.client.list_changes(bucket, region, recorded, type=w.type, order_by_time="Asc",
                                                start_creation_time=w.start, end_creation_time=w.end,
                                                size=self.rule.page_size, next_token=token)
            except Exception as exc:  # noqa: BLE001 - the window's unseen jobs go to the query path
                res.error = exc
                log.warning("list_page_failed", region=region, bucket=bucket, type=w.type,
                            start=w.start.isoformat(), end=w.end.isoformat(), pages=res.pages,
                            error=type(exc).__name__, code=getattr(exc, "code", None),
                            request_id=getattr(exc, "request_id", None))
                break
            res.pages += 1
            res.listed += page.listed
            for job in page.changed:
                res.found[job.job_id] = (job, asked_at)
            for job_id in page.unchanged:
                res.found[job_id] = (None, asked_at)
            token = page.next_token
            if not token or len(res.found) >= w.due:
                break
        return res


def _due(tj: TrackedJob) -> DueJob:
    j = tj.job
    return DueJob(tj.key.job_id, j.type if j is not None else None, j.created_at if j is not None else None)


__all__ = ["BucketReport", "Emit", "PageLister", "RefreshOutcome", "Refresher"]
