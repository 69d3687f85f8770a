"""The children a batch job spawns (issue 14): media/picture jobs for ``Type=Job``, workflow executions for
``Type=Workflow``, one per object, computed lazily and never stored.

Child ``i`` of a batch is a pure function of ``(seed, bucket, batch, lane, i)`` and of the batch's Running stretch:
it is created at ``start + spawn * i / count`` (so creation order is index order, and a time window or a paging
cursor is a bisection, not a scan), waits, runs, and ends before the batch does. Which children fail is an exact
share (``round-down(count * rate)``), spread by a seeded permutation. Memory per batch is a few numbers, whatever
the count: a 100,000-child batch costs what a 10-child one does until someone lists it.

What the batch's own state means for its children: Submitted: none yet; Running: those created by now; Pause:
frozen at the moment of the pause (on resume they catch up at once, with their scheduled creation times); Success:
all of them, ended (one forced to Success early has its schedule compressed into the time it ran); Failed or
Cancel: those created before its end, the unfinished ones cancelled with it.

Callbacks: when the batch's ``Operation`` names ``CallBack`` (``CallBackFormat`` XML|JSON, ``CallBackType`` Url),
or :meth:`ChildRegistry.set_notify` names a URL for its queue or workflow, each child's end is POSTed as the
documented ``TaskFinish`` / ``WorkflowFinish`` body: best effort, a short timeout, a bounded number per sweep, and
to loopback hosts only unless remote callbacks are allowed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import math
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from jobwatch.core.children import ChildKind
from jobwatch.core.errors import ValidationError
from jobwatch.emulator.state import (
    CANCEL, FAILED, PAUSE, RUNNING, SUBMITTED, SUCCESS, TERMINAL, EmulatedJob, ListQuery, invalid,
)

DEFAULT_CHILD_PAGE = 10
MAX_LOOKUP = 100  # IDs per GET /jobs/<id,id,...> (the service's limit is UNCONFIRMED)
PIC_TAGS = frozenset({"PicProcess", "PosterProduction"})
MEDIA_STATES = ("Submitted", "Running", "Success", "Failed", "Pause", "Cancel")
WORKFLOW_STATES = ("Running", "Success", "Failed", "Cancel")
_SCALE = 1_000_000
# Failure codes are not documented for media jobs (UNCONFIRMED): these are the emulator's own.
FAILURES = (
    ("InvalidInput", "the input file is not a media file the template can process"),
    ("InputFileNotExist", "the input object does not exist"),
    ("InternalError", "emulated child failure (seeded)"),
)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass(frozen=True)
class ChildPlan:
    """How many children a batch spawns and which share fails. ``spawn_share`` of the batch's Running stretch
    is spent creating them; each lasts at most the rest of it, so all end before a batch that ends naturally."""

    count: int = 0
    failure_rate: float = 0.0
    spawn_share: float = 0.8

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or not 0 <= self.count <= 10_000_000:
            raise ValidationError("children", self.count, "expected a count of 0 to 10,000,000")
        if not isinstance(self.failure_rate, (int, float)) or not 0 <= self.failure_rate <= 1:
            raise ValidationError("child_failure_rate", self.failure_rate, "expected a ratio in [0, 1]")
        if not isinstance(self.spawn_share, (int, float)) or not 0 < self.spawn_share < 1:
            raise ValidationError("spawn_share", self.spawn_share, "expected a fraction in (0, 1)")


@dataclass(frozen=True)
class ChildView:
    """One child as an answer or a callback shows it."""

    index: int
    child_id: str
    kind: ChildKind
    object_key: str
    state: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    code: str
    message: str
    queue_id: str | None
    tag: str | None
    workflow_id: str | None
    task_job_id: str | None = None  # a workflow execution's one task (a media job)


def _epoch(dt: datetime) -> float:
    return dt.timestamp()


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(math.floor(t), tz=timezone.utc)


def _h(*parts: object, size: int = 16) -> bytes:
    return hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=size).digest()


def id_key(seed: int, bucket: str, batch_id: str, lane: str) -> bytes:
    return _h(seed, bucket, batch_id, lane, size=16)


def id_prefix(key: bytes, kind: ChildKind) -> str:
    """The first 21 characters of every child ID of one lane: which batch a child belongs to."""
    return ("i" if kind is ChildKind.WORKFLOW else "j") + key[:10].hex()


@dataclass(frozen=True)
class Spawn:
    """A batch's children for one lane (the media jobs, or one workflow's executions) at one moment ``until``."""

    seed: int
    bucket: str
    batch_id: str
    lane: str  # "" for media jobs, else the workflow ID
    kind: ChildKind
    plan: ChildPlan
    start: float  # the batch's Running start (epoch seconds)
    span: float  # the batch's Running duration
    until: float  # children are shown as of this moment (now, or when the batch paused or ended)
    batch_state: str
    object_base: str  # prefix ('' when the batch names one object)
    single_object: str | None
    queue_id: str | None
    tag: str | None

    # -- schedule -------------------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return 1 if self.single_object is not None else self.plan.count

    @functools.cached_property
    def _usable(self) -> float:
        # Whole seconds are shown, and the batch's start and end are each truncated: keep a second spare.
        return max(0.0, self.span - 1.0)

    @functools.cached_property
    def _spawn(self) -> float:
        return self._usable * self.plan.spawn_share

    @functools.cached_property
    def max_duration(self) -> float:
        return self._usable * (1 - self.plan.spawn_share) * 0.95

    def created(self, i: int) -> float:
        return self.start + self._spawn * i / self.count

    def visible(self) -> int:
        """How many children exist at ``until`` (a prefix of the index order)."""
        if self.count == 0 or self.until < self.start:
            return 0
        return self.first_created_after(self.until)

    def first_created_after(self, t: float) -> int:
        """The smallest index created strictly after ``t`` (``count`` if none)."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.created(mid) <= t:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def first_created_from_second(self, sec: int) -> int:
        """The smallest index whose shown (whole-second) creation time is >= ``sec``."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if math.floor(self.created(mid)) < sec:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # -- identity: a per-lane prefix (which batch) and the index, masked -------------------------------------
    @functools.cached_property
    def _key(self) -> bytes:
        return id_key(self.seed, self.bucket, self.batch_id, self.lane)

    @functools.cached_property
    def id_prefix(self) -> str:
        return id_prefix(self._key, self.kind)

    def child_id(self, i: int) -> str:
        return self.id_prefix + f"{i ^ int.from_bytes(self._key[10:16], 'big'):012x}"

    def index_of(self, child_id: str) -> int | None:
        """Inverse of :meth:`child_id` for this batch (a child that exists by now), or None."""
        if len(child_id) != 33 or not child_id.startswith(self.id_prefix):
            return None
        try:
            i = int(child_id[21:], 16) ^ int.from_bytes(self._key[10:16], "big")
        except ValueError:
            return None
        return i if 0 <= i < self.visible() else None

    @functools.cached_property
    def _fail_params(self) -> tuple[int, int, int, int]:
        """(a, b, phi, rate): child i fails when a * i + b (mod count), a permutation, falls on one of the
        evenly spread positions of a seeded Bresenham line; exactly floor(count * rate + phi) of them do."""
        n = self.count
        key = _h("fail", self.seed, self.bucket, self.batch_id, self.lane, size=16)
        a = int.from_bytes(key[:6], "big") % n or 1
        while math.gcd(a, n) != 1:
            a += 1
        return a, int.from_bytes(key[6:12], "big"), int.from_bytes(key[12:16], "big") % _SCALE, \
            round(self.plan.failure_rate * _SCALE)

    def fails(self, i: int) -> bool:
        a, b, phi, rp = self._fail_params
        if rp == 0:
            return False
        j = (a * i + b) % self.count
        return ((j + 1) * rp + phi) // _SCALE - (j * rp + phi) // _SCALE == 1

    def object_key(self, i: int) -> str:
        if self.single_object is not None:
            return self.single_object
        ext = "jpg" if self.kind is ChildKind.PIC_JOB else "mp4"
        base = self.object_base.rstrip("/")
        return f"{base}/obj-{i:06d}.{ext}" if base else f"obj-{i:06d}.{ext}"

    # -- one child at ``until`` -------------------------------------------------------------------------------
    def times(self, i: int) -> tuple[float, float, float]:
        """(created, started, ended) as scheduled."""
        d = _h(self.seed, self.batch_id, self.lane, i, size=8)
        u1 = int.from_bytes(d[:4], "big") / 2 ** 32
        u2 = int.from_bytes(d[4:], "big") / 2 ** 32
        created = self.created(i)
        rest = self.max_duration
        started = created + u1 * 0.25 * rest
        ended = started + (0.05 + 0.7 * u2) * rest
        return created, started, ended

    def state_of(self, i: int) -> tuple[str, float | None, float | None]:
        """(state, started, ended) at ``until``; cheap (no datetimes), for scans."""
        _, started, ended = self.times(i)
        t = self.until
        if ended <= t:
            return (FAILED if self.fails(i) else SUCCESS), started, ended
        if self.batch_state in TERMINAL:  # the batch ended (or was forced to) before this child could
            if self.batch_state == SUCCESS:
                return (FAILED if self.fails(i) else SUCCESS), min(started, t), t
            return CANCEL, (started if started <= t else None), t
        if started <= t:
            return RUNNING, started, None
        return (RUNNING if self.kind is ChildKind.WORKFLOW else SUBMITTED), None, None

    def shown_state(self, i: int) -> str:
        return self.state_of(i)[0]

    def view(self, i: int) -> ChildView:
        state, started, ended = self.state_of(i)
        code, message = "Success", ""
        if state == FAILED:
            code, message = FAILURES[_h("code", self.seed, self.batch_id, self.lane, i, size=1)[0] % len(FAILURES)]
        elif state == CANCEL:
            code, message = "Cancelled", "the batch job ended before this job finished"
        task = None
        if self.kind is ChildKind.WORKFLOW:
            task = "j" + _h("task", self.seed, self.batch_id, self.lane, i, size=16).hex()
        return ChildView(
            index=i, child_id=self.child_id(i), kind=self.kind, object_key=self.object_key(i), state=state,
            created_at=_dt(self.created(i)), started_at=None if started is None else _dt(started),
            ended_at=None if ended is None else _dt(ended), code=code, message=message,
            queue_id=self.queue_id, tag=self.tag, workflow_id=self.lane or None, task_job_id=task)


# -- listing --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChildQuery:
    """The child list APIs' filters, validated (empty values count as absent, as SDKs send them)."""

    size: int = DEFAULT_CHILD_PAGE
    states: frozenset[str] | None = None
    descending: bool = True
    start: datetime | None = None
    end: datetime | None = None
    next_token: str | None = None

    @classmethod
    def from_params(cls, p: dict[str, str], allowed_states: tuple[str, ...]) -> "ChildQuery":
        # size, order and the creation-time window are checked as the batch-job list checks them; the states
        # (a subset for workflow executions) and the token are the child lists' own
        common = ListQuery.from_params({k: v for k, v in p.items()
                                        if k in ("size", "orderByTime", "startCreationTime", "endCreationTime")})
        states: frozenset[str] | None = None
        if p.get("states", "All") != "All":
            parts = [s.strip() for s in p["states"].split(",") if s.strip()]
            if not parts or any(s not in allowed_states for s in parts):
                raise invalid(f"states {p['states']!r} must be All or a comma-separated list of "
                              f"{', '.join(allowed_states)}")
            states = frozenset(parts)
        token = p.get("nextToken")
        if token is not None:
            _token_fields(token)
        return cls(size=common.size, states=states, descending=common.descending, start=common.start,
                   end=common.end, next_token=token)


