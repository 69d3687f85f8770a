"""CI's callbacks through main_handler, as CI documents them: ``TaskFinish`` (a media/picture job, one child of a
batch) and ``WorkflowFinish`` (a workflow execution), XML or JSON, through API Gateway and the queue triggers.

A callback names a child, never a batch job: it must never create a tracked job, never poll
``/inventorytriggerjob/<child>``, never alert. Replaying a documented ``TaskFinish`` used to register the child
as a batch job, poll it, record it Vanished and send a "vanished" notice per processed object; ``WorkflowFinish``
was refused with 400. Unknown or unrelated callbacks are logged and acknowledged.
"""

from __future__ import annotations

import json

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION
from test_handler import _handler_logging, harness, load_event  # noqa: F401  (fixtures)

TASK_ID = "ja66d6204f86711ec9ca1073b78d316d3"  # the documented sample's JobId
RUN_ID = "i166ee19017b011eda8a5525400c540df"  # the documented sample's RunId


def _task_finish_apigw(bucket: str = TEST_BUCKET, region: str = TEST_REGION, *, job_id: str = TASK_ID,
                       state: str = "Success") -> dict:
    """events/callback_apigw.json (the documented TaskFinish XML), in the harness's bucket and region."""
    event = load_event("callback_apigw.json")
    body = event["body"].replace("test-123456789", bucket).replace("ap-chongqing", region)
    event["body"] = body.replace(TASK_ID, job_id).replace("<State>Success</State>", f"<State>{state}</State>")
    return event


def _workflow_finish_ckafka(bucket: str = TEST_BUCKET, *, run_id: str = RUN_ID, state: str = "Success") -> dict:
    """events/callback_ckafka.json (the documented WorkflowFinish JSON, no Response wrapper), in our bucket."""
    event = load_event("callback_ckafka.json")
    body = json.loads(event["Records"][0]["Ckafka"]["msgBody"])
    body["WorkflowExecution"].update(BucketId=bucket, RunId=run_id, State=state)
    event["Records"][0]["Ckafka"]["msgBody"] = json.dumps(body)
    return event


def _nothing_tracked_polled_or_told(h) -> None:
    assert h.store.list_jobs() == []
    assert [r.path for r in h.emulator.request_log if r.path.startswith("/inventorytriggerjob")] == []
    assert h.store.list_outbox(limit=100) == []


def test_documented_task_finish_through_api_gateway_is_never_a_batch_job(harness):
    resp = harness.invoke(_task_finish_apigw())
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 200 and body["registered"] == 0 and body["polled"] == 0
    assert body["callbacks"] == [{"child_id": TASK_ID, "event": "TaskFinish", "callback_state": "Success",
                                  "outcome": "unknown", "batches": [], "recorded_state": None}]
    _nothing_tracked_polled_or_told(harness)


def test_documented_task_finish_as_failed_is_never_an_alert(harness):
    resp = harness.invoke(_task_finish_apigw(state="Failed"))
    assert resp["statusCode"] == 200
    _nothing_tracked_polled_or_told(harness)


@pytest.mark.parametrize("wrap", [False, True])
def test_documented_workflow_finish_through_ckafka_is_acknowledged(harness, wrap):
    event = _workflow_finish_ckafka()
    if wrap:  # the XML form's Response wrapper, in JSON
        rec = event["Records"][0]["Ckafka"]
        rec["msgBody"] = json.dumps({"Response": json.loads(rec["msgBody"])})
    out = harness.invoke(event)
    assert out["ok"] and out["rejected"] == [] and out["registered"] == 0 and out["polled"] == 0
    assert [(c["child_id"], c["event"], c["outcome"]) for c in out["callbacks"]] == \
        [(RUN_ID, "WorkflowFinish", "unknown")]
    _nothing_tracked_polled_or_told(harness)


def test_task_finish_json_with_a_one_element_list_through_ckafka(harness):
    xml_event = _task_finish_apigw()
    detail = {"Code": "Success", "JobId": TASK_ID, "State": "Success", "Tag": "Transcode",
              "QueueId": "p2242ab62c7c94486915508540933a2c6",
              "Input": {"BucketId": TEST_BUCKET, "Object": "input/demo.mp4", "Region": TEST_REGION}}
    event = {"Records": [{"Ckafka": {"msgBody": json.dumps({"EventName": "TaskFinish", "JobsDetail": [detail]})}},
                         {"Ckafka": {"msgBody": xml_event["body"]}}]}
    out = harness.invoke(event)
    assert out["rejected"] == [] and [c["outcome"] for c in out["callbacks"]] == ["unknown", "unknown"]
    _nothing_tracked_polled_or_told(harness)


def test_a_callback_never_starts_tracking_even_in_an_unconfigured_bucket(harness):
    """Issue 19: the unauthenticated /callback route could start tracking any job (with a key, even in any
    bucket). Now no callback tracks anything, key or not, so there is nothing to refuse."""
    resp = harness.invoke(_task_finish_apigw("otherbucket-1250000000"))
    assert resp["statusCode"] == 200 and json.loads(resp["body"])["callbacks"][0]["outcome"] == "unknown"
    _nothing_tracked_polled_or_told(harness)


def test_another_event_name_is_logged_and_acknowledged(harness):
    event = _task_finish_apigw()
    event["body"] = event["body"].replace("TaskFinish", "TaskStart")
    resp = harness.invoke(event)
    assert resp["statusCode"] == 200 and "TaskStart" in json.loads(resp["body"])["ignored"]
    ck = {"Records": [{"Ckafka": {"msgBody": json.dumps({"EventName": "Whatever", "JobsDetail": {}})}}]}
    out = harness.invoke(ck)
    assert out["ok"] and out["rejected"] == [] and "Whatever" in out["ignored"][0]["ignored"]
    _nothing_tracked_polled_or_told(harness)


@pytest.mark.parametrize("body, words", [
    ("<Response><EventName>TaskFinish</EventName></Response>", ["JobsDetail"]),
    ("<Response><EventName>TaskFinish</EventName><JobsDetail><JobId>../x</JobId></JobsDetail></Response>",
     ["JobId", "../x"]),
    ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response>&x;</Response>',
     ["unreadable"]),
    ("<Response><EventName>WorkflowFinish</EventName><WorkflowExecution><RunId>i1</RunId>"
     "<State>Succ ess</State></WorkflowExecution></Response>", ["State"]),
    ("<Response>" + "<a>" * 40 + "</a>" * 40 + "</Response>", ["unreadable"]),
    ("x" * (64 * 1024 + 1), ["exceeds"]),
    ('{"EventName": "TaskFinish", "JobsDetail": ' + "[" * 20000 + "]" * 20000 + "}", ["neither XML nor JSON"]),
])
def test_hostile_callback_bodies_are_a_400_naming_the_problem(harness, body, words):
    event = _task_finish_apigw()
    event["body"] = body
    resp = harness.invoke(event)
    assert resp["statusCode"] == 400, resp
    reason = json.loads(resp["body"])["error"]
    assert all(w in reason for w in words), reason
    _nothing_tracked_polled_or_told(harness)
