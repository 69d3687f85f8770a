"""Transport: the client speaks HTTPS to the service's host with certificate verification on unless told
otherwise; a loopback HTTPS server with a self-signed certificate is refused by default, reached only with
verify=False, and turning verification off logs a warning."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading

import pytest
import requests
from rel_support import BUCKET, REGION, SECRET_ID, SECRET_KEY
from structlog.testing import capture_logs

from jobwatch.ci.client import CIClient
from jobwatch.app.config import load_settings
from jobwatch.ci.credentials import StaticProvider
from jobwatch.core.errors import TransportError


class Recorder(requests.adapters.HTTPAdapter):
    """A transport that records what would be sent, and sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, object]] = []

    def send(self, request, **kw):  # type: ignore[override]
        self.sent.append((request.url, kw.get("verify")))
        raise requests.exceptions.ConnectionError("recorded, not sent")


def test_default_is_https_to_the_service_host_with_verification():
    session = requests.Session()
    rec = Recorder()
    session.mount("https://", rec)
    session.mount("http://", rec)
    client = CIClient(StaticProvider(SECRET_ID, SECRET_KEY), session=session, max_attempts=1)
    with pytest.raises(TransportError):
        client.get_job(BUCKET, REGION, "b1")
    [(url, verify)] = rec.sent
    assert url == f"https://{BUCKET}.ci.{REGION}.myqcloud.com/inventorytriggerjob/b1"
    # True, or the CA bundle requests substitutes from REQUESTS_CA_BUNDLE: verification on either way
    assert verify is True or (isinstance(verify, str) and verify.endswith((".crt", ".pem"))), verify
    assert load_settings({}).verify_tls is True


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "k.pem"),
                    "-out", str(d / "c.pem"), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True,
                   capture_output=True)

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = b"<Response><RequestId>t</RequestId><NonExistJobIds>b1</NonExistJobIds></Response>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(d / "c.pem"), str(d / "k.pem"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_self_signed_certificate_is_refused_by_default(tls_server):
    with capture_logs() as logs:
        client = CIClient(StaticProvider(SECRET_ID, SECRET_KEY), endpoint=tls_server, max_attempts=1)
        with pytest.raises(TransportError) as info:
            client.get_job(BUCKET, REGION, "b1")
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) or "certificate" in str(info.value).lower()
    assert not [e for e in logs if e["event"] == "ci_tls_verify_disabled"]


def test_verification_off_is_explicit_and_logs_a_warning(tls_server):
    with capture_logs() as logs:
        client = CIClient(StaticProvider(SECRET_ID, SECRET_KEY), endpoint=tls_server, max_attempts=1, verify=False)
        res = client.get_job(BUCKET, REGION, "b1")
    assert res.non_exist_ids == ["b1"]
    warnings = [e for e in logs if e["event"] == "ci_tls_verify_disabled"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
