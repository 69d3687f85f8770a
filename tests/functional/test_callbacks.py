"""CI job callbacks through main_handler: the job is updated at once (confirmed by our own query), the timer
stays the safety net for a lost callback, and an unauthenticated callback cannot make us watch any bucket."""

from __future__ import annotations

import json
from collections import Counter

from fixtures.emulator import TEST_BUCKET, TEST_REGION
from test_handler import _handler_logging, API_KEY, harness, load_event, with_api_key  # noqa: F401  (fixtures)

from jobwatch.core.models import JobKey


def _running_job(h):
    """A tracked job the function has seen Running, not due again for a while."""
    jid = h.create(1, state="Running")[0]
    out = h.invoke({"action": "track", "job_ids": [jid]})
    assert out["transitions"] == 1 and h.store.get(h.key(jid)).state == "Running"
    return jid


def test_callback_updates_the_job_before_the_next_timer_tick(harness):
    jid = _running_job(harness)
    harness.emulator.set_state(TEST_BUCKET, jid, "Success")
    harness.emulator.clear_log()
    # the job is not due (next poll in 10 s): a timer tick now would not look at it
    tick = harness.invoke(load_event("timer.json"))
    assert tick["polled"] == 0 and harness.store.get(harness.key(jid)).state == "Running"
    resp = harness.invoke(load_event("callback_apigw.json", [jid]))
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 200 and body["transitions"] == 1 and body["notices_queued"] == 1
    tj = harness.store.get(harness.key(jid))
    assert tj.state == "Success" and not tj.active
    assert [(h.from_state, h.to_state) for h in harness.store.history(harness.key(jid))] == \
        [(None, "Running"), ("Running", "Success")]
    assert harness.polls() == Counter({jid: 1})  # confirmed by exactly one query
    # the next tick has nothing left to do for it
    harness.clock.advance(60)
    assert harness.invoke(load_event("timer.json"))["polled"] == 0


def test_lost_callback_is_caught_by_the_timer(harness):
    jid = _running_job(harness)
    harness.emulator.set_state(TEST_BUCKET, jid, "Failed")  # CI's callback never arrives
    assert harness.invoke(load_event("timer.json"))["polled"] == 0
    harness.clock.advance(10)  # POLL_MIN_SECONDS: the job is due
    out = harness.invoke(load_event("timer.json"))
    assert out["polled"] == 1 and out["transitions"] == 1
    assert harness.store.get(harness.key(jid)).state == "Failed"


def test_repeated_callback_duplicates_nothing(harness):
    jid = _running_job(harness)
    harness.emulator.set_state(TEST_BUCKET, jid, "Success")
    event = load_event("callback_ckafka.json", [jid])
    first = harness.invoke(event)
    assert first["transitions"] == 1
    outbox = len(harness.store.list_outbox(limit=100))
    again = harness.invoke(event)  # CI retrying, or SCF retrying the batch
    assert again["polled"] == 0 and again["transitions"] == 0 and again["registered"] == 0
    assert len(harness.store.list_outbox(limit=100)) == outbox
    assert len(harness.store.history(harness.key(jid))) == 2


def test_the_query_decides_not_the_callback(harness):
    jid = _running_job(harness)
    # the callback claims Success but the service still answers Running (the callback raced the query)
    out = harness.invoke(load_event("callback_ckafka.json", [jid]))
    assert out["callbacks"] == [{"job": str(harness.key(jid)), "event": "TaskFinish", "callback_state": "Success",
                                 "recorded_state": "Running"}]
    assert out["transitions"] == 0 and harness.store.get(harness.key(jid)).active  # the timer keeps watching


def test_callback_for_a_new_job_in_the_configured_bucket_starts_watching_it(harness):
    jid = harness.create(1, state="Success")[0]
    resp = harness.invoke(load_event("callback_apigw.json", [jid]))
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 200 and body["registered"] == 1
    assert harness.store.get(harness.key(jid)).state == "Success"


def test_callback_for_an_unknown_bucket_needs_the_key(harness):
    other = "otherbucket-1250000000"
    jid = harness.emulator.create_job(other, state="Success")
    event = load_event("callback_apigw.json", [jid])
    event["queryString"] = event["queryStringParameters"] = {"bucket": other, "region": TEST_REGION}
    refused = harness.invoke(event)
    assert refused["statusCode"] == 403 and other in json.loads(refused["body"])["error"]
    assert harness.store.list_jobs() == [] and harness.polls() == Counter()
    allowed = harness.invoke(with_api_key(event, API_KEY))
    assert allowed["statusCode"] == 200
    assert harness.store.get(JobKey(TEST_REGION, other, jid)).state == "Success"


def test_malformed_callback_is_a_400_naming_the_problem(harness):
    event = load_event("callback_apigw.json")
    event["body"] = "<Response><EventName>TaskFinish</EventName></Response>"
    resp = harness.invoke(event)
    assert resp["statusCode"] == 400 and "JobsDetail" in json.loads(resp["body"])["error"]
    event["body"] = "<Response><JobsDetail><JobId>../x</JobId></JobsDetail></Response>"
    resp = harness.invoke(event)
    assert resp["statusCode"] == 400 and "job_id" in json.loads(resp["body"])["error"]
