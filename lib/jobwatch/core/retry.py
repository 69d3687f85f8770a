"""What is worth retrying, and how long to wait: a table and a backoff, each testable alone.

Retrying a request that cannot succeed only burns the invocation's budget and the service's quota, so the
permanent codes are listed as carefully as the transient ones. A 429 or 5xx with a code we do not know is
retried on purpose: the status says the service is struggling, whatever the body says.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

from jobwatch.core.errors import CIError

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


def throttled_by(error: BaseException | None) -> bool:
    """Whether ``error`` is the service refusing a request for our rate (not for the request itself)."""
    return isinstance(error, CIError) and is_throttling(error.status or 0, error.code)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: sleep ``uniform(0, min(cap, base * 2**attempt))``."""

    base: float = 0.2
    cap: float = 10.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random, retry_after: float | None = None) -> float:
        """Delay before retry number ``attempt`` (0 = first retry). A server hint wins when larger."""
        ceiling = min(self.cap, self.base * (2 ** attempt))
        d = rand() * ceiling
        if retry_after is not None:
            d = max(d, min(retry_after, self.cap))
        return d


class AdaptiveLimit:
    """How many requests may be in flight: halved when the service throttles us, grown back by about one per
    round of successes (additive increase, multiplicative decrease, as TCP does). Retrying each throttled
    request alone keeps the pressure on; this lowers it for the whole tick, and for the next ones while the
    instance stays warm. Cuts closer together than ``cooldown`` seconds count once: the requests already in
    flight when the first refusal came back say nothing new."""

    def __init__(self, ceiling: int, *, floor: int = 1, cooldown: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor {floor}, ceiling {ceiling}")
        self.ceiling, self.floor, self.cooldown = ceiling, floor, cooldown
        self._monotonic = monotonic
        self._value = float(ceiling)
        self._last_cut: float | None = None
        self._lock = threading.Lock()

    @property
    def allowed(self) -> int:
        return max(self.floor, int(self._value))

    def throttled(self) -> bool:
        """Note a throttling answer; True if it cut the limit."""
        with self._lock:
            now = self._monotonic()
            if self._last_cut is not None and now - self._last_cut < self.cooldown:
                return False
            self._last_cut = now
            self._value = max(float(self.floor), self._value / 2)
            return True

    def succeeded(self) -> None:
        with self._lock:
            self._value = min(float(self.ceiling), self._value + 1.0 / self._value)

    def answered(self, error: BaseException | None) -> bool:
        """Count one answer, ``error`` None for a success: a success grows the limit, a throttling refusal cuts
        it, any other failure says nothing of our rate. True when this answer cut the limit (say so once)."""
        if error is None:
            self.succeeded()
            return False
        return throttled_by(error) and self.throttled()


def worst_case_seconds(connect_timeout: float, read_timeout: float, max_attempts: int, backoff: Backoff) -> float:
    """The longest one request can take with its retries: every attempt times out at connect and at read,
    and every pause between attempts is as long as the backoff allows (a server's hint is capped there too).
    Leases and claim sizes are judged against this."""
    return max_attempts * (connect_timeout + read_timeout) + (max_attempts - 1) * backoff.cap


# Codes that say the service refused the request before doing anything: safe to resend even a create.
NOT_PROCESSED_CODES = THROTTLING_CODES | frozenset({"RequestTimeTooSkewed"})


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent or
    unreadable, never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            secs = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if secs != secs or secs in (float("inf"), float("-inf")):  # NaN / inf
        return None
    return max(0.0, secs)


def should_retry(
    *,
    status: int | None = None,
    code: str | None = None,
    transport: bool = False,
    sent: bool = True,
    idempotent: bool = True,
) -> bool:
    """Decide one failed attempt.

    ``transport`` is a failure without an answer (``sent`` False when the connection was never made);
    otherwise ``status``/``code`` describe the answer (``code`` ``Unknown`` when the body had none). A request
    that is not idempotent (create) is resent only when the service surely did not act on it.
    """
    if transport:
        return idempotent or not sent
    status = status or 0
    code = code or "Unknown"
    if not is_retryable_error(status, code):
        return False
    if idempotent:
        return True
    return is_throttling(status, code) or code in NOT_PROCESSED_CODES
