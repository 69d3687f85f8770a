"""What every sink shares: routing, the rate limit, the result record, and the HTTP plumbing.

A sink's ``send`` either returns (delivered) or raises :class:`~jobwatch.errors.NotifyError` with ``retryable``
decided here on purpose: timeouts, refused connections, 429 and 5xx can be cured by a later attempt; other 4xx
and a channel's "bad request" error codes cannot. Error texts are built from our own words plus the service's
code and message, never from a transport exception's text, which would carry the URL and with it the robot key.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import requests

from jobwatch.core.errors import NotifyError, ValidationError
from jobwatch.core.models import Notice, NoticeKind
from jobwatch.core.redact import Secret, scrub
from jobwatch.notify.ratelimit import Rate, TokenBucket

MAX_BODY = 64 * 1024  # answers we read; a robot's answer is a few bytes


@dataclass(frozen=True)
class Route:
    """Which notices a sink gets. Empty sets mean "all"; tags must all match. Outcomes compare without case."""

    outcomes: frozenset[str] = frozenset()
    buckets: frozenset[str] = frozenset()
    tags: Mapping[str, str] = field(default_factory=dict)

    def accepts(self, notice: Notice) -> bool:
        if notice.kind is NoticeKind.TEST:  # `jobwatch notify test` reaches every sink
            return True
        if self.outcomes and notice.outcome.lower() not in self.outcomes:
            return False
        if self.buckets and notice.key.bucket not in self.buckets:
            return False
        return all(notice.tags.get(k) == v for k, v in self.tags.items())


class RateLimited(NotifyError):
    """Our own limiter held the send back: nothing reached the channel, so the outbox defers the notice without
    spending one of its attempts (a burst must not turn into dead letters that were never sent)."""


@dataclass(frozen=True)
class DeliveryResult:
    """One attempt of one notice on one sink, as the outbox records it."""

    notice_key: str
    sink: str
    ok: bool
    error: str | None
    retryable: bool
    retry_after: float | None
    elapsed: float
    deferred: bool = False  # held back by the sink's rate limit, never sent


@dataclass(frozen=True)
class SinkSpec:
    """One ``JOBWATCH_NOTIFY`` spec, parsed and checked for the options every sink shares: what a sink class is
    built from. ``common`` holds the keyword arguments every sink's constructor takes (route, rate, timeout,
    clocks)."""

    name: str
    scheme: str
    target: str
    options: Mapping[str, str]
    passthrough: tuple[str, ...]  # raw query pairs a sink keeps in its target URL (webhook)
    endpoint: str | None
    session: requests.Session
    credentials: Callable[[], Any] | None
    common: Mapping[str, Any]

    def secret(self, required: bool = False) -> Secret | None:
        value = self.options.get("secret")
        if not value:
            if required:
                raise ValidationError("secret", "", "required")
            return None
        return Secret(value)


# kind -> class, filled by Sink.__init_subclass__ as each sink module is imported (see spec.registry()).
REGISTRY: dict[str, type["Sink"]] = {}


class Sink:
    """Base of every channel. Subclasses implement :meth:`_deliver`; :meth:`send` adds the rate limit.

    A concrete sink declares its ``kind`` (the spec's scheme), the ``options`` it takes beyond the common ones,
    its vendor's ``default_rate``, and :meth:`from_spec`; declaring ``kind`` registers it. Adding a sink is one
    new module in this package."""

    kind: str = "sink"
    schemes: tuple[str, ...] = ()  # spec schemes that build this sink, when not just ``kind``
    options: frozenset[str] = frozenset()
    default_rate: str | None = None  # the vendor's documented limit (override with rate=)
    passthrough_options = False  # unknown options stay in the target URL instead of being an error
    takes_endpoint = True  # whether the common endpoint= override applies
    # What the sink imports beyond the base install, and the ci-jobwatch extra that provides it: `config check`
    # imports these to fail early, and `jobwatch package` adds the extra of every configured sink.
    extra: str | None = None
    modules: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        *,
        route: Route | None = None,
        rate: Rate | None = None,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.route = route or Route()
        self.timeout = timeout
        self.wall = wall
        self.limiter = TokenBucket(rate, clock=clock) if rate is not None else None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "kind" in cls.__dict__:
            for scheme in cls.schemes or (cls.kind,):
                REGISTRY[scheme] = cls

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> "Sink":  # pragma: no cover - abstract
        """Build the sink from a parsed spec; raise ValidationError naming the field and value."""
        raise NotImplementedError

    def accepts(self, notice: Notice) -> bool:
        return self.route.accepts(notice)

    def send(self, notice: Notice, timeout: float) -> None:
        """Deliver once within ``timeout`` seconds (capped by the sink's own ``timeout=``), or raise NotifyError."""
        if self.limiter is not None:
            wait = self.limiter.try_acquire()
            if wait is not None:
                raise RateLimited(self.name, f"rate limit {self.limiter.rate} reached", retryable=True,
                                  retry_after=round(wait, 3))
        effective = min(timeout, self.timeout) if self.timeout else timeout
        try:
            self._deliver(notice, effective)
        except NotifyError:
            raise
        except requests.Timeout:
            raise NotifyError(self.name, f"timed out after {effective:g}s", retryable=True) from None
        except requests.ConnectionError:
            raise NotifyError(self.name, "connection failed", retryable=True) from None
        except requests.RequestException as exc:
            raise NotifyError(self.name, f"request failed ({type(exc).__name__})", retryable=True) from None

    def _deliver(self, notice: Notice, timeout: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        """Safe one-line description for `jobwatch notify test` and logs."""
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    # -- helpers for HTTP sinks -------------------------------------------------------------------------

    def fail(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> NotifyError:
        return NotifyError(self.name, scrub(reason), retryable=retryable, retry_after=retry_after)


def read_body(resp: requests.Response, limit: int = MAX_BODY) -> bytes:
    """Read at most ``limit`` bytes of a streamed answer (a misbehaving receiver cannot fill our memory)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(8192):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    resp.close()
    return b"".join(chunks)[:limit]


def retry_after_seconds(value: str | None, *, wall: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; unreadable values are ignored."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - wall())


def status_error(sink: Sink, resp: requests.Response, body: bytes) -> NotifyError | None:
    """Classify an HTTP status: None for 2xx; retryable for 408/425/429/5xx; permanent otherwise (3xx included,
    since a redirect is not followed with a signed payload)."""
    status = resp.status_code
    if 200 <= status < 300:
        return None
    snippet = body[:200].decode("utf-8", "replace").strip()
    retryable = status in (408, 425, 429) or status >= 500
    after = retry_after_seconds(resp.headers.get("Retry-After"), wall=sink.wall) if retryable else None
    return sink.fail(f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}", retryable=retryable,
                     retry_after=after)


def post_json(
    sink: Sink,
    session: requests.Session,
    url: str,
    body: bytes,
    timeout: float,
    headers: Mapping[str, str] | None = None,
) -> tuple[requests.Response, bytes]:
    """POST a JSON body without following redirects; raise NotifyError on a non-2xx status."""
    hdrs = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "ci-jobwatch"}
    hdrs.update(headers or {})
    resp = session.post(url, data=body, headers=hdrs, timeout=timeout, allow_redirects=False, stream=True)
    data = read_body(resp)
    err = status_error(sink, resp, data)
    if err is not None:
        raise err
    return resp, data


def json_answer(sink: Sink, data: bytes) -> dict[str, Any]:
    """A robot's JSON answer; anything else is a failure (a proxy page is not a delivery)."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise sink.fail(f"unreadable answer: {data[:100]!r}", retryable=True) from None
    if not isinstance(obj, dict):
        raise sink.fail("answer is not a JSON object", retryable=True)
    return obj


def dumps(obj: Any) -> bytes:
    """Compact, deterministic JSON (what we sign is exactly what we send)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=False).encode("utf-8")
