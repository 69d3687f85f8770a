"""The tick: claim due jobs under a lease, poll them concurrently within the invocation's time budget, and
record each decision (state + history + notices) atomically. Also discovery of new jobs by listing.

Three parts, each readable alone: :class:`Dispatcher` runs one claimed batch's requests on worker threads and
hands back (job, observation) pairs; :class:`WriteBuffer` groups decisions into few store transactions;
:meth:`Engine.tick` claims batches and decides. Store writes happen on the calling thread only, so the store
connection is never shared between threads and a slow store does not hold a request slot.

A tick stops cooperatively: on :meth:`Engine.cancel`, at the deadline, near the end of a batch's lease, or on a
store fault. Then no new request starts, answers already back are written (not after a store fault), the
leases of jobs not polled are released at once, and requests still in flight are abandoned after a short grace:
their late answers are dropped, never written after their lease was given back.
"""

from __future__ import annotations

import contextvars
import gc
import logging
import random
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from queue import Empty, SimpleQueue
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import structlog

from jobwatch.core.clock import utcnow
from jobwatch.core.errors import BadResponseError, JobwatchError, StoreError
from jobwatch.core.models import Job, JobKey, QueryResult
from jobwatch.core.retry import AdaptiveLimit, throttled_by
from jobwatch.core.statemachine import Decision, Observation, PollPolicy, StallCheck, decide
from jobwatch.core.records import PollRecord, TrackedJob
from jobwatch.app.refresh import Refresher
from jobwatch.store.base import Store

log = structlog.get_logger("jobwatch.app.engine")


# Generation-0 threshold while a tick runs (Python's default is 700).
TICK_GC_THRESHOLD = 20_000


@contextmanager
def rare_collections(threshold: int = TICK_GC_THRESHOLD) -> Iterator[None]:
    """Raise the collector's generation-0 threshold for the duration. A tick holds thousands of short-lived
    records that form no reference cycles (refcounting frees them); at the default threshold the collector
    swept them 240 times in a 10,000-job bulk tick (0.1-0.2 s) and found nothing. Cyclic garbage is still
    collected, every ``threshold`` allocations instead of 700. Put back afterwards unless someone changed it
    meanwhile (a nested or concurrent tick leaves it to the outermost)."""
    old = gc.get_threshold()
    if old[0] >= threshold:
        yield
        return
    gc.set_threshold(threshold, *old[1:])
    try:
        yield
    finally:
        if gc.get_threshold()[0] == threshold:
            gc.set_threshold(*old)


class JobReader(Protocol):
    """What the engine needs of the CI client."""

    @property
    def worst_case_seconds(self) -> float: ...  # one get_job with its retries, at worst

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
    released: int = 0  # claimed but not polled: leases given back at once (stop, deadline, lease running out)
    abandoned: int = 0  # requests still in flight when the tick stopped: their answers are dropped
    left: int = 0  # due jobs not handled this tick
    budget_exhausted: bool = False
    cancelled: bool = False  # Engine.cancel() stopped this tick
    elapsed: float = 0.0
    error_samples: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0  # poll requests sent: one per job queried, one per list page
    listed: int = 0  # jobs refreshed from a listing (each also counts in polled)
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)  # per bucket: path taken and its cost

    def merge(self, other: "TickResult") -> None:
        for name in ("polled", "transitions", "notices", "errors", "lease_lost", "released", "abandoned",
                     "throttled", "requests", "listed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.budget_exhausted = self.budget_exhausted or other.budget_exhausted
        self.cancelled = self.cancelled or other.cancelled
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
            "released": self.released, "abandoned": self.abandoned, "left": self.left,
            "budget_exhausted": self.budget_exhausted, "cancelled": self.cancelled,
            "elapsed_s": round(self.elapsed, 3), "error_samples": self.error_samples,
            "requests": self.requests, "listed": self.listed, "refresh": list(self.buckets.values()),
        }


