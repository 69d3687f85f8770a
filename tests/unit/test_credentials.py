"""Credential sources and the chain; STS AssumeRole against a loopback server; keys never shown."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from structlog.testing import capture_logs

from jobwatch.ci.credentials import (
    ChainProvider, Credentials, CredentialsError, CredentialsUnavailable, EnvProvider, NoCredentials,
    ProfileProvider, StaticProvider, StsRoleProvider, provider_from_settings,
)
from jobwatch.core.errors import ValidationError
from jobwatch.core.redact import Secret

KEY_CANARY = "CANARYKEY-d41d8cd98f00b204e9800998ecf8427e"
TOKEN_CANARY = "CANARYTOKEN-9e107d9d372bb6826bd81d3542a419d6"
TMP_KEY_CANARY = "CANARYTMPKEY-e4d909c290d0fb1ca068ffaddf22cbd0"
ROLE = "qcs::cam::uin/100000000001:roleName/jobwatch-reader"


def test_credentials_repr_hides_key_and_token():
    c = Credentials("AKIDabcdefgh123", Secret(KEY_CANARY), Secret(TOKEN_CANARY), 123.0)
    for text in (repr(c), str(c), f"{c}", repr([c]), repr(StaticProvider("AKIDabcdefgh123", KEY_CANARY))):
        assert KEY_CANARY not in text and TOKEN_CANARY not in text
    assert c.secret_key.reveal() == KEY_CANARY and c.token.reveal() == TOKEN_CANARY
    assert "AKIDab" in repr(c)


def test_plain_strings_are_wrapped():
    c = Credentials("AKIDabcdefgh123", KEY_CANARY, TOKEN_CANARY)  # type: ignore[arg-type]
    assert isinstance(c.secret_key, Secret) and isinstance(c.token, Secret)


def test_static_provider_refuses_padded_key_without_showing_it():
    with pytest.raises(CredentialsError) as ei:
        StaticProvider("AKIDabc", " " + KEY_CANARY)
    assert KEY_CANARY not in str(ei.value) and "secret key" in str(ei.value)


def test_env_order_jobwatch_then_scf_then_sdk():
    env = {"TENCENTCLOUD_SECRET_ID": "sdk-id", "TENCENTCLOUD_SECRET_KEY": "sdk-key-123",
           "TENCENTCLOUD_SECRETID": "scf-id", "TENCENTCLOUD_SECRETKEY": "scf-key-123",
           "TENCENTCLOUD_SESSIONTOKEN": TOKEN_CANARY,
           "JOBWATCH_SECRET_ID": "jw-id", "JOBWATCH_SECRET_KEY": "jw-key-123"}
    p = EnvProvider(env)
    c = p.get()
    assert c.secret_id == "jw-id" and c.token is None
    del env["JOBWATCH_SECRET_ID"], env["JOBWATCH_SECRET_KEY"]
    c = p.get()  # re-read on every call: SCF rotates the role's keys in place
    assert c.secret_id == "scf-id" and c.token.reveal() == TOKEN_CANARY
    env["TENCENTCLOUD_SESSIONTOKEN"] = "rotated-token-1"
    env["TENCENTCLOUD_SECRETKEY"] = "scf-key-456"
    c = p.get()
    assert c.token.reveal() == "rotated-token-1" and c.secret_key.reveal() == "scf-key-456"
    for k in ("TENCENTCLOUD_SECRETID", "TENCENTCLOUD_SECRETKEY", "TENCENTCLOUD_SESSIONTOKEN"):
        del env[k]
    c = p.get()
    assert c.secret_id == "sdk-id" and c.token is None


def test_env_half_pair_is_an_error_naming_the_variables():
    with pytest.raises(CredentialsError) as ei:
        EnvProvider({"TENCENTCLOUD_SECRETKEY": KEY_CANARY}).get()
    msg = str(ei.value)
    assert "TENCENTCLOUD_SECRETKEY is set but TENCENTCLOUD_SECRETID is not" in msg and KEY_CANARY not in msg
    assert not isinstance(ei.value, NoCredentials)


def test_env_empty_is_no_credentials():
    with pytest.raises(NoCredentials, match="JOBWATCH_SECRET_ID"):
        EnvProvider({"TENCENTCLOUD_SECRETID": ""}).get()


def test_env_defaults_to_the_live_process_environment(monkeypatch):
    for k in ("JOBWATCH_SECRET_ID", "JOBWATCH_SECRET_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TENCENTCLOUD_SECRETID", "live-id")
    monkeypatch.setenv("TENCENTCLOUD_SECRETKEY", "live-key-1")
    p = EnvProvider()
    assert p.get().secret_key.reveal() == "live-key-1"
    monkeypatch.setenv("TENCENTCLOUD_SECRETKEY", "live-key-2")
    assert p.get().secret_key.reveal() == "live-key-2"


def test_profile_file(tmp_path):
    f = tmp_path / "credentials"
    f.write_text(f"[default]\nsecret_id = prof-id\nsecret_key = {KEY_CANARY}\n\n[other]\nsecret_id=o\n"
                 "secret_key=o-key-123\ntoken=o-token-123\n")
    assert ProfileProvider(f).get().secret_id == "prof-id"
    other = ProfileProvider(str(f), profile="other").get()
    assert other.token.reveal() == "o-token-123"
    p = ProfileProvider(f)
    assert p.get().secret_key.reveal() == KEY_CANARY
    f.write_text("[default]\nsecret_id = prof-id-2\nsecret_key = k2-123456\n")
    os.utime(f, (1_000_000, 1_000_000))  # a different mtime, whatever the filesystem's resolution
    assert p.get().secret_id == "prof-id-2"


def test_profile_problems(tmp_path):
    with pytest.raises(NoCredentials, match="no file"):
        ProfileProvider(tmp_path / "absent").get()
    f = tmp_path / "c"
    f.write_text("[other]\nsecret_id=x\nsecret_key=y\n")
    with pytest.raises(NoCredentials, match=r"no \[default\] section"):
        ProfileProvider(f).get()
    f.write_text(f"[default]\nsecret_key={KEY_CANARY}\n")
    with pytest.raises(CredentialsError, match="secret_id is missing") as ei:
        ProfileProvider(f).get()
    assert KEY_CANARY not in str(ei.value)
    f.write_text(f"secret_key={KEY_CANARY}\n")
    with pytest.raises(CredentialsError, match="not a valid INI") as ei:
        ProfileProvider(f).get()
    assert KEY_CANARY not in str(ei.value)


def test_chain_falls_through_missing_sources_but_stops_at_a_broken_one(tmp_path):
    f = tmp_path / "c"
    f.write_text("[default]\nsecret_id=prof-id\nsecret_key=prof-key-1\n")
    chain = ChainProvider([EnvProvider({}), ProfileProvider(f)])
    assert chain.get().secret_id == "prof-id"
    broken = ChainProvider([EnvProvider({"JOBWATCH_SECRET_ID": "x"}), ProfileProvider(f)])
    with pytest.raises(CredentialsError, match="JOBWATCH_SECRET_KEY"):
        broken.get()
    with pytest.raises(NoCredentials) as ei:
        ChainProvider([EnvProvider({}), ProfileProvider(tmp_path / "none")]).get()
    assert "environment" in str(ei.value) and "profile" in str(ei.value)


# -- STS ----------------------------------------------------------------------------------------------------


class _Sts:
    """A loopback STS: answers AssumeRole with a fresh temporary key pair each time, or a scripted error."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.error: tuple[str, str] | None = None
        self.expired_time = 10_000
        sts = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sts.calls.append({"action": self.headers.get("X-TC-Action"), "auth": self.headers.get("Authorization"),
                                  "token": self.headers.get("X-TC-Token"), "body": json.loads(body)})
                n = len(sts.calls)
                if sts.error:
                    resp = {"Response": {"Error": {"Code": sts.error[0], "Message": sts.error[1]},
                                         "RequestId": f"sts-req-{n}"}}
                else:
                    resp = {"Response": {"Credentials": {"TmpSecretId": f"tmp-id-{n}",
                                                         "TmpSecretKey": f"{TMP_KEY_CANARY}-{n}",
                                                         "Token": f"{TOKEN_CANARY}-{n}"},
                                         "ExpiredTime": sts.expired_time, "Expiration": "-",
                                         "RequestId": f"sts-req-{n}"}}
                data = json.dumps(resp).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sts():
    s = _Sts()
    yield s
    s.close()