def _token(sp: Spawn, index: int, descending: bool) -> str:
    raw = f"c1|{sp.batch_id}|{sp.lane}|{'d' if descending else 'a'}|{index}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _token_fields(token: str) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        fields = raw.split("|")
        if len(fields) != 5 or fields[0] != "c1" or fields[3] not in ("a", "d"):
            raise ValueError(raw)
        int(fields[4])
        return fields
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid(f"nextToken {token[:64]!r} is not a token this service issued") from None


def _untoken(sp: Spawn, token: str, descending: bool) -> int:
    _, batch, lane, order, index = _token_fields(token)
    if batch != sp.batch_id or lane != sp.lane or order != ("d" if descending else "a"):
        raise invalid(f"nextToken {token[:64]!r} was issued for another query")
    return int(index)


def list_children(sp: Spawn, q: ChildQuery, *, trailing_token: bool = True) -> tuple[list[ChildView], str]:
    """One page, in creation order, and the next token. Pages are always full until the candidates run out;
    like the documented samples, the last page may still carry a token (``trailing_token``), whose page is empty.
    """
    lo, hi = 0, sp.visible()
    if q.start is not None:
        lo = max(lo, sp.first_created_from_second(math.ceil(_epoch(q.start))))
    if q.end is not None:
        hi = min(hi, sp.first_created_from_second(math.floor(_epoch(q.end)) + 1))
    if q.states is not None and not q.states & TERMINAL:
        # only unfinished children asked for: those created long enough ago are all final
        lo = max(lo, sp.first_created_after(sp.until - sp.max_duration - 1) - 1, 0)
    page: list[int] = []
    step = -1 if q.descending else 1
    i = hi - 1 if q.descending else lo
    if q.next_token:
        pos = _untoken(sp, q.next_token, q.descending)
        i = min(i, pos) if q.descending else max(i, pos)
    while lo <= i < hi and len(page) < q.size:
        if q.states is None or sp.shown_state(i) in q.states:
            page.append(i)
        i += step
    more = lo <= i < hi
    token = _token(sp, i, q.descending) if more or (trailing_token and (page or q.next_token)) else ""
    return [sp.view(i) for i in page], token


