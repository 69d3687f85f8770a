"""Reading a batch job's children: incremental, budgeted, each child counted once.

A batch job spawns one child per object (a media/picture job for ``Type=Job``, a workflow execution per workflow
for ``Type=Workflow``) and carries no counters itself, so its progress is counted from its children. A batch may
have 100,000 of them, so a refresh never re-lists them all. Per list ("stream") of a batch the store keeps a
creation-time watermark and the paging token of a pass in progress, and every child seen with its state:

* **new pass**: children created since the watermark (less one second: the service's filter may be strict, and
  times have one-second resolution), oldest first, page by page. A child already recorded is not counted again.
* **settle pass**: while some recorded children are not final, the *final* children created between the oldest
  and the newest of those: the ones that finished since are counted, the rest are ignored. A final child never
  changes again, so it is never looked for again.

Each page is written in one transaction (children, counts, cursor, notices) under a lease on the batch, so two
instances never count the same page twice, and a page that fails (malformed, truncated, throttled) costs that
page only: the cursor stays where it was and the next refresh asks again; recorded progress is never touched.
A refresh stops at the invocation's deadline or after ``max_pages`` pages per batch and carries on next time.
``GET /workflowexecution/<RunId>`` is called for failed workflow executions only (the list has no error).

A batch is refreshed after each poll that saw it, when a pass is in progress, when a CI callback named one of
its children, and once more after it ended; that last count fills in and releases its held final notice.

A CI callback (``TaskFinish`` / ``WorkflowFinish``) is unauthenticated, so what its body says is never recorded.
For a child already recorded unfinished under a tracked batch, the child is read back by ID with our credentials
(``GET /jobs/<id,...>``, ``/pic_jobs/<id,...>``, up to 100 IDs a request, or ``GET /workflowexecution/<RunId>``)
and what the service answers is written at once: the child and the batch's counts in one transaction, under the
same lease as a refresh (so the two never count the same child), with any ``children_failed`` notice in that
transaction too (the outbox rule: recorded before anyone is told). A child recorded final is never read again, so
the same callback twice counts once. A child not recorded yet can only be tied to its batch by the batch's list
(a child names no batch), so such a callback prompts a refresh of the batches that could own it, as before.
"""

from __future__ import annotations

import contextvars
import copy
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Protocol, Sequence

import structlog

from jobwatch.core.children import MAX_CHILD_LOOKUP, ChildJob, ChildKind, ChildLookup, ChildPage, is_final_child_state
from jobwatch.core.errors import CIError, JobwatchError, LockConflict
from jobwatch.core.models import Job, JobKey, Notice, NoticeKind
from jobwatch.core.progress import PIC_TAGS, ChildCallback, ChildrenUpdate, ChildrenWork, FailedChild, Progress
from jobwatch.core.redact import scrub
from jobwatch.core.retry import AdaptiveLimit, throttled_by
from jobwatch.store.base import Store

log = structlog.get_logger("jobwatch.app.children")

OVERLAP = timedelta(seconds=1)
# What the list calls an unfinished child (a workflow execution is Running until it ends).
UNFINISHED_STATES = {ChildKind.JOB: ("Submitted", "Running", "Pause"), ChildKind.PIC_JOB: ("Submitted", "Running", "Pause"),
                     ChildKind.WORKFLOW: ("Running",)}
SETTLE_KEYS = ("b_phase", "b_token", "b_from", "b_to", "g_token", "g_from", "g_to")
FINAL_STATES = ("Success", "Failed", "Cancel")
FINAL_BATCH_STATES = frozenset(FINAL_STATES)
MIN_DONE_FOR_SHARE = 50  # the failed share is judged only once this many children finished
MAX_FINAL_ROUNDS = 3  # an ended batch whose children still look unfinished is counted this often, then closed
MAX_FINAL_ERRORS = 5  # an ended batch whose children the service refuses to list: give up after this many refusals
DETAILS_PER_REFRESH = 20  # failed workflow executions whose error is read per batch and refresh


class ChildReader(Protocol):
    """What the refresh needs of the CI client."""

    def list_media_jobs(self, bucket: str, region: str, **kw: Any) -> ChildPage: ...

    def list_workflow_executions(self, bucket: str, region: str, **kw: Any) -> ChildPage: ...

    def get_workflow_execution(self, bucket: str, region: str, run_id: str) -> ChildJob: ...

    def get_media_jobs(self, bucket: str, region: str, job_ids: Iterable[str], *,
                       pic: bool = False) -> ChildLookup: ...


