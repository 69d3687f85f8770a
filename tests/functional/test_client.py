"""CIClient over real loopback HTTP.

Part one uses a small scripted server written here, which checks every signature with ``jobwatch.ci.signing`` and
answers what each test scripts (errors, resets, hangs, huge bodies). Part two runs the client against the
emulator (``tests/fixtures/emulator.py``), a server written by someone else from the same documents.
"""

from __future__ import annotations

import socket
import struct
import threading
import types
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from qcloud_cos import CosConfig, cos_auth
from structlog.testing import capture_logs

from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY
from jobwatch.ci import signing
from jobwatch.ci.client import CIClient, JobSpec
from jobwatch.ci.credentials import StaticProvider
from jobwatch.emulator import FaultRule
from jobwatch.core.errors import BadResponseError, CIError, TransportError, ValidationError
from jobwatch.core.models import JobInput, JobOperation, JobState, TimeInterval
from jobwatch.core.retry import Backoff
from jobwatch.ci.xmlparse import MAX_BODY_BYTES

SID = "AKIDclienttest0000000000000000000"
KEY = "CANARY-client-secret-key-3f2a9c"
TOKEN = "CANARY-client-token/+=-77e1"
BUCKET = "examplebucket-1250000000"
REGION = "ap-guangzhou"
HOST = f"{BUCKET}.ci.{REGION}.myqcloud.com"
JOB = "b3deffea2f84911ec9cb15254008618d9"
CST = timezone(timedelta(hours=8))

ONE_JOB = (f"<Response><RequestId>rid-ok</RequestId><JobsDetail><JobId>{JOB}</JobId><State>Running</State>"
           "<Type>Workflow</Type><Name>demo</Name><CreationTime>2022-06-27T15:23:10+0800</CreationTime>"
           "<StartTime>-</StartTime><EndTime>-</EndTime><Input><Prefix>input</Prefix></Input>"
           "<Operation><WorkflowIds>w1</WorkflowIds></Operation></JobsDetail></Response>").encode()


def error_body(code: str, rid: str = "rid-err") -> bytes:
    return (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>m</Message>"
            f"<RequestId>{rid}</RequestId><TraceId>t</TraceId></Error>").encode()


@dataclass
class Seen:
    method: str
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    sig_ok: bool
    auth: signing.ParsedAuthorization | None


@dataclass
class Reply:
    status: int = 200
    body: bytes = ONE_JOB
    headers: dict[str, str] = field(default_factory=dict)
    action: str | None = None  # "reset" | "hang" | "huge-chunked"


class ScriptedCI:
    """Answers requests from a script (then 200 ONE_JOB); records what it saw and whether the signature held."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        self.keys = {SID: KEY}
        self.release = threading.Event()
        ci = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1
            disable_nagle_algorithm = True

            def _any(self) -> None:
                split = urlsplit(self.path)
                path = unquote(split.path)
                params = parse_qsl(split.query, keep_blank_values=True)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok, parsed = ci.check(self.command, path, params, headers)
                ci.seen.append(Seen(self.command, path, params, headers, body, ok, parsed))
                reply = ci.script.pop(0) if ci.script else Reply()
                if reply.action == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if reply.action == "hang":
                    ci.release.wait(5)
                    self.close_connection = True
                    return
                self.send_response_only(reply.status)  # no automatic Date: some replies script their own
                self.send_header("Content-Type", "application/xml")
                self.send_header("x-ci-request-id", f"hdr-rid-{len(ci.seen)}")
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.action == "huge-chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"<a>" + b"x" * 65536 + b"</a>"
                    try:
                        for _ in range(MAX_BODY_BYTES // len(chunk) + 10):
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.write(b"0\r\n\r\n")
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                if "Content-Length" not in reply.headers:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                try:
                    self.wfile.write(reply.body)
                except OSError:
                    pass

            do_GET = do_PUT = do_POST = _any

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def check(self, method: str, path: str, params: list[tuple[str, str]],
              headers: dict[str, str]) -> tuple[bool, signing.ParsedAuthorization | None]:
        """The server side of the signature: every query parameter and ``host`` must be signed, and the
        signature recomputed from the request must match."""
        try:
            a = signing.parse_authorization(headers.get("authorization", ""))
        except ValueError:
            return False, None
        key = self.keys.get(a.secret_id)
        if key is None or "host" not in a.header_list:
            return False, a
        if sorted(signing.encode(k).lower() for k, _ in params) != a.url_param_list:
            return False, a
        signed = {h: headers.get(h, "") for h in a.header_list}
        start, end = (int(x) for x in a.key_time.split(";"))
        expected = signing.authorization(a.secret_id, key, method, path, dict(params), signed, start, end)
        return signing.parse_authorization(expected).signature == a.signature, a

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ci():
    s = ScriptedCI()
    yield s
    s.close()


class FakeTime:
    """Injected clock and sleep: sleeping moves the clock, nothing waits."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def make(ci: ScriptedCI, t: FakeTime | None = None, token: str | None = None, **kw) -> CIClient:
    t = t or FakeTime()
    kw.setdefault("backoff", Backoff(base=1.0, cap=8.0))
    kw.setdefault("read_timeout", 2.0)
    return CIClient(StaticProvider(SID, KEY, token), endpoint=ci.url, clock=t.clock, sleep=t.sleep,
                    rand=lambda: 1.0, **kw)


