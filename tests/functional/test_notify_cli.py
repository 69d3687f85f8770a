"""``jobwatch notify test`` through ``jobwatch.cli``, against two webhook receivers on 127.0.0.1 configured
by ``JOBWATCH_NOTIFY``: each sink's answer is printed, and the exit code says whether every sink took it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Iterator

import pytest
from fixtures.receivers import Receiver as WebhookReceiver

from jobwatch.cli import main

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "canary-token-in-url-7c1d"


class Receiver(WebhookReceiver):
    def spec(self, name: str) -> str:  # type: ignore[override]
        return super().spec(name, SECRET, f"token={TOKEN}")  # an extra query option stays in the URL


@pytest.fixture
def pair() -> Iterator[tuple[Receiver, Receiver]]:
    a, b = Receiver(), Receiver()
    yield a, b
    a.close()
    b.close()


@pytest.fixture(autouse=True)
def env(monkeypatch, sqlite_url, pair) -> Iterator[None]:
    a, b = pair
    monkeypatch.setenv("JOBWATCH_STORE_URL", sqlite_url)
    monkeypatch.setenv("JOBWATCH_NOTIFY", f"{a.spec('a')}\n{b.spec('b')}")
    monkeypatch.setenv("JOBWATCH_NOTIFY_TIMEOUT", "0.5")
    monkeypatch.setenv("JOBWATCH_LOG_LEVEL", "warning")
    yield


def verify(headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks, receiver side: HMAC-SHA256 over ``id.timestamp.body`` with the whsec_ key bytes."""
    key = base64.b64decode(SECRET.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(s.partition(",")[2], expected) for s in headers["webhook-signature"].split())


def lines(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.strip().splitlines())


def test_both_receivers_answer_ok_exit_0(pair, capsys):
    a, b = pair
    assert main(["notify", "test"]) == 0
    cap = capsys.readouterr()
    got = lines(cap.out)
    assert set(got) == {"webhook:a", "webhook:b"}
    assert all(v.startswith("ok (") and v.endswith(" ms)") for v in got.values()), got
    [ha], [hb] = a.hits, b.hits
    assert ha["headers"]["webhook-id"] == hb["headers"]["webhook-id"]  # one sample notice, sent to each
    for hit in (ha, hb):
        assert verify(hit["headers"], hit["raw"])
        payload = json.loads(hit["raw"])
        assert payload["kind"] == "test" and payload["id"] == hit["headers"]["webhook-id"]
        assert f"token={TOKEN}" in hit["path"]  # extra query options stay in the target URL
    assert TOKEN not in cap.out + cap.err and SECRET not in cap.out + cap.err
    assert main(["notify", "test"]) == 0  # a new key each time, so receivers do not drop it as a repeat
    assert a.hits[1]["headers"]["webhook-id"] != ha["headers"]["webhook-id"]


def test_one_failing_receiver_exit_1_and_each_answer_printed(pair, capsys):
    a, b = pair
    b.mode = "fail"
    assert main(["notify", "test"]) == 1
    cap = capsys.readouterr()
    got = lines(cap.out)
    assert got["webhook:a"].startswith("ok (")
    assert got["webhook:b"].startswith("FAILED: HTTP 500") and "receiver says no" in got["webhook:b"]
    assert len(a.hits) == len(b.hits) == 1
    assert TOKEN not in cap.out + cap.err and SECRET not in cap.out + cap.err


def test_hanging_receiver_times_out_without_holding_up_the_other(pair, capsys):
    a, b = pair
    b.mode = "hang"
    started = time.monotonic()
    assert main(["notify", "test"]) == 1
    elapsed = time.monotonic() - started
    b.release.set()
    got = lines(capsys.readouterr().out)
    assert got["webhook:a"].startswith("ok (")
    assert got["webhook:b"].startswith("FAILED: timed out after 0.5s")
    assert elapsed < 0.5 + 1.5, f"notify test took {elapsed:.2f}s with a 0.5 s timeout"


def test_bad_spec_exit_2_names_the_problem_without_the_secret(monkeypatch, pair, capsys):
    a, _ = pair
    monkeypatch.setenv("JOBWATCH_NOTIFY", a.spec("a") + "&rate=fast")
    assert main(["notify", "test"]) == 2
    cap = capsys.readouterr()
    assert "rate" in cap.err and "fast" in cap.err
    assert SECRET not in cap.err and TOKEN not in cap.err
    assert a.hits == []
