"""The emulator's jobs: creation, lifecycle derived from the injected clock, listing with filters and paging.

A job's fate (how long it stays Submitted and Running, whether it fails) is drawn from ``(seed, job_id)`` alone,
so the same seed gives the same story whatever order jobs are queried in. State is materialised lazily from the
clock on every read: nothing runs in the background, so a test that advances a ``ManualClock`` sees the new state
on its next request and never races a timer.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import random
import re
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Callable, Iterable

from lxml import etree

from jobwatch.core.errors import ValidationError
from jobwatch.core.models import parse_time
from jobwatch.emulator.clock import Clock

SUBMITTED, RUNNING, SUCCESS, FAILED, PAUSE, CANCEL = "Submitted", "Running", "Success", "Failed", "Pause", "Cancel"
STATES = (SUBMITTED, RUNNING, SUCCESS, FAILED, PAUSE, CANCEL)
TERMINAL = frozenset({SUCCESS, FAILED, CANCEL})
TYPES = ("Workflow", "Job")
MAX_PAGE = 100
DEFAULT_PAGE = 10

# The document: Chinese characters, letters, digits, '-' and '_', up to 128 characters.
_NAME_RE = re.compile(r"^[\u4e00-\u9fa5A-Za-z0-9_-]{1,128}$")
_INPUT_KINDS = ("Prefix", "Manifest", "UrlFile", "Object")


class ApiError(Exception):
    """An answer in CI's ``<Error>`` form; raised anywhere in request handling, rendered by the server."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidArgument", message)