def test_sts_assume_role_and_refresh_before_expiry(sts):
    now = [1_000.0]
    base = StaticProvider("AKIDbase", KEY_CANARY, "base-token-123")
    p = StsRoleProvider(base, ROLE, "sess-1", 3600, sts.url, clock=lambda: now[0], margin=300)
    with capture_logs() as logs:
        c = p.get()
        assert (c.secret_id, c.secret_key.reveal(), c.expires_at) == ("tmp-id-1", f"{TMP_KEY_CANARY}-1", 10_000.0)
        assert c.token.reveal() == f"{TOKEN_CANARY}-1"
        call = sts.calls[0]
        assert call["action"] == "AssumeRole" and call["token"] == "base-token-123"
        assert call["body"] == {"RoleArn": ROLE, "RoleSessionName": "sess-1", "DurationSeconds": 3600}
        assert "AKIDbase" in call["auth"] and KEY_CANARY not in call["auth"]  # signed (TC3), key not sent
        now[0] = 9_699.0
        assert p.get().secret_id == "tmp-id-1" and len(sts.calls) == 1  # still more than the margin left
        now[0] = 9_700.0
        assert p.get().secret_id == "tmp-id-2" and len(sts.calls) == 2  # refreshed `margin` seconds early
    assert KEY_CANARY not in repr(p) and TMP_KEY_CANARY not in repr(p.get())
    assert not any(TMP_KEY_CANARY in repr(e) or KEY_CANARY in repr(e) for e in logs)


