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


# --- a callback for a child we have recorded: the batch's progress moves at once ------------------------------

def _callback_for(child, *, state: str | None = None) -> dict:
    """The documented TaskFinish, through API Gateway, for one of the emulator's children."""
    event = load_event("callback_apigw.json")
    event["body"] = (event["body"].replace("test-123456789", TEST_BUCKET).replace("ap-chongqing", TEST_REGION)
                     .replace(TASK_ID, child.child_id)
                     .replace("p2242ab62c7c94486915508540933a2c6", child.queue_id)
                     .replace("<Tag>StreamExtract</Tag>", f"<Tag>{child.tag}</Tag>")
                     .replace("<State>Success</State>", f"<State>{state or child.state}</State>"))
    return event


def _recorded_running_child_that_ended(h, key, *, failed: bool | None = None):
    """A child the last refresh recorded unfinished that has ended on the emulator since, found within a few
    seconds of that refresh (less than JOBWATCH_POLL_MIN_SECONDS: the callback prompts no list refresh)."""
    for _ in range(8):
        h.clock.advance(1)
        views = h.emulator.child_views(TEST_BUCKET, key.job_id)
        known = h.store.known_children(key, [c.child_id for c in views])
        for c in views:
            if known.get(c.child_id) in ("Submitted", "Running") and c.state in ("Success", "Failed") \
                    and (failed is None or (c.state == "Failed") == failed):
                return c
    raise AssertionError("no recorded unfinished child ended within 8 s")


def _cli_progress(capsys, key) -> tuple[dict, dict]:
    """What `jobwatch status --json` says of the batch's progress and `jobwatch children --json` of its children."""
    from jobwatch.cli import main

    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    (rec,) = [r for r in json.loads(capsys.readouterr().out) if r["job_id"] == key.job_id]
    assert main(["children", key.job_id, "--json", "--limit", "1000"]) == 0
    children = {c["child_id"]: c for c in json.loads(capsys.readouterr().out)}
    return rec["progress"], children


def _running_batch(h, children: int = 60, failure_rate: float = 0.0, running_for: float = 30):
    from jobwatch.core.models import JobKey

    batch = h.emulator.create_job(TEST_BUCKET, type="Job", children=children, child_failure_rate=failure_rate)
    h.invoke({"action": "track", "job_ids": [batch]})
    h.clock.advance(5 + running_for)  # Running: some children exist, many of them unfinished
    h.invoke(load_event("timer.json"))
    return JobKey(TEST_REGION, TEST_BUCKET, batch)


def test_a_callback_for_a_recorded_child_moves_the_progress_at_once_and_only_once(harness, capsys):
    """A TaskFinish for a child the batch's last refresh recorded Running: before, its count waited for the next
    tick (the callback only marked the batch, being within JOBWATCH_POLL_MIN_SECONDS of its last refresh). Now
    the child is read back with our credentials (GET /jobs/<id>: an unauthenticated body is never trusted) and
    the child and the batch's counts are written in one transaction, at once; the same callback again (CI
    retries, or a queue redelivers) counts nothing."""
    h = harness
    key = _running_batch(h)
    before = h.app.progress(key)
    child = _recorded_running_child_that_ended(h, key, failed=False)
    lists_before = sum(1 for r in h.emulator.request_log if r.path == "/jobs")
    resp = h.invoke(_callback_for(child))
    assert resp["statusCode"] == 200
    (cb,) = json.loads(resp["body"])["callbacks"]
    assert (cb["outcome"], cb["recorded_state"], cb["batches"]) == ("recorded", "Success", [str(key)])
    after = h.app.progress(key)
    assert (after.total, after.succeeded, after.running + after.waiting) == \
        (before.total, before.succeeded + 1, before.running + before.waiting - 1)
    progress, children = _cli_progress(capsys, key)
    assert (progress["total"], progress["succeeded"]) == (after.total, after.succeeded)
    assert children[child.child_id]["state"] == "Success" and children[child.child_id]["ended_at"]
    # read back by ID, not by listing the batch again; never polled as a batch job
    assert sum(1 for r in h.emulator.request_log if r.path == "/jobs") == lists_before
    assert [r.path for r in h.emulator.request_log if r.path == f"/jobs/{child.child_id}"] == [f"/jobs/{child.child_id}"]
    assert not [r for r in h.emulator.request_log if r.path == f"/inventorytriggerjob/{child.child_id}"]

    for again in (h.invoke(_callback_for(child)),
                  h.invoke({"Records": [{"Ckafka": {"msgBody": _callback_for(child)["body"]}}]})):
        cbs = json.loads(again["body"])["callbacks"] if "body" in again else again["callbacks"]
        assert [c["outcome"] for c in cbs] == ["already_final"]
    assert h.app.progress(key) == after
    _counts_match_rows(h, key)


