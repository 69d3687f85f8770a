"""Sessions for the status page: an HMAC-signed, expiring cookie and a CSRF token bound to it.

The API key (``JOBWATCH_API_KEY``) is typed once into the login form; what the browser keeps is a cookie
``v1.<expires>.<nonce>.<mac>`` whose MAC is keyed by a key *derived* from the API key, so the cookie never holds
the key, every function instance can check it without shared state, and changing the API key ends every
session. The CSRF token is a second MAC over the session's nonce: a page can only post what a page served to
that session carried.

Logging out revokes the session: its nonce is kept until the cookie would have expired, and a copy of the cookie
replayed after that is refused. The status page keeps it in the store as well as in this process (see
``web.routes``), so every SCF instance sharing the store refuses it; changing the API key ends every session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

COOKIE_NAME = "jobwatch_session"
SESSION_SECONDS = 8 * 3600
_VERSION = "v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Session:
    nonce: str
    expires: int


class Revocations(Protocol):
    """Where logged-out sessions are kept: :meth:`add` at logout, :meth:`revoked` at every check."""

    def add(self, session: "Session", now: float) -> None: ...

    def revoked(self, nonce: str, now: float) -> bool: ...


class Revoked:
    """The nonces of sessions logged out before they expired, each kept until its expiry (then the cookie is
    refused anyway). Thread-safe; one per process (:data:`REVOKED`)."""

    def __init__(self) -> None:
        self._until: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, session: Session, now: float) -> None:
        with self._lock:
            for nonce in [n for n, until in self._until.items() if until <= now]:
                del self._until[nonce]
            self._until[session.nonce] = session.expires

    def revoked(self, nonce: str, now: float) -> bool:
        with self._lock:
            return self._until.get(nonce, 0) > now


REVOKED = Revoked()


class Sessions:
    """Issues and checks session cookies and CSRF tokens for one API key. ``clock`` returns epoch seconds."""

    def __init__(self, api_key: str, *, ttl: int = SESSION_SECONDS, clock: Callable[[], float] = time.time,
                 revoked: Revocations = REVOKED) -> None:
        if not api_key:
            raise ValueError("the status page needs an API key")
        self._api_key = api_key.encode("utf-8")
        self._mac_key = hmac.new(self._api_key, b"jobwatch-ui-session-v1", hashlib.sha256).digest()
        self.ttl = ttl
        self.clock = clock
        self.revoked = revoked

    def __repr__(self) -> str:  # never the key
        return f"Sessions(ttl={self.ttl})"

    def _mac(self, text: str) -> str:
        return _b64(hmac.new(self._mac_key, text.encode("ascii"), hashlib.sha256).digest())

    def key_matches(self, given: str) -> bool:
        """Constant-time comparison of a typed key with the API key."""
        return hmac.compare_digest(given.encode("utf-8"), self._api_key)

    def issue(self) -> str:
        """A new cookie value for a fresh session."""
        body = f"{_VERSION}.{int(self.clock()) + self.ttl}.{secrets.token_urlsafe(18)}"
        return f"{body}.{self._mac(body)}"

    def verify(self, value: str | None) -> Session | None:
        """The session a cookie value proves, or None when it is missing, forged, malformed or expired."""
        if not value or len(value) > 256:
            return None
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            return None
        version, expires, nonce, mac = parts
        try:
            body = f"{version}.{expires}.{nonce}"
            body.encode("ascii")
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(body).encode("ascii")):
            return None
        if not expires.isdigit() or int(expires) <= self.clock():
            return None
        if self.revoked.revoked(nonce, self.clock()):  # logged out: a copy of the cookie is worth nothing
            return None
        return Session(nonce, int(expires))

    def revoke(self, session: Session) -> None:
        """Log ``session`` out: its cookie is refused from now on, not only dropped by the browser."""
        self.revoked.add(session, self.clock())

    def csrf_token(self, session: Session) -> str:
        return self._mac(f"csrf.{session.nonce}")

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        if not token:
            return False
        return hmac.compare_digest(token.encode("utf-8"), self.csrf_token(session).encode("ascii"))


def read_cookie(headers: Mapping[str, str], name: str = COOKIE_NAME) -> str | None:
    """The value of cookie ``name`` from a lower-cased header map (browsers may send several ``Cookie`` pairs)."""
    raw = headers.get("cookie") or ""
    for pair in raw.split(";"):
        k, sep, v = pair.strip().partition("=")
        if sep and k == name:
            return v.strip().strip('"')
    return None


def set_cookie(value: str, *, max_age: int, secure: bool) -> str:
    """A ``Set-Cookie`` value. No ``Path``: the browser scopes it to the directory of the login URL, i.e. the page's
    own ``.../ui`` behind whatever API Gateway stage or domain prefix it is served under."""
    attrs = [f"{COOKIE_NAME}={value}", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if secure:
        attrs.append("Secure")
    return "; ".join(attrs)