def test_sts_refusal_names_code_and_request_id_not_keys(sts):
    sts.error = ("AuthFailure.SignatureFailure", "The provided credentials could not be validated.")
    p = StsRoleProvider(StaticProvider("AKIDbase", KEY_CANARY), ROLE, endpoint=sts.url)
    with pytest.raises(CredentialsError) as ei:
        p.get()
    msg = str(ei.value)
    assert "AuthFailure.SignatureFailure" in msg and "sts-req-1" in msg and ROLE in msg
    assert KEY_CANARY not in msg and ei.value.__cause__ is None


def test_sts_unreachable_is_retryable():
    p = StsRoleProvider(StaticProvider("AKIDbase", KEY_CANARY), ROLE, endpoint="http://127.0.0.1:9", timeout=2)
    with pytest.raises(CredentialsUnavailable) as ei:
        p.get()
    assert ei.value.retryable and KEY_CANARY not in str(ei.value)


@pytest.mark.parametrize("kw,field", [
    ({"role_arn": "arn:aws:iam::1:role/x"}, "role_arn"),
    ({"duration": 60}, "role_duration"),
    ({"session_name": "x"}, "role_session_name"),
    ({"endpoint": "ftp://sts"}, "sts_endpoint"),
])
def test_sts_settings_validated(kw, field):
    args = {"role_arn": ROLE, **kw}
    with pytest.raises(ValidationError) as ei:
        StsRoleProvider(StaticProvider("a", "bbbbbbbb"), **args)
    assert ei.value.field == field


def test_provider_from_settings(tmp_path, sts):
    p = provider_from_settings(secret_id="AKIDx", secret_key=KEY_CANARY, session_token="t-123456")
    assert isinstance(p, StaticProvider) and p.get().token.reveal() == "t-123456"
    with pytest.raises(CredentialsError, match="secret_key is missing"):
        provider_from_settings(secret_id="AKIDx")
    f = tmp_path / "c"
    f.write_text("[default]\nsecret_id=prof-id\nsecret_key=prof-key-1\n")
    chain = provider_from_settings(profile_path=str(f), environ={})
    assert chain.get().secret_id == "prof-id"
    env = {"TENCENTCLOUD_SECRETID": "scf-id", "TENCENTCLOUD_SECRETKEY": "scf-key-1"}
    assert provider_from_settings(profile_path=str(f), environ=env).get().secret_id == "scf-id"
    role = provider_from_settings(environ=env, profile_path=str(f), role_arn=ROLE, role_session_name="s-x",
                                  role_duration=900, sts_endpoint=sts.url)
    assert role.get().secret_id == "tmp-id-1"
    assert sts.calls[0]["body"]["DurationSeconds"] == 900 and "scf-id" in sts.calls[0]["auth"]


def test_sdk_debug_logging_does_not_leak_keys(sts, caplog):
    """The SDK logs requests and responses at DEBUG (token header, TmpSecretKey); even with DEBUG on, nothing."""
    import logging

    logging.getLogger("tencentcloud_sdk_common").setLevel(logging.NOTSET)
    with caplog.at_level(logging.DEBUG):
        p = StsRoleProvider(StaticProvider("AKIDbase", KEY_CANARY, "base-token-123"), ROLE, endpoint=sts.url)
        assert p.get().secret_key.reveal().startswith(TMP_KEY_CANARY)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert TMP_KEY_CANARY not in text and TOKEN_CANARY not in text and "base-token-123" not in text
