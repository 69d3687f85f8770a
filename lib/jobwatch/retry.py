"""What is worth retrying, and how long to wait: a table and a backoff, each testable alone.

Retrying a request that cannot succeed only burns the invocation's budget and the service's quota, so the
permanent codes are listed as carefully as the transient ones. A 429 or 5xx with a code we do not know is
retried on purpose: the status says the service is struggling, whatever the body says.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

# Codes that a later attempt can cure.
RETRYABLE_CODES = frozenset({
    "SlowDown", "RequestLimitExceeded", "TooManyRequests", "InternalError", "ServiceUnavailable",
    "RequestTimeout", "RequestTimeTooSkewed", "Throttling", "ServerBusy", "BadGateway", "GatewayTimeout",
})
# Codes that no retry cures, even when they come with a 5xx.
PERMANENT_CODES = frozenset({
    "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidArgument", "InvalidInput",
    "NoSuchBucket", "NoSuchKey", "NoSuchJob", "MethodNotAllowed", "InvalidBucketName", "InvalidDigest",
    "MissingContentLength", "MalformedXML", "InvalidRequest", "UserNotFound", "NoSuchResource",
})
THROTTLING_CODES = frozenset({"SlowDown", "RequestLimitExceeded", "TooManyRequests", "Throttling"})


def is_retryable_error(status: int, code: str) -> bool:
    if code in PERMANENT_CODES:
        return False
    if code in RETRYABLE_CODES:
        return True
    return status == 429 or status >= 500


def is_throttling(status: int, code: str) -> bool:
    return status == 429 or code in THROTTLING_CODES


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: sleep ``uniform(0, min(cap, base * 2**attempt))``."""

    base: float = 0.2
    cap: float = 10.0
    max_attempts: int = 4

    def delay(self, attempt: int, rand: Callable[[], float] = random.random, retry_after: float | None = None) -> float:
        """Delay before retry number ``attempt`` (0 = first retry). A server hint wins when larger."""
        ceiling = min(self.cap, self.base * (2 ** attempt))
        d = rand() * ceiling
        if retry_after is not None:
            d = max(d, min(retry_after, self.cap))
        return d