# -- signing and the request itself -------------------------------------------------------------------------


def test_get_job_signed_with_ci_host_and_key_time_window(ci):
    t = FakeTime(1_700_000_000.0)
    with make(ci, t, sign_window=300) as c:
        r = c.get_job(BUCKET, REGION, JOB)
    assert [j.job_id for j in r.jobs] == [JOB] and r.request_id == "rid-ok"
    (s,) = ci.seen
    assert s.sig_ok and s.method == "GET" and s.path == f"/inventorytriggerjob/{JOB}"
    assert s.headers["host"] == HOST  # connected to 127.0.0.1, signed and sent the CI host
    assert s.auth.key_time == "1699999940;1700000300" and s.auth.header_list == ["host"]
    assert "x-ci-security-token" not in s.headers


def test_token_header_sent_and_signed(ci):
    with make(ci, token=TOKEN) as c:
        c.get_job(BUCKET, REGION, JOB)
    s = ci.seen[0]
    assert s.sig_ok and s.headers["x-ci-security-token"] == TOKEN
    assert s.auth.header_list == ["host", "x-ci-security-token"]


def test_signature_matches_the_official_sdk_on_the_wire(ci):
    """The Authorization the client actually sent equals CosS3Auth's for the same request."""
    t = FakeTime(1_700_000_000.0)
    with make(ci, t, token=TOKEN, sign_window=600) as c:
        c.list_page(BUCKET, REGION, states=["Running", "Submitted"], size=7, next_token="a b/+", type="Workflow",
                    start_creation_time=datetime(2022, 6, 27, 15, 23, 10, tzinfo=CST))
    s = ci.seen[0]
    conf = CosConfig(Region=REGION, SecretId=SID, SecretKey=KEY)
    auth = cos_auth.CosS3Auth(conf, key=s.path, params=dict(s.params), expire=600)
    req = types.SimpleNamespace(method="GET", url=f"https://{HOST}{s.path}",
                                headers={"Host": HOST, "x-ci-security-token": TOKEN})
    with mock.patch.object(cos_auth, "time", types.SimpleNamespace(time=lambda: 1_700_000_000)):
        auth(req)
    assert s.headers["authorization"] == req.headers["Authorization"]
    assert dict(s.params) == {"states": "Running,Submitted", "size": "7", "nextToken": "a b/+", "type": "Workflow",
                              "startCreationTime": "2022-06-27T15:23:10+0800"}


def test_every_attempt_is_signed_afresh(ci):
    ci.script = [Reply(503, error_body("SlowDown")), Reply(503, error_body("SlowDown"))]
    t = FakeTime(1_700_000_000.0)
    with make(ci, t) as c:
        c.get_job(BUCKET, REGION, JOB)
    assert len(ci.seen) == 3 and all(s.sig_ok for s in ci.seen)
    starts = [int(s.auth.key_time.split(";")[0]) for s in ci.seen]
    assert starts == [1_699_999_940, 1_699_999_940 + 1, 1_699_999_940 + 3]  # after sleeps of 1 s and 2 s
    assert t.sleeps == [1.0, 2.0]


def test_wrong_key_is_refused_by_the_checking_server(ci):
    """Guards the server-side check itself: a wrong key must not pass."""
    c = CIClient(StaticProvider(SID, "some-other-key-000"), endpoint=ci.url, sleep=lambda s: None)
    ci.script = [Reply(403, error_body("SignatureDoesNotMatch"))]
    with pytest.raises(CIError):
        c.get_job(BUCKET, REGION, JOB)
    assert ci.seen[0].sig_ok is False


