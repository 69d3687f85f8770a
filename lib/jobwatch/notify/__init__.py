"""Notification sinks: turning a :class:`~jobwatch.models.Notice` into a delivery on a channel.

``parse_sinks`` builds the sinks from ``JOBWATCH_NOTIFY``; each sink routes (``accepts``), rate-limits without
blocking, and ``send``s once or raises ``NotifyError`` with ``retryable`` set; ``send_concurrently`` delivers many
pairs at once. Retrying, dead letters and bookkeeping belong to :mod:`jobwatch.outbox`.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from jobwatch.core.errors import NotifyError
from jobwatch.core.models import JobKey, Notice, NoticeKind
from jobwatch.notify.base import DeliveryResult, Route, Sink
from jobwatch.notify.dispatch import send_concurrently, send_one
from jobwatch.notify.ratelimit import Rate, TokenBucket
from jobwatch.notify.spec import parse_sink, parse_sinks, split_specs

__all__ = ["DeliveryResult", "NotifyError", "Rate", "Route", "Sink", "TokenBucket", "parse_sink", "parse_sinks",
           "sample_notice", "send_concurrently", "send_one", "split_specs"]


def sample_notice(now: datetime | None = None) -> Notice:
    """A realistic failed-job notice of kind ``test`` for ``jobwatch notify test``; every sink accepts it, and its
    key is new each time so receivers do not drop it as a repeat."""
    now = now or datetime.now(timezone.utc)
    started = now - timedelta(minutes=42, seconds=7)
    job = {
        "job_id": "b0123456789abcdef0123456789abcdef",
        "name": "sample-transcode-batch",
        "type": "Job",
        "state": "Failed",
        "code": "InternalError",
        "message": "sample: this is a test notice from ci-jobwatch, no job failed",
        "created_at": (started - timedelta(seconds=30)).isoformat(),
        "started_at": started.isoformat(),
        "ended_at": now.isoformat(),
    }
    return Notice(
        idempotency_key=f"test-{uuid.uuid4().hex}",
        kind=NoticeKind.TEST,
        key=JobKey("ap-guangzhou", "examplebucket-1250000000", job["job_id"]),
        from_state="Running",
        to_state="Failed",
        observed_at=now,
        job=job,
        tags={"sample": "true"},
    )
