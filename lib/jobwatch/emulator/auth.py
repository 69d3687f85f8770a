"""Server-side check of the COS request signature, as strict as the service and stricter where it helps tests.

The signature is recomputed from the header and parameter lists the client declared, with the values the
request actually carried, using ``jobwatch.signing``'s steps (the same document steps our client uses; the
official SDK's own signer checks them in the fidelity tests). Checks, in order, each with its own answer:

- no ``Authorization``, or one that does not parse, or an algorithm other than sha1: 403 ``AccessDenied``;
- unknown SecretId: 403 ``InvalidAccessKeyId``;
- key time: ``now > end`` gives 403 ``AccessDenied`` "Request has expired"; ``start > now + max_skew`` gives 403
  ``RequestTimeTooSkewed`` (the start may lead the server's clock by ``max_skew`` seconds, 900 by default, as
  clocks drift and the SDKs start the window 60 s early anyway); ``start > end`` is ``AccessDenied``;
- session token (``x-ci-security-token`` or ``x-cos-security-token``): a temporary SecretId needs exactly the
  token issued with it, signed; a token with any other SecretId is 403 ``AccessDenied``; so is an expired one;
- ``host`` must be among the signed headers, every query parameter must be signed except the bare ``cancel``
  sub-resource (which the official SDK leaves out), and every declared header and parameter must be present:
  otherwise 403 ``AccessDenied`` (unsigned) or ``SignatureDoesNotMatch`` (declared but absent);
- finally the recomputed signature must match: 403 ``SignatureDoesNotMatch`` (the message carries the
  StringToSign, which holds no secret, to help a client author find the difference).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping, Sequence

from jobwatch.ci import signing
from jobwatch.emulator.state import ApiError

TOKEN_HEADERS = ("x-ci-security-token", "x-cos-security-token")


@dataclass(frozen=True)
class TempCredential:
    secret_key: str
    token: str
    parent_id: str
    expires_at: datetime


def denied(message: str, code: str = "AccessDenied") -> ApiError:
    return ApiError(403, code, message)


def verify(
    *,
    method: str,
    path: str,
    params: Sequence[tuple[str, str]],
    bare_params: frozenset[str],
    headers: Mapping[str, str],
    credentials: Mapping[str, str],
    temporary: Mapping[str, TempCredential],
    now: datetime,
    max_skew: float,
) -> str:
    """Check one request's signature; return the SecretId it was signed with, or raise an ``ApiError``.

    ``path`` is the decoded request path, ``params`` the decoded query pairs (blank values kept), ``bare_params``
    the keys that came without ``=``, ``headers`` a case-insensitive mapping of the received headers.
    """
    value = headers.get("Authorization")
    if not value:
        raise denied("Request has no Authorization header (anonymous access is not allowed)")
    try:
        auth = signing.parse_authorization(value)
    except ValueError as exc:
        raise denied(f"Authorization is malformed: {exc}") from None
    if auth.algorithm != "sha1":
        raise denied(f"q-sign-algorithm {auth.algorithm!r} is not supported, expected sha1")

    secret_id = auth.secret_id
    temp = temporary.get(secret_id)
    secret_key = temp.secret_key if temp is not None else credentials.get(secret_id)
    if secret_key is None:
        raise denied(f"The SecretId {secret_id!r} does not exist", "InvalidAccessKeyId")

    try:
        start_s, end_s = auth.key_time.split(";")
        start, end = int(start_s), int(end_s)
    except ValueError:
        raise denied(f"q-key-time {auth.key_time!r} is not <start>;<end> in Unix seconds") from None
    ts = now.timestamp()
    if start > end:
        raise denied(f"q-key-time {auth.key_time!r} ends before it starts")
    if ts > end:
        raise denied(f"Request has expired: the signature's key time ended at {end}, server time is {int(ts)}")
    if start > ts + max_skew:
        raise denied(
            f"The difference between the request time and the server's time is too large: the signature starts at "
            f"{start}, server time is {int(ts)}", "RequestTimeTooSkewed")

    signed_headers = set(auth.header_list)
    sent_tokens = {h: headers.get(h) for h in TOKEN_HEADERS if headers.get(h) is not None}
    for h in sent_tokens:
        if h not in signed_headers:
            raise denied(f"header {h} is not signed (add it to q-header-list)")
    if temp is not None:
        if not sent_tokens:
            raise denied(f"SecretId {secret_id!r} is temporary and needs its security token")
        if any(not hmac.compare_digest(t or "", temp.token or "") for t in sent_tokens.values()):
            raise denied(f"the security token was not issued for SecretId {secret_id!r}")
        if ts > temp.expires_at.timestamp():
            raise denied(f"the security token of SecretId {secret_id!r} has expired")
    elif sent_tokens:
        raise denied(f"a security token was sent with SecretId {secret_id!r}, which is not temporary")

    if "host" not in signed_headers:
        raise denied("the host header must be signed (q-header-list lacks host)")
    header_values: dict[str, str] = {}
    for h in auth.header_list:
        v = headers.get(h)
        if v is None:
            raise denied(f"signed header {h} is not in the request", "SignatureDoesNotMatch")
        header_values[h] = v

    declared = set(auth.url_param_list)
    param_values: dict[str, str] = {}
    for key, val in params:
        enc = signing.encode(key).lower()
        if enc in declared:
            param_values[key] = val
        elif not (key == "cancel" and key in bare_params and val == ""):
            raise denied(f"query parameter {key!r} is not signed (add it to q-url-param-list)")
    seen = {signing.encode(k).lower() for k in param_values}
    if declared - seen:
        raise denied(f"signed query parameters {sorted(declared - seen)} are not in the request",
                     "SignatureDoesNotMatch")

    http_str = signing.http_string(method, path, param_values, header_values)
    to_sign = signing.string_to_sign(auth.key_time, http_str)
    expected = signing.signature(signing.sign_key(secret_key, auth.key_time), to_sign)
    if not hmac.compare_digest(expected, auth.signature.lower()):
        raise denied(
            "The request signature we calculated does not match the signature you provided. StringToSign: "
            + to_sign.replace("\n", "\\n"), "SignatureDoesNotMatch")
    return secret_id
