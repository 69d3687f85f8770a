"""Wall time in one place: every layer that needs "now" takes a clock, and this is the default one."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
