"""The COS signature against the document's worked examples and the CI vectors, step by step."""

from __future__ import annotations

import hashlib

import pytest

from jobwatch.ci import signing

SID = "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q"
SKEY = "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz"
PATH_TX = "/exampleobject(腾讯云)"
COS_HOST = "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"


def _steps(method, path, params, headers, start, end):
    kt = signing.key_time(start, end)
    skey = signing.sign_key(SKEY, kt)
    hs = signing.http_string(method, path, params, headers)
    sts = signing.string_to_sign(kt, hs)
    return skey, hs, hashlib.sha1(hs.encode()).hexdigest(), signing.signature(skey, sts)


def test_cos_example_1_put_with_many_headers():
    headers = {
        "Date": "Thu, 16 May 2019 06:45:51 GMT", "Host": COS_HOST, "Content-Type": "text/plain",
        "Content-Length": "13", "Content-MD5": "mQ/fVh815F3k6TAUm8m0eg==", "x-cos-acl": "private",
        "x-cos-grant-read": 'uin="100000000011"',
    }
    skey, _, sha, sig = _steps("PUT", PATH_TX, {}, headers, 1557989151, 1557996351)
    assert skey == "eb2519b498b02ac213cb1f3d1a3d27a3b3c9bc5f"
    assert sha == "8b2751e77f43a0995d6e9eb9477f4b685cca4172"
    assert sig == "3b8851a11a569213c17ba8fa7dcf2abec6935172"
    auth = signing.parse_authorization(
        signing.authorization(SID, SKEY, "PUT", PATH_TX, {}, headers, 1557989151, 1557996351))
    assert ";".join(auth.header_list) == "content-length;content-md5;content-type;date;host;x-cos-acl;x-cos-grant-read"
    assert auth.signature == sig
    assert auth.url_param_list == []


def test_cos_example_2_get_with_params():
    params = {"response-content-type": "application/octet-stream", "response-cache-control": "max-age=600"}
    headers = {"Date": "Thu, 16 May 2019 06:55:53 GMT", "Host": COS_HOST}
    skey, hs, sha, sig = _steps("GET", PATH_TX, params, headers, 1557989753, 1557996953)
    assert skey == "937914bf490e9e8c189836aad2052e4feeb35eaf"
    assert hs.split("\n")[2] == ("response-cache-control=max-age%3D600"
                                 "&response-content-type=application%2Foctet-stream")
    assert sha == "54ecfe22f59d3514fdc764b87a32d8133ea611e6"
    assert sig == "01681b8c9d798a678e43b685a9f1bba0f6c0e012"
    auth = signing.parse_authorization(
        signing.authorization(SID, SKEY, "GET", PATH_TX, params, headers, 1557989753, 1557996953))
    assert ";".join(auth.url_param_list) == "response-cache-control;response-content-type"


def test_cos_example_3_older_page():
    headers = {"host": "bucket1-1254000000.cos.ap-beijing.myqcloud.com",
               "x-cos-content-sha1": "7b502c3a1f48c8609ae212cdfb639dee39673f5e", "x-cos-storage-class": "nearline"}
    skey, _, sha, sig = _steps("PUT", "/testfile2", {}, headers, 1417773892, 1417853898)
    assert skey == "d265642cf75792e70e35030fd14e73134094d673"
    assert sha == "e139a157c8e880c7ee269ea2919bfc6171b5e7dd"
    assert sig == "84f5be2187452d2fe276dbdca932143ef8161145"


def test_the_encoded_path_gives_a_different_hash():
    """The trap the reference names: the path in HttpString is the decoded one."""
    headers = {"Date": "Thu, 16 May 2019 06:55:53 GMT", "Host": COS_HOST}
    _, _, sha, _ = _steps("GET", "/exampleobject(%E8%85%BE%E8%AE%AF%E4%BA%91)", {}, headers, 1557989753, 1557996953)
    _, _, sha2, _ = _steps("GET", PATH_TX, {}, headers, 1557989753, 1557996953)
    assert sha != sha2


CI_KT = (1557989151, 1557996351)
CI_VECTORS = [
    ("GET", "bucket-1250000000.ci.ap-beijing.myqcloud.com", "/inventorytriggerjob/b3deffea2f84911ec9cb15254008618d9",
     {}, {}, "host", "", "cfe2fbb4012910a6045aa5d3ac8202956df387a9"),
    ("GET", "examplebucket-1250000000.ci.ap-guangzhou.myqcloud.com", "/inventorytriggerjob",
     {"size": "100", "states": "Running,Submitted", "startCreationTime": "2022-06-27T15:23:10+0800", "nextToken": "3"},
     {}, "host", "nexttoken;size;startcreationtime;states", "572a5ef40893316252fe3c601618d44f4c9d5f14"),
    ("GET", "bucket-1250000000.ci.ap-beijing.myqcloud.com", "/inventorytriggerjob/b3deffea2f84911ec9cb15254008618d9",
     {}, {"x-cos-security-token": "tok/en+with=chars"}, "host;x-cos-security-token", "",
     "cab1c62c3065e1b0da10ba287709ffd3a991172d"),
]


@pytest.mark.parametrize("method,host,path,params,extra,hl,pl,sig", CI_VECTORS)
def test_ci_vectors(method, host, path, params, extra, hl, pl, sig):
    auth = signing.authorization(SID, SKEY, method, path, params, {"host": host, **extra}, *CI_KT)
    assert auth == (f"q-sign-algorithm=sha1&q-ak={SID}&q-sign-time=1557989151;1557996351"
                    f"&q-key-time=1557989151;1557996351&q-header-list={hl}&q-url-param-list={pl}&q-signature={sig}")


def test_ci_first_vector_intermediate_values():
    host = "bucket-1250000000.ci.ap-beijing.myqcloud.com"
    hs = signing.http_string("GET", "/inventorytriggerjob/b3deffea2f84911ec9cb15254008618d9", {}, {"host": host})
    assert hs == f"get\n/inventorytriggerjob/b3deffea2f84911ec9cb15254008618d9\n\nhost={host}\n"
    kt = signing.key_time(*CI_KT)
    sts = signing.string_to_sign(kt, hs)
    assert sts == "sha1\n1557989151;1557996351\n21e35f281a9ca80b518170af1bc75c9206e2a6c7\n"
    skey = signing.sign_key(SKEY, kt)
    assert skey == "eb2519b498b02ac213cb1f3d1a3d27a3b3c9bc5f"
    assert signing.signature(skey, sts) == "cfe2fbb4012910a6045aa5d3ac8202956df387a9"


@pytest.mark.parametrize("raw,enc", [
    ("/", "%2F"), (";", "%3B"), ("=", "%3D"), ("+", "%2B"), (",", "%2C"), (":", "%3A"), (" ", "%20"),
    ("a-_.~Z9", "a-_.~Z9"), ("腾", "%E8%85%BE"), ("*", "%2A"),
])
def test_encoding_rules(raw, enc):
    assert signing.encode(raw) == enc


def test_parse_authorization_names_the_missing_field():
    with pytest.raises(ValueError, match="q-signature"):
        signing.parse_authorization("q-sign-algorithm=sha1&q-ak=x&q-sign-time=1;2&q-key-time=1;2"
                                    "&q-header-list=host&q-url-param-list=")
