"""The COS request signature (``q-sign-algorithm=sha1``), in the document's steps.

Each step is its own function so that tests can check the document's intermediate values. The clock is read
by the caller and passed in as the key time; nothing here logs, and the signing key never leaves this module.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import quote

_SAFE = "-_.~"


def encode(text: str) -> str:
    """UTF-8, everything but ``A-Z a-z 0-9 - _ . ~`` percent-encoded with upper-case hex."""
    return quote(text.encode("utf-8"), safe=_SAFE)


def key_time(start: int, end: int) -> str:
    return f"{start};{end}"


def sign_key(secret_key: str, ktime: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), ktime.encode("utf-8"), hashlib.sha1).hexdigest()


def canonical_pairs(items: Mapping[str, str]) -> list[tuple[str, str]]:
    """Keys lower-cased and encoded, values encoded, sorted by key."""
    return sorted((encode(str(k)).lower(), encode(str(v))) for k, v in items.items())


def http_string(method: str, path: str, params: Mapping[str, str], headers: Mapping[str, str]) -> str:
    p = "&".join(f"{k}={v}" for k, v in canonical_pairs(params))
    h = "&".join(f"{k}={v}" for k, v in canonical_pairs(headers))
    return f"{method.lower()}\n{path}\n{p}\n{h}\n"


def string_to_sign(ktime: str, http_str: str) -> str:
    return f"sha1\n{ktime}\n{hashlib.sha1(http_str.encode('utf-8')).hexdigest()}\n"


def signature(skey: str, to_sign: str) -> str:
    return hmac.new(skey.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha1).hexdigest()


@dataclass(frozen=True)
class ParsedAuthorization:
    algorithm: str
    secret_id: str
    sign_time: str
    key_time: str
    header_list: list[str]
    url_param_list: list[str]
    signature: str


def authorization(
    secret_id: str,
    secret_key: str,
    method: str,
    path: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    start: int,
    end: int,
) -> str:
    """The ``Authorization`` header value. ``path`` is the decoded request path; every header given is signed."""
    kt = key_time(start, end)
    s = signature(sign_key(secret_key, kt), string_to_sign(kt, http_string(method, path, params, headers)))
    hl = ";".join(k for k, _ in canonical_pairs(headers))
    pl = ";".join(k for k, _ in canonical_pairs(params))
    return (
        f"q-sign-algorithm=sha1&q-ak={secret_id}&q-sign-time={kt}&q-key-time={kt}"
        f"&q-header-list={hl}&q-url-param-list={pl}&q-signature={s}"
    )


def parse_authorization(value: str) -> ParsedAuthorization:
    """Split an ``Authorization`` value into its fields; ``ValueError`` names the first missing one."""
    fields: dict[str, str] = {}
    for part in value.split("&"):
        k, sep, v = part.partition("=")
        if sep:
            fields[k.strip()] = v.strip()
    for name in ("q-sign-algorithm", "q-ak", "q-sign-time", "q-key-time", "q-header-list", "q-url-param-list",
                 "q-signature"):
        if name not in fields:
            raise ValueError(f"Authorization lacks {name}")
    return ParsedAuthorization(
        algorithm=fields["q-sign-algorithm"],
        secret_id=fields["q-ak"],
        sign_time=fields["q-sign-time"],
        key_time=fields["q-key-time"],
        header_list=[h for h in fields["q-header-list"].split(";") if h],
        url_param_list=[p for p in fields["q-url-param-list"].split(";") if p],
        signature=fields["q-signature"],
    )
