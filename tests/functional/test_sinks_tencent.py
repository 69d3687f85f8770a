"""EventBridge, TDMQ CMQ and SES sinks through the real SDK, pointed at a loopback API that verifies TC3
(``tests/fixtures/tencent_api.py``) and otherwise answers like the API, including error answers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from fixtures.tencent_api import FakeTencentApi

from jobwatch.core.errors import NotifyError
from jobwatch.core.models import JobKey, Notice, NoticeKind
from jobwatch.notify import parse_sinks, send_concurrently
from jobwatch.core.redact import Secret

SECRET_ID = "AKIDcanary0000000000000000000000000"
SECRET_KEY = "canary-secret-key-9a8b7c6d5e4f"
TOKEN = "canary-session-token-0f1e2d"
SERVICES = {"PutEvents": ("eb", "2021-04-16"), "SendCmqMsg": ("tdmq", "2020-02-17"),
            "PublishCmqMsg": ("tdmq", "2020-02-17"), "SendEmail": ("ses", "2020-10-02")}


@dataclass
class Creds:
    secret_id: Any
    secret_key: Any
    token: Any = None


def sink_answer(call: dict[str, Any]) -> dict[str, Any]:
    """What the services answer a successful call (EventBridge's PutEvents answers nothing more)."""
    return {"SendCmqMsg": {"Result": True, "MsgId": "msg-1"}, "PublishCmqMsg": {"Result": True, "MsgId": "m"},
            "SendEmail": {"MessageId": "qcloudses-30-4123414323-date-20210101094334-syNARhMTbKI1"},
            }.get(call["action"], {})


@pytest.fixture
def api():
    a = FakeTencentApi({SECRET_ID: SECRET_KEY})
    a.answer = sink_answer
    yield a
    a.close()


def make_notice() -> Notice:
    job = {"job_id": "b0123456789abcdef0123456789abcdef", "name": "nightly-transcode", "state": "Failed",
           "code": "InternalError", "message": "node failed", "started_at": "2025-06-15T10:00:05+00:00",
           "ended_at": "2025-06-15T11:02:10+00:00"}
    return Notice(idempotency_key="ap-guangzhou/media-1250000000/b0123456789abcdef0123456789abcdef/7",
                  kind=NoticeKind.TRANSITION, key=JobKey("ap-guangzhou", "media-1250000000", job["job_id"]),
                  from_state="Running", to_state="Failed",
                  observed_at=datetime(2025, 6, 15, 11, 2, 30, tzinfo=timezone.utc), job=job, tags={"team": "media"})


def one(spec: str, creds: Any = None, **kw: Any):
    [sink] = parse_sinks(spec, credentials=creds if creds is not None else Creds(SECRET_ID, Secret(SECRET_KEY)),
                         **kw)
    return sink


def test_verifier_rejects_a_wrong_key_with_the_api_error(api):
    sink = one(f"eventbridge://eb-abc?region=ap-guangzhou&endpoint={api.endpoint}",
               creds=Creds(SECRET_ID, "not-the-right-key-123"))
    with pytest.raises(NotifyError) as ei:
        sink.send(make_notice(), timeout=2)
    assert api.rejected == ["AuthFailure.SignatureFailure"] and api.calls == []
    assert ei.value.retryable is False and "AuthFailure.SignatureFailure" in ei.value.reason
    assert "not-the-right-key-123" not in str(ei.value)


def test_eventbridge_put_events(api):
    n = make_notice()
    sink = one(f"eventbridge://eb-7rbh5ehz?region=ap-shanghai&source=ci.jobwatch&endpoint={api.endpoint}")
    assert sink.name == "eventbridge"
    sink.send(n, timeout=2)
    [call] = api.calls
    assert (call["action"], call["service"], call["version"], call["region"]) == \
        ("PutEvents", "eb", "2021-04-16", "ap-shanghai")
    assert call["token"] is None
    params = call["params"]
    assert params["EventBusId"] == "eb-7rbh5ehz"
    [event] = params["EventList"]
    assert json.loads(event.pop("Data")) == n.payload()
    assert event == {"Source": "ci.jobwatch", "Type": "jobwatch:transition:Failed",
                     "Subject": "ap-guangzhou/media-1250000000/b0123456789abcdef0123456789abcdef",
                     "Time": 1749985350000, "Region": "ap-guangzhou", "Id": n.idempotency_key}


def test_temporary_credentials_from_a_provider_send_the_token(api):
    calls = []

    def provider() -> Creds:
        calls.append(1)
        return Creds(Secret(SECRET_ID), Secret(SECRET_KEY), Secret(TOKEN))

    sink = one(f"eventbridge://eb-1?region=ap-guangzhou&endpoint={api.endpoint}", creds=provider)
    sink.send(make_notice(), timeout=2)
    sink.send(make_notice(), timeout=2)
    assert [c["token"] for c in api.calls] == [TOKEN, TOKEN]
    assert len(calls) == 2  # asked at each send: rotated keys are picked up
    assert SECRET_KEY not in repr(sink) and TOKEN not in repr(sink)


@pytest.mark.parametrize("code,retryable", [
    ("RequestLimitExceeded", True), ("InternalError", True), ("ResourceUnavailable.EventBus", True),
    ("InvalidParameterValue.EventBusId", False), ("ResourceNotFound.EventBus", False),
    ("UnauthorizedOperation", False), ("AuthFailure.TokenFailure", True)])
def test_api_error_answers_become_notify_errors(api, code, retryable):
    api.answer = lambda call: {"Error": {"Code": code, "Message": f"{code} happened"}, "RequestId": "req-42"}
    sink = one(f"eventbridge://eb-1?region=ap-guangzhou&endpoint={api.endpoint}")
    with pytest.raises(NotifyError) as ei:
        sink.send(make_notice(), timeout=2)
    assert ei.value.retryable is retryable
    assert code in ei.value.reason and "req-42" in ei.value.reason
    assert SECRET_KEY not in str(ei.value)


def test_tdmq_queue_send(api):
    n = make_notice()
    sink = one(f"tdmq-queue://jobwatch-events?region=ap-guangzhou&endpoint={api.endpoint}")
    sink.send(n, timeout=2)
    [call] = api.calls
    assert (call["action"], call["service"], call["version"]) == ("SendCmqMsg", "tdmq", "2020-02-17")
    p = call["params"]
    assert p["QueueName"] == "jobwatch-events" and p["DelaySeconds"] == 0
    assert json.loads(p["MsgContent"]) == n.payload()


def test_tdmq_result_false_is_a_failure(api):
    api.answer = lambda call: {"Result": False, "MsgId": ""}
    with pytest.raises(NotifyError) as ei:
        one(f"tdmq-queue://q1?region=ap-guangzhou&endpoint={api.endpoint}").send(make_notice(), timeout=2)
    assert ei.value.retryable and "Result=false" in ei.value.reason


def test_tdmq_topic_publish_with_outcome_tag(api):
    n = make_notice()
    one(f"tdmq-topic://jobwatch-topic?region=ap-guangzhou&endpoint={api.endpoint}").send(n, timeout=2)
    [call] = api.calls
    assert call["action"] == "PublishCmqMsg"
    assert call["params"]["TopicName"] == "jobwatch-topic" and call["params"]["MsgTag"] == ["Failed"]
    assert json.loads(call["params"]["MsgContent"]) == n.payload()


def test_tdmq_rate_limit_is_20_per_second_by_default(api):
    now = [0.0]
    sink = one(f"tdmq-queue://q1?region=ap-guangzhou&endpoint={api.endpoint}", clock=lambda: now[0])
    results = send_concurrently([(make_notice(), sink)] * 21, timeout=2)
    assert sum(r.ok for r in results) == 20 and len(api.calls) == 20
    [limited] = [r for r in results if not r.ok]
    assert limited.retryable and limited.retry_after == pytest.approx(0.05)


def test_ses_send_email_template(api):
    n = make_notice()
    sink = one(f"ses://12345?from=CI%20Watch%20<noreply@mail.example.com>&to=a@example.com,b@example.org"
               f"&region=ap-hongkong&endpoint={api.endpoint}")
    sink.send(n, timeout=2)
    [call] = api.calls
    assert (call["action"], call["service"], call["version"], call["region"]) == \
        ("SendEmail", "ses", "2020-10-02", "ap-hongkong")
    p = call["params"]
    assert p["FromEmailAddress"] == "CI Watch <noreply@mail.example.com>"
    assert p["Destination"] == ["a@example.com", "b@example.org"] and p["TriggerType"] == 1
    assert "nightly-transcode" in p["Subject"]
    assert p["Template"]["TemplateID"] == 12345
    data = json.loads(p["Template"]["TemplateData"])
    assert data["job_id"] == n.key.job_id and data["from_state"] == "Running" and data["to_state"] == "Failed"
    assert data["ran_for"] == "1h 2m" and data["code"] == "InternalError" and "Bucket: media-1250000000" in data["text"]


def test_timeout_is_retryable(api):
    api.hang = True
    sink = one(f"ses://1?from=a@example.com&to=b@example.com&endpoint={api.endpoint}")
    t0 = time.monotonic()
    with pytest.raises(NotifyError) as ei:
        sink.send(make_notice(), timeout=0.3)
    assert time.monotonic() - t0 < 2.0 and ei.value.retryable


def test_no_credentials_is_permanent(api):
    [sink] = parse_sinks(f"eventbridge://eb-1?region=ap-guangzhou&endpoint={api.endpoint}")
    with pytest.raises(NotifyError) as ei:
        sink.send(make_notice(), timeout=1)
    assert not ei.value.retryable and api.calls == [] and api.rejected == []


def test_a_failing_provider_is_retryable(api):
    def provider():
        raise RuntimeError("sts down")

    with pytest.raises(NotifyError) as ei:
        one(f"eventbridge://eb-1?region=ap-guangzhou&endpoint={api.endpoint}", creds=provider).send(
            make_notice(), timeout=1)
    assert ei.value.retryable and api.calls == []
