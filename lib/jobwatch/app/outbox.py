"""Delivering the outbox: notices are read back from the store after their state change committed, sent to
each sink that routes them, and marked per sink, so a retry re-sends only to the sinks that have not
acknowledged. Delivery is at least once; every send carries the notice's idempotency key.

A notice that keeps failing backs off (exponential, full jitter, ``Retry-After`` honoured) and after
``max_attempts`` becomes a dead letter, listed and retried by ``jobwatch outbox``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import structlog

from jobwatch.core.clock import utcnow
from jobwatch.core.retry import Backoff
from jobwatch.core.models import Notice
from jobwatch.core.records import OutboxEntry
from jobwatch.store.base import Store

if TYPE_CHECKING:  # the sinks' module brings requests: not at cold start
    from jobwatch.notify.base import DeliveryResult

log = structlog.get_logger("jobwatch.app.outbox")

MIN_SEND_SECONDS = 0.3  # below this a send to a remote receiver is not worth starting


class Sink(Protocol):
    """What the outbox needs of a sink (jobwatch.notify's sinks are these)."""

    name: str

    def accepts(self, notice: Notice) -> bool: ...

    def send(self, notice: Notice, timeout: float) -> None: ...


@dataclass
class DrainResult:
    notices: int = 0  # notices handled this drain
    delivered: int = 0  # (notice, sink) deliveries acknowledged
    failed: int = 0  # (notice, sink) deliveries that failed and will be retried
    dead: int = 0  # notices moved to the dead letters
    done: int = 0  # notices fully delivered
    unrouted: int = 0  # notices no sink wanted
    lease_lost: int = 0  # notices another drain took over before this one finished them
    budget_exhausted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Outbox:
    store: Store
    sinks: Sequence[Sink]
    owner: str = "jobwatch"
    max_attempts: int = 8
    backoff: Backoff = field(default_factory=lambda: Backoff(base=30.0, cap=3600.0))
    timeout: float = 5.0
    batch: int = 100
    lease_seconds: float = 120.0
    max_workers: int = 8
    safety_margin: float = 2.0
    clock: Callable[[], datetime] = utcnow
    monotonic: Callable[[], float] = time.monotonic
    rand: Callable[[], float] = random.random
    cancelled: bool = False

    def cancel(self) -> None:
        """Claim no further notices (sends already started finish within ``timeout``). Safe in a signal handler."""
        self.cancelled = True

    @property
    def needs(self) -> float:
        """Seconds a drain needs before its deadline to deliver anything: its margin, the last claim's wave of
        sends, and one wave before it."""
        return self.safety_margin + 2 * self.timeout

    def _send_timeout(self, deadline: float | None) -> float | None:
        """How long one wave of sends may take now: the notify timeout, cut to what is left before the deadline
        less the margin (a quarter of what is left, when that is less). None when too little is left to send at
        all. A short invocation (SCF's default is 3 s) still delivers, with shorter sends, instead of never
        starting a drain that would need the whole notify timeout."""
        if deadline is None:
            return self.timeout
        left = deadline - self.monotonic()
        window = min(self.timeout, left - min(self.safety_margin, left / 4))
        return window if window >= MIN_SEND_SECONDS else None

    def _claim_size(self, deadline: float | None, timeout: float) -> int:
        """Notices whose sends, in waves of ``max_workers`` each up to ``timeout`` long, end within the lease and
        before the deadline: a longer claim would let another drain re-send them while ours still runs."""
        window = self.lease_seconds - self.safety_margin
        if deadline is not None:
            window = min(window, deadline - self.safety_margin - self.monotonic())
        waves = max(1, int(window // timeout))
        return max(1, min(self.batch, waves * self.max_workers // max(1, len(self.sinks))))

    def drain(self, deadline: float | None = None) -> DrainResult:
        from jobwatch.notify import send_concurrently

        result = DrainResult()
        seen: set[int] = set()
        while not self.cancelled:
            timeout = self._send_timeout(deadline)
            if timeout is None:
                result.budget_exhausted = True
                break
            entries = [e for e in self.store.claim_notices(self.owner, self.clock(), self.lease_seconds,
                                                           self._claim_size(deadline, timeout))
                       if e.notice.id not in seen]
            if not entries:
                break
            pairs: list[tuple[Notice, Sink]] = []
            plan: dict[int, list[str]] = {}
            for e in entries:
                seen.add(e.notice.id)  # type: ignore[arg-type]
                routed = [s for s in self.sinks if s.accepts(e.notice)]
                todo = [s for s in routed if e.deliveries.get(s.name) is None
                        or e.deliveries[s.name].status not in ("delivered", "dead")]
                plan[e.notice.id] = [s.name for s in todo]  # type: ignore[index]
                if not routed:
                    result.unrouted += 1
                pairs.extend((e.notice, s) for s in todo)
            outcomes = send_concurrently(pairs, timeout=timeout, max_workers=self.max_workers) if pairs else []
            by_notice: dict[str, list[DeliveryResult]] = {}
            for r in outcomes:
                by_notice.setdefault(r.notice_key, []).append(r)
            for e in entries:
                self._settle(e, by_notice.get(e.notice.idempotency_key, []), result)
            result.notices += len(entries)
        return result

    def _settle(self, e: OutboxEntry, outcomes: list["DeliveryResult"], result: DrainResult) -> None:
        now = self.clock()
        nid = e.notice.id
        assert nid is not None
        # A send our own rate limit held back never reached the channel: it spends no attempt and is never dead.
        sent = [r for r in outcomes if not r.deferred]
        attempts = e.attempts + (1 if sent or not outcomes else 0)
        exhausted = attempts >= self.max_attempts
        failures = []
        retry_after: float | None = None
        for r in outcomes:
            if r.deferred:
                failures.append(r)
                result.failed += 1
                if r.retry_after is not None:
                    retry_after = max(retry_after or 0.0, r.retry_after)
                log.info("notice_deferred", notice=e.notice.idempotency_key, sink=r.sink, error=r.error)
            elif r.ok:
                result.delivered += 1
                self.store.record_delivery(nid, r.sink, True, None, now)
                log.info("notice_delivered", notice=e.notice.idempotency_key, sink=r.sink, attempt=attempts)
            else:
                dead = exhausted or not r.retryable
                self.store.record_delivery(nid, r.sink, False, r.error, now, dead=dead)
                log.warning("notice_failed", notice=e.notice.idempotency_key, sink=r.sink, attempt=attempts,
                            error=r.error, dead=dead)
                if not dead:
                    failures.append(r)
                    result.failed += 1
                    if r.retry_after is not None:
                        retry_after = max(retry_after or 0.0, r.retry_after)
                else:
                    failures.append(r)
        retryable_left = [r for r in failures if r.deferred or (r.retryable and not exhausted)]
        permanent = [r for r in failures if not (r.deferred or (r.retryable and not exhausted))]
        last_error = "; ".join(f"{r.sink}: {r.error}" for r in failures)[:1000] or None
        if retryable_left:
            delay = self.backoff.delay(max(attempts - 1, 0), self.rand, retry_after)
            status, next_at, error = "pending", now + timedelta(seconds=delay), last_error
        elif permanent or any(d.status == "dead" for d in e.deliveries.values()):
            status, next_at, error = "dead", None, last_error
        else:
            status, next_at, error = "done", None, None
        if not self.store.finish_notice(nid, self.owner, status, attempts, next_at, error, now):
            # Our lease ran out and another drain took the notice: its outcome stands. Deliveries recorded
            # above still count; a receiver drops a repeat by the notice's key.
            result.lease_lost += 1
            log.warning("notice_lease_lost", notice=e.notice.idempotency_key, status=status)
        elif status == "dead":
            result.dead += 1
            log.error("notice_dead", notice=e.notice.idempotency_key, error=last_error)
        elif status == "done":
            result.done += 1