def test_a_failed_child_is_recorded_before_anyone_is_told(harness):
    """The outbox rule: the failed child and its count are in the store, in the transaction that queued the
    children_failed notice, before the notice is delivered; the notice carries that count."""
    h = harness
    key = _running_batch(h, children=100, failure_rate=0.3, running_for=6)
    before = h.app.progress(key)
    assert before.failed == 0 and before.running > 0  # no failed child seen yet (the emulator is seeded)
    child = _recorded_running_child_that_ended(h, key, failed=True)
    keys_before = {e.notice.idempotency_key for e in h.store.list_outbox(limit=1000)}
    resp = h.invoke(_callback_for(child))
    (cb,) = json.loads(resp["body"])["callbacks"]
    assert (cb["outcome"], cb["recorded_state"]) == ("recorded", "Failed")
    after = h.app.progress(key)
    assert after.failed == before.failed + 1
    (failed,) = h.store.list_children(key, failed_only=True, limit=1000)
    assert (failed.child_id, failed.code) == (child.child_id, child.code)
    # the first failed child is told, with the count and the child the same transaction recorded
    (entry,) = [e for e in h.store.list_outbox(limit=1000) if e.notice.idempotency_key not in keys_before]
    assert entry.notice.idempotency_key.endswith("#children_failed:first")
    payload = entry.notice.payload()
    assert payload["progress"]["failed"] == 1 and [s["child_id"] for s in payload["failed_sample"]] == [child.child_id]
    assert entry.status == "done"  # and delivered by the same invocation, after it was written


def test_a_callback_the_service_contradicts_changes_nothing(harness):
    """Unauthenticated: a body claiming Success for a child CI still runs is read back and not believed."""
    h = harness
    key = _running_batch(h)
    views = h.emulator.child_views(TEST_BUCKET, key.job_id)
    known = h.store.known_children(key, [c.child_id for c in views])
    running = next(c for c in views if c.state == "Running" and known.get(c.child_id) == "Running")
    before = h.app.progress(key)
    resp = h.invoke(_callback_for(running, state="Success"))
    (cb,) = json.loads(resp["body"])["callbacks"]
    assert (cb["outcome"], cb["recorded_state"]) == ("unchanged", "Running")
    assert h.app.progress(key) == before


def _counts_match_rows(h, key) -> None:
    """No child counted twice or lost: the batch's counts are exactly its recorded children's states."""
    from collections import Counter

    rows = Counter(c.state for c in h.store.list_children(key, limit=100_000))
    p = h.app.progress(key)
    assert (p.total, p.succeeded, p.failed) == (sum(rows.values()), rows["Success"], rows["Failed"]), (p, rows)
    assert p.running + p.waiting == sum(n for st, n in rows.items() if st not in ("Success", "Failed", "Cancel"))


def test_a_callback_while_a_refresh_holds_the_batch_is_left_to_it_and_counted_once(harness):
    """The lease rule: a refresh under way (another instance) holds the batch; the callback writes nothing then
    (it would race the refresh's counts), marks the batch, and the next refresh counts the child once."""
    h = harness
    key = _running_batch(h)
    child = _recorded_running_child_that_ended(h, key, failed=False)
    before = h.app.progress(key)
    (work,) = h.store.claim_children("another-instance", h.clock.now(), 60, 1, keys=[key], due_only=False)
    resp = h.invoke(_callback_for(child))
    (cb,) = json.loads(resp["body"])["callbacks"]
    assert (cb["outcome"], cb["recorded_state"]) == ("known_child", "Running")
    assert h.app.progress(key) == before
    h.store.release_children([key], "another-instance")
    h.clock.advance(10)
    h.invoke(load_event("timer.json"))
    assert h.store.known_children(key, [child.child_id]) == {child.child_id: "Success"}
    _counts_match_rows(h, key)
    again = json.loads(h.invoke(_callback_for(child))["body"])["callbacks"]
    assert [c["outcome"] for c in again] == ["already_final"]
    _counts_match_rows(h, key)


def test_workflow_finish_through_ckafka_reads_the_execution_back_and_counts_it_at_once(harness):
    from jobwatch.core.models import JobKey

    h = harness
    batch = h.emulator.create_job(TEST_BUCKET, type="Workflow", children=40, child_failure_rate=0.2)
    h.invoke({"action": "track", "job_ids": [batch]})
    h.clock.advance(5 + 20)
    h.invoke(load_event("timer.json"))
    key = JobKey(TEST_REGION, TEST_BUCKET, batch)
    run = _recorded_running_child_that_ended(h, key)
    before = h.app.progress(key)
    out = h.invoke(_workflow_finish_ckafka(run_id=run.child_id, state=run.state))
    assert out["ok"] and out["rejected"] == []
    assert [(c["outcome"], c["recorded_state"]) for c in out["callbacks"]] == [("recorded", run.state)]
    after = h.app.progress(key)
    assert (after.succeeded + after.failed, after.total) == (before.succeeded + before.failed + 1, before.total)
    assert [r.path for r in h.emulator.request_log if r.path == f"/workflowexecution/{run.child_id}"]
    if run.state == "Failed":  # the execution's detail carries the error of its failed task
        (rec,) = [c for c in h.store.list_children(key, failed_only=True, limit=1000) if c.child_id == run.child_id]
        assert rec.code
    _counts_match_rows(h, key)