@dataclass
class ChildrenResult:
    """What one refresh did (the invocation summary's ``children``)."""

    batches: int = 0
    pages: int = 0  # list requests answered
    details: int = 0  # workflow execution detail requests
    lookups: int = 0  # media/picture job requests by ID (children a callback named, read back)
    new: int = 0  # children seen for the first time
    finished: int = 0  # children seen final that were not before
    completed: int = 0  # ended batches whose final count is done
    errors: int = 0
    throttled: int = 0
    lease_lost: int = 0
    notices: int = 0
    budget_exhausted: bool = False
    error_samples: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def add(self, other: "ChildrenResult") -> None:
        """Add another result of the same invocation: counters summed, flags or-ed, samples joined (10 kept)."""
        for name, value in other.__dict__.items():
            mine = getattr(self, name)
            if isinstance(value, bool):
                setattr(self, name, mine or value)
            elif isinstance(value, list):
                setattr(self, name, (mine + value)[:10])
            else:
                setattr(self, name, mine + value)


@dataclass(frozen=True)
class Stream:
    """One list a batch's children come from; ``name`` keys its cursor."""

    name: str
    kind: ChildKind
    workflow_id: str | None = None
    queue_id: str | None = None
    tag: str | None = None


def streams_of(job: Job | None) -> list[Stream]:
    """The lists holding a batch's children: its media (or picture) jobs, or its executions per workflow."""
    if job is None:
        return []
    op = job.operation
    if job.type == "Workflow":
        return [Stream(f"wf:{w}", ChildKind.WORKFLOW, workflow_id=w) for w in op.workflow_ids]
    if job.type == "Job":
        kind = ChildKind.PIC_JOB if op.tag in PIC_TAGS else ChildKind.JOB
        return [Stream(kind.value, kind, queue_id=op.queue_id, tag=op.tag)]
    return []


def could_own(job: Job | None, cb: ChildCallback) -> bool:
    """Whether a batch could have spawned the child a callback names (same queue/tag, or same workflow)."""
    if job is None:
        return False
    op = job.operation
    if cb.kind is ChildKind.WORKFLOW or cb.workflow_id:
        return job.type == "Workflow" and (cb.workflow_id is None or cb.workflow_id in op.workflow_ids)
    return (job.type == "Job" and (op.queue_id is None or cb.queue_id is None or op.queue_id == cb.queue_id)
            and (op.tag is None or cb.tag is None or op.tag == cb.tag))


def _ts(d: datetime | None) -> float | None:
    return None if d is None else d.timestamp()


def _dt(v: Any) -> datetime | None:
    return None if v is None else datetime.fromtimestamp(float(v), tz=timezone.utc)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b > a) else a


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b < a) else a


class _Stop(Exception):
    """This batch's refresh ends here (error, lease lost, budget); what was written stays."""


@dataclass
class _Batch:
    work: ChildrenWork
    cursor: dict[str, Any]
    progress: Progress
    notified: int
    pages: int = 0
    stopped: bool = False  # budget or page limit: a pass is left in progress
    failed: bool = False  # a request failed: the rest waits for the next refresh
    refused: bool = False  # ... and the service refused it for good (not throttling, not a fault of the moment)