# -- retries ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code,status", [
    ("AccessDenied", 403), ("SignatureDoesNotMatch", 403), ("InvalidArgument", 400), ("NoSuchBucket", 404),
    ("InvalidAccessKeyId", 403),
])
def test_permanent_errors_are_not_retried(ci, code, status):
    ci.script = [Reply(status, error_body(code, "rid-perm"))]
    t = FakeTime()
    with make(ci, t) as c, pytest.raises(CIError) as ei:
        c.get_job(BUCKET, REGION, JOB)
    e = ei.value
    assert (e.code, e.status, e.request_id, e.retryable) == (code, status, "rid-perm", False)
    assert len(ci.seen) == 1 and t.sleeps == []


@pytest.mark.parametrize("status,code", [
    (503, "SlowDown"), (500, "InternalError"), (502, None), (429, None), (503, "ServiceUnavailable"),
    (403, "RequestTimeTooSkewed"),
])
def test_transient_errors_are_retried_then_succeed(ci, status, code):
    body = error_body(code) if code else b"<html>gateway</html>"
    ci.script = [Reply(status, body)]
    t = FakeTime()
    with make(ci, t) as c:
        assert c.get_job(BUCKET, REGION, JOB).jobs[0].job_id == JOB
    assert len(ci.seen) == 2 and t.sleeps == [1.0]


def test_gives_up_after_max_attempts_with_the_last_error(ci):
    ci.script = [Reply(500, error_body("InternalError", f"r{i}")) for i in range(5)]
    t = FakeTime()
    with make(ci, t, max_attempts=3) as c, pytest.raises(CIError) as ei:
        c.get_job(BUCKET, REGION, JOB)
    assert ei.value.request_id == "r2" and ei.value.retryable and len(ci.seen) == 3
    assert t.sleeps == [1.0, 2.0]  # full jitter at rand=1: base * 2**attempt


def test_retry_after_is_honoured(ci):
    ci.script = [Reply(503, error_body("SlowDown"), {"Retry-After": "6"})]
    t = FakeTime()
    with make(ci, t) as c:
        c.get_job(BUCKET, REGION, JOB)
    assert t.sleeps == [6.0]


def test_clock_skew_is_learnt_from_the_date_header(ci):
    server_now = 1_700_003_600  # the server is an hour ahead of our clock
    ci.script = [Reply(403, error_body("RequestTimeTooSkewed"), {"Date": formatdate(server_now, usegmt=True)})]
    t = FakeTime(1_700_000_000.0)
    with make(ci, t) as c:
        c.get_job(BUCKET, REGION, JOB)
    second = int(ci.seen[1].auth.key_time.split(";")[0])
    assert second == server_now - 60 + 1  # the server's idea of now, plus the 1 s our clock moved while sleeping


def test_connection_reset_is_retried(ci):
    ci.script = [Reply(action="reset")]
    with make(ci) as c:
        assert c.get_job(BUCKET, REGION, JOB).jobs
    assert len(ci.seen) == 2


def test_refused_connection_becomes_transport_error_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        t = FakeTime()
        c = CIClient(StaticProvider(SID, KEY, TOKEN), endpoint=f"http://127.0.0.1:{port}", clock=t.clock,
                     sleep=t.sleep, rand=lambda: 1.0, max_attempts=3)
        with pytest.raises(TransportError) as ei:
            c.get_job(BUCKET, REGION, JOB)
    assert len(t.sleeps) == 2 and ei.value.retryable
    assert ei.value.__context__ is None and ei.value.__cause__ is None  # no requests exception (with headers)
    assert KEY not in str(ei.value) and TOKEN not in str(ei.value)


def test_read_timeout_is_retried_for_a_query_but_not_for_a_create(ci):
    ci.script = [Reply(action="hang")]
    with make(ci, read_timeout=0.3) as c:
        assert c.get_job(BUCKET, REGION, JOB).jobs
    assert len(ci.seen) == 2
    ci.seen.clear()
    ci.script = [Reply(action="hang")]
    spec = JobSpec("demo", JobInput(prefix="in/"), JobOperation(tag="Transcode"))
    with make(ci, read_timeout=0.3) as c, pytest.raises(TransportError, match="read timeout"):
        c.create_job(BUCKET, REGION, spec)
    assert len(ci.seen) == 1


