"""One small exception hierarchy: callers decide by ``retryable``, never by parsing messages.

Every error raised by ``jobwatch`` derives from :class:`JobwatchError`. ``RetryableError`` marks faults that
a later attempt can cure (the network, throttling, a store that is down); ``PermanentError`` marks faults that
only a change of input or configuration can cure. Messages never carry secrets: they name fields and values
that are safe to log (bucket, job ID, error code, request ID).
"""

from __future__ import annotations

from typing import Any


class JobwatchError(Exception):
    """Base of every error ``jobwatch`` raises on purpose."""

    retryable: bool = False


class RetryableError(JobwatchError):
    """A fault that a later attempt may cure."""

    retryable = True


class PermanentError(JobwatchError):
    """A fault that retrying cannot cure."""

    retryable = False


class ValidationError(PermanentError, ValueError):
    """Bad input, refused before any request is made. Names the field and the offending value."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        shown = value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "..."
        super().__init__(f"invalid {field} {shown!r}: {reason}")


def closest(name: str, known: Any, cutoff: float = 0.6) -> str | None:
    """The known name ``name`` is most likely a typo of, for a "did you mean" hint (difflib is imported here,
    only when a name is wrong: not at every cold start)."""
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=cutoff)
    return close[0] if close else None


class NotFoundError(PermanentError):
    """The job (or notice, or store) asked for does not exist or is not tracked: a fact, not a fault."""


class ConfigError(PermanentError):
    """One or more configuration problems, reported together."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("configuration problems:\n" + "\n".join(f"- {p}" for p in self.problems))


class CIError(JobwatchError):
    """An error the CI service answered (an ``<Error>`` body or an unexpected status).

    ``retryable`` is decided per instance from the status and code (see ``jobwatch.retry``).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int,
        request_id: str | None = None,
        trace_id: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        self.trace_id = trace_id
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(f"CI error {status} {code}: {message} (request id {request_id or '-'})")


class BadResponseError(RetryableError):
    """The service's answer could not be read: not XML, truncated, oversized, or of an unexpected shape.

    Retryable, because on a healthy service such answers come from proxies and broken connections.
    """

    def __init__(self, reason: str, *, status: int | None = None, request_id: str | None = None) -> None:
        self.reason = reason
        self.status = status
        self.request_id = request_id
        super().__init__(f"unreadable response (status {status}): {reason}")


class TransportError(RetryableError):
    """The request did not complete: connection refused or reset, a timeout, a TLS failure."""


class StoreError(JobwatchError):
    """A store operation failed. Driver exceptions never escape a store unwrapped."""


class StoreUnavailable(StoreError, RetryableError):
    """The store cannot be reached or answered with a transient fault; the whole tick should be retried."""


class LockConflict(StoreUnavailable):
    """Another transaction held the rows (a deadlock, a lock wait timeout): the store rolled this one back whole,
    so running the same transaction again is safe."""


class NotifyError(JobwatchError):
    """A sink refused or failed a delivery. ``retryable`` is set per instance."""

    def __init__(self, sink: str, reason: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        self.sink = sink
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(f"sink {sink}: {reason}")


class CredentialsError(PermanentError):
    """Credentials are configured wrongly (half a key pair, a bad profile) or STS refused to issue them."""