class Dispatcher:
    """Runs the requests of one claimed batch. Each worker thread takes the next job, polls it, and hands
    ``(job, observation)`` to the reader through a queue, then takes the next one at once (no round trip through
    the reader's thread). Workers never touch the store. ``may_start`` is asked before every request; once it
    says no, or :meth:`halt` was called, no request starts. :meth:`abandon` forgets the requests in flight: a
    worker whose job was abandoned drops its answer."""

    def __init__(self, jobs: Iterable[TrackedJob], observe: Callable[[TrackedJob], Observation],
                 limit: AdaptiveLimit, may_start: Callable[[], bool]) -> None:
        self._todo = deque(jobs)
        self._observe = observe
        self._limit = limit
        self._may_start = may_start
        self._lock = threading.Lock()
        self._answers: SimpleQueue[tuple[TrackedJob, Observation] | None] = SimpleQueue()  # None: wake up
        self._in_flight: dict[JobKey, TrackedJob] = {}
        self._unread = 0  # answers queued, not yet taken by the reader
        self._workers = 0
        self._halted = False
        self.poll_seconds: list[float] = []  # how long each answered request took

    def top_up(self) -> None:
        """Start workers up to the requests allowed now (the limit grows back after throttling)."""
        with self._lock:
            n = 0 if self._halted else min(self._limit.allowed, len(self._todo)) - self._workers
            self._workers += max(0, n)
        for _ in range(n):
            ctx = contextvars.copy_context()  # the invocation's bound log fields reach the client's lines
            threading.Thread(target=ctx.run, args=(self._work,), name="jobwatch-poll", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if (self._halted or not self._todo or self._workers > self._limit.allowed
                        or not self._may_start()):
                    self._workers -= 1
                    return
                tj = self._todo.popleft()
                self._in_flight[tj.key] = tj
            t0 = time.monotonic()  # the network's latency, measured: not a budget decision
            obs = self._observe(tj)
            with self._lock:
                if self._in_flight.pop(tj.key, None) is None:
                    self._workers -= 1
                    return  # abandoned: the lease is gone, the answer must not be written
                self.poll_seconds.append(time.monotonic() - t0)
                self._unread += 1
                self._answers.put((tj, obs))

    def answers(self, timeout: float | None) -> list[tuple[TrackedJob, Observation]]:
        """Answers back so far, waiting up to ``timeout`` seconds (None: until one comes or :meth:`wake`)."""
        try:
            got = [self._answers.get(timeout=timeout)]
        except Empty:
            return []
        while True:
            try:
                got.append(self._answers.get_nowait())
            except Empty:
                break
        out = [a for a in got if a is not None]
        with self._lock:
            self._unread -= len(out)
        return out

    def wake(self) -> None:
        """Make a waiting :meth:`answers` return now. Reentrant (SimpleQueue.put): safe in a signal handler."""
        self._answers.put(None)

    def busy(self) -> bool:
        """Some request may still start or answer, or an answer waits to be read."""
        with self._lock:
            return bool(self._in_flight or self._unread or (self._todo and not self._halted))

    @property
    def halted(self) -> bool:
        return self._halted

    def halt(self) -> list[TrackedJob]:
        """No request starts from now on; returns the jobs never started."""
        with self._lock:
            self._halted = True
            left = list(self._todo)
            self._todo.clear()
        self.wake()
        return left

    def abandon(self) -> list[TrackedJob]:
        """Give up on the requests in flight (after :meth:`halt`); returns their jobs."""
        with self._lock:
            gone = list(self._in_flight.values())
            self._in_flight.clear()
            return gone


class WriteBuffer:
    """Decisions waiting for the store. One transaction per batch of answers, not per answer: at concurrency 1
    a commit per job cost more than the rest of our work together. The age bound keeps a slow trickle of
    answers from waiting on its lease (and its notices) for long."""

    def __init__(self, store: Store, owner: str, size: int, max_age: float) -> None:
        self.store, self.owner, self.size, self.max_age = store, owner, size, max_age
        self._items: list[tuple[TrackedJob, Decision]] = []
        self._oldest = 0.0

    def add(self, tj: TrackedJob, decision: Decision, now: float) -> None:
        if not self._items:
            self._oldest = now
        self._items.append((tj, decision))

    def due(self, now: float, *, more_coming: bool) -> bool:
        return bool(self._items) and (len(self._items) >= self.size or not more_coming
                                      or now - self._oldest >= self.max_age)

    def flush(self) -> list[tuple[TrackedJob, Decision, bool]]:
        """Write what is buffered; per item whether it was written (False: the lease was lost). On a store fault
        the items stay buffered (nothing of them was written): :meth:`jobs` names them."""
        items = self._items
        if not items:
            return []
        written = self.store.record_polls(self.owner, [PollRecord(tj, d.after, d.transitions, d.notices, d.errors)
                                                       for tj, d in items])
        self._items = []
        return [(tj, d, ok) for (tj, d), ok in zip(items, written)]

    def jobs(self) -> list[TrackedJob]:
        return [tj for tj, _ in self._items]


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
        abandon_after: float = 2.0,
        poll_worst_case: float | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        stall_check: StallCheck | None = None,
        refresher: Refresher | None = None,
        list_batch_size: int = 5000,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        worst = client.worst_case_seconds if poll_worst_case is None else poll_worst_case
        if lease_seconds <= worst:
            raise ValueError(f"lease_seconds={lease_seconds:g} must exceed one poll's worst case ({worst:g} s): "
                             "a lease shorter than a request lets another poller take the job mid-request")
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
        self.abandon_after = abandon_after
        self.poll_worst_case = worst
        self.clock = clock
        self.monotonic = monotonic
        self.rand = rand
        self.stall_check = stall_check
        # Requests in flight: up to ``concurrency``, fewer while the service throttles us.
        self.limit = AdaptiveLimit(concurrency, monotonic=monotonic)
        self._typical_poll = worst  # seconds per request, learnt per batch: sizes the next claim
        self._cancelled = False
        self._batch: Dispatcher | None = None
        # Bulk refresh (issue 17): due ticks claim larger batches and list what is cheaper to list.
        self.refresher = refresher
        self._listing_pays = False  # learnt per instance: see tick()
        self.list_batch_size = max(batch_size, list_batch_size)
        self._pool: ThreadPoolExecutor | None = None  # the refresher's page requests

    def cancel(self) -> None:
        """Stop the running tick, and every later one, cooperatively. Safe from a signal handler or another
        thread (a flag and a reentrant queue put): no new request starts, answers already back are written,
        unpolled leases are released, and the tick returns within about ``abandon_after`` seconds."""
        self._cancelled = True
        batch = self._batch
        if batch is not None:
            batch.wake()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="jobwatch-list")
        return self._pool

    def close(self) -> None:
        """Shut the refresher's pool; a poll batch's worker threads end with it (abandoned ones are daemons)."""
        if self._pool is not None:
            self._pool.shutdown(wait=not self._cancelled, cancel_futures=True)
            self._pool = None

    # -- polling ---------------------------------------------------------------------------------------------
    def tick(self, deadline: float | None = None, keys: Sequence[JobKey] | None = None, *,
             due_only: bool = False, progress: Callable[[int, int | None], None] | None = None) -> TickResult:
        """Poll due jobs (or exactly ``keys``, due or not, or with ``due_only`` those of them that are due) until
        none are left, ``deadline`` (a value of ``monotonic``) minus the safety margin is reached, or the engine
        is cancelled. Store faults propagate (the tick is retried) after the workers were stopped; poll faults
        are recorded per job and never stop the others. ``progress(polled, total)`` after each batch (a terminal's
        progress bar; the total is what was due at the start)."""
        with rare_collections():
            return self._tick(deadline, keys, due_only=due_only, progress=progress)

    def _tick(self, deadline: float | None, keys: Sequence[JobKey] | None, *, due_only: bool,
              progress: Callable[[int, int | None], None] | None) -> TickResult:
        start = self.monotonic()
        result = TickResult()
        total = None
        if progress is not None:
            total = len(keys) if keys is not None else self.store.count_due(self.clock())
        remaining_keys = list(keys) if keys is not None else None
        while not (result.budget_exhausted or result.cancelled):
            if self._cancelled:
                result.cancelled = True
                break
            if self._out_of_time(deadline):
                result.budget_exhausted = True
                break
            lease = self._lease_for(deadline)
            # Named keys (a fan-out shard, a register) are claimed as before; a due tick claims larger batches once
            # listing has paid (most of the last bulk claim was listed): a claim mostly left to single queries
            # would hold thousands of leases that other instances could be polling (scale-out).
            bulk = self.refresher is not None
            big = bulk and remaining_keys is None and self._listing_pays
            limit = self.list_batch_size if big else self._claim_size(lease)
            if remaining_keys is not None:
                limit = min(limit, len(remaining_keys))
            chunk = None if remaining_keys is None else remaining_keys[:limit]
            claimed_at = self.clock()
            claimed = self.store.claim_due(self.owner, claimed_at, lease, limit, keys=chunk, due_only=due_only,
                                           **({"light": True, "by_creation": big} if bulk else {}))
            if remaining_keys is not None:
                remaining_keys = remaining_keys[limit:]
            # No request starts unless its worst case ends inside the lease, so another poller never takes over
            # a job we are still asking about.
            last_start = claimed_at + timedelta(seconds=lease - self.poll_worst_case)
            any_claimed = bool(claimed)
            if claimed and bulk:
                n_claimed = len(claimed)
                claimed = self._refresh(claimed, deadline, result)
                self._listing_pays = len(claimed) * 2 < n_claimed
            # The jobs left for one query each go in batches of batch_size, as before bulk refresh claimed more.
            for i in range(0, len(claimed), self.batch_size):
                polled = self._poll_batch(claimed[i:i + self.batch_size], deadline, last_start)
                polled.requests += polled.polled
                result.merge(polled)
                if progress is not None:
                    progress(result.polled, total)
                if polled.budget_exhausted or polled.cancelled:
                    self._release(claimed[i + self.batch_size:], result)
                    break
            if remaining_keys is None and not any_claimed or remaining_keys is not None and not remaining_keys:
                break
        if remaining_keys is None:
            result.left = self.store.count_due(self.clock())
        else:  # the keys never claimed and those claimed but given back
            result.left = len(remaining_keys) + result.released
        result.budget_exhausted = result.budget_exhausted or self._out_of_time(deadline)
        result.elapsed = self.monotonic() - start
        return result

    def _claim_size(self, lease: float) -> int:
        """What the requests allowed now can start within one lease at the latency seen lately (the rest of a
        larger claim would only be released again)."""
        rounds = max(1, int((lease - self.poll_worst_case) / max(self._typical_poll, 0.001)))
        return max(1, min(self.batch_size, self.limit.allowed * rounds))

    def _lease_for(self, deadline: float | None) -> float:
        # Never a zero lease (a record stuck forever, or none at all): at least the configured lease, and with a
        # deadline long enough that a request started just before it can still be answered and written.
        if deadline is None:
            return self.lease_seconds
        return max(self.lease_seconds, deadline - self.monotonic() + self.poll_worst_case + self.write_interval)

    def _out_of_time(self, deadline: float | None, now: float | None = None) -> bool:
        if deadline is None:
            return False
        return (self.monotonic() if now is None else now) >= deadline - self.safety_margin

    def _poll_batch(self, claimed: list[TrackedJob], deadline: float | None, last_start: datetime) -> TickResult:
        """Poll one claimed batch: dispatch, decide, buffer the writes. Once no request may start, the jobs not
        started are released at once; once the tick must stop (cancel, deadline), requests still in flight get
        ``abandon_after`` seconds, then their leases are released and their answers dropped."""
        result = TickResult()

        def may_start() -> bool:
            return not self._cancelled and not self._out_of_time(deadline) and self.clock() < last_start

        batch = Dispatcher(claimed, self._observe, self.limit, may_start)
        writes = WriteBuffer(self.store, self.owner, self.write_batch, self.write_interval)
        self._batch = batch
        abandon_at: float | None = None  # set once the tick must stop
        try:
            batch.top_up()
            while batch.busy():
                now = self.monotonic()  # one reading per round
                stopping = self._cancelled or self._out_of_time(deadline, now)
                if not batch.halted and (stopping or self.clock() >= last_start):
                    self._release(batch.halt(), result)
                if stopping and abandon_at is None:
                    abandon_at = now + self.abandon_after if deadline is None else \
                        min(now + self.abandon_after, deadline)
                if abandon_at is not None and now >= abandon_at:
                    break
                self._take(batch.answers(self._wait(deadline, abandon_at, now)), writes, result, now)
                if writes.due(now, more_coming=batch.busy()):
                    self._tally(writes.flush(), result)
                batch.top_up()  # the limit may have grown
            abandoned = batch.abandon()
            self._take(batch.answers(0.0), writes, result, self.monotonic())  # queued before the abandon: they stand
            self._tally(writes.flush(), result)
            self._release(abandoned, result)
        except BaseException:
            # After a store fault (or any failure here) not one more request is sent. The leases of the jobs not
            # written are given back if the store still answers (a deadlock passes; an outage does not), but only
            # once no request about them runs: one still running after the grace keeps its lease until it expires.
            unstarted = batch.halt()
            self._release_quietly(unstarted + writes.jobs() + self._await_in_flight(batch))
            batch.abandon()
            raise
        finally:
            self._batch = None
        result.abandoned = len(abandoned)
        result.cancelled = self._cancelled
        result.budget_exhausted = self._out_of_time(deadline)
        if batch.poll_seconds:
            self._typical_poll = max(sorted(batch.poll_seconds)[len(batch.poll_seconds) * 9 // 10], 0.001)
        return result

    def record_observations(self, observed: Iterable[tuple[TrackedJob, Observation]], *,
                            batch: int | None = None) -> TickResult:
        """Decide and write observations made elsewhere (e.g. one listing answering for many jobs) of jobs this
        engine has claimed: the same state machine, write batching and counting as a poll. The seam for other
        ways of observing: observations for a claimed batch in, records out."""
        result = TickResult()
        writes = WriteBuffer(self.store, self.owner, batch or self.write_batch, self.write_interval)
        for pair in observed:
            now = self.monotonic()
            self._take([pair], writes, result, now, adapt=False)
            if writes.due(now, more_coming=True):
                self._tally(writes.flush(), result)
        self._tally(writes.flush(), result)
        return result

    def _wait(self, deadline: float | None, abandon_at: float | None, now: float) -> float:
        """How long the reader may block for an answer: it wakes for the flush age bound, the stop time and the
        abandon time (a cancel wakes it at once)."""
        wait = self.write_interval
        if deadline is not None:
            wait = min(wait, deadline - self.safety_margin - now) if now < deadline - self.safety_margin else wait
        if abandon_at is not None:
            wait = min(wait, abandon_at - now)
        return max(0.0, wait)

    def _take(self, answers: list[tuple[TrackedJob, Observation]], writes: WriteBuffer, result: TickResult,
              now: float, *, adapt: bool = True) -> None:
        """Decide each answer and buffer its write; ``adapt``: they are answers to our requests (the limit learns)."""
        for tj, obs in answers:
            if adapt:
                self._adapt(obs, result)
            decision = decide(tj, obs, self.clock(), self.policy, rand=self.rand, stall_check=self.stall_check)
            writes.add(tj, decision, now)
            result.polled += 1
            if obs.error is not None:
                result.errors += 1
                if len(result.error_samples) < 10:
                    result.error_samples.append({"job": str(tj.key), "error": decision.after.last_error or ""})

    def _await_in_flight(self, batch: Dispatcher) -> list[TrackedJob]:
        """Wait up to ``abandon_after`` for the requests in flight; the jobs whose answers came back (dropped)."""
        end = self.monotonic() + self.abandon_after
        back: list[TrackedJob] = []
        while batch.busy() and self.monotonic() < end:
            back += [tj for tj, _ in batch.answers(max(0.0, end - self.monotonic()))]
        return back + [tj for tj, _ in batch.answers(0.0)]

    def _release_quietly(self, jobs: list[TrackedJob]) -> None:
        try:
            if jobs:
                self.store.release(jobs, self.owner)
        except StoreError as exc:  # the fault being raised says enough; the leases expire
            log.warning("lease_release_failed", jobs=len(jobs), error=str(exc)[:300])

    def _release(self, jobs: list[TrackedJob], result: TickResult) -> None:
        if jobs:
            self.store.release(jobs, self.owner)
            result.released += len(jobs)

    def _refresh(self, claimed: list[TrackedJob], deadline: float | None, result: TickResult) -> list[TrackedJob]:
        """Bulk refresh hook: apply what listings returned (the same decision as a query's answer, written in
        batches of at least 500, one transaction each) as each window's listing ends, while the other windows
        are still listing, and return the jobs left for one query each."""
        assert self.refresher is not None
        listed = TickResult()
        writes = WriteBuffer(self.store, self.owner, max(self.write_batch, 500), self.write_interval)

        def emit(pairs: list[tuple[TrackedJob, Observation]]) -> None:
            now = self.monotonic()
            self._take(pairs, writes, listed, now, adapt=False)
            if writes.due(now, more_coming=True):
                self._tally(writes.flush(), listed)

        try:
            out = self.refresher.split(claimed, pool=self._executor(), limit=self.limit,
                                       out_of_time=lambda: self._cancelled or self._out_of_time(deadline), emit=emit)
            self._tally(writes.flush(), listed)
        except BaseException:
            # A store fault: the leases of what was decided but not written are given back if the store answers.
            self._release_quietly(writes.jobs())
            raise
        result.requests += out.pages
        result.throttled += out.throttled
        for rep in out.buckets:
            result.add_bucket(f"{rep.region}/{rep.bucket}", rep.as_dict())
        result.merge(listed)
        result.listed += listed.polled
        return out.leftovers

    def _adapt(self, obs: Observation, result: TickResult) -> None:
        err = obs.error
        if throttled_by(err):
            result.throttled += 1
        if self.limit.answered(err):
            log.warning("ci_throttled", in_flight=self.limit.allowed, ceiling=self.concurrency,
                        code=getattr(err, "code", None), status=getattr(err, "status", None))

    def _observe(self, tj: TrackedJob) -> Observation:
        """One request's answer about ``tj``; an answer about any other job is a bad response, never a state."""
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
        return Observation.failed(BadResponseError(f"answer names neither job {k.job_id} nor NonExistJobIds",
                                                   request_id=res.request_id))

    def _tally(self, written: list[tuple[TrackedJob, Decision, bool]], result: TickResult) -> None:
        """Count and log what reached the store."""
        debug = log.is_enabled_for(logging.DEBUG)  # a steady tick's thousand polls each built a skipped line
        for tj, d, ok in written:
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
            elif debug and not d.transitions:
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
                found += sum(self.store.track(batch, self.clock(), reactivate=False))
                batch = []
                if progress:
                    progress(found)
                if self._out_of_time(deadline):
                    stopped = True
                    break
        if batch:
            found += sum(self.store.track(batch, self.clock(), reactivate=False))
        # The filter is inclusive: the next run sees the newest job again, and track() ignores it. A first run
        # cut short by the budget keeps no watermark, so the next one lists the active jobs again.
        if newest is not None and not (stopped and since is None):
            self.store.set_watermark(region, bucket, newest, self.clock())
        return found


__all__ = ["Engine", "TickResult", "JobReader", "Dispatcher", "WriteBuffer", "StoreError"]