def test_create_is_resent_only_when_the_service_surely_did_not_act(ci):
    spec = JobSpec("demo", JobInput(prefix="in/"), JobOperation(tag="Transcode"))
    ci.script = [Reply(503, error_body("SlowDown")), Reply(200, ONE_JOB)]
    with make(ci) as c:
        assert c.create_job(BUCKET, REGION, spec).job_id == JOB
    assert len(ci.seen) == 2
    ci.seen.clear()
    ci.script = [Reply(500, error_body("InternalError"))]
    with make(ci) as c, pytest.raises(CIError, match="InternalError"):
        c.create_job(BUCKET, REGION, spec)
    assert len(ci.seen) == 1


# -- answers ------------------------------------------------------------------------------------------------


def test_non_existent_job_via_non_exist_job_ids_and_via_404(ci):
    ci.script = [Reply(200, f"<Response><RequestId>r1</RequestId><NonExistJobIds>{JOB}</NonExistJobIds>"
                            "</Response>".encode()),
                 Reply(404, error_body("NoSuchJob", "r404"))]
    with make(ci) as c:
        a = c.get_job(BUCKET, REGION, JOB)
        b = c.get_job(BUCKET, REGION, JOB)
    assert (a.jobs, a.non_exist_ids, a.request_id) == ([], [JOB], "r1")
    assert (b.jobs, b.non_exist_ids, b.request_id) == ([], [JOB], "r404")
    assert len(ci.seen) == 2  # NoSuchJob is not retried


def test_missing_bucket_404_stays_an_error(ci):
    ci.script = [Reply(404, error_body("NoSuchBucket"))]
    with make(ci) as c, pytest.raises(CIError, match="NoSuchBucket"):
        c.get_job(BUCKET, REGION, JOB)


def test_not_xml_answer_is_retried_then_a_bad_response_error(ci):
    ci.script = [Reply(200, b"<html>proxy</html"), Reply(200, b"{}")]
    with make(ci, max_attempts=2) as c, pytest.raises(BadResponseError, match="not well-formed") as ei:
        c.get_job(BUCKET, REGION, JOB)
    assert ei.value.status == 200 and len(ci.seen) == 2


@pytest.mark.parametrize("reply", [
    Reply(200, b"<Response/>", {"Content-Length": str(MAX_BODY_BYTES + 1)}),
    Reply(200, b"", action="huge-chunked"),
])
def test_oversized_answers_are_cut_off(ci, reply):
    ci.script = [reply]
    with make(ci, max_attempts=1) as c, pytest.raises(BadResponseError, match="exceeds"):
        c.get_job(BUCKET, REGION, JOB)


def test_list_jobs_follows_next_token_with_all_filters(ci):
    page = ("<Response><RequestId>p{n}</RequestId><JobsDetail><JobId>j{n}</JobId><State>Success</State>"
            "</JobsDetail><NextToken>{tok}</NextToken></Response>")
    ci.script = [Reply(200, page.format(n=1, tok="t1").encode()), Reply(200, page.format(n=2, tok="t2").encode()),
                 Reply(200, page.format(n=3, tok="").encode())]
    start = datetime(2022, 6, 27, 15, 23, 10, tzinfo=CST)
    with make(ci) as c:
        jobs = list(c.list_jobs(BUCKET, REGION, states=[JobState.RUNNING, "Failed"], type="Job",
                                order_by_time="Asc", start_creation_time=start, end_creation_time=start,
                                workflow_id="w1", job_id="j9", name="转码 demo", size=1))
    assert [j.job_id for j in jobs] == ["j1", "j2", "j3"]
    assert all(s.sig_ok for s in ci.seen)
    first = dict(ci.seen[0].params)
    assert first == {"size": "1", "states": "Running,Failed", "type": "Job", "orderByTime": "Asc",
                     "startCreationTime": "2022-06-27T15:23:10+0800", "endCreationTime": "2022-06-27T15:23:10+0800",
                     "workflowId": "w1", "jobId": "j9", "name": "转码 demo"}
    assert [dict(s.params).get("nextToken") for s in ci.seen] == [None, "t1", "t2"]


