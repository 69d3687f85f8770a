"""The generic webhook: the versioned JSON payload, signed as the Standard Webhooks specification says.

``webhook-id`` is the notice's idempotency key, the same on every retry, so a receiver drops a repeat by it;
``webhook-timestamp`` lets it refuse stale replays; ``webhook-signature`` is ``v1,<base64 HMAC-SHA256>`` over
``{id}.{timestamp}.{body}`` keyed with the bytes of the ``whsec_`` secret. The body is serialised once and that
exact byte string is both signed and sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import requests

from jobwatch.core.errors import ValidationError
from jobwatch.core.models import Notice
from jobwatch.core.redact import Secret
from jobwatch.notify.base import Sink, SinkSpec, dumps, post_json

SECRET_PREFIX = "whsec_"


def decode_secret(secret: Secret) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret (the prefix is optional, as the reference libraries allow)."""
    raw = secret.reveal()
    if raw.startswith(SECRET_PREFIX):
        raw = raw[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("secret", "whsec_***", "expected whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValidationError("secret", "whsec_***", "key shorter than 16 bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one key."""
    to_sign = f"{msg_id}.{timestamp}.".encode("utf-8") + body
    digest = hmac.new(key, to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


class WebhookSink(Sink):
    kind = "webhook"
    schemes = ("webhook+https", "webhook+http")
    options = frozenset({"secret"})
    passthrough_options = True
    takes_endpoint = False

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> "WebhookSink":
        if not spec.target or spec.target.startswith("/"):
            raise ValidationError("url", f"{spec.scheme}://...", "expected a host and path after webhook+https://")
        url = spec.scheme.split("+", 1)[1] + "://" + spec.target
        if spec.passthrough:
            url += "?" + "&".join(spec.passthrough)
        return cls(spec.name, Secret(url), secret=spec.secret(), session=spec.session, **spec.common)

    def __init__(self, name: str, url: Secret, *, secret: Secret | None, session: requests.Session,
                 **kw: Any) -> None:
        super().__init__(name, **kw)
        self.url = url  # may carry a token in its path or query
        self._key = decode_secret(secret) if secret is not None else None
        self.session = session

    def build(self, notice: Notice) -> tuple[bytes, dict[str, str]]:
        """The exact body and headers of one delivery."""
        body = dumps(notice.payload())
        ts = int(self.wall())
        headers = {"webhook-id": notice.idempotency_key, "webhook-timestamp": str(ts)}
        if self._key is not None:
            headers["webhook-signature"] = sign(self._key, notice.idempotency_key, ts, body)
        return body, headers

    def _deliver(self, notice: Notice, timeout: float) -> None:
        body, headers = self.build(notice)
        post_json(self, self.session, self.url.reveal(), body, timeout, headers)

    def describe(self) -> str:
        return f"{self.name} (signed)" if self._key is not None else f"{self.name} (unsigned)"