# -- the batches' side: which lanes, which objects, which callback --------------------------------------------

@dataclass(frozen=True)
class CallbackTarget:
    url: str
    fmt: str  # "XML" | "JSON"


@dataclass(frozen=True)
class CallbackRecord:
    """One callback POST as the emulator made it; ``status`` 0 when it did not get an answer."""

    url: str
    event: str
    child_id: str
    status: int
    error: str | None = None


def _op_text(job: EmulatedJob, tag: str) -> str | None:
    text = (job.view.operation.findtext(tag) or "").strip()
    return text or None


def lanes(job: EmulatedJob) -> list[tuple[str, ChildKind]]:
    """The child lists a batch has: ('' , JOB/PIC_JOB) for ``Type=Job``, (workflow ID, WORKFLOW) per workflow."""
    if job.view.type == "Workflow":
        ids = (_op_text(job, "WorkflowIds") or "").split(",")
        return [(w.strip(), ChildKind.WORKFLOW) for w in ids if w.strip()]
    return [("", ChildKind.PIC_JOB if _op_text(job, "Tag") in PIC_TAGS else ChildKind.JOB)]


class ChildRegistry:
    """Per-batch child plans (a default, overrides per batch), notify targets per queue/workflow, callback
    cursors and the delivery log. Holds a few numbers per batch, never the children."""

    def __init__(self, seed: int, default: ChildPlan, *, allow_remote_callbacks: bool = False,
                 callback_timeout: float = 2.0, max_callbacks_per_sweep: int = 500,
                 trailing_token: bool = True) -> None:
        self.seed = seed
        self.default = default
        self.allow_remote = allow_remote_callbacks
        self.timeout = callback_timeout
        self.max_per_sweep = max_callbacks_per_sweep
        self.trailing_token = trailing_token
        self.plans: dict[tuple[str, str], ChildPlan] = {}
        self.notify: dict[str, CallbackTarget] = {}
        self.regions: dict[str, str] = {}
        self.cursors: dict[tuple[str, str, str], tuple[float, int]] = {}
        self.log: deque[CallbackRecord] = deque(maxlen=100_000)
        self.failures: dict[str, tuple[int, float]] = {}  # url -> (consecutive failures, suspended until)
        self.prefixes: dict[tuple[str, str], tuple[str, str]] = {}  # (bucket, ID prefix) -> (batch, lane)
        self.lock = threading.Lock()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def learn(self, bucket: str, job: EmulatedJob) -> None:
        """Remember the ID prefixes of a batch's lanes, so that a child ID leads back to its batch."""
        for lane, kind in lanes(job):
            key = id_key(self.seed, bucket, job.view.job_id, lane)
            self.prefixes[(bucket, id_prefix(key, kind))] = (job.view.job_id, lane)

    def plan_for(self, bucket: str, batch_id: str) -> ChildPlan:
        return self.plans.get((bucket, batch_id), self.default)

    def set_plan(self, bucket: str, batch_id: str, plan: ChildPlan) -> None:
        self.plans[(bucket, batch_id)] = plan

    def set_notify(self, target_id: str, url: str, fmt: str = "XML") -> None:
        """A queue's or a workflow's ``NotifyConfig`` (Url type): children of batches using it call back there."""
        self.notify[target_id] = CallbackTarget(_check_url(url, self.allow_remote), _check_format(fmt))

    def spawn(self, bucket: str, job: EmulatedJob, lane: str, kind: ChildKind, now: datetime) -> Spawn | None:
        """The batch's children for one lane as of ``now`` (``job`` already advanced to ``now``)."""
        v = job.view
        plan = self.plan_for(bucket, v.job_id)
        if v.start_time is None or v.state == SUBMITTED:
            return None
        start = _epoch(v.start_time)
        if v.state == RUNNING:
            until = _epoch(now)
        elif v.state == PAUSE:
            until = _epoch(job.changed_at or now)
        else:
            until = _epoch(v.end_time or job.changed_at or now)
        span = job.running_for
        if v.state == SUCCESS and v.end_time is not None and _epoch(v.end_time) - start < span - 1.5:
            # ended Success before its time (a backdoor): it processed every object, so the schedule is compressed
            # into the time it had (an early end any other way leaves the rest of its objects unprocessed)
            span = max(0.0, _epoch(v.end_time) - start)
        single = (v.input.findtext("Object") or "").strip() or None
        base = (v.input.findtext("Prefix") or "").strip() or ("objects" if single is None else "")
        return Spawn(seed=self.seed, bucket=bucket, batch_id=v.job_id, lane=lane, kind=kind, plan=plan,
                     start=start, span=span, until=min(until, _epoch(now)), batch_state=v.state,
                     object_base=base, single_object=single, queue_id=_op_text(job, "QueueId"),
                     tag=_op_text(job, "Tag"))

    def target(self, job: EmulatedJob, lane: str) -> CallbackTarget | None:
        """Where a batch's children call back: its own ``CallBack``, else its queue's or workflow's notify."""
        url = _op_text(job, "CallBack")
        ctype = (_op_text(job, "CallBackType") or "Url").lower()
        if url and ctype == "url":
            try:
                return CallbackTarget(_check_url(url, self.allow_remote),
                                      _check_format(_op_text(job, "CallBackFormat") or "XML"))
            except ValidationError:
                return None
        for key in (lane, _op_text(job, "QueueId")):
            if key and key in self.notify:
                return self.notify[key]
        return None

    # -- callbacks ----------------------------------------------------------------------------------------
    def due(self, sp: Spawn) -> Iterator[ChildView]:
        """Children of ``sp`` that ended after the lane's cursor, in (end, index) order, at most a sweep's worth;
        the cursor moves past each one yielded."""
        key = (sp.bucket, sp.batch_id, sp.lane)
        c_end, c_idx = self.cursors.get(key, (-math.inf, -1))
        lo = 0 if c_end == -math.inf else max(0, sp.first_created_after(c_end - sp.max_duration - 1) - 1)
        hi = sp.visible()
        found: list[tuple[float, int]] = []
        for i in range(lo, hi):
            state, _, ended = sp.state_of(i)
            if state in TERMINAL and ended is not None and (ended, i) > (c_end, c_idx):
                found.append((ended, i))
        found.sort()
        for ended, i in found[: self.max_per_sweep]:
            self.cursors[key] = (ended, i)
            yield sp.view(i)

    def deliver(self, target: CallbackTarget, event: str, child_id: str, body: bytes, content_type: str,
                clock: Callable[[], float] = time.monotonic) -> CallbackRecord:
        """One POST, best effort: a short timeout, no retry, and a URL that failed 3 times in a row is skipped
        for 10 s (its callbacks are dropped and logged) so a dead receiver cannot stall the emulator."""
        count, until = self.failures.get(target.url, (0, 0.0))
        if count >= 3 and clock() < until:
            rec = CallbackRecord(target.url, event, child_id, 0, "skipped: receiver failing")
            self.log.append(rec)
            return rec
        req = urllib.request.Request(target.url, data=body, method="POST",
                                     headers={"Content-Type": content_type, "User-Agent": "tencent-ci-callback"})
        status, error = 0, None
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status = resp.status
                resp.read(65536)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        if 200 <= status < 300:
            self.failures.pop(target.url, None)
        else:
            count = count + 1 if count < 3 else 1
            self.failures[target.url] = (count, clock() + 10.0)
        rec = CallbackRecord(target.url, event, child_id, status, error)
        self.log.append(rec)
        return rec


def _check_url(url: str, allow_remote: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("callback", url, "expected an http(s) URL")
    if not allow_remote and parts.hostname not in _LOOPBACK:
        raise ValidationError("callback", url, "the emulator calls back loopback hosts only "
                              "(allow_remote_callbacks / --callback-any-host to lift this)")
    return url


def _check_format(fmt: str) -> str:
    f = (fmt or "XML").upper()
    if f not in ("XML", "JSON"):
        raise ValidationError("callback_format", fmt, "expected XML or JSON")
    return f


def callback_body(sp: Spawn, v: ChildView, fmt: str, region: str) -> tuple[str, bytes, str]:
    """(event name, body, content type) of the documented per-child callback."""
    from jobwatch.emulator import render

    if v.kind is ChildKind.WORKFLOW:
        event = "WorkflowFinish"
        body = render.workflow_finish(v, sp.bucket, fmt)
    else:
        event = "TaskFinish"
        body = render.task_finish(v, sp.bucket, region, fmt)
    return event, body, ("application/json" if fmt == "JSON" else "application/xml")

