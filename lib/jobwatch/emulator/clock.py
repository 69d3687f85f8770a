"""Clocks the emulator reads its time from.

Job lifecycles are a function of time, so the emulator never reads the wall clock directly: a test advances a
:class:`ManualClock`, the README demo runs a :class:`SpeedClock` faster than real time, and :class:`SystemClock`
reads ``datetime.now(timezone.utc)`` so that freezegun controls it too.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """An aware datetime."""
        ...


def _aware(dt: datetime, name: str) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {dt!r}")
    return dt


class SystemClock:
    """Wall time, read through ``datetime.now`` (so freezegun can freeze or move it)."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """Time that moves only when a test says so; thread-safe because server threads read it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _aware(start, "start") if start is not None else datetime.now(timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r} (use set() to move back)")
        with self._lock:
            self._now = self._now + timedelta(seconds=seconds)
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = _aware(when, "when")

    def __repr__(self) -> str:
        return f"ManualClock({self.now().isoformat()})"


class SpeedClock:
    """Time running ``factor`` times faster than ``base`` from the moment of construction (for demos)."""

    def __init__(self, factor: float, start: datetime | None = None, base: Clock | None = None) -> None:
        if not factor > 0:
            raise ValueError(f"factor must be > 0, got {factor!r}")
        self.factor = float(factor)
        self._base = base or SystemClock()
        self._origin = self._base.now()
        self._start = _aware(start, "start") if start is not None else self._origin

    def now(self) -> datetime:
        return self._start + (self._base.now() - self._origin) * self.factor

    def __repr__(self) -> str:
        return f"SpeedClock(factor={self.factor})"
