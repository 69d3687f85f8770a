"""The log sink: one structured ``notice`` event per notice, always available and never failing a delivery.

The payload's fields are top-level keys so a log service (CLS) can index and alert on ``outcome`` or ``bucket``.
"""

from __future__ import annotations

from typing import Any

import structlog

from jobwatch.core.models import Notice
from jobwatch.notify.base import Sink


class LogSink(Sink):
    kind = "log"

    def __init__(self, name: str, *, level: str = "info", **kw: Any) -> None:
        super().__init__(name, **kw)
        self.level = level
        self.logger = structlog.get_logger("jobwatch.notify")

    def _deliver(self, notice: Notice, timeout: float) -> None:
        getattr(self.logger, self.level)("notice", sink=self.name, **notice.payload())
