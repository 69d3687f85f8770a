"""The one orchestrator. :class:`App` builds the collaborators from :class:`~jobwatch.app.config.Settings` once per
instance (SCF reuses a warm instance, so the HTTP pool and the store connection survive between invocations) and
offers every operation a user can ask for, with one set of error rules. The front doors (the SCF triggers, the
CLI, the web page) only turn their input into one of these calls and its result into their output: none of them
touches the engine, the store, the outbox or the CI client.

Error rules, the same for every front door:

* A store fault (:class:`~jobwatch.core.errors.RetryableError`) propagates: the caller's retry is the cure.
* Any other :class:`~jobwatch.core.errors.JobwatchError` about one item (one discovery target, one job) is
  recorded in the result (``rejected``) and the rest of the work goes on.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import structlog

from jobwatch.app.config import Settings, region_warnings, store_warning
from jobwatch.app.children import ChildrenRefresher, ChildrenResult
from jobwatch.app.refresh import Refresher
from jobwatch.app.engine import Engine, TickResult
from jobwatch.app.outbox import DrainResult, Outbox
from jobwatch.core.clock import utcnow
from jobwatch.core.children import ChildJob
from jobwatch.core.errors import JobwatchError, NotFoundError, RetryableError, ValidationError
from jobwatch.core.models import Job, JobInput, JobKey, JobOperation, QueryResult, validate_bucket
from jobwatch.core.regions import check_region
from jobwatch.core.progress import ChildCallback, Progress
from jobwatch.core.records import JobQuery, OutboxEntry, TrackedJob, Transition
from jobwatch.core.redact import Secret, scrub
from jobwatch.core.retry import Backoff
from jobwatch.core.stall import StallDecision
from jobwatch.core.statemachine import PollPolicy, StallCheck
from jobwatch.store import Store, open_store
from jobwatch.app import views
from jobwatch.app.views import JobDetail, Overview

if TYPE_CHECKING:  # requests comes with the sinks: not at cold start
    from jobwatch.notify.base import DeliveryResult, Sink

log = structlog.get_logger("jobwatch.app")


@dataclass(frozen=True)
class Budget:
    """An invocation's time on the App's monotonic clock. ``stop``: no new work after this (the outbox and the
    fan-out use it). ``engine``: the deadline handed to the engine, which itself stops ``safety_margin`` before
    it. ``None`` everywhere: no limit (a CLI run without ``--budget``)."""

    start: float
    stop: float | None = None
    engine: float | None = None

    @classmethod
    def of(cls, start: float, limit_s: float, margin_s: float) -> "Budget":
        """An SCF invocation: ``limit_s`` from ``start``, less the margin but never more than half the limit,
        so a short timeout still gets work done."""
        effective = min(margin_s, limit_s / 2)
        stop = start + limit_s - effective
        return cls(start, stop, stop + margin_s)

    @classmethod
    def seconds(cls, start: float, seconds: float | None) -> "Budget":
        """A CLI run: ``seconds`` from ``start`` for every part, or no limit."""
        end = None if seconds is None else start + seconds
        return cls(start, end, end)


@dataclass
class RunSummary:
    """What one operation did; the handler returns it as JSON and logs it as one line, the CLI prints it."""

    action: str
    tick: TickResult = field(default_factory=TickResult)
    drain: DrainResult = field(default_factory=DrainResult)
    registered: int = 0
    already_tracked: int = 0
    discovered: int = 0
    fanned_out: int = 0
    shards: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    fanout_errors: list[str] = field(default_factory=list)
    children: ChildrenResult = field(default_factory=ChildrenResult)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    not_found: list[JobKey] = field(default_factory=list)  # refused by a checked registration
    elapsed: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        t = self.tick
        out = {
            "ok": True,
            "action": self.action,
            "polled": t.polled,
            "transitions": t.transitions,
            "notices_queued": t.notices,
            "notices_delivered": self.drain.done,  # every sink took it; a notice one sink failed is not delivered
            "deliveries": self.drain.delivered,  # (notice, sink) sends acknowledged
            "notices_failed": self.drain.failed,
            "notices_dead": self.drain.dead,
            "errors": t.errors,
            "throttled": t.throttled,
            "requests": t.requests,
            "listed": t.listed,
            "refresh": _refresh_summary(t.buckets.values()),
            "error_samples": t.error_samples,
            "registered": self.registered,
            "already_tracked": self.already_tracked,
            "discovered": self.discovered,
            "rejected": self.rejected,
            "left": t.left,
            "released": t.released,
            "abandoned": t.abandoned,
            "cancelled": t.cancelled,
            "fanned_out": self.fanned_out,
            "shards": self.shards,
            "budget_exhausted": t.budget_exhausted or self.drain.budget_exhausted,
            "time_used_s": round(self.elapsed, 3),
        }
        if self.fanout_errors:
            out["fanout_errors"] = self.fanout_errors
        c = self.children
        if c.batches or c.errors:
            out["children"] = {"batches": c.batches, "pages": c.pages, "details": c.details, "lookups": c.lookups,
                               "new": c.new, "finished": c.finished, "completed": c.completed, "errors": c.errors,
                               "notices_queued": c.notices, "error_samples": c.error_samples}
            out["budget_exhausted"] = out["budget_exhausted"] or c.budget_exhausted
        if self.callbacks:
            out["callbacks"] = self.callbacks
        if self.not_found:
            out["not_found"] = [str(k) for k in self.not_found]
        return out


def _refresh_summary(buckets: Any) -> dict[str, Any]:
    """Bulk refresh in the summary: every bucket that was listed (its path and cost), and the buckets queried job by
    job only as counts (with hundreds of buckets of a few jobs each, a line per bucket would swamp the summary)."""
    listed = [b for b in buckets if "list" in b["path"]]
    single = [b for b in buckets if b["path"] == "single"]
    return {"listed_buckets": listed, "single_buckets": len(single), "single_jobs": sum(b["single"] for b in single)}


@dataclass(frozen=True)
class JobStatus:
    """What ``status`` shows: counts per state (and outbox totals) and the records asked for."""

    counts: dict[str, int]
    jobs: list[TrackedJob]
    progress: dict[JobKey, Progress] = field(default_factory=dict)  # of the jobs that have children counted
    total: int = 0  # jobs matching the filter; more than len(jobs) when a limit cut the list


@dataclass(frozen=True)
class ChildrenPage:
    """One page of a batch's children (``jobwatch children``, ``GET /jobs/{jobId}/children``); ``cursor`` is
    passed back for the next page, None after the last."""

    key: JobKey
    items: list[ChildJob]
    cursor: str | None
    progress: Progress | None


@dataclass(frozen=True)
class UntrackReport:
    """What ``untrack`` did to each key: stopped, already stopped (or final), or never tracked."""

    untracked: list[JobKey]
    inactive: list[JobKey]
    not_found: list[JobKey]


class App:
    """One instance's collaborators and every operation over them. Pass any collaborator in to replace the one
    built from settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        client: Any | None = None,
        sinks: Sequence["Sink"] | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        environ: Mapping[str, str] | None = None,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.rand = rand
        self.environ = environ
        self._owner = owner
        self._cancelled = False
        self._store_seen = False  # missing_store() found a set-up MySQL store: no need to ask again
        if store is not None:
            self.__dict__["store"] = store
        if client is not None:
            self.__dict__["client"] = client
        if sinks is not None:
            self.__dict__["sinks"] = list(sinks)

    # -- collaborators, built on first use ---------------------------------------------------------------------
    @cached_property
    def store(self) -> Store:
        url = self.settings.store_url
        text = url.reveal() if isinstance(url, Secret) else url
        warning = store_warning(text, self.environ)
        if warning:
            log.warning("store_not_durable", reason=warning)
        # said once per instance, on first use (logging is configured by then): a configured region this version
        # does not know is used as given (see jobwatch.core.regions)
        for var, region, note in region_warnings(self.settings):
            log.warning("region_unknown", field=var, region=region, note=note)
        return open_store(text)

    @cached_property
    def credentials(self) -> Any:
        from jobwatch.ci.credentials import provider_from_settings

        s = self.settings
        return provider_from_settings(
            secret_id=s.secret_id, secret_key=s.secret_key, session_token=s.session_token,
            profile_path=s.credentials_profile, role_arn=s.role_arn, role_session_name=s.role_session_name,
            role_duration=s.role_duration, sts_endpoint=s.sts_endpoint, environ=self.environ,
        )

    @cached_property
    def client(self) -> Any:
        from jobwatch.ci.client import CIClient

        s = self.settings
        return CIClient(
            self.credentials, endpoint=s.ci_endpoint, connect_timeout=s.http_connect_timeout,
            read_timeout=s.http_read_timeout, max_attempts=s.http_max_attempts, sign_window=s.sign_window,
            verify=s.verify_tls, pool_size=max(s.http_pool_size, s.concurrency), rand=self.rand,
        )

    @cached_property
    def sinks(self) -> list["Sink"]:
        from jobwatch.notify import parse_sinks

        spec = self.settings.notify
        text = spec.reveal() if isinstance(spec, Secret) else (spec or "")
        return list(parse_sinks(text or "log://", credentials=lambda: self.credentials.get()))

    @cached_property
    def stall_check(self) -> StallCheck:
        from jobwatch.core.stall import StallRules, evaluate_stall

        s = self.settings
        rules = StallRules.parse(s.stall_rules or None, running=s.stall_running_seconds,
                                 paused=s.stall_paused_seconds, repeat=s.stall_repeat_seconds)

        def check(tj: TrackedJob, now: datetime) -> StallDecision:
            since = tj.last_change or tj.first_seen
            return evaluate_stall(tj.state or "", since, now, tj.stall_notified_at, tj.key.bucket, tj.tags, rules)

        return check

    @cached_property
    def engine(self) -> Engine:
        s = self.settings
        policy = PollPolicy(
            min_seconds=s.poll_min_seconds, max_seconds=s.poll_max_seconds, backoff=s.poll_backoff,
            jitter=s.poll_jitter, error_max_seconds=s.error_backoff_max_seconds, confirmations=s.confirmations,
            final_hold_seconds=s.children_final_hold_seconds if s.children else 0.0,
        )
        engine = Engine(
            self.store, self.client, policy=policy, owner=self._owner, concurrency=s.concurrency,
            lease_seconds=s.lease_seconds, batch_size=s.batch_size, safety_margin=s.safety_margin_seconds,
            clock=self.clock, monotonic=self.monotonic, rand=self.rand, stall_check=self.stall_check,
            refresher=Refresher(self.client, clock=self.clock) if s.bulk_refresh else None,
        )
        if self._cancelled:
            engine.cancel()
        return engine

    @cached_property
    def children_refresher(self) -> ChildrenRefresher:
        s = self.settings
        return ChildrenRefresher(
            self.store, self.client, owner=self.engine.owner, clock=self.clock, monotonic=self.monotonic,
            max_pages=s.children_max_pages, lease_seconds=s.lease_seconds, safety_margin=s.safety_margin_seconds,
            failed_threshold=s.children_failed_threshold, failed_sample=s.children_failed_sample,
            callback_min_seconds=s.poll_min_seconds, limit=self.engine.limit,
        )

    @cached_property
    def outbox(self) -> Outbox:
        s = self.settings
        outbox = Outbox(
            self.store, self.sinks, owner=self.engine.owner, max_attempts=s.notify_max_attempts,
            backoff=Backoff(base=s.notify_backoff_base, cap=s.notify_backoff_cap),
            timeout=s.notify_timeout, lease_seconds=s.lease_seconds, clock=self.clock, monotonic=self.monotonic,
            rand=self.rand,
        )
        if self._cancelled:
            outbox.cancel()
        return outbox

    def cancel(self) -> None:
        """Stop the running operation cooperatively (Ctrl-C, SIGTERM; safe from a signal handler or another
        thread): the engine starts no new request, writes what was answered and releases the rest, and the
        outbox claims no further notices. An App stays cancelled; build a new one to go on."""
        self._cancelled = True
        engine = self.__dict__.get("engine")
        if engine is not None:
            engine.cancel()
        outbox = self.__dict__.get("outbox")
        if outbox is not None:
            outbox.cancel()

    def close(self) -> None:
        for name in ("engine", "children_refresher", "client", "store"):
            obj = self.__dict__.get(name)
            if obj is not None and hasattr(obj, "close"):
                obj.close()

    def __enter__(self) -> "App":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def missing_store(self) -> str | None:
        """Where the store would be when it is not set up yet, else None: the path of a SQLite store that does not
        exist, or ``mysql://host:port/database`` for a MySQL database without jobwatch's tables. Read-only front
        doors ask first and say so, instead of creating an empty store (its directories, its schema) as a side
        effect of looking."""
        url = self.settings.store_url
        text = url.reveal() if isinstance(url, Secret) else str(url)
        if "store" in self.__dict__ or self._store_seen:
            return None
        if text.split("://", 1)[0].lower() in ("mysql", "mysql+pymysql", "mariadb"):
            from jobwatch.store import has_schema

            probe = open_store(text, migrate=False)
            try:
                self._store_seen = has_schema(probe)
            finally:
                probe.close()
            if self._store_seen:
                return None
            from urllib.parse import urlsplit

            parts = urlsplit(text)  # no user or password: the whole URL is scrubbed from messages as a secret
            return f"mysql://{parts.hostname}:{parts.port or 3306}/{parts.path.strip('/')}"
        if not text.startswith("sqlite:///"):
            return None
        from urllib.parse import unquote

        path = unquote(text[len("sqlite:///"):])
        if path == ":memory:":
            return None
        if os.path.exists(path):
            from jobwatch.store import sqlite_has_schema

            self._store_seen = sqlite_has_schema(path)  # an empty file (touched, or another tool's) is no store
            if self._store_seen:
                return None
        return os.path.abspath(path)

    def resolve(self, ids: Sequence[str], region: str | None = None, bucket: str | None = None, *,
                tracked: bool = False) -> list[JobKey]:
        """Job keys from what an operator typed: ``region/bucket/job_id``, or a bare job ID placed by the given
        region and bucket (one of them alone is completed from the configured default, else refused naming the
        missing one), else by the one key in the store with that ID (a job ID is unique in practice; of several,
        the one still watched), else by the configured defaults. An ID found in several buckets with no single
        active record is refused, naming them; with ``tracked`` (the job must be in the store) an ID found
        nowhere is :class:`NotFoundError`."""
        if region is not None:
            check_region(region, "--region")  # well-formed; one this version does not know is the CLI's to warn
        if bucket is not None:
            try:
                validate_bucket(bucket)
            except ValidationError as exc:
                raise ValidationError("--bucket", bucket, exc.reason) from None
        placed = region is not None or bucket is not None  # the operator named where the job is
        if placed and (region or self.settings.default_region) is None:
            raise ValidationError("--region", None, f"--bucket {bucket} needs a region: give --region (or set "
                                  "JOBWATCH_DEFAULT_REGION)")
        if placed and (bucket or self.settings.default_bucket) is None:
            raise ValidationError("--bucket", None, f"--region {region} needs a bucket: give --bucket (or set "
                                  "JOBWATCH_DEFAULT_BUCKET)")
        region = region or self.settings.default_region
        bucket = bucket or self.settings.default_bucket
        out: list[JobKey] = []
        for text in ids:
            if "/" in text:
                key = JobKey.parse(text)
                check_region(key.region, "job key")
                out.append(key)
                continue
            if not placed:
                found = [] if self.missing_store() else self.locate(text)
                if len(found) > 1:
                    raise ValidationError("job_id", text, "tracked in more than one bucket: "
                                          + ", ".join(str(k) for k in found) + "; name one as region/bucket/job_id")
                if found:
                    out.append(found[0])
                    continue
                if tracked and (region is None or bucket is None):
                    raise NotFoundError(f"job {text} is not tracked")
            if region is None or bucket is None:
                raise ValidationError("bucket/region", text, "give --bucket and --region (or region/bucket/job_id), "
                                      "or set JOBWATCH_DEFAULT_BUCKET and JOBWATCH_DEFAULT_REGION")
            out.append(JobKey(region, bucket, text))
        return out

    def locate(self, job_id: str) -> list[JobKey]:
        """Where a bare job ID is tracked: every record with it, or only the one still watched when exactly one
        is (untracking a copy in another bucket must not make the ID ambiguous for good)."""
        found = self.find_jobs(job_id)
        if len(found) > 1:
            active = [k for k in found if (tj := self.job(k)) is not None and tj.active]
            if len(active) == 1:
                return active
        return found

    def budget(self, seconds: float | None = None) -> Budget:
        """A budget of ``seconds`` from now (None: no limit), for front doors that are not SCF invocations."""
        return Budget.seconds(self.monotonic(), seconds)

    # -- polling ---------------------------------------------------------------------------------------------
    def tick(self, budget: Budget | None = None, *, discover: bool = True, deliver: bool = True,
             fanout_context: Mapping[str, Any] | None = None, invoker: Any = None,
             action: str = "poll", progress: Callable[[int, int | None], None] | None = None) -> RunSummary:
        """One timer tick: discovery (when configured), poll due jobs, fan out what is left (when asked and
        configured), deliver the outbox. ``progress(polled, due)`` as the polls are written."""
        b = budget or self.budget()
        summary = RunSummary(action)
        if discover:
            self._discover(summary, None, b)
        deadline = self._poll_deadline(b) if deliver else b.engine
        summary.tick = self.engine.tick(deadline, progress=progress)
        self._refresh_children(summary, deadline)
        if fanout_context is not None and self.settings.fanout and summary.tick.left > 0:
            self._fan_out(summary, fanout_context, b, invoker)
        if deliver:
            summary.drain = self.outbox.drain(b.stop)
        return self._done(summary, b)

    def poll(self, keys: Sequence[JobKey], budget: Budget | None = None, *, due_only: bool = False,
             action: str = "poll") -> RunSummary:
        """Poll ``keys`` now (due or not, or only the due ones; final and untracked ones are skipped by the
        claim), then deliver."""
        b = budget or self.budget()
        summary = RunSummary(action)
        self._poll_keys(summary, keys, b, due_only=due_only)
        return self._done(summary, b)

    def register(self, keys: Sequence[JobKey], *, tags: Mapping[str, str] | None = None, poll: bool = True,
                 budget: Budget | None = None, action: str = "track") -> RunSummary:
        """Start watching ``keys`` (idempotent) and, by default, poll them at once and deliver."""
        b = budget or self.budget()
        summary = RunSummary(action)
        self._register(summary, keys, tags)
        if poll:
            self._poll_keys(summary, keys, b)
        return self._done(summary, b)

    def track(self, keys: Sequence[JobKey], *, tags: Mapping[str, str] | None = None, poll: bool = True,
              force: bool = False, budget: Budget | None = None) -> RunSummary:
        """:meth:`register` for an operator: a job not tracked yet is first looked up at the service, and one
        that does not exist there is not tracked (``summary.not_found``) unless ``force`` (a job about to be
        created, or an endpoint that cannot be reached now)."""
        keys = list(dict.fromkeys(keys))
        missing: list[JobKey] = []
        if not force:
            new = [k for k in keys if self.store.get(k) is None]
            if new:  # one query per new job, as many at once as a tick would send
                from concurrent.futures import ThreadPoolExecutor

                def exists(k: JobKey) -> bool:
                    return any(j.job_id == k.job_id for j in self.remote_job(k).jobs)

                with ThreadPoolExecutor(max_workers=max(1, min(self.settings.concurrency, len(new)))) as pool:
                    missing = [k for k, ok in zip(new, pool.map(exists, new)) if not ok]
        missing_set = set(missing)
        summary = self.register([k for k in keys if k not in missing_set], tags=tags, poll=poll, budget=budget)
        summary.not_found = missing
        return summary

    def register_each(self, items: Iterable[tuple[Sequence[JobKey], Mapping[str, str] | None]],
                      budget: Budget | None = None, *, action: str) -> tuple[RunSummary, list[bool]]:
        """Register several independent items (the records of one queue message batch), then poll all the jobs
        registered and deliver. One item that cannot be registered is rejected; the rest go on. Returns the
        summary and, per item, whether it was registered."""
        b = budget or self.budget()
        summary = RunSummary(action)
        to_poll: list[JobKey] = []
        ok: list[bool] = []
        for index, (keys, tags) in enumerate(items):
            try:
                self._register(summary, keys, tags)
            except RetryableError:
                raise
            except JobwatchError as exc:
                reason = f"not registered: {scrub(str(exc))[:300]}"
                summary.rejected.append({"index": index, "reason": reason})
                log.warning("record_rejected", index=index, reason=reason)
                ok.append(False)
                continue
            ok.append(True)
            to_poll.extend(keys)
        self._poll_keys(summary, to_poll, b)
        return self._done(summary, b), ok

    def discover(self, budget: Budget | None = None, targets: Sequence[tuple[str, str]] | None = None, *,
                 progress: Callable[[str, int], None] | None = None) -> RunSummary:
        """Track the jobs created in each target bucket since the last run (default: the configured ones)."""
        b = budget or self.budget()
        summary = RunSummary("discover")
        self._discover(summary, targets, b, progress)
        return self._done(summary, b)

    def deliver(self, budget: Budget | None = None) -> RunSummary:
        b = budget or self.budget()
        summary = RunSummary("deliver")
        summary.drain = self.outbox.drain(b.stop)
        return self._done(summary, b)

    # -- reads -----------------------------------------------------------------------------------------------
    def job(self, key: JobKey) -> TrackedJob | None:
        return self.store.get(key)

    def jobs(self, *, active: bool | None = None, limit: int = 1000,
             after: JobKey | None = None) -> list[TrackedJob]:
        return self.store.list_jobs(active=active, limit=limit, after=after)

    def all_jobs(self, *, active: bool | None = None, page: int = 1000) -> Iterator[TrackedJob]:
        """Every tracked job in key order, read a page at a time (nothing is left out silently)."""
        after = None
        while True:
            batch = self.store.list_jobs(active=active, limit=page, after=after)
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1].key

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def status(self, keys: Sequence[JobKey] | None = None, *, active: bool | None = None,
               limit: int = 1000) -> JobStatus:
        """Counts, and the records of ``keys`` (those tracked) or of every job."""
        if keys:
            jobs = [tj for tj in (self.store.get(k) for k in keys) if tj is not None]
            total = len(jobs)
        else:
            jobs = self.store.list_jobs(active=active, limit=limit)
            total = len(jobs) if len(jobs) < limit else self.store.count_jobs(active=active)
        return JobStatus(self.store.counts(), jobs, self.store.progress_of([tj.key for tj in jobs]), total)

    def lease_holders(self) -> list[tuple[str, int, datetime]]:
        """Pollers holding live leases now, other than this App's engine: (owner, jobs, until)."""
        mine = self.__dict__.get("engine")
        return [h for h in self.store.lease_holders(self.clock()) if mine is None or h[0] != mine.owner]

    def history(self, key: JobKey) -> list[Transition]:
        return self.store.history(key)

    # -- children of batch jobs ------------------------------------------------------------------------------
    def progress(self, key: JobKey) -> Progress | None:
        """A batch's progress as last counted from its children (None: not counted yet)."""
        return self.store.get_progress(key)

    def progress_of(self, keys: Sequence[JobKey]) -> dict[JobKey, Progress]:
        return self.store.progress_of(keys)

    def children(self, key: JobKey, *, failed_only: bool = False, limit: int = 100,
                 cursor: str | None = None) -> ChildrenPage:
        """A page of a batch's recorded children (child-ID order), only the failed ones with ``failed_only``."""
        limit = max(1, min(int(limit), 1000))
        items = self.store.list_children(key, failed_only=failed_only, limit=limit + 1, after=cursor)
        more = len(items) > limit
        items = items[:limit]
        return ChildrenPage(key, items, items[-1].child_id if more and items else None, self.store.get_progress(key))

    def refresh_children(self, budget: Budget | None = None, keys: Sequence[JobKey] | None = None) -> RunSummary:
        """Bring the children of due batches (or of ``keys``) up to date, then deliver."""
        b = budget or self.budget()
        summary = RunSummary("children")
        self._refresh_children(summary, self._poll_deadline(b), keys)
        summary.drain = self.outbox.drain(b.stop)
        return self._done(summary, b)

    def child_callbacks(self, callbacks: Sequence[ChildCallback], budget: Budget | None = None, *,
                        action: str = "callback") -> RunSummary:
        """CI's per-child callbacks: never a batch job to track. A child recorded unfinished is read back by ID and
        recorded at once with its batch's counts; any other prompts a children refresh of the batches that could
        own it (see :meth:`ChildrenRefresher.on_callbacks`); then the outbox is delivered."""
        b = budget or self.budget()
        summary = RunSummary(action)
        if callbacks:
            summary.callbacks, summary.children = self.children_refresher.on_callbacks(callbacks, b.engine) \
                if self.settings.children else ([{"child_id": c.child_id, "event": c.event_name,
                                                  "callback_state": c.state, "outcome": "children_off"}
                                                 for c in callbacks], ChildrenResult())
        summary.drain = self.outbox.drain(b.stop)
        return self._done(summary, b)

    def outbox_entries(self, *, status: str | None = None, limit: int = 100) -> list[OutboxEntry]:
        return self.store.list_outbox(status=status, limit=limit)

    def remote_job(self, key: JobKey) -> QueryResult:
        """The service's answer for one job, read straight from the API (nothing recorded)."""
        return self.client.get_job(key.bucket, key.region, key.job_id)

    def remote_jobs(self, region: str, bucket: str, **filters: Any) -> Iterator[Job]:
        """The service's job list (follows paging), read straight from the API (nothing recorded)."""
        return iter(self.client.list_jobs(bucket, region, **filters))

    def create_job(self, region: str, bucket: str, name: str, input: JobInput, *, type: str = "Job",
                   operation: JobOperation | None = None) -> Job:
        """Create a batch job through the API (the demo, against the emulator)."""
        from jobwatch.ci.client import JobSpec

        spec = JobSpec(name, input, type=type, operation=operation or JobOperation())
        return self.client.create_job(bucket, region, spec)

    # -- maintenance -----------------------------------------------------------------------------------------
    def untrack(self, keys: Sequence[JobKey]) -> int:
        return self.store.untrack(keys)

    def untrack_report(self, keys: Sequence[JobKey]) -> UntrackReport:
        """:meth:`untrack`, saying per key whether it was stopped, already stopped, or never tracked."""
        keys = list(dict.fromkeys(keys))
        before = {k: self.store.get(k) for k in keys}
        self.store.untrack([k for k, tj in before.items() if tj is not None and tj.active])
        return UntrackReport(untracked=[k for k, tj in before.items() if tj is not None and tj.active],
                             inactive=[k for k, tj in before.items() if tj is not None and not tj.active],
                             not_found=[k for k, tj in before.items() if tj is None])

    # -- status page (read-only views and the two actions it offers) ----------------------------------------
    def revoke_session(self, nonce: str, until: float, now: float) -> None:
        """A status-page logout, kept in the store so that every instance refuses the session's cookie."""
        self.store.revoke_session(nonce, until, now)

    def session_revoked(self, nonce: str, now: float) -> bool:
        return self.store.session_revoked(nonce, now)

    def overview(self, query: JobQuery) -> Overview:
        """One page of tracked jobs, problems first, with counts, filter values and the dead letters."""
        return views.overview(self.store, self.clock, query)

    def job_detail(self, key: JobKey) -> JobDetail | None:
        """One job's record, transitions and notices (None when it is not tracked)."""
        return views.job_detail(self.store, self.clock, key)

    def find_jobs(self, job_id: str) -> list[JobKey]:
        """The tracked jobs with this ID, in any bucket (a bare job ID pasted into the status page's URL)."""
        return self.store.find_keys(job_id)

    def purge(self, older_than_days: float | None = None,
              progress: Callable[[dict[str, int]], None] | None = None, *, dry_run: bool = False) -> dict[str, int]:
        """Delete what is older than the retention (or ``older_than_days``); ``dry_run`` only counts it."""
        days = self.settings.retention_days if older_than_days is None else older_than_days
        if days < 0:
            raise ValidationError("older_than_days", older_than_days, "expected 0 or more days")
        return self.store.purge(self.clock() - timedelta(days=days), progress=progress, dry_run=dry_run)

    def retry_notice(self, notice_id: int) -> bool:
        """Put a notice (usually a dead letter) back for delivery now."""
        return self.store.retry_notice(notice_id, self.clock())

    def migrate(self) -> int:
        return self.store.migrate()

    def notify_test(self) -> list["DeliveryResult"]:
        """Send a sample notice to every configured sink (not through the outbox) and report each answer."""
        from jobwatch.notify import sample_notice, send_concurrently

        notice = sample_notice(self.clock())
        return send_concurrently([(notice, s) for s in self.sinks], timeout=self.settings.notify_timeout)

    # -- the pieces the operations share ---------------------------------------------------------------------
    def _register(self, summary: RunSummary, keys: Sequence[JobKey], tags: Mapping[str, str] | None) -> None:
        new = self.engine.track(list(keys), dict(tags) if tags else None)
        registered = sum(new)
        summary.registered += registered
        summary.already_tracked += len(new) - registered

    def _poll_keys(self, summary: RunSummary, keys: Sequence[JobKey], b: Budget, *, due_only: bool = False) -> None:
        keys = list(dict.fromkeys(keys))
        if keys:
            deadline = self._poll_deadline(b)
            summary.tick = self.engine.tick(deadline, keys=keys, due_only=due_only)
            self._refresh_children(summary, deadline, keys)
        summary.drain = self.outbox.drain(b.stop)

    def _poll_deadline(self, b: Budget) -> float | None:
        """The engine's deadline when the outbox drains after it: polling stops early enough to leave the drain
        its share of the budget (what it needs, plus the engine's grace for answers in flight; never more than
        half). Notices first: with a backlog the engine would otherwise run to the stop time and the drain,
        which needs its margin plus a send's timeout, would never deliver anything."""
        if b.engine is None or b.stop is None:
            return b.engine
        reserve = min((b.stop - self.monotonic()) / 2, self.outbox.needs + self.engine.abandon_after)
        return min(b.engine, b.stop - reserve + self.engine.safety_margin)

    def _refresh_children(self, summary: RunSummary, deadline: float | None,
                          keys: Sequence[JobKey] | None = None) -> None:
        """After polling: the children of the batches polled (or, on a tick, of every due batch), and the final
        count of batches that ended, until ``deadline`` (the engine's). Errors are per batch and recorded; a store
        fault propagates."""
        if not self.settings.children:
            return
        res = self.children_refresher.refresh(deadline, keys=keys)
        summary.children = res

    def _discover(self, summary: RunSummary, targets: Sequence[tuple[str, str]] | None, b: Budget,
                  progress: Callable[[str, int], None] | None = None) -> None:
        for region, bucket in targets if targets is not None else (self.settings.discovery or ()):
            spec = f"{region}/{bucket}"
            report = (lambda n, _s=spec: progress(_s, n)) if progress else None
            try:
                summary.discovered += self.engine.discover(region, bucket, b.engine, progress=report)
            except RetryableError:
                raise  # the store is down: fail, so the trigger retries
            except JobwatchError as exc:  # one bucket's listing failed; the others go on
                reason = scrub(str(exc))[:300]
                summary.rejected.append({"discovery": spec, "reason": reason})
                log.warning("discovery_failed", target=spec, error=reason)

    def _fan_out(self, summary: RunSummary, context: Mapping[str, Any], b: Budget, invoker: Any) -> None:
        from jobwatch.app import fanout

        s = self.settings
        try:
            target = fanout.Target.resolve(s, context, self.environ)
        except ValueError as exc:
            log.warning("fanout_unconfigured", reason=str(exc))
            summary.fanout_errors.append(str(exc))
            return
        keys = self.store.list_due(self.clock(), s.fanout_shard_size * s.fanout_max_shards)
        if invoker is None:
            stop = b.stop if b.stop is not None else self.monotonic() + 10.0
            timeout = max(1.0, min(5.0, (stop - self.monotonic()) / 2))
            invoker = fanout.sdk_invoker(lambda: self.credentials.get(), timeout=timeout)
        res = fanout.fan_out(keys, target, invoker, shard_size=s.fanout_shard_size, max_shards=s.fanout_max_shards)
        summary.fanned_out, summary.shards = res.keys, res.shards
        summary.fanout_errors.extend(res.errors)

    def _done(self, summary: RunSummary, b: Budget) -> RunSummary:
        summary.elapsed = self.monotonic() - b.start
        return summary


__all__ = ["App", "Budget", "ChildrenPage", "JobStatus", "RunSummary", "UntrackReport"]
