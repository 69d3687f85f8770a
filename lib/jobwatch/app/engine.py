"""The tick: claim due jobs under a lease, poll them concurrently within the invocation's time budget, and
record each decision (state + history + notices) atomically. Also discovery of new jobs by listing.

Store writes happen on the calling thread in small batches while worker threads do the HTTP calls, so the store
connection is never shared between threads and a slow store does not hold a request slot.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from queue import Empty, SimpleQueue
from typing import Any, Callable, Iterable, Protocol, Sequence

import structlog

from jobwatch.core.clock import utcnow
from jobwatch.core.errors import CIError, JobwatchError, StoreError
from jobwatch.core.models import Job, JobKey, QueryResult
from jobwatch.core.retry import AdaptiveLimit, is_throttling
from jobwatch.core.statemachine import Decision, Observation, PollPolicy, StallCheck, decide
from jobwatch.core.records import PollRecord, TrackedJob
from jobwatch.app.refresh import Refresher
from jobwatch.store.base import Store

log = structlog.get_logger("jobwatch.app.engine")


class JobReader(Protocol):
    """What the engine needs of the CI client."""

    def get_job(self, bucket: str, region: str, job_id: str) -> QueryResult: ...

    def list_jobs(self, bucket: str, region: str, **filters: Any) -> Iterable[Job]: ...


@dataclass
class TickResult:
    polled: int = 0
    transitions: int = 0
    notices: int = 0
    errors: int = 0
    lease_lost: int = 0
    throttled: int = 0  # polls the service refused as too many (each also counts in errors)
    released: int = 0  # claimed but not polled (budget ran out)
    left: int = 0  # due jobs not handled this tick
    budget_exhausted: bool = False
    elapsed: float = 0.0
    error_samples: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0  # poll requests sent: one per job queried, one per list page
    listed: int = 0  # jobs refreshed from a listing (each also counts in polled)
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)  # per bucket: path taken and its cost

    def merge(self, other: "TickResult") -> None:
        for name in ("polled", "transitions", "notices", "errors", "lease_lost", "released", "throttled",
                     "requests", "listed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.error_samples.extend(other.error_samples[: max(0, 10 - len(self.error_samples))])
        for key, b in other.buckets.items():
            self.add_bucket(key, b)

    def add_bucket(self, key: str, b: dict[str, Any]) -> None:
        """Fold one batch's bucket report in: counts add up; the path is ``list``, ``single`` or both."""
        mine = self.buckets.get(key)
        if mine is None:
            self.buckets[key] = dict(b)
            return
        for name, v in b.items():
            if name == "path":
                paths = set(mine["path"].split("+")) | set(v.split("+"))
                mine["path"] = "+".join(p for p in ("list", "single") if p in paths)
            elif isinstance(v, int):
                mine[name] = mine.get(name, 0) + v

    def as_dict(self) -> dict[str, Any]:
        return {
            "polled": self.polled, "transitions": self.transitions, "notices_queued": self.notices,
            "errors": self.errors, "throttled": self.throttled, "lease_lost": self.lease_lost,
            "released": self.released, "left": self.left,
            "budget_exhausted": self.budget_exhausted, "elapsed_s": round(self.elapsed, 3),
            "error_samples": self.error_samples, "requests": self.requests, "listed": self.listed,
            "refresh": list(self.buckets.values()),
        }


