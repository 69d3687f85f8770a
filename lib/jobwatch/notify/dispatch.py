"""Sending many (notice, sink) pairs at once, so one slow or broken channel does not hold up the rest.

Each pair runs in its own worker with its own timeout. The whole call also has a deadline (the timeout plus a
small grace): a send still running then is reported as a retryable timeout and left behind rather than waited
for, since a receiver that dribbles bytes can outlast a per-read socket timeout. Such a send may still land;
the notice's idempotency key lets the receiver drop the retry.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import time
from typing import Callable, Iterable

from jobwatch.core.errors import NotifyError
from jobwatch.core.models import Notice
from jobwatch.core.redact import scrub
from jobwatch.notify.base import DeliveryResult, RateLimited, Sink

GRACE = 1.0  # seconds past the timeout before a send is given up on


def send_one(notice: Notice, sink: Sink, timeout: float,
             clock: Callable[[], float] = time.monotonic) -> DeliveryResult:
    """One attempt, never raising: the outcome as a DeliveryResult."""
    start = clock()
    try:
        sink.send(notice, timeout)
    except NotifyError as exc:
        return DeliveryResult(notice.idempotency_key, sink.name, False, scrub(exc.reason), exc.retryable,
                              exc.retry_after, clock() - start, deferred=isinstance(exc, RateLimited))
    except Exception as exc:  # a bug in a sink must not lose the notice or stop the others
        return DeliveryResult(notice.idempotency_key, sink.name, False,
                              f"unexpected {type(exc).__name__}: {scrub(str(exc))[:200]}", True, None,
                              clock() - start)
    return DeliveryResult(notice.idempotency_key, sink.name, True, None, False, None, clock() - start)


def send_concurrently(
    pairs: Iterable[tuple[Notice, Sink]],
    timeout: float = 5.0,
    max_workers: int = 8,
    *,
    clock: Callable[[], float] = time.monotonic,
    grace: float = GRACE,
) -> list[DeliveryResult]:
    """Deliver every pair concurrently; results come back in the order of ``pairs``."""
    items = list(pairs)
    if not items:
        return []
    start = clock()
    pool = cf.ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(items))),
                                 thread_name_prefix="jobwatch-notify")
    try:
        # Each send runs in a copy of the caller's context, so the invocation's request ID reaches the lines
        # the sinks write (the log sink's notice lines above all).
        futures = [pool.submit(contextvars.copy_context().run, send_one, n, s, timeout, clock) for n, s in items]
        # With more pairs than workers, later pairs start late: give each wave its own timeout.
        waves = -(-len(items) // max(1, min(max_workers, len(items))))
        cf.wait(futures, timeout=waves * timeout + grace)
        results = []
        for (n, s), f in zip(items, futures):
            if f.done():
                results.append(f.result())
            else:
                f.cancel()
                results.append(DeliveryResult(n.idempotency_key, s.name, False,
                                              f"no answer within {timeout:g}s", True, None, clock() - start))
        return results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
