"""Differential test: our signer against the official SDK's ``qcloud_cos.cos_auth.CosS3Auth``.

The SDK reads ``time.time()`` inline; we replace the ``time`` name in that module only, for the duration of one
call, so both sides sign the same key time.
"""

from __future__ import annotations

import types
from unittest import mock

from hypothesis import given, settings, strategies as st
from qcloud_cos import CosConfig
from qcloud_cos import cos_auth

from jobwatch.ci import signing

SID = "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q"
SKEY = "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz"

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
# Keys whose encoded, lower-cased forms are distinct (the SDK keeps one value per such key, a dict).
param_keys = st.text(st.characters(blacklist_categories=("Cs", "Lu", "Lt")), min_size=1, max_size=15)
header_names = st.builds(lambda p, s: p + s, st.sampled_from(["x-cos-", "x-ci-"]),
                         st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12))
std_headers = st.dictionaries(st.sampled_from(["content-type", "content-md5", "content-length", "range"]), text,
                              max_size=3)


def _dedupe(d: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    seen: set[str] = set()
    for k, v in d.items():
        ek = signing.encode(k).lower()
        if ek not in seen:
            seen.add(ek)
            out[k] = v
    return out


def sdk_authorization(method: str, host: str, path: str, params: dict[str, str], headers: dict[str, str],
                      now: int, expire: int) -> str:
    conf = CosConfig(Region="ap-beijing", SecretId=SID, SecretKey=SKEY)
    auth = cos_auth.CosS3Auth(conf, key=path, params=params, expire=expire)
    req = types.SimpleNamespace(method=method, url=f"https://{host}{path}", headers={"Host": host, **headers})
    with mock.patch.object(cos_auth, "time", types.SimpleNamespace(time=lambda: now)):
        auth(req)
    return req.headers["Authorization"]


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]),
    path=st.builds(lambda t: "/" + t, text),
    params=st.dictionaries(param_keys, text, max_size=5).map(_dedupe),
    headers=st.dictionaries(header_names, text, max_size=4),
    extra=std_headers,
    now=st.integers(min_value=1_000_000_000, max_value=4_000_000_000),
    expire=st.integers(min_value=1, max_value=86400),
    bucket=st.from_regex(r"[a-z0-9]{1,10}-125[0-9]{7}", fullmatch=True),
)
def test_matches_official_sdk(method, path, params, headers, extra, now, expire, bucket):
    host = f"{bucket}.ci.ap-guangzhou.myqcloud.com"
    headers = {**headers, **extra}
    ours = signing.authorization(SID, SKEY, method, path, params, {"host": host, **headers}, now - 60, now + expire)
    assert ours == sdk_authorization(method, host, path, params, headers, now, expire)


def test_the_differential_can_fail():
    """A one-character change on our side must show up (guards against comparing a value with itself)."""
    host = "bucket-1250000000.ci.ap-beijing.myqcloud.com"
    ours = signing.authorization(SID, SKEY, "GET", "/inventorytriggerjob", {"size": "10"}, {"host": host}, 940, 2000)
    assert ours == sdk_authorization("GET", host, "/inventorytriggerjob", {"size": "10"}, {}, 1000, 1000)
    assert ours != sdk_authorization("GET", host, "/inventorytriggerjob", {"size": "11"}, {}, 1000, 1000)
    assert ours != sdk_authorization("GET", host, "/inventorytriggerjob", {"size": "10"}, {}, 1001, 1000)


def test_token_header_signed_like_the_sdk():
    host = "bucket-1250000000.ci.ap-beijing.myqcloud.com"
    tok = {"x-ci-security-token": "tok/en+with=chars 腾"}
    ours = signing.authorization(SID, SKEY, "GET", "/inventorytriggerjob/j1", {}, {"host": host, **tok}, 940, 1600)
    assert ours == sdk_authorization("GET", host, "/inventorytriggerjob/j1", {}, tok, 1000, 600)
    assert "q-header-list=host;x-ci-security-token&" in ours