class Engine:
    """Polls tracked jobs. Every collaborator is passed in; nothing here reads config or the environment."""

    def __init__(
        self,
        store: Store,
        client: JobReader,
        *,
        policy: PollPolicy | None = None,
        owner: str | None = None,
        concurrency: int = 32,
        lease_seconds: float = 120.0,
        batch_size: int = 200,
        write_batch: int = 50,
        write_interval: float = 1.0,
        safety_margin: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        stall_check: StallCheck | None = None,
        refresher: Refresher | None = None,
        list_batch_size: int = 5000,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.store = store
        self.client = client
        self.policy = policy or PollPolicy()
        self.owner = owner or f"jw-{uuid.uuid4().hex[:12]}"
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.batch_size = batch_size
        self.write_batch = write_batch
        self.write_interval = write_interval
        self.safety_margin = safety_margin
        self.clock = clock
        self.monotonic = monotonic
        self.rand = rand
        self.stall_check = stall_check
        # Bulk refresh (issue 17): due ticks claim larger batches and list what is cheaper to list.
        self.refresher = refresher
        self.list_batch_size = max(batch_size, list_batch_size)
        self._pool: ThreadPoolExecutor | None = None
        # Requests in flight: up to ``concurrency``, fewer while the service throttles us.
        self.limit = AdaptiveLimit(concurrency, monotonic=monotonic)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="jobwatch-poll")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- polling ---------------------------------------------------------------------------------------------
    def tick(self, deadline: float | None = None, keys: Sequence[JobKey] | None = None, *,
             due_only: bool = False) -> TickResult:
        """Poll due jobs (or exactly ``keys``, due or not, or with ``due_only`` those of them that are due) until
        none are left or ``deadline`` (a value of ``monotonic``) minus the safety margin is reached. Store faults
        propagate (the tick is retried); poll faults are recorded per job and never stop the others."""
        start = self.monotonic()
        result = TickResult()
        remaining_keys = list(keys) if keys is not None else None
        while True:
            if self._out_of_time(deadline):
                result.budget_exhausted = True
                break
            bulk = self.refresher is not None and remaining_keys is None
            size = self.list_batch_size if bulk else self.batch_size
            limit = size if remaining_keys is None else min(size, len(remaining_keys))
            chunk = None if remaining_keys is None else remaining_keys[:limit]
            claimed = self.store.claim_due(self.owner, self.clock(), self._lease_for(deadline), limit, keys=chunk,
                                           due_only=due_only, **({"light": True} if bulk else {}))
            if remaining_keys is not None:
                remaining_keys = remaining_keys[limit:]
            if not claimed:
                if remaining_keys:
                    continue
                break
            if bulk:
                claimed = self._refresh(claimed, deadline, result)
            # The jobs left for one query each go in batches of batch_size, as before bulk refresh claimed more.
            for i in range(0, len(claimed), self.batch_size):
                if i and self._out_of_time(deadline):
                    self.store.release(claimed[i:], self.owner)
                    result.released += len(claimed) - i
                    result.budget_exhausted = True
                    break
                polled = self._poll_batch(claimed[i:i + self.batch_size], deadline)
                polled.requests += polled.polled
                result.merge(polled)
            if result.budget_exhausted:
                break
            if remaining_keys is not None and not remaining_keys:
                break
        if remaining_keys is None:
            result.left = self.store.count_due(self.clock())
        else:
            result.left = len(remaining_keys)
        result.budget_exhausted = result.budget_exhausted or self._out_of_time(deadline)
        result.elapsed = self.monotonic() - start
        return result

    def _lease_for(self, deadline: float | None) -> float:
        # Never a zero lease (a record stuck forever, or none at all): at least the configured lease.
        if deadline is None:
            return self.lease_seconds
        return max(self.lease_seconds, deadline - self.monotonic() + 30.0)

    def _out_of_time(self, deadline: float | None) -> bool:
        return deadline is not None and self.monotonic() >= deadline - self.safety_margin

    def _poll_batch(self, claimed: list[TrackedJob], deadline: float | None) -> TickResult:
        result = TickResult()
        pool = self._executor()
        todo = deque(claimed)
        running: dict[Future[Observation], TrackedJob] = {}  # submitted, answer not yet handled here
        in_flight = [0]  # submitted, answer not yet back
        lock = threading.RLock()  # todo, running and in_flight are shared with the workers' callbacks
        # Answers arrive here from a done-callback: O(1) per answer, where concurrent.futures.wait would hook and
        # unhook a waiter on every running future for each one.
        finished: SimpleQueue[Future[Observation]] = SimpleQueue()
        pending_writes: list[tuple[TrackedJob, Decision]] = []
        oldest_pending = 0.0

        submitting = [False]

        def submit_more() -> None:
            with lock:
                if submitting[0]:  # re-entered from a callback of a poll that ended at once: the loop goes on
                    return
                submitting[0] = True
                try:
                    while todo and in_flight[0] < self.limit.allowed and not self._out_of_time(deadline):
                        tj = todo.popleft()
                        # copy the context so the invocation's bound log fields reach the client's log lines
                        fut = pool.submit(contextvars.copy_context().run, self._observe, tj)
                        running[fut] = tj
                        in_flight[0] += 1
                        fut.add_done_callback(on_done)
                finally:
                    submitting[0] = False

        def on_done(fut: Future[Observation]) -> None:
            # Runs in the worker: the next request starts at once, not when this thread next gets the GIL
            # (with dozens of threads on one core that wait kept a fifth of the slots empty).
            with lock:
                in_flight[0] -= 1
            finished.put(fut)
            submit_more()

        submit_more()
        while True:
            with lock:
                if not running:
                    break
            done = [finished.get()]
            while True:
                try:
                    done.append(finished.get_nowait())
                except Empty:
                    break
            for fut in done:
                with lock:
                    tj = running.pop(fut)
                obs = fut.result()
                self._adapt(obs, result)
                decision = decide(tj, obs, self.clock(), self.policy, rand=self.rand, stall_check=self.stall_check)
                if not pending_writes:
                    oldest_pending = self.monotonic()
                pending_writes.append((tj, decision))
                result.polled += 1
                if obs.error is not None:
                    result.errors += 1
                    if len(result.error_samples) < 10:
                        result.error_samples.append({"job": str(tj.key), "error": decision.after.last_error or ""})
            submit_more()  # the limit may have grown
            with lock:
                more = bool(todo or running)
            # One transaction per batch, not per answer: at concurrency 1 a commit per job cost more than the
            # rest of our work together. The age bound keeps a slow trickle of answers from waiting on its
            # lease (and its notices) for long.
            if pending_writes and (len(pending_writes) >= self.write_batch or not more
                                   or self.monotonic() - oldest_pending >= self.write_interval):
                self._write(pending_writes, result)
                pending_writes = []
            with lock:
                if todo and self._out_of_time(deadline):
                    break
        if pending_writes:
            self._write(pending_writes, result)
        with lock:
            left = list(todo)
            todo.clear()  # no callback may start them now
        if left:
            self.store.release(left, self.owner)
            result.released += len(left)
            result.budget_exhausted = True
        return result

    def _refresh(self, claimed: list[TrackedJob], deadline: float | None, result: TickResult) -> list[TrackedJob]:
        """Bulk refresh hook: apply what listings returned (the same decision as a query's answer, written in
        the same batches) and return the jobs left for one query each."""
        assert self.refresher is not None
        out = self.refresher.split(claimed, pool=self._executor(), limit=self.limit,
                                   out_of_time=lambda: self._out_of_time(deadline))
        result.requests += out.pages
        result.throttled += out.throttled
        for rep in out.buckets:
            result.add_bucket(f"{rep.region}/{rep.bucket}", rep.as_dict())
        items: list[tuple[TrackedJob, Decision]] = []
        for tj, obs in out.listed:
            items.append((tj, decide(tj, obs, self.clock(), self.policy, rand=self.rand,
                                     stall_check=self.stall_check)))
            if len(items) >= max(self.write_batch, 500):  # listed answers arrive all at once: larger batches
                self._write(items, result)
                items = []
        if items:
            self._write(items, result)
        result.polled += len(out.listed)
        result.listed += len(out.listed)
        return out.leftovers

    def _adapt(self, obs: Observation, result: TickResult) -> None:
        err = obs.error
        if err is None:
            self.limit.succeeded()
        elif isinstance(err, CIError) and is_throttling(err.status or 0, err.code):
            result.throttled += 1
            if self.limit.throttled():
                log.warning("ci_throttled", in_flight=self.limit.allowed, ceiling=self.concurrency,
                            code=err.code, status=err.status)

    def _observe(self, tj: TrackedJob) -> Observation:
        k = tj.key
        try:
            res = self.client.get_job(k.bucket, k.region, k.job_id)
        except JobwatchError as exc:
            return Observation.failed(exc)
        except Exception as exc:  # a bug or an unexpected library error: record it, never sink the batch
            return Observation.failed(exc)
        for job in res.jobs:
            if job.job_id == k.job_id:
                return Observation.seen(job)
        if k.job_id in res.non_exist_ids:
            return Observation.missing()
        if len(res.jobs) == 1 and not res.non_exist_ids:
            return Observation.seen(res.jobs[0])
        from jobwatch.core.errors import BadResponseError

        return Observation.failed(BadResponseError(f"answer names neither job {k.job_id} nor NonExistJobIds",
                                                   request_id=res.request_id))

    def _write(self, items: list[tuple[TrackedJob, Decision]], result: TickResult) -> None:
        records = [PollRecord(tj, d.after, d.transitions, d.notices) for tj, d in items]
        written = self.store.record_polls(self.owner, records)
        for (tj, d), ok in zip(items, written):
            if not ok:
                result.lease_lost += 1
                log.warning("lease_lost", job=str(tj.key))
                continue
            result.transitions += len(d.transitions)
            result.notices += len(d.notices)
            # One line per change, not per poll: a steady state of unchanged jobs is debug noise (and CLS cost);
            # the invocation's summary line counts the polls.
            k, a = tj.key, d.after
            if a.error_count:
                log.warning("job_poll_failed", bucket=k.bucket, region=k.region, job_id=k.job_id, state=a.state,
                            error=a.last_error, error_count=a.error_count, next_poll_at=a.next_poll_at.isoformat())
            elif not d.transitions:
                log.debug("job_polled", bucket=k.bucket, region=k.region, job_id=k.job_id, state=a.state,
                          next_poll_at=a.next_poll_at.isoformat())
            for tr in d.transitions:
                log.info("job_transition", bucket=k.bucket, region=k.region, job_id=k.job_id,
                         from_state=tr.from_state, to_state=tr.to_state, seq=tr.seq, code=tr.code,
                         next_poll_at=a.next_poll_at.isoformat())

    # -- registration and discovery --------------------------------------------------------------------------
    def track(self, keys: Sequence[JobKey], tags: dict[str, str] | None = None) -> list[bool]:
        return self.store.track(keys, self.clock(), tags)

    def discover(self, region: str, bucket: str, deadline: float | None = None,
                 progress: Callable[[int], None] | None = None) -> int:
        """Track jobs created since the stored watermark. The first run (no watermark yet) takes every job
        still under way (Submitted, Running, Pause), whatever its age; later runs take every job created since,
        whatever its state, so a job that starts and ends between two ticks still gets its notice. The
        watermark is the service's own creation time of the newest job seen: no clock of ours is compared
        with the service's."""
        since = self.store.get_watermark(region, bucket)
        filters: dict[str, Any] = {"order_by_time": "Asc"}
        if since is None:
            filters["states"] = ["Submitted", "Running", "Pause"]
        else:
            filters["start_creation_time"] = since
        newest = since
        batch: list[JobKey] = []
        found = 0
        stopped = False
        for job in self.client.list_jobs(bucket, region, **filters):
            batch.append(JobKey(region, bucket, job.job_id))
            if job.created_at is not None and (newest is None or job.created_at > newest):
                newest = job.created_at
            if len(batch) >= 100:
                found += sum(self.store.track(batch, self.clock()))
                batch = []
                if progress:
                    progress(found)
                if self._out_of_time(deadline):
                    stopped = True
                    break
        if batch:
            found += sum(self.store.track(batch, self.clock()))
        # The filter is inclusive: the next run sees the newest job again, and track() ignores it. A first run
        # cut short by the budget keeps no watermark, so the next one lists the active jobs again.
        if newest is not None and not (stopped and since is None):
            self.store.set_watermark(region, bucket, newest, self.clock())
        return found


__all__ = ["Engine", "TickResult", "JobReader", "StoreError"]
