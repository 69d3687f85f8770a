"""One bad message never sinks the batch (issue 19, defect 2): a CKafka/TDMQ body of 1,500 ``[`` raised
RecursionError, a body with a lone surrogate raised UnicodeEncodeError, and the same deep JSON on API Gateway
``POST /jobs`` or ``/callback`` answered 500. Every parse of outside input is bounded in depth and size; each
failure is a rejected record (the rest of the batch goes on) or a 4xx. Through handler/index.py's main_handler
with a real App on SQLite and the emulator."""

from __future__ import annotations

import json

import pytest
from test_handler import API_KEY, harness, load_event, with_api_key  # noqa: F401  (fixture)

DEEP = "[" * 1500 + "]" * 1500
DEEP_OBJ = '{"a":' * 1500 + "1" + "}" * 1500
HOSTILE = [DEEP, DEEP_OBJ, '{"job_ids": ' + DEEP + "}", '"\udcff"', "\udcff", '{"job_id": "\\udcff"}',
           '{"bucket": "\udcff", "job_ids": ["b1"]}']


@pytest.mark.parametrize("body", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_queue_record_is_rejected_and_the_rest_of_the_batch_goes_on(harness, body):
    ids = harness.create(1)
    event = load_event("ckafka.json", ids)
    good = event["Records"][0]
    event["Records"] = [{"Ckafka": {**good["Ckafka"], "msgBody": body}}, good]
    out = harness.invoke(event)
    assert out["ok"] is True and out["registered"] >= 1, out  # the good record (the sample names two jobs)
    assert [r["index"] for r in out["rejected"]] == [0]


@pytest.mark.parametrize("body", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_tdmq_body_is_a_rejected_record(harness, body):
    event = load_event("tdmq_eventbridge.json", harness.create(1))
    event["data"]["msgBody"] = body
    out = harness.invoke(event)
    assert out["ok"] is True and out["registered"] == 0 and len(out["rejected"]) == 1, out


@pytest.mark.parametrize("body", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("sample", ["apigw_register.json", "callback_apigw.json"])
def test_a_hostile_api_gateway_body_is_a_400(harness, body, sample):
    ids = harness.create(1) if sample == "apigw_register.json" else ()
    event = with_api_key(load_event(sample, ids), API_KEY)
    event["body"] = body
    event.pop("isBase64Encoded", None)
    resp = harness.invoke(event)
    assert resp["statusCode"] == 400, resp
    assert "error" in json.loads(resp["body"])


def test_a_hostile_timer_message_still_ticks(harness):
    event = load_event("timer.json")
    event["Message"] = DEEP
    out = harness.invoke(event)
    assert out["ok"] is True and out["rejected"], out
