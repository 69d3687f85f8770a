"""Signature checking: every way a request can be badly signed is refused with the service's code."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
import requests

from fixtures.emulator import TEST_BUCKET, TEST_HOST, TEST_SECRET_ID, TEST_SECRET_KEY, signed_headers
from jobwatch.emulator import EmulatorServer, ManualClock
from jobwatch.ci.xmlparse import parse_error

JOB_PATH = "/inventorytriggerjob/b3deffea2f84911ec9cb15254008618d9"


def call(emulator, method, path, headers, params=None, query=None):
    url = emulator.url + path + (f"?{query}" if query else "")
    return requests.request(method, url, headers=headers, params=params, timeout=5)


def code_of(resp):
    assert resp.headers["Content-Type"] == "application/xml"
    assert resp.headers["x-ci-request-id"] and resp.headers["x-ci-trace-id"]
    return parse_error(resp.content, status=resp.status_code).code


def test_good_signature_is_accepted(emulator):
    r = call(emulator, "GET", JOB_PATH, signed_headers("GET", JOB_PATH))
    assert r.status_code == 200 and b"<NonExistJobIds>" in r.content


@pytest.mark.parametrize("case,kwargs,code", [
    ("wrong key", {"secret_key": "not-the-key"}, "SignatureDoesNotMatch"),
    ("unknown id", {"secret_id": "AKIDNOSUCHKEY0000000000000000000000"}, "InvalidAccessKeyId"),
    ("expired", {"start": int(time.time()) - 7200, "end": int(time.time()) - 3600}, "AccessDenied"),
    ("future", {"start": int(time.time()) + 3600, "end": int(time.time()) + 7200}, "RequestTimeTooSkewed"),
    ("other host signed", {"host": "otherbucket-1250000000.ci.ap-guangzhou.myqcloud.com"}, "SignatureDoesNotMatch"),
])
def test_bad_signatures_are_refused(emulator, case, kwargs, code):
    headers = signed_headers("GET", JOB_PATH, **kwargs)
    headers["Host"] = TEST_HOST  # what reached the server, whatever was signed
    r = call(emulator, "GET", JOB_PATH, headers)
    assert r.status_code == 403, case
    assert code_of(r) == code, case
    if case == "expired":
        assert "expired" in r.text


def test_missing_authorization_is_access_denied(emulator):
    r = call(emulator, "GET", JOB_PATH, {"Host": TEST_HOST})
    assert r.status_code == 403 and code_of(r) == "AccessDenied"


def test_signature_over_another_path_does_not_match(emulator):
    r = call(emulator, "GET", JOB_PATH, signed_headers("GET", "/inventorytriggerjob/b0"))
    assert r.status_code == 403 and code_of(r) == "SignatureDoesNotMatch"


def test_host_must_be_signed(emulator):
    from jobwatch.ci import signing
    now = int(time.time())
    auth = signing.authorization(TEST_SECRET_ID, TEST_SECRET_KEY, "GET", JOB_PATH, {}, {"x-ci-foo": "1"},
                                 now - 60, now + 600)
    r = call(emulator, "GET", JOB_PATH, {"Host": TEST_HOST, "x-ci-foo": "1", "Authorization": auth})
    assert r.status_code == 403 and code_of(r) == "AccessDenied" and "host" in r.text


def test_unsigned_query_parameter_is_refused_but_bare_cancel_is_not(emulator):
    headers = signed_headers("GET", "/inventorytriggerjob", {"type": "Job"})
    assert call(emulator, "GET", "/inventorytriggerjob", headers, query="type=Job").status_code == 200
    r = call(emulator, "GET", "/inventorytriggerjob", headers, query="type=Job&size=100")
    assert r.status_code == 403 and code_of(r) == "AccessDenied" and "size" in r.text
    job_id = emulator.create_job(TEST_BUCKET, state="Running")
    path = f"/inventorytriggerjob/{job_id}"
    r = call(emulator, "PUT", path, signed_headers("PUT", path), query="cancel")
    assert r.status_code == 200 and emulator.job_state(TEST_BUCKET, job_id) == "Cancel"
    # cancel signed (as a careful client may do) is accepted too; cancel with a value must be signed
    other = emulator.create_job(TEST_BUCKET, state="Running")
    opath = f"/inventorytriggerjob/{other}"
    assert call(emulator, "PUT", opath, signed_headers("PUT", opath, {"cancel": ""}), query="cancel").status_code == 200
    r = call(emulator, "PUT", opath, signed_headers("PUT", opath), query="cancel=1")
    assert r.status_code == 403


def test_session_token_only_with_its_own_temporary_key(emulator):
    tmp_id, tmp_key, token = emulator.issue_token(TEST_SECRET_ID)
    other_id, other_key, other_token = emulator.issue_token(TEST_SECRET_ID)
    ok = signed_headers("GET", JOB_PATH, secret_id=tmp_id, secret_key=tmp_key, extra={"x-ci-security-token": token})
    assert call(emulator, "GET", JOB_PATH, ok).status_code == 200
    cos_name = signed_headers("GET", JOB_PATH, secret_id=tmp_id, secret_key=tmp_key,
                              extra={"x-cos-security-token": token})
    assert call(emulator, "GET", JOB_PATH, cos_name).status_code == 200
    cases = {
        "another key's token": signed_headers("GET", JOB_PATH, secret_id=tmp_id, secret_key=tmp_key,
                                              extra={"x-ci-security-token": other_token}),
        "no token": signed_headers("GET", JOB_PATH, secret_id=tmp_id, secret_key=tmp_key),
        "token with a permanent key": signed_headers("GET", JOB_PATH, extra={"x-ci-security-token": token}),
    }
    for case, headers in cases.items():
        r = call(emulator, "GET", JOB_PATH, headers)
        assert r.status_code == 403 and code_of(r) == "AccessDenied", case
    unsigned = signed_headers("GET", JOB_PATH, secret_id=tmp_id, secret_key=tmp_key)
    unsigned["x-ci-security-token"] = token
    r = call(emulator, "GET", JOB_PATH, unsigned)
    assert r.status_code == 403 and "not signed" in r.text


def test_expired_temporary_credentials(emulator):
    wall = ManualClock(datetime.now(timezone.utc))
    emulator.auth_clock = wall
    tmp_id, tmp_key, token = emulator.issue_token(TEST_SECRET_ID, duration_seconds=900)
    headers = signed_headers("GET", JOB_PATH, secret_id=tmp_id, secret_key=tmp_key,
                             extra={"x-ci-security-token": token}, end=int(time.time()) + 7200)
    assert call(emulator, "GET", JOB_PATH, headers).status_code == 200
    wall.advance(901)
    r = call(emulator, "GET", JOB_PATH, headers)
    assert r.status_code == 403 and "expired" in r.text


def test_document_vectors_are_accepted():
    """The reference's CI vectors, Authorization strings as published (not produced by our signer)."""
    vec_id, vec_key = "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q", "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz"
    clock = ManualClock(datetime.fromtimestamp(1557989151 + 100, timezone.utc))
    with EmulatorServer(credentials={vec_id: vec_key}, auth_clock=clock) as srv:
        auth = ("q-sign-algorithm=sha1&q-ak=AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q&q-sign-time=1557989151;1557996351"
                "&q-key-time=1557989151;1557996351&q-header-list=host&q-url-param-list="
                "&q-signature=cfe2fbb4012910a6045aa5d3ac8202956df387a9")
        r = call(srv, "GET", JOB_PATH, {"Host": "bucket-1250000000.ci.ap-beijing.myqcloud.com", "Authorization": auth})
        assert r.status_code == 200
        auth2 = ("q-sign-algorithm=sha1&q-ak=AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q&q-sign-time=1557989151;1557996351"
                 "&q-key-time=1557989151;1557996351&q-header-list=host"
                 "&q-url-param-list=nexttoken;size;startcreationtime;states"
                 "&q-signature=572a5ef40893316252fe3c601618d44f4c9d5f14")
        r = call(srv, "GET", "/inventorytriggerjob",
                 {"Host": "examplebucket-1250000000.ci.ap-guangzhou.myqcloud.com", "Authorization": auth2},
                 params={"size": "100", "states": "Running,Submitted", "startCreationTime": "2022-06-27T15:23:10+0800",
                         "nextToken": "3"})
        # Past the signature check: the made-up nextToken "3" is then refused as an argument.
        assert r.status_code == 400 and code_of(r) == "InvalidArgument" and "nextToken" in r.text
        clock.advance(7300)  # past the key time's end
        r = call(srv, "GET", JOB_PATH, {"Host": "bucket-1250000000.ci.ap-beijing.myqcloud.com", "Authorization": auth})
        assert r.status_code == 403 and code_of(r) == "AccessDenied"