def test_list_stops_on_a_repeated_token(ci):
    page = b"<Response><JobsDetail><JobId>j1</JobId><State>Success</State></JobsDetail><NextToken>same</NextToken></Response>"
    ci.script = [Reply(200, page)] * 3
    with make(ci) as c:
        assert len(list(c.list_jobs(BUCKET, REGION, type="Workflow"))) == 2
    assert len(ci.seen) == 2


def test_create_sends_a_signed_xml_body(ci):
    spec = JobSpec("转码-1", JobInput(manifest="cos://m.json"),
                   JobOperation(tag="Transcode", queue_id="p1", template_id="t1",
                                output={"Region": "ap-chongqing", "Bucket": "out-1250000000", "Object": "o/${x}.mp4"},
                                time_interval=TimeInterval(datetime(2022, 2, 1, 12, tzinfo=CST), None),
                                callback="https://cb.example/x", user_data="u", job_level="0"))
    with make(ci, token=TOKEN) as c:
        job = c.create_job(BUCKET, REGION, spec)
    assert job.job_id == JOB
    s = ci.seen[0]
    assert s.method == "POST" and s.path == "/inventorytriggerjob" and s.sig_ok
    assert s.auth.header_list == ["content-length", "content-md5", "content-type", "host", "x-ci-security-token"]
    from jobwatch.ci.xmlparse import parse_document, element_to_value

    sent = element_to_value(parse_document(s.body))
    assert sent["Name"] == "转码-1" and sent["Type"] == "Job" and sent["Input"] == {"Manifest": "cos://m.json"}
    op = sent["Operation"]
    assert op["Tag"] == "Transcode" and op["QueueId"] == "p1" and op["JobParam"] == {"TemplateId": "t1"}
    assert op["TimeInterval"] == {"Start": "2022-02-01T12:00:00+0800"} and op["Output"]["Object"] == "o/${x}.mp4"


def test_cancel_is_a_signed_put_with_the_cancel_sub_resource(ci):
    ci.script = [Reply(200, b"")]
    with make(ci) as c:
        assert c.cancel_job(BUCKET, REGION, JOB) == "hdr-rid-1"
    s = ci.seen[0]
    assert (s.method, s.path, s.params, s.sig_ok) == ("PUT", f"/inventorytriggerjob/{JOB}", [("cancel", "")], True)
    assert s.auth.url_param_list == ["cancel"]


# -- input, secrets, settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("call,field", [
    (lambda c: c.get_job("Bad_Bucket", REGION, JOB), "bucket"),
    (lambda c: c.get_job(BUCKET, "ap-beijing.evil.com", JOB), "region"),
    (lambda c: c.get_job(BUCKET, REGION, "../x"), "job_id"),
    (lambda c: c.cancel_job(BUCKET, REGION, "a?b"), "job_id"),
    (lambda c: c.list_page(BUCKET, REGION, size=101), "size"),
    (lambda c: c.list_page(BUCKET, REGION, states=["Done"]), "states"),
    (lambda c: c.list_page(BUCKET, REGION, type="Other"), "type"),
    (lambda c: c.list_page(BUCKET, REGION, start_creation_time=datetime(2022, 1, 1)), "start_creation_time"),
    (lambda c: c.list_page(BUCKET, REGION, order_by_time="desc"), "order_by_time"),
])
def test_bad_input_refused_before_any_request(ci, call, field):
    with make(ci) as c, pytest.raises(ValidationError) as ei:
        call(c)
    assert ei.value.field == field and isinstance(ei.value, ValueError)
    assert ci.seen == []


@pytest.mark.parametrize("kw,field", [
    ({"name": "bad name!", "input": JobInput(prefix="p")}, "name"),
    ({"name": "n", "input": JobInput()}, "input"),
    ({"name": "n", "input": JobInput(prefix="p"), "type": "Workflow"}, "operation.workflow_ids"),
    ({"name": "n", "input": JobInput(prefix="p")}, "operation.tag"),
])
def test_job_spec_validation(kw, field):
    with pytest.raises(ValidationError) as ei:
        JobSpec(**kw)
    assert ei.value.field == field


def test_secrets_never_in_errors_or_logs(ci):
    ci.script = [Reply(503, error_body("SlowDown")), Reply(403, error_body("AccessDenied"))]
    with capture_logs() as logs, make(ci, token=TOKEN) as c, pytest.raises(CIError) as ei:
        c.get_job(BUCKET, REGION, JOB)
    texts = [str(ei.value), repr(ei.value), repr(c), *(repr(e) for e in logs)]
    assert any(e["event"] == "ci_retry" for e in logs)
    for text in texts:
        assert KEY not in text and TOKEN not in text and "q-signature" not in text


