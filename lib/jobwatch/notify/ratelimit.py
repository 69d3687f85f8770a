"""Per-sink rate limits as non-blocking token buckets.

A limiter that sleeps would spend the function's time budget waiting for a robot's quota; instead
:meth:`TokenBucket.try_acquire` answers at once with how long to wait, and the sink turns that into a retryable
``NotifyError`` with ``retry_after`` so the outbox schedules the notice for later. Time comes from an injected
monotonic clock, so tests advance it by hand.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

from jobwatch.core.errors import ValidationError

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Rate:
    """``count`` sends per ``per`` seconds; the bucket holds up to ``count`` tokens (a vendor's window quota)."""

    count: float
    per: float

    @property
    def per_second(self) -> float:
        return self.count / self.per

    @classmethod
    def parse(cls, text: str, *, field: str = "rate") -> "Rate":
        """Parse ``20/min``, ``1/s``, ``1000/s``, ``100/h``."""
        m = _RATE_RE.match(text or "")
        if not m or m.group(2) not in _UNITS or float(m.group(1)) <= 0:
            raise ValidationError(field, text, "expected N/s, N/min or N/h with N > 0")
        return cls(float(m.group(1)), _UNITS[m.group(2)])

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.per, f"{self.per}s")
        return f"{self.count:g}/{unit}"


class TokenBucket:
    """Thread-safe token bucket; ``try_acquire`` never waits."""

    def __init__(self, rate: Rate, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate.count)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def try_acquire(self) -> float | None:
        """Take one token and return ``None``, or return the seconds until one will be available."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._stamp)
            self._stamp = now
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate.per_second)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return (1.0 - self._tokens) / self.rate.per_second
