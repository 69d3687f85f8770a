"""Keeping secrets out of logs, reprs, exceptions and notices.

A :class:`Secret` hides its value from ``repr``/``str``/format; code that needs the value calls ``reveal()``,
which makes every use easy to find. Every secret ever wrapped is also remembered (in this process), so the
log processor can scrub a value that reached a message some other way, e.g. inside a URL or a driver error.
"""

from __future__ import annotations

import re
import threading
from typing import Any

_known: set[str] = set()
_known_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None
MASK = "***"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = str(value)
        remember(self._value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self):  # never pickle the value by accident
        raise TypeError("Secret cannot be pickled")


def remember(value: str | None) -> None:
    """Add a value to the set scrubbed from log lines. Short values are ignored (they would mask noise)."""
    global _pattern
    if not value or len(value) < 6:
        return
    with _known_lock:
        if value not in _known:
            _known.add(value)
            _pattern = None


def _known_pattern() -> re.Pattern[str] | None:
    global _pattern
    pat = _pattern
    if pat is None and _known:
        with _known_lock:
            vals = sorted(_known, key=len, reverse=True)
            _pattern = pat = re.compile("|".join(re.escape(v) for v in vals))
    return pat


def scrub(text: str) -> str:
    """Replace every remembered secret, and obvious credential fields, in ``text``."""
    pat = _known_pattern()
    if pat is not None:
        text = pat.sub(MASK, text)
    return _FIELD_RE.sub(_mask_field, text)


def might_hold_secret(text: str) -> bool:
    """True if :func:`scrub` could change ``text``: one scan instead of a substitution per field, so a log line
    of plain fields (nearly all of them) is checked at the cost of one search over its joined values."""
    pat = _known_pattern()
    return bool((pat is not None and pat.search(text)) or _FIELD_RE.search(text))


# Credential-shaped fields in URLs, headers and DSNs: ?key=..., &access_token=..., password=..., user:pw@host
_FIELD_RE = re.compile(
    r"(?P<label>(?:[?&](?:key|access_token|sign|token)=)|"
    r"(?<![A-Za-z0-9_-])(?:q-signature|password|passwd|secret_key|secretkey|x-ci-security-token|"
    r"x-cos-security-token|x-tc-token|authorization)[\"']?\s*[=:]\s*[\"']?)(?P<value>[^&\s\"',;@]+)"
    r"|(?P<dsn>://[^/:@\s]*:)[^@\s]+(?=@)",  # the password of user:pw@host, never a host's :port
    re.IGNORECASE,
)


def _mask_field(m: re.Match[str]) -> str:
    """Mask a field's value, but not a word of prose: "(using password: YES)", "password: expected ..." are
    messages about a password, not one (a remembered secret is masked wherever it appears regardless)."""
    if m.group("dsn") is not None:
        return m.group("dsn") + MASK
    label, value = m.group("label"), m.group("value")
    if label[-1].isspace():  # "password: ..." as a sentence writes it; URLs, DSNs and JSON have no space
        core = value.rstrip(")]}.")
        return m.group(0) if core.isalpha() else label + MASK + value[len(core):]
    return label + MASK


def scrub_value(value: Any) -> Any:
    """Scrub strings inside nested dicts/lists/tuples (log event dicts, notices)."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_value(v) for v in value)
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    return value