@dataclass(frozen=True)
class Lifecycle:
    """How emulated jobs age. ``jitter`` is a fraction: 0.2 varies each duration by up to +-20 % per job."""

    submitted_seconds: float = 5.0
    running_seconds: float = 60.0
    failure_ratio: float = 0.1
    jitter: float = 0.0

    def __post_init__(self) -> None:
        for name in ("submitted_seconds", "running_seconds"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValidationError(name, v, "expected seconds >= 0")
        if not isinstance(self.failure_ratio, (int, float)) or not 0 <= self.failure_ratio <= 1:
            raise ValidationError("failure_ratio", self.failure_ratio, "expected a ratio in [0, 1]")
        if not isinstance(self.jitter, (int, float)) or not 0 <= self.jitter <= 1:
            raise ValidationError("jitter", self.jitter, "expected a fraction in [0, 1]")

    def fate(self, seed: int, job_id: str) -> tuple[float, float, bool]:
        """(seconds Submitted, seconds Running, fails?) for one job; deterministic per (seed, job_id)."""
        r = random.Random(f"{seed}:{job_id}")

        def vary(base: float) -> float:
            return max(0.0, base * (1 + self.jitter * (2 * r.random() - 1)))

        return vary(self.submitted_seconds), vary(self.running_seconds), r.random() < self.failure_ratio


@dataclass(frozen=True)
class JobView:
    """A job as one answer shows it (immutable, so a stale read can replay an old one)."""

    job_id: str
    name: str
    type: str
    state: str
    code: str
    message: str
    created_at: datetime
    start_time: datetime | None
    end_time: datetime | None
    input: etree._Element = field(repr=False, compare=False)
    operation: etree._Element = field(repr=False, compare=False)


@dataclass
class EmulatedJob:
    view: JobView
    submitted_for: float
    running_for: float
    will_fail: bool
    phase_start: datetime  # when the current Submitted/Running stretch (re)started
    phase_done: float = 0.0  # seconds already spent in this state before phase_start (survives a pause)
    paused_from: str | None = None
    changed_at: datetime | None = None
    history: list[JobView] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.view.state

    def _move(self, state: str, at: datetime, **changes: object) -> None:
        self.history.append(self.view)
        del self.history[:-4]
        self.view = replace(self.view, state=state, **changes)  # type: ignore[arg-type]
        self.changed_at = at

    def advance(self, now: datetime) -> None:
        """Apply every natural transition due by ``now``, each stamped at the moment it was due."""
        while self.state in (SUBMITTED, RUNNING):
            dur = self.submitted_for if self.state == SUBMITTED else self.running_for
            due = self.phase_start + timedelta(seconds=max(0.0, dur - self.phase_done))
            if now < due:
                return
            if self.state == SUBMITTED:
                self._move(RUNNING, due, start_time=_sec(due))
            elif self.will_fail:
                self._move(FAILED, due, end_time=_sec(due), code="InternalError",
                           message="emulated failure (seeded): the job's processing failed")
            else:
                self._move(SUCCESS, due, end_time=_sec(due))
            self.phase_start, self.phase_done = due, 0.0

    def force(self, state: str, now: datetime) -> None:
        """Backdoor move to any state. Submitted/Running restart their stretch now; Pause keeps the progress."""
        self.advance(now)
        if state == self.state:
            return
        if state == PAUSE:
            if self.state in (SUBMITTED, RUNNING):
                self.phase_done += (now - self.phase_start).total_seconds()
                self.paused_from = self.state
            else:
                self.paused_from, self.phase_done = RUNNING, 0.0
            self._move(PAUSE, now)
            return
        if state in (SUBMITTED, RUNNING):
            if self.state == PAUSE and self.paused_from == state:
                pass  # resume: keep the progress made before the pause
            else:
                self.phase_done = 0.0
            self.phase_start, self.paused_from = now, None
            start = self.view.start_time if state == RUNNING else None
            self._move(state, now, start_time=start or (_sec(now) if state == RUNNING else None), end_time=None,
                       code="Success", message="")
            return
        code, message = ("InternalError", "failed by the emulator's backdoor") if state == FAILED else ("Success", "")
        start = self.view.start_time or (self.view.created_at if state != CANCEL else None)
        self._move(state, now, start_time=start, end_time=_sec(now), code=code, message=message)

    def previous(self) -> JobView | None:
        return self.history[-1] if self.history else None

    def stale_view(self, now: datetime, window: float) -> JobView | None:
        """The previous view, if the job changed at most ``window`` clock-seconds before ``now`` (what a stale
        read shows); else None: a stale read now would show the truth."""
        prev = self.previous()
        if prev is None or self.changed_at is None or (now - self.changed_at).total_seconds() > window:
            return None
        return prev


def _sec(dt: datetime) -> datetime:
    return dt.replace(microsecond=0)


@dataclass(frozen=True)
class ListQuery:
    """The list API's filters, validated from query parameters (empty values count as absent, as the SDK sends)."""

    size: int = DEFAULT_PAGE
    type: str | None = None
    states: frozenset[str] | None = None
    descending: bool = True
    start: datetime | None = None
    end: datetime | None = None
    workflow_id: str | None = None
    job_id: str | None = None
    name: str | None = None
    next_token: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "ListQuery":
        p = {k: v for k, v in params.items() if v != ""}
        size = DEFAULT_PAGE
        if "size" in p:
            try:
                size = int(p["size"])
            except ValueError:
                raise invalid(f"size {p['size']!r} is not an integer") from None
            if not 1 <= size <= MAX_PAGE:
                raise invalid(f"size {size} is out of range: 1 to {MAX_PAGE}")
        typ = p.get("type")
        if typ is not None and typ not in TYPES:
            raise invalid(f"type {typ!r} must be Workflow or Job")
        states: frozenset[str] | None = None
        if p.get("states", "All") != "All":
            parts = [s.strip() for s in p["states"].split(",") if s.strip()]
            bad = [s for s in parts if s not in STATES]
            if bad or not parts:
                raise invalid(f"states {p['states']!r} must be All or a comma-separated list of {', '.join(STATES)}")
            states = frozenset(parts)
        order = p.get("orderByTime", "Desc")
        if order not in ("Desc", "Asc"):
            raise invalid(f"orderByTime {order!r} must be Desc or Asc")
        times: dict[str, datetime | None] = {}
        for key in ("startCreationTime", "endCreationTime"):
            try:
                times[key] = parse_time(p.get(key), field_name=key)
            except ValidationError:
                raise invalid(f"{key} {p[key]!r} is not a time like 2022-06-27T15:23:10+0800") from None
        token = p.get("nextToken")
        if token is not None:
            _decode_token(token)
        return cls(size=size, type=typ, states=states, descending=order == "Desc", start=times["startCreationTime"],
                   end=times["endCreationTime"], workflow_id=p.get("workflowId"), job_id=p.get("jobId"),
                   name=p.get("name"), next_token=token)

    def matches(self, v: JobView) -> bool:
        if self.type is not None and v.type != self.type:
            return False
        if self.states is not None and v.state not in self.states:
            return False
        if self.start is not None and v.created_at < self.start:
            return False
        if self.end is not None and v.created_at > self.end:
            return False
        if self.job_id is not None and v.job_id != self.job_id:
            return False
        if self.name is not None and v.name != self.name:
            return False
        if self.workflow_id is not None:
            ids = (v.operation.findtext("WorkflowIds") or "").split(",")
            if self.workflow_id not in [i.strip() for i in ids]:
                return False
        return True


def _epoch(dt: datetime) -> int:
    """Whole epoch seconds, rounded down (creation times are kept to the second)."""
    return int(dt.timestamp() // 1)


def _whole(dt: datetime) -> bool:
    return dt.microsecond == 0


def _encode_token(created: datetime, job_id: str) -> str:
    raw = f"v1|{_epoch(created)}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, ts, job_id = raw.split("|", 2)
        if version != "v1":
            raise ValueError(version)
        return int(ts), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid(f"nextToken {token[:64]!r} is not a token this service issued") from None


@dataclass(frozen=True)
class JobSpec:
    """What a create request (or the backdoor) asks for."""

    name: str
    type: str
    input: etree._Element
    operation: etree._Element

    @classmethod
    def from_request(cls, root: etree._Element) -> "JobSpec":
        """Validate a ``<Request>`` body of ``POST /inventorytriggerjob`` (both variants)."""
        if root.tag != "Request":
            raise invalid(f"the body's root element is <{root.tag}>, expected <Request>")
        name = (root.findtext("Name") or "").strip()
        if not _NAME_RE.match(name):
            raise invalid(f"Name {name!r} must be 1-128 Chinese characters, letters, digits, '-' or '_'")
        typ = (root.findtext("Type") or "").strip()
        if typ not in TYPES:
            raise invalid(f"Type {typ!r} must be Workflow or Job")
        inp = root.find("Input")
        if inp is None or not any((inp.findtext(k) or "").strip() for k in _INPUT_KINDS):
            raise invalid("Input must name one of " + ", ".join(_INPUT_KINDS))
        op = root.find("Operation")
        if op is None:
            raise invalid("Operation is required")
        if typ == "Workflow" and not (op.findtext("WorkflowIds") or "").strip():
            raise invalid("Operation.WorkflowIds is required when Type is Workflow")
        if typ == "Job" and not (op.findtext("Tag") or "").strip():
            raise invalid("Operation.Tag is required when Type is Job")
        ti = op.find("TimeInterval")
        if ti is not None:
            for key in ("Start", "End"):
                text = ti.findtext(key)
                try:
                    parse_time(text, field_name=key)
                except ValidationError:
                    raise invalid(f"Operation.TimeInterval.{key} {text!r} is not a time like "
                                  "2022-06-27T15:23:10+0800") from None
        return cls(name=name, type=typ, input=_copy(inp), operation=_copy(op))

    @classmethod
    def default(cls, name: str, typ: str, workflow_id: str) -> "JobSpec":
        if typ not in TYPES:
            raise ValidationError("type", typ, "expected Workflow or Job")
        inp = etree.Element("Input")
        etree.SubElement(inp, "Prefix").text = "input"
        op = etree.Element("Operation")
        if typ == "Workflow":
            etree.SubElement(op, "WorkflowIds").text = workflow_id
        else:
            etree.SubElement(op, "Tag").text = "Transcode"
            etree.SubElement(op, "QueueId").text = "p893bcda225bf4945a378da6662e81a89"
            etree.SubElement(etree.SubElement(op, "JobParam"), "TemplateId").text = "t1460606b9752148c4ab182f55163ba7cd"
        return cls(name=name, type=typ, input=inp, operation=op)


def _copy(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el))


class JobTable:
    """Every bucket's jobs, behind one lock (server threads and test backdoors share it)."""

    def __init__(self, clock: Clock, lifecycle: Lifecycle, seed: int, new_id: Callable[[], str]) -> None:
        self.clock = clock
        self.lifecycle = lifecycle
        self.seed = seed
        self._new_id = new_id
        self._jobs: dict[str, dict[str, EmulatedJob]] = {}
        # Per bucket, (creation epoch second, job ID) of every job, sorted: the list API's keyset index.
        self._order: dict[str, list[tuple[int, str]]] = {}
        self.lock = threading.RLock()

    def create(self, bucket: str, spec: JobSpec, *, state: str | None = None,
               created_at: datetime | None = None) -> JobView:
        if state is not None and state not in STATES:
            raise ValidationError("state", state, "expected one of " + ", ".join(STATES))
        now = self.clock.now()
        created = _sec(created_at or now)
        with self.lock:
            job_id = self._new_id()
            sub, run, fail = self.lifecycle.fate(self.seed, job_id)
            view = JobView(job_id=job_id, name=spec.name, type=spec.type, state=SUBMITTED, code="Success",
                           message="", created_at=created, start_time=None, end_time=None, input=spec.input,
                           operation=spec.operation)
            job = EmulatedJob(view=view, submitted_for=sub, running_for=run, will_fail=fail, phase_start=created,
                              changed_at=created)
            self._jobs.setdefault(bucket, {})[job_id] = job
            bisect.insort(self._order.setdefault(bucket, []), (_epoch(created), job_id))
            if state is not None:
                job.phase_start = max(created, now)  # a job born in a given state starts its stretch now
                job.force(state, now)
            else:
                job.advance(now)
            return job.view

    def job(self, bucket: str, job_id: str) -> EmulatedJob | None:
        """The job with its state brought up to the clock, or ``None``."""
        with self.lock:
            job = self._jobs.get(bucket, {}).get(job_id)
            if job is not None:
                job.advance(self.clock.now())
            return job

    def neighbour(self, bucket: str, job_id: str) -> EmulatedJob | None:
        """Another job of the bucket, the one created just before ``job_id`` (else just after), brought up to the
        clock: what a mixed-up answer (the ``wrong_job`` fault) shows instead of the job asked for."""
        with self.lock:
            job = self._jobs.get(bucket, {}).get(job_id)
            order = self._order.get(bucket, [])
            if job is None or len(order) < 2:
                return None
            i = bisect.bisect_left(order, (_epoch(job.view.created_at), job_id))
            other = self._jobs[bucket][order[i - 1 if i > 0 else i + 1][1]]
            other.advance(self.clock.now())
            return other

    def require(self, bucket: str, job_id: str) -> EmulatedJob:
        job = self.job(bucket, job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r} in bucket {bucket!r}")
        return job

    def set_state(self, bucket: str, job_id: str, state: str) -> None:
        if state not in STATES:
            raise ValidationError("state", state, "expected one of " + ", ".join(STATES))
        with self.lock:
            self.require(bucket, job_id).force(state, self.clock.now())

    def delete(self, bucket: str, job_id: str) -> None:
        with self.lock:
            job = self._jobs.get(bucket, {}).pop(job_id, None)
            if job is None:
                raise KeyError(f"no job {job_id!r} in bucket {bucket!r}")
            order = self._order[bucket]
            i = bisect.bisect_left(order, (_epoch(job.view.created_at), job_id))
            if i < len(order) and order[i][1] == job_id:
                del order[i]

    def cancel(self, bucket: str, job_id: str) -> JobView:
        """Cancel an active job. Cancelling an ended job changes nothing (the service's answer is UNCONFIRMED)."""
        with self.lock:
            job = self.job(bucket, job_id)
            if job is None:
                raise invalid(f"job {job_id!r} does not exist")
            if job.state not in TERMINAL:
                job.force(CANCEL, self.clock.now())
            return job.view

    def list(self, bucket: str, q: ListQuery, *,
             stale_window: float | None = None) -> tuple[list[JobView], str, bool]:
        """One page, the token of the next one ('' on the last page), and whether a stale view is on it.

        Keyset paging on (creation time, job ID), as the service's token implies: a job created while a client
        pages through an ascending listing shows up on a later page, and no job is shown twice. Only the jobs
        from the cursor on are looked at (a per-bucket index), so a listing of N jobs costs O(N), not O(N^2).
        ``stale_window``: a job that changed less than that many clock-seconds ago shows its previous view."""
        now = self.clock.now()
        cursor: tuple[int, str] | None = None
        if q.next_token:
            cursor = _decode_token(q.next_token)
        page: list[JobView] = []
        more = False
        stale = False
        with self.lock:
            order = self._order.get(bucket, [])
            jobs = self._jobs.get(bucket, {})
            if q.descending:
                hi = len(order)
                if q.end is not None:
                    hi = bisect.bisect_right(order, (_epoch(q.end), "\uffff"))
                if cursor is not None:
                    hi = min(hi, bisect.bisect_left(order, cursor))
                indices: Iterable[int] = range(hi - 1, -1, -1)
            else:
                lo = 0
                if q.start is not None:
                    lo = bisect.bisect_left(order, (_epoch(q.start) + (0 if _whole(q.start) else 1), ""))
                if cursor is not None:
                    lo = max(lo, bisect.bisect_right(order, cursor))
                indices = range(lo, len(order))
            for i in indices:
                ts, jid = order[i]
                job = jobs[jid]
                job.advance(now)
                view = job.view
                if q.descending and q.start is not None and view.created_at < q.start:
                    break
                if not q.descending and q.end is not None and view.created_at > q.end:
                    break
                old = job.stale_view(now, stale_window) if stale_window is not None else None
                if old is not None:
                    view = old
                if not q.matches(view):
                    continue
                if len(page) == q.size:
                    more = True
                    break
                page.append(view)
                stale = stale or old is not None
        token = _encode_token(page[-1].created_at, page[-1].job_id) if more else ""
        return page, token, stale

    def buckets(self) -> Iterable[str]:
        with self.lock:
            return list(self._jobs)

    def all_jobs(self) -> tuple[tuple[str, EmulatedJob], ...]:
        """Every (bucket, job), each brought up to the clock (for the children's callback sweep)."""
        now = self.clock.now()
        with self.lock:
            out = tuple((b, j) for b, jobs in self._jobs.items() for j in jobs.values())
            for _, j in out:
                j.advance(now)
            return out