def test_insecure_tls_logs_a_warning():
    with capture_logs() as logs:
        CIClient(StaticProvider(SID, KEY), verify=False).close()
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["ci_tls_verify_disabled"]


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8787", "ftp://x", "http://h/path"])
def test_bad_endpoint(endpoint):
    with pytest.raises(ValidationError, match="endpoint"):
        CIClient(StaticProvider(SID, KEY), endpoint=endpoint)


def test_default_url_is_https_on_the_ci_host():
    """Without an endpoint the client goes to https://<bucket>.ci.<region>.myqcloud.com; a session that records
    instead of sending shows it (no network)."""
    import requests

    class Recorder(requests.Session):
        def request(self, method, url, **kw):  # type: ignore[override]
            self.seen = (method, url, kw["headers"]["Host"], kw["timeout"])
            raise requests.exceptions.ConnectionError("recorded")

    s = Recorder()
    c = CIClient(StaticProvider(SID, KEY), session=s, max_attempts=1, connect_timeout=1.5, read_timeout=7)
    with pytest.raises(TransportError):
        c.get_job(BUCKET, REGION, JOB)
    assert s.seen == ("GET", f"https://{HOST}/inventorytriggerjob/{JOB}", HOST, (1.5, 7))


# -- against the emulator -----------------------------------------------------------------------------------


def emu_client(emulator, key: str = TEST_SECRET_KEY, sid: str = TEST_SECRET_ID, token: str | None = None,
               **kw) -> CIClient:
    kw.setdefault("sleep", lambda s: None)
    return CIClient(StaticProvider(sid, key, token), endpoint=emulator.url, **kw)


def test_emulator_query_list_create_cancel(emulator, emulator_clock):
    wf = emulator.create_job(TEST_BUCKET, name="wf", type="Workflow")
    with emu_client(emulator) as c:
        r = c.get_job(TEST_BUCKET, TEST_REGION, wf)
        assert r.jobs[0].job_id == wf and r.jobs[0].type == "Workflow" and r.request_id
        assert r.jobs[0].state is JobState.SUBMITTED
        spec = JobSpec("indep", JobInput(prefix="in/"),
                       JobOperation(tag="Transcode", queue_id="p893bcda225bf4945a378da6662e81a89",
                                    template_id="t1460606b9752148c4ab182f55163ba7cd",
                                    output={"Region": TEST_REGION, "Bucket": TEST_BUCKET, "Object": "o.mp4"}))
        created = c.create_job(TEST_BUCKET, TEST_REGION, spec)
        assert created.type == "Job" and created.state is JobState.SUBMITTED and created.operation.tag == "Transcode"
        created_wf = c.create_job(TEST_BUCKET, TEST_REGION, JobSpec(
            "wf2", JobInput(prefix="x/"), JobOperation(workflow_ids=("w7476ff3564ee45b7b490d64bccaba6cc",)),
            type="Workflow"))
        assert created_wf.operation.workflow_ids == ("w7476ff3564ee45b7b490d64bccaba6cc",)
        emulator_clock.advance(10)
        assert c.get_job(TEST_BUCKET, TEST_REGION, wf).jobs[0].state is JobState.RUNNING
        assert c.cancel_job(TEST_BUCKET, TEST_REGION, created.job_id)
        assert c.get_job(TEST_BUCKET, TEST_REGION, created.job_id).jobs[0].state is JobState.CANCEL
        ids = {j.job_id for j in c.list_jobs(TEST_BUCKET, TEST_REGION, size=1)}
        assert ids == {wf, created.job_id, created_wf.job_id}
        only_jobs = {j.job_id for j in c.list_jobs(TEST_BUCKET, TEST_REGION, type="Job")}
        assert only_jobs == {created.job_id}
        cancelled = {j.job_id for j in c.list_jobs(TEST_BUCKET, TEST_REGION, states=["Cancel"])}
        assert cancelled == {created.job_id}


def test_emulator_unknown_job_is_non_existent(emulator):
    with emu_client(emulator) as c:
        r = c.get_job(TEST_BUCKET, TEST_REGION, "b" + "0" * 32)
    assert r.jobs == [] and r.non_exist_ids == ["b" + "0" * 32]