class ChildrenRefresher:
    """Refreshes the children of due batches. Every collaborator is passed in. With ``limit`` (the engine's
    adaptive request limit), as many batches are read at once as it allows, each on a worker thread (a batch's
    own pages stay in order: they follow one paging token); without it, one batch after another. Store calls
    from those threads take their turn on the store's lock."""

    def __init__(self, store: Store, client: ChildReader, *, owner: str, clock: Callable[[], datetime],
                 monotonic: Callable[[], float] = time.monotonic, max_pages: int = 50, page_size: int = 100,
                 batch_limit: int = 100, lease_seconds: float = 120.0, safety_margin: float = 5.0,
                 failed_threshold: float = 5.0, failed_sample: int = 10, callback_min_seconds: float = 10.0,
                 limit: AdaptiveLimit | None = None) -> None:
        self.store = store
        self.client = client
        self.owner = owner
        self.clock = clock
        self.monotonic = monotonic
        self.max_pages = max_pages
        self.page_size = page_size
        self.batch_limit = batch_limit
        self.lease_seconds = lease_seconds
        self.safety_margin = safety_margin
        self.failed_threshold = failed_threshold
        self.failed_sample = failed_sample
        self.callback_min_seconds = callback_min_seconds
        self.limit = limit
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Shut the worker threads (if any were started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- entry points ----------------------------------------------------------------------------------------
    def refresh(self, deadline: float | None = None, keys: Sequence[JobKey] | None = None) -> ChildrenResult:
        """Refresh the batches that are due (or those of ``keys`` that are), least recently refreshed first,
        until done or ``deadline`` (on ``monotonic``) less the safety margin."""
        result = ChildrenResult()
        if keys is not None and not keys:
            return result
        if self._out_of_time(deadline):
            result.budget_exhausted = True
            return result
        works = self._claim(deadline, keys)
        if works is None:
            result.errors += 1
            return result
        self._each(works, deadline, result, lambda w, res: self._refresh_one(w, deadline, res))
        return result

    def _claim(self, deadline: float | None, keys: Sequence[JobKey] | None, *,
               due_only: bool = True) -> list[ChildrenWork] | None:
        """Lease the due batches (``due_only=False``: the batches of ``keys``, due or not). A claim that kept
        losing lock races (the store already ran it again) leaves this invocation's children work to the next one
        instead of failing the invocation, which a timer would retry whole, polls included; nothing was taken,
        the store rolled the claim back."""
        try:
            return self.store.claim_children(self.owner, self.clock(), self._lease_for(deadline),
                                             self.batch_limit if due_only or keys is None else len(keys),
                                             keys=list(keys) if keys is not None else None, due_only=due_only)
        except LockConflict as exc:
            log.warning("children_claim_skipped", error=scrub(str(exc))[:300])
            return None

    def _each(self, works: list[ChildrenWork], deadline: float | None, result: ChildrenResult,
              step: Callable[[ChildrenWork, ChildrenResult], None]) -> None:
        """``step`` for each leased batch until the deadline, as many at once as the request limit allows; the
        batches not started in time are given back. Each batch counts into a result of its own (threads never
        share one), added to ``result`` in the order of ``works``. A fault (the store's) stops new starts, waits
        for the batches under way, and propagates; the leases not reached then expire, as before."""
        parts = [ChildrenResult() for _ in works]
        running: dict[Future[None], int] = {}
        nxt = 0
        try:
            while nxt < len(works) or running:
                while nxt < len(works) and len(running) < self._width():
                    if self._out_of_time(deadline):
                        self.store.release_children([x.key for x in works[nxt:]], self.owner)
                        result.budget_exhausted = True
                        nxt = len(works)
                        break
                    parts[nxt].batches += 1
                    if self.limit is None:  # one after another, on this thread
                        step(works[nxt], parts[nxt])
                    else:
                        running[self._executor().submit(contextvars.copy_context().run, step, works[nxt],
                                                        parts[nxt])] = nxt
                    nxt += 1
                if not running:
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    del running[fut]
                    fut.result()
        except BaseException:
            wait(running)
            raise
        finally:
            for part in parts:
                result.add(part)

    def _width(self) -> int:
        return 1 if self.limit is None else max(1, self.limit.allowed)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            assert self.limit is not None
            self._pool = ThreadPoolExecutor(max_workers=self.limit.ceiling, thread_name_prefix="jobwatch-children")
        return self._pool

    def on_callbacks(self, callbacks: Sequence[ChildCallback], deadline: float | None = None) \
            -> tuple[list[dict[str, Any]], ChildrenResult]:
        """CI named these children. A child recorded unfinished under a tracked batch is read back by ID and
        what the service says is recorded at once, counts and all (outcome ``recorded``; ``unchanged`` when the
        service still reports the recorded state; ``already_final`` when it was recorded final before, and not
        read again). A child not recorded yet prompts a refresh of the tracked active batches that could own it
        (same bucket and region, same queue/tag or workflow; ``refresh_prompted``, else ``unknown``): it runs now
        for batches not refreshed in the last ``callback_min_seconds`` (a burst of callbacks costs one refresh),
        the others at their next tick; so does a recorded child that could not be read back (``known_child``).
        Nothing the callback's body says is recorded: only what the service answers us."""
        now = self.clock()
        out: list[dict[str, Any]] = []
        owned: dict[JobKey, list[str]] = {}  # batch -> recorded unfinished children the callbacks named
        pending: list[tuple[ChildCallback, dict[str, Any], list[JobKey]]] = []
        for cb in callbacks:
            owners = [k for k in self.store.find_child(cb.bucket, cb.child_id)
                      if cb.region is None or k.region == cb.region]
            keys: list[JobKey] = []
            if owners:
                recorded = {k: self.store.known_children(k, [cb.child_id]).get(cb.child_id) for k in owners}
                unfinished = [k for k, st in recorded.items() if not is_final_child_state(st)]
                outcome = "known_child" if unfinished else "already_final"
                for k in unfinished:
                    owned.setdefault(k, []).append(cb.child_id)
                keys = unfinished
            else:
                keys = [k for k, job in self.store.active_in_bucket(cb.bucket)
                        if (cb.region is None or k.region == cb.region) and could_own(job, cb)]
                outcome = "refresh_prompted" if keys else "unknown"
            item = {"child_id": cb.child_id, "event": cb.event_name, "callback_state": cb.state,
                    "outcome": outcome, "batches": [str(k) for k in (owners or keys)]}
            out.append(item)
            pending.append((cb, item, keys))
        result = ChildrenResult()
        read = self._record_named(owned, deadline, result) if owned else {}
        targets: dict[JobKey, None] = {}
        for cb, item, keys in pending:
            if item["outcome"] == "known_child":
                said = [read[(k, item["child_id"])] for k in keys if (k, item["child_id"]) in read]
                left = [k for k in keys if (k, item["child_id"]) not in read]
                if said and not left:
                    item["outcome"] = "recorded" if "recorded" in said else "unchanged"
                keys = left
            log_fn = log.warning if item["outcome"] == "unknown" else log.info
            log_fn("child_callback", callback=cb.event_name, child_id=cb.child_id, bucket=cb.bucket, region=cb.region,
                   state=cb.state, outcome=item["outcome"], batches=item["batches"], refresh=[str(k) for k in keys])
            targets.update(dict.fromkeys(keys))
        if targets:
            self.store.request_children_refresh(list(targets), now)
            progress = self.store.progress_of(list(targets))
            cutoff = now - timedelta(seconds=self.callback_min_seconds)
            last = {k: p.refreshed_at for k, p in progress.items()}
            now_keys = [k for k in targets if (at := last.get(k)) is None or at <= cutoff]
            if now_keys:
                result.add(self.refresh(deadline, keys=now_keys))
        for item in out:
            states = [self.store.known_children(JobKey.parse(k), [item["child_id"]]).get(item["child_id"])
                      for k in item["batches"]]
            item["recorded_state"] = next((s for s in states if s), None)
        return out, result

    def _record_named(self, owned: dict[JobKey, list[str]], deadline: float | None,
                      result: ChildrenResult) -> dict[tuple[JobKey, str], str]:
        """Read back the recorded unfinished children callbacks named and record what the service says, one
        batch at a time under its lease. Returns, per (batch, child) settled, ``recorded`` (its state changed
        and is counted) or ``unchanged``; a child missing here (the batch leased by a refresh under way, a
        request that failed, out of time) is left to a refresh."""
        if self._out_of_time(deadline):
            result.budget_exhausted = True
            return {}
        out: dict[tuple[JobKey, str], str] = {}
        works = self._claim(deadline, list(owned), due_only=False)
        if works:
            self._each(works, deadline, result, lambda w, res: out.update(self._record_one(w, owned[w.key], res)))
        return out

    def _record_one(self, w: ChildrenWork, child_ids: list[str], result: ChildrenResult) \
            -> dict[tuple[JobKey, str], str]:
        b = _Batch(w, copy.deepcopy(w.cursor), w.progress, w.failed_notified)
        streams = streams_of(w.job)
        recorded = self.store.known_children(w.key, child_ids)  # again, under the lease
        ids = [c for c in dict.fromkeys(child_ids) if c in recorded and not is_final_child_state(recorded[c])]
        done: dict[tuple[JobKey, str], str] = {}
        try:
            if not streams or not ids:
                return done
            answers = self._read_back(b, streams[0].kind, ids, result)
            by_stream: dict[str, list[ChildJob]] = {}
            for child in answers:
                if child.child_id not in recorded or child.kind is not streams[0].kind:
                    continue
                st = next((s for s in streams if s.workflow_id in (None, child.workflow_id)), streams[0])
                by_stream.setdefault(st.name, []).append(child)
            for st in streams:
                items = by_stream.get(st.name, [])
                if not items:
                    continue
                changed = self._apply(b, st, items, result)
                # written as seen in the settle pass under way, if any: the child was just read, unfinished or not
                self._write(b, changed, result, touched_pass=int(b.cursor.get(st.name, {}).get("b_pass", 0)))
                moved = {c.child_id for c in changed}
                done.update({(w.key, c.child_id): "recorded" if c.child_id in moved else "unchanged"
                             for c in items})
        except _Stop:
            pass
        finally:
            self.store.release_children([w.key], self.owner)
        return done

    def _read_back(self, b: _Batch, kind: ChildKind, ids: list[str], result: ChildrenResult) -> list[ChildJob]:
        """The children ``ids`` as the service reports them now (those it does not know are left out)."""
        key = b.work.key
        out: list[ChildJob] = []
        try:
            if kind is ChildKind.WORKFLOW:
                for run_id in ids[:DETAILS_PER_REFRESH]:
                    result.details += 1
                    try:
                        out.append(self.client.get_workflow_execution(key.bucket, key.region, run_id))
                    except CIError as exc:
                        if exc.status != 404:
                            raise
            else:
                for i in range(0, len(ids), MAX_CHILD_LOOKUP):
                    result.lookups += 1
                    found = self.client.get_media_jobs(key.bucket, key.region, ids[i:i + MAX_CHILD_LOOKUP],
                                                       pic=kind is ChildKind.PIC_JOB)
                    out.extend(found.items)
        except JobwatchError as exc:
            self._failed(b, exc, result)
        return out

    # -- one batch -------------------------------------------------------------------------------------------
    def _refresh_one(self, w: ChildrenWork, deadline: float | None, result: ChildrenResult) -> None:
        b = _Batch(w, copy.deepcopy(w.cursor), w.progress, w.failed_notified)
        streams = streams_of(w.job)
        pending = 0
        try:
            for st in streams:
                c = b.cursor.setdefault(st.name, {})
                self._pass_new(b, st, c, deadline, result)
                pending += self._pass_settle(b, st, c, deadline, result)
            self._read_missing_details(b, result)
        except _Stop:
            pass
        if b.refused and b.pages == 0 and not w.batch_active and w.batch_state in FINAL_BATCH_STATES:
            b.cursor["final_errors"] = int(b.cursor.get("final_errors", 0)) + 1
        in_pass = any(b.cursor.get(s.name, {}).get("a_token") or b.cursor.get(s.name, {}).get("b_phase")
                      for s in streams)
        round_done = not (b.failed or b.stopped or in_pass)
        b.cursor["more"] = bool(b.stopped or in_pass)
        ended = not w.batch_active and w.batch_state in FINAL_BATCH_STATES
        complete = False
        if ended:
            if round_done:
                b.cursor["final_rounds"] = int(b.cursor.get("final_rounds", 0)) + 1
            complete = (round_done and (pending == 0 or b.cursor["final_rounds"] >= MAX_FINAL_ROUNDS)) \
                or int(b.cursor.get("final_errors", 0)) >= MAX_FINAL_ERRORS
        b.progress = replace(b.progress, refreshed_at=self.clock(), complete=complete or b.progress.complete)
        if complete:
            result.completed += 1
            log.info("children_counted", batch=str(w.key), **b.progress.counts())
        self._write(b, (), result, release=True, release_final=complete)

    def _pass_new(self, b: _Batch, st: Stream, c: dict[str, Any], deadline: float | None,
                  result: ChildrenResult) -> None:
        while True:
            before = dict(c)
            token = c.get("a_token")
            if token:
                start = _dt(c.get("a_from"))
            else:
                wm = _dt(c.get("wm"))
                start = wm - OVERLAP if wm is not None else None
            page = self._page(b, st, c, "a", start=start, end=None, states=None, token=token, deadline=deadline,
                              result=result)
            changed = self._apply(b, st, page.items, result)
            newest = None
            for ch in page.items:
                newest = _later(newest, ch.created_at)
            if newest is not None:
                c["wm"] = max(float(c.get("wm") or 0), newest.timestamp())
            self._advance(c, "a", page.next_token, start, None)
            # what this pass writes is fresh: a settle pass in progress of this list must not take it for gone.
            # A page that changed nothing (the usual last page) leaves nothing to write: the refresh's closing
            # write stores the same cursor.
            if changed or c != before:
                self._write(b, changed, result, touched_pass=int(c.get("b_pass", 0)))
            if not page.next_token:
                return

    def _pass_settle(self, b: _Batch, st: Stream, c: dict[str, Any], deadline: float | None,
                     result: ChildrenResult) -> int:
        """Settle the recorded unfinished children; returns how many are still not known final.

        1. List the *unfinished* ones (Submitted/Running/Pause; a workflow's Running) created between the oldest
           and the newest recorded unfinished child: each one listed is still unfinished (its state updated, and
           marked seen in this pass); at the end, the recorded ones this pass did not see have finished since
           ("gone"): marked so in the same transaction as the pass's last page.
        2. List the Failed and Cancel children created between the oldest and newest gone one: those are
           recorded as such; the gone ones left are Success (a final state never changes, and each was final
           before step 2 began). Cost: the unfinished children and the failed ones, never the whole batch.
        """
        key = b.work.key
        if not b.progress.total:
            return 0  # no child recorded under this batch (the count is written with the children): none to settle
        counted: int | None = None  # unfinished + gone as read at the start, while nothing has changed them
        if c.get("b_phase") != 2:
            if not c.get("b_token"):
                (n, lo, hi), (g, _, _) = self.store.unsettled_children(key, st.kind, st.workflow_id)
                if n and lo is not None and hi is not None:
                    c["b_pass"] = int(c.get("b_pass", 0)) + 1
                    c["b_from"], c["b_to"] = _ts(lo - OVERLAP), _ts(hi + OVERLAP)
                    c["b_phase"] = 1
                elif g:
                    c["b_phase"] = 2  # gone ones left by a pass that was cut short
                else:
                    counted = n
            while c.get("b_phase") == 1:
                page = self._page(b, st, c, "b", start=_dt(c["b_from"]), end=_dt(c["b_to"]),
                                  states=UNFINISHED_STATES[st.kind], token=c.get("b_token"), deadline=deadline,
                                  result=result)
                seen = self._apply(b, st, page.items, result, keep_seen=True)
                close = None
                if page.next_token:
                    c["b_token"] = page.next_token
                else:
                    c.pop("b_token", None)
                    c["b_phase"] = 2
                    close = (st.kind.value, st.workflow_id, int(c["b_pass"]), float(c["b_from"]), float(c["b_to"]))
                self._write(b, seen, result, touched_pass=int(c["b_pass"]), close=close)
        if c.get("b_phase") == 2:
            self._resolve_gone(b, st, c, deadline, result)
        if counted is not None:
            return counted  # no pass ran: nothing listed or written since the count
        (n, _, _), (g, _, _) = self.store.unsettled_children(key, st.kind, st.workflow_id)
        return n + g

    def _resolve_gone(self, b: _Batch, st: Stream, c: dict[str, Any], deadline: float | None,
                      result: ChildrenResult) -> None:
        key = b.work.key
        if not c.get("g_token"):
            _, (g, glo, ghi) = self.store.unsettled_children(key, st.kind, st.workflow_id)
            if not g or glo is None or ghi is None:
                self._end_settle(b, st, c, result, resolve=g > 0)
                return
            c["g_from"], c["g_to"] = _ts(glo - OVERLAP), _ts(ghi + OVERLAP)
        while True:
            page = self._page(b, st, c, "g", start=_dt(c["g_from"]), end=_dt(c["g_to"]),
                              states=("Failed", "Cancel"), token=c.get("g_token"), deadline=deadline, result=result)
            changed = self._apply(b, st, page.items, result)
            if page.next_token:
                c["g_token"] = page.next_token
                self._write(b, changed, result, touched_pass=int(c.get("b_pass", 0)))
                continue
            c.pop("g_token", None)
            # The failed/cancelled ones first, then what is left: a crash between the two steps lists the
            # Failed/Cancel window again next time, and counts nothing twice.
            self._write(b, changed, result, touched_pass=int(c.get("b_pass", 0)))
            self._end_settle(b, st, c, result, resolve=True)
            return

    def _end_settle(self, b: _Batch, st: Stream, c: dict[str, Any], result: ChildrenResult, *,
                    resolve: bool) -> None:
        """The gone children no Failed/Cancel list named finished with Success: counted so, in one step."""
        if resolve:
            for state, n in self.store.gone_children(b.work.key, st.kind, st.workflow_id).items():
                b.progress = b.progress.counted(state, -n).counted("Success", n)
                result.finished += n
        for k in SETTLE_KEYS:
            c.pop(k, None)
        self._write(b, (), result, touched_pass=int(c.get("b_pass", 0)),
                    resolve=(st.kind.value, st.workflow_id) if resolve else None)

    @staticmethod
    def _advance(c: dict[str, Any], p: str, token: str | None, start: datetime | None, end: datetime | None) -> None:
        if token:
            c[f"{p}_token"], c[f"{p}_from"] = token, _ts(start)
            if end is not None:
                c[f"{p}_to"] = _ts(end)
        else:
            for k in ("token", "from", "to"):
                c.pop(f"{p}_{k}", None)

    def _page(self, b: _Batch, st: Stream, c: dict[str, Any], p: str, *, start: datetime | None,
              end: datetime | None, states: Sequence[str] | None, token: str | None, deadline: float | None,
              result: ChildrenResult) -> ChildPage:
        if b.pages >= self.max_pages or self._out_of_time(deadline):
            b.stopped = True
            result.budget_exhausted = result.budget_exhausted or self._out_of_time(deadline)
            raise _Stop
        key = b.work.key
        common: dict[str, Any] = {"states": list(states) if states else None, "start_creation_time": start,
                                  "end_creation_time": end, "order_by_time": "Asc", "size": self.page_size,
                                  "next_token": token}
        try:
            if st.kind is ChildKind.WORKFLOW:
                page = self.client.list_workflow_executions(key.bucket, key.region, workflow_id=st.workflow_id,
                                                            batch_id=key.job_id, **common)
            else:
                page = self.client.list_media_jobs(key.bucket, key.region, batch_id=key.job_id,
                                                   queue_id=st.queue_id, tag=st.tag,
                                                   pic=st.kind is ChildKind.PIC_JOB, **common)
        except JobwatchError as exc:
            self._failed(b, exc, result)
            if token and isinstance(exc, CIError) and not exc.retryable and not throttled_by(exc):
                # The service refused the token itself (expired?): the next refresh starts this pass again
                # from its creation time; children already recorded are not counted twice.
                if p == "a":
                    self._advance(c, p, None, None, None)
                else:
                    for k in SETTLE_KEYS:
                        c.pop(k, None)
                self._write(b, (), result)
            raise _Stop from None
        b.pages += 1
        result.pages += 1
        if self.limit is not None:
            self.limit.succeeded()
        return page

    def _failed(self, b: _Batch, exc: BaseException, result: ChildrenResult) -> None:
        b.failed = True
        b.refused = b.refused or (isinstance(exc, CIError) and not exc.retryable and not throttled_by(exc))
        result.errors += 1
        if throttled_by(exc):
            result.throttled += 1
        if self.limit is not None and self.limit.answered(exc):
            log.warning("ci_throttled", in_flight=self.limit.allowed, code=getattr(exc, "code", None),
                        status=getattr(exc, "status", None))
        text = scrub(str(exc))[:300]
        if len(result.error_samples) < 10:
            result.error_samples.append({"job": str(b.work.key), "error": text})
        log.warning("children_page_failed", batch=str(b.work.key), error=text)

    # -- counting --------------------------------------------------------------------------------------------
    def _apply(self, b: _Batch, st: Stream, items: Sequence[ChildJob], result: ChildrenResult, *,
               keep_seen: bool = False) -> list[ChildJob]:
        """Count what a page says that is new: children not seen before, and children that finished. Returns
        the children to write: those changed, and with ``keep_seen`` also the unfinished ones listed unchanged
        (so the settle pass marks them seen)."""
        if not items:
            return []
        known = self.store.known_children(b.work.key, [i.child_id for i in items])
        seen: set[str] = set()
        changed: list[ChildJob] = []
        p = b.progress
        for item in items:
            if item.child_id in seen:
                continue
            seen.add(item.child_id)
            prev = known.get(item.child_id)
            if prev is None:
                p = replace(p.counted(item.state), total=p.total + 1,
                            first_child_at=_earlier(p.first_child_at, item.created_at),
                            last_child_at=_later(p.last_child_at, item.created_at))
                result.new += 1
            elif prev != item.state and not is_final_child_state(prev):
                p = p.counted(prev, -1).counted(item.state)
            elif keep_seen and not is_final_child_state(prev):
                changed.append(item)
                continue
            else:
                continue  # already counted as it is (a final child never changes)
            if item.is_final:
                result.finished += 1
                p = replace(p, last_end_at=_later(p.last_end_at, item.ended_at))
            if item.failed and item.kind is ChildKind.WORKFLOW and item.code is None:
                item = self._detail(b, item, result)
            changed.append(item)
        b.progress = p
        return changed

    def _detail(self, b: _Batch, item: ChildJob, result: ChildrenResult) -> ChildJob:
        """A failed workflow execution's error, from its detail (the list carries none). A failure here only
        leaves the code empty: it is read again by a later refresh."""
        key = b.work.key
        try:
            d = self.client.get_workflow_execution(key.bucket, key.region, item.child_id)
        except JobwatchError as exc:
            log.warning("child_detail_failed", batch=str(key), child_id=item.child_id, error=scrub(str(exc))[:300])
            return item
        result.details += 1
        return replace(item, code=d.code or "Failed", message=d.message, started_at=d.started_at or item.started_at,
                       ended_at=d.ended_at or item.ended_at, object_key=item.object_key or d.object_key)

    def _read_missing_details(self, b: _Batch, result: ChildrenResult) -> None:
        if not b.progress.failed or not any(s.kind is ChildKind.WORKFLOW for s in streams_of(b.work.job)):
            return  # no failed run recorded (progress is written with the children): none lacks its error
        todo = self.store.failed_children_missing_detail(b.work.key, DETAILS_PER_REFRESH)
        done = [d for d in (self._detail(b, c, result) for c in todo) if d.code is not None]
        if done:
            self._write(b, done, result)

    # -- writing ---------------------------------------------------------------------------------------------
    def _write(self, b: _Batch, changed: Sequence[ChildJob], result: ChildrenResult, *, release: bool = False,
               release_final: bool = False, touched_pass: int = 0,
               close: tuple[str, str | None, int, float, float] | None = None,
               resolve: tuple[str, str | None] | None = None) -> None:
        w = b.work
        now = self.clock()
        notices = self._failed_notices(b, changed, now)
        ended = w.batch_state in FINAL_BATCH_STATES and not w.batch_active
        detail = self._detail_json(b, changed) if ended else None
        update = ChildrenUpdate(b.progress, b.cursor, tuple(changed), b.notified, tuple(notices), detail,
                                release_final, release, touched_pass, close, resolve)
        if not self.store.record_children(self.owner, w.key, update, now):
            result.lease_lost += 1
            log.warning("children_lease_lost", batch=str(w.key))
            raise _Stop
        result.notices += len(notices)

    def _sample(self, b: _Batch, changed: Sequence[ChildJob]) -> list[dict[str, Any]]:
        if self.failed_sample <= 0:
            return []
        stored = self.store.list_children(b.work.key, failed_only=True, limit=self.failed_sample)
        fresh = {c.child_id: c for c in changed if c.failed}
        merged = {c.child_id: c for c in stored}
        merged.update(fresh)
        ordered = sorted(merged.values(), key=lambda c: c.child_id)[: self.failed_sample]
        return [FailedChild.of(c).to_json() for c in ordered]

    def _detail_json(self, b: _Batch, changed: Sequence[ChildJob]) -> dict[str, Any]:
        return {"progress": b.progress.counts(), "failed_sample": self._sample(b, changed)}

    def _failed_notices(self, b: _Batch, changed: Sequence[ChildJob], now: datetime) -> list[Notice]:
        """``children_failed`` while the batch runs; once it ended, its final notice carries the failures."""
        p = b.progress
        if not p.failed or (not b.work.batch_active and b.work.batch_state in FINAL_BATCH_STATES):
            return []
        over = (self.failed_threshold > 0 and p.done >= MIN_DONE_FOR_SHARE
                and 100.0 * p.failed_share() > self.failed_threshold)
        if over and b.notified < 2:
            b.notified, which = 2, "threshold"
        elif b.notified < 1:
            b.notified, which = 1, "first"
        else:
            return []
        w = b.work
        detail = self._detail_json(b, changed)
        detail["failed_threshold"] = self.failed_threshold
        log.info("children_failed", batch=str(w.key), which=which, failed=p.failed, done=p.done)
        return [Notice(f"{w.key}#children_failed:{which}", NoticeKind.CHILDREN_FAILED, w.key, None, w.batch_state,
                       now, job=w.job.to_json() if w.job is not None else None, tags=dict(w.tags), detail=detail)]

    # -- budget ----------------------------------------------------------------------------------------------
    def _out_of_time(self, deadline: float | None) -> bool:
        return deadline is not None and self.monotonic() >= deadline - self.safety_margin

    def _lease_for(self, deadline: float | None) -> float:
        if deadline is None:
            return self.lease_seconds
        return max(self.lease_seconds, deadline - self.monotonic() + 30.0)


__all__ = ["ChildrenRefresher", "ChildrenResult", "ChildReader", "Stream", "streams_of", "could_own", "PIC_TAGS"]
