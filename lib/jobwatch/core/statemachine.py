"""The pure decision at the heart of the engine: given a job's record and one observation, what is its new
record, which transitions happened, and which notices to queue. No I/O, no clock reads: all passed in.

Rules, as data where they can be:
- Success, Failed, Cancel (and our own Vanished) are final: polling stops, the record stays.
- A state the API added after this code is recorded and kept polling, never dropped.
- A move "backwards" (a stale read: Running -> Submitted, or out of a final state) is only recorded after the
  same observation was made ``confirmations`` times in a row; so is a job vanishing (``NonExistJobIds``),
  which must moreover hold for ``vanish_seconds``.
- Each transition, the first sight of a job included, gets one history row and one notice with a stable
  idempotency key (job + sequence + new state).
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Callable, Sequence

from jobwatch.core.errors import JobwatchError
from jobwatch.core.models import Job, JobState, Notice, NoticeKind
from jobwatch.core.redact import scrub
from jobwatch.core.stall import StallDecision
from jobwatch.core.records import VANISHED, PollError, TrackedJob, Transition, is_final

# Progress rank: a move to a lower rank is "backwards" and needs confirmation. Pause and Running are peers
# (a queue can be paused and resumed). States we do not know rank with the running ones.
_RANK = {
    JobState.SUBMITTED.value: 0,
    JobState.RUNNING.value: 1,
    JobState.PAUSE.value: 1,
    JobState.SUCCESS.value: 2,
    JobState.FAILED.value: 2,
    JobState.CANCEL.value: 2,
    VANISHED: 3,
}


def rank(state: str | None) -> int:
    if state is None:
        return -1
    return _RANK.get(state, 1)



class ObservationKind(enum.Enum):
    SEEN = "seen"  # the service answered with the job
    MISSING = "missing"  # the service answered NonExistJobIds
    ERROR = "error"  # the poll failed


@dataclass(frozen=True)
class Observation:
    kind: ObservationKind
    job: Job | None = None
    error: BaseException | None = None

    @classmethod
    def seen(cls, job: Job) -> "Observation":
        return cls(ObservationKind.SEEN, job=job)

    @classmethod
    def missing(cls) -> "Observation":
        return cls(ObservationKind.MISSING)

    @classmethod
    def failed(cls, error: BaseException) -> "Observation":
        return cls(ObservationKind.ERROR, error=error)


@dataclass(frozen=True)
class PollPolicy:
    """When to poll next. New and just-changed jobs are polled at the floor; a job that keeps its state is
    polled less often (geometric backoff to the ceiling); errors back off on their own curve."""

    min_seconds: float = 30.0
    max_seconds: float = 900.0
    backoff: float = 1.5
    jitter: float = 0.1
    error_max_seconds: float = 1800.0
    confirmations: int = 2
    confirm_seconds: float | None = None  # delay before re-checking an unconfirmed observation; default: floor
    # A vanish is final and loses the job's real end, so NonExistJobIds must hold this long too (re-checked every
    # confirm delay): a replica that has not yet seen a new or just-changed job answers NonExist for seconds.
    vanish_seconds: float = 60.0
    # A batch's final notice waits (at most this long) for the final count of its children, which fills in its
    # progress and releases it; 0 sends it at once, without waiting.
    final_hold_seconds: float = 0.0

    @property
    def confirm_delay(self) -> float:
        return self.confirm_seconds if self.confirm_seconds is not None else self.min_seconds

    def confirmations_for(self, state: str) -> int:
        """Consecutive observations that make ``state`` trusted when it needs confirmation: ``confirmations``,
        and for a vanish enough re-checks to span ``vanish_seconds``."""
        if state != VANISHED or self.vanish_seconds <= 0:
            return self.confirmations
        return max(self.confirmations, 1 + math.ceil(self.vanish_seconds / max(self.confirm_delay, 1e-9)))

    def next_delay(self, previous: float, changed: bool, rand: Callable[[], float]) -> float:
        base = self.min_seconds if changed or previous <= 0 else min(self.max_seconds, previous * self.backoff)
        base = max(self.min_seconds, min(self.max_seconds, base))
        return self._jittered(base, rand)

    def error_delay(self, error_count: int, rand: Callable[[], float]) -> float:
        base = min(self.error_max_seconds, self.min_seconds * (2 ** max(0, error_count - 1)))
        return self._jittered(max(self.min_seconds, base), rand)

    def _jittered(self, base: float, rand: Callable[[], float]) -> float:
        return base * (1 + self.jitter * (2 * rand() - 1))


# (record after this poll, now) -> decision, or None when stall checks are off
StallCheck = Callable[[TrackedJob, datetime], "StallDecision | None"]


@dataclass(frozen=True)
class Decision:
    after: TrackedJob
    transitions: Sequence[Transition]
    notices: Sequence[Notice]
    errors: Sequence[PollError] = ()  # this poll failed: when and why (kept for the status page's timeline)

    @property
    def changed(self) -> bool:
        return bool(self.transitions)


def notice_key(tj: TrackedJob, seq: int, suffix: str) -> str:
    return f"{tj.key}#{seq}:{suffix}"


def decide(
    tj: TrackedJob,
    obs: Observation,
    now: datetime,
    policy: PollPolicy,
    *,
    rand: Callable[[], float] = random.random,
    stall_check: StallCheck | None = None,
) -> Decision:
    """Apply one observation to a record."""
    if obs.kind is ObservationKind.ERROR:
        count = tj.error_count + 1
        err = obs.error
        text = scrub(str(err) if isinstance(err, JobwatchError) else f"{type(err).__name__}: {err}")[:500]
        after = tj.evolve(error_count=count, last_error=text,
                          next_poll_at=now + timedelta(seconds=policy.error_delay(count, rand)))
        return Decision(after, (), (), (PollError(tj.key, now, text),))

    if obs.kind is ObservationKind.MISSING:
        new_state, job = VANISHED, tj.job
    else:
        assert obs.job is not None
        new_state, job = obs.job.state_raw, obs.job

    old_state = tj.state
    if new_state == old_state:  # the usual poll: one copy of the record, not three
        delay = policy.next_delay(tj.poll_interval, False, rand)
        after = tj.evolve(job=job, last_seen=now, error_count=0, last_error=None, pending_state=None,
                          pending_count=0, poll_interval=delay, next_poll_at=now + timedelta(seconds=delay))
        return _with_stall(after, now, (), [], stall_check, tj)

    vanishing = new_state == VANISHED
    # A NonExist answer is not a sighting: last_seen keeps the last time the service knew the job, which is what
    # the vanish rule measures from.
    base = tj.evolve(job=job, error_count=0, last_error=None) if vanishing else \
        tj.evolve(job=job, last_seen=now, error_count=0, last_error=None)

    needs_confirmation = vanishing or (old_state is not None and rank(new_state) < rank(old_state))
    if needs_confirmation:
        count = tj.pending_count + 1 if tj.pending_state == new_state else 1
        # A vanish needs time as well as answers: polls forced close together (track, a queue message, POST
        # /jobs) would otherwise confirm it within seconds of a replica's first NonExist.
        unseen = now - (tj.last_seen or tj.first_seen)
        too_soon = vanishing and unseen < timedelta(seconds=policy.vanish_seconds)
        if count < policy.confirmations_for(new_state) or too_soon:
            after = base.evolve(job=tj.job, pending_state=new_state, pending_count=count,
                                next_poll_at=now + timedelta(seconds=policy.confirm_delay))
            return Decision(after, (), ())

    seq = tj.transitions + 1
    svc_time = None
    code = message = None
    if job is not None and new_state != VANISHED:
        code, message = job.code, job.message
        svc_time = job.ended_at if is_final(new_state) else (job.started_at if new_state == "Running" else None)
    transition = Transition(tj.key, seq, old_state, new_state, now, svc_time, code, message)
    final = is_final(new_state)
    delay = policy.next_delay(tj.poll_interval, True, rand)
    after = base.evolve(
        state=new_state, active=not final, last_seen=now, last_change=now, pending_state=None, pending_count=0,
        transitions=seq, poll_interval=delay, next_poll_at=now + timedelta(seconds=delay),
    )
    # Every history row has exactly one notice (the first sight too: from_state None says "now watched");
    # sinks that want only outcomes filter by them.
    kind = NoticeKind.VANISHED if new_state == VANISHED else NoticeKind.TRANSITION
    notice = _notice(after, kind, old_state, new_state, now, notice_key(after, seq, new_state))
    if final and kind is NoticeKind.TRANSITION and policy.final_hold_seconds > 0:
        notice = replace(notice, not_before=now + timedelta(seconds=policy.final_hold_seconds))
    notices = [notice]
    if tj.stalled:
        after = after.evolve(stalled=False, stall_notified_at=None)
        if not final:
            notices.append(_notice(after, NoticeKind.RECOVERED, old_state, new_state, now,
                                   notice_key(after, seq, "recovered")))
    return _with_stall(after, now, (transition,), notices, stall_check, tj)


def _with_stall(after: TrackedJob, now: datetime, transitions: Sequence[Transition], notices: list[Notice],
                stall_check: StallCheck | None, before: TrackedJob) -> Decision:
    if stall_check is not None and after.active and after.state is not None and not is_final(after.state):
        d = stall_check(after, now)
        if d is not None and d.stalled:
            after = after.evolve(stalled=True)
            if d.notify:
                after = after.evolve(stall_notified_at=now)
                stamp = int(now.timestamp())
                notices.append(_notice(after, NoticeKind.STALLED, after.state, after.state, now,
                                       notice_key(after, after.transitions, f"stalled@{stamp}")))
    return Decision(after, transitions, notices)


def _notice(tj: TrackedJob, kind: NoticeKind, from_state: str | None, to_state: str | None, now: datetime,
            key: str) -> Notice:
    if tj.light:  # a listing found the job unchanged, so its stub stands for the stored job: say it all
        tj = tj.hydrated()
    return Notice(
        idempotency_key=key, kind=kind, key=tj.key, from_state=from_state, to_state=to_state, observed_at=now,
        job=tj.job.to_json() if tj.job is not None else None, tags=dict(tj.tags),
    )
