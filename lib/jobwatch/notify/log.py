"""The log sink: one structured ``notice`` event per notice, always available and never failing a delivery.

The payload's fields are top-level keys so a log service (CLS) can index and alert on ``outcome`` or ``bucket``.
"""

from __future__ import annotations

from typing import Any

import structlog

from jobwatch.core.models import Notice
from jobwatch.core.errors import ValidationError
from jobwatch.notify.base import Sink, SinkSpec


class LogSink(Sink):
    kind = "log"
    options = frozenset({"level"})
    takes_endpoint = False

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> "LogSink":
        level = spec.options.get("level", "info")
        if level not in ("debug", "info", "warning", "error"):
            raise ValidationError("level", level, "expected debug, info, warning or error")
        return cls(spec.name, level=level, **spec.common)

    def __init__(self, name: str, *, level: str = "info", **kw: Any) -> None:
        super().__init__(name, **kw)
        self.level = level
        self.logger = structlog.get_logger("jobwatch.notify")

    def _deliver(self, notice: Notice, timeout: float) -> None:
        getattr(self.logger, self.level)("notice", sink=self.name, **notice.payload())