def test_emulator_rejects_a_wrong_key_without_retry(emulator):
    wf = emulator.create_job(TEST_BUCKET)
    emulator.clear_log()
    sleeps: list[float] = []
    with emu_client(emulator, key="not-the-key-000000", sleep=sleeps.append) as c, pytest.raises(CIError) as ei:
        c.get_job(TEST_BUCKET, TEST_REGION, wf)
    assert ei.value.code == "SignatureDoesNotMatch" and ei.value.status == 403 and ei.value.request_id
    assert len(emulator.request_log) == 1 and sleeps == []


def test_emulator_accepts_temporary_keys_with_the_token(emulator):
    wf = emulator.create_job(TEST_BUCKET)
    tmp_id, tmp_key, token = emulator.issue_token(TEST_SECRET_ID)
    with emu_client(emulator, key=tmp_key, sid=tmp_id, token=token) as c:
        assert c.get_job(TEST_BUCKET, TEST_REGION, wf).jobs[0].job_id == wf
    with emu_client(emulator, key=tmp_key, sid=tmp_id, token=token[:-4] + "AAAA") as c, pytest.raises(CIError):
        c.get_job(TEST_BUCKET, TEST_REGION, wf)


def test_emulator_faults_are_ridden_out(emulator):
    wf = emulator.create_job(TEST_BUCKET)
    emulator.set_faults([FaultRule("status", status=503, code="SlowDown", times=2),
                         FaultRule("not_xml", times=1), FaultRule("reset", times=1)])
    sleeps: list[float] = []
    with emu_client(emulator, sleep=sleeps.append, max_attempts=6) as c:
        assert c.get_job(TEST_BUCKET, TEST_REGION, wf).jobs[0].job_id == wf
    assert len(sleeps) >= 2 and len(emulator.request_log) == len(sleeps) + 1


@pytest.fixture
def clean_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_proxy_from_the_environment_is_used_and_read_once(ci, clean_proxy_env):
    clean_proxy_env.setenv("HTTP_PROXY", ci.url)  # the scripted server plays the proxy
    # The endpoint's host does not resolve: an answer can only have come through the proxy.
    c = CIClient(StaticProvider(SID, KEY), endpoint="http://ci-direct.invalid:9", max_attempts=1)
    assert c.get_job(BUCKET, REGION, JOB).jobs[0].job_id == JOB
    assert ci.seen[-1].path == f"/inventorytriggerjob/{JOB}" and ci.seen[-1].sig_ok
    clean_proxy_env.delenv("HTTP_PROXY")  # a function's environment is fixed: read when first needed, kept
    assert c.get_job(BUCKET, REGION, JOB).jobs[0].job_id == JOB and len(ci.seen) == 2


def test_no_proxy_from_the_environment_is_respected(ci, emulator, clean_proxy_env):
    clean_proxy_env.setenv("HTTP_PROXY", ci.url)
    clean_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    job_id = emulator.create_job(TEST_BUCKET, state="Running")
    c = CIClient(StaticProvider(TEST_SECRET_ID, TEST_SECRET_KEY), endpoint=emulator.url, max_attempts=1)
    assert c.get_job(TEST_BUCKET, TEST_REGION, job_id).jobs[0].state is JobState.RUNNING
    assert ci.seen == []  # straight to the emulator, not through the proxy


def test_request_carries_exactly_our_headers(ci):
    """Our own session hands requests straight to its adapter: nothing of requests' session defaults (cookies,
    its User-Agent, gzip) rides along, and what we send is what we signed plus who we are."""
    from jobwatch.ci.client import DEFAULT_USER_AGENT

    c = CIClient(StaticProvider(SID, KEY), endpoint=ci.url, max_attempts=1)
    c.get_job(BUCKET, REGION, JOB)
    c.create_job(BUCKET, REGION, JobSpec("demo", JobInput(prefix="in/"), JobOperation(tag="Transcode")))
    get, put = ci.seen
    assert get.sig_ok and put.sig_ok
    assert get.headers["user-agent"] == DEFAULT_USER_AGENT and get.headers["accept"] == "application/xml"
    assert get.headers["host"] == HOST and "cookie" not in get.headers
    assert get.headers.get("accept-encoding", "identity") == "identity"
    assert put.headers["content-length"] == str(len(put.body)) and put.headers["content-type"] == "application/xml"
