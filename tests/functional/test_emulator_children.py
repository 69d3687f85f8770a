"""The emulator's children of a batch job, read by CIClient over real HTTP: paging (opaque tokens, the 100 cap,
a token on the last page), filters, failures with codes, workflow executions and their detail, lifecycle over
emulated time, and the per-child callbacks POSTed to a loopback receiver."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

import pytest
from lxml import etree

from fixtures.emulator import TEST_BUCKET as B, TEST_REGION as R, TEST_SECRET_ID, TEST_SECRET_KEY
from fixtures.loopback import answer, serve
from jobwatch.ci import xmlparse
from jobwatch.ci.client import CIClient
from jobwatch.ci.credentials import StaticProvider
from jobwatch.core.children import ChildKind, ChildPage
from jobwatch.core.errors import BadResponseError, CIError, RetryableError, ValidationError
from jobwatch.emulator import FaultRule

WF = "w7476ff3564ee45b7b490d64bccaba6cc"


@pytest.fixture
def client(emulator_client):
    return emulator_client


def all_pages(call, **kw) -> tuple[list, int]:
    items, token, pages = [], None, 0
    while True:
        page: ChildPage = call(next_token=token, **kw)
        pages += 1
        items += page.items
        token = page.next_token
        if token is None:
            return items, pages
        assert pages < 10_000


def test_2000_children_2pct_failures_listed_exactly_once(emulator, emulator_clock, client):
    batch = emulator.create_job(B, type="Job", children=2000, child_failure_rate=0.02)
    emulator_clock.advance(5 + 60 + 1)  # Submitted 5 s, Running 60 s: the batch and every child have ended
    assert emulator.job_state(B, batch) == "Success"
    emulator.clear_log()
    items, pages = all_pages(lambda **kw: client.list_media_jobs(B, R, batch_id=batch, **kw))
    ids = [c.child_id for c in items]
    assert len(ids) == 2000 and len(set(ids)) == 2000
    assert pages == 21  # 20 full pages, then the trailing token's empty page ends it
    assert {c.kind for c in items} == {ChildKind.JOB}
    assert [c.object_key for c in items] == [f"input/obj-{i:06d}.mp4" for i in range(2000)]
    failed = [c for c in items if c.state == "Failed"]
    assert len(failed) == 40 and all(c.code and c.message for c in failed)
    assert all(c.state == "Success" and c.code is None for c in items if c not in failed)
    assert all(c.ended_at is not None and c.created_at <= c.started_at <= c.ended_at for c in items)
    times = [c.created_at for c in items]
    assert times == sorted(times)  # Asc
    assert {r.path for r in emulator.request_log} == {"/jobs"} and {r.job_id for r in emulator.request_log} == {batch}
    # only the failed ones, newest first, pages of 7
    f2, _ = all_pages(lambda **kw: client.list_media_jobs(B, R, batch_id=batch, states="Failed",
                                                          order_by_time="Desc", size=7, **kw))
    assert [c.child_id for c in f2] == [c.child_id for c in reversed(failed)]


def test_children_appear_and_progress_over_emulated_time(emulator, emulator_clock, client):
    batch = emulator.create_job(B, type="Job", children=500, child_failure_rate=0.1)
    assert client.list_media_jobs(B, R, batch_id=batch).items == []  # Submitted: none yet
    emulator_clock.advance(5 + 30)
    mid, _ = all_pages(lambda **kw: client.list_media_jobs(B, R, batch_id=batch, **kw))
    assert 200 < len(mid) < 500
    states = {c.state for c in mid}
    assert {"Success", "Running"} <= states
    running = [c for c in mid if c.state in ("Submitted", "Running")]
    live, _ = all_pages(lambda **kw: client.list_media_jobs(B, R, batch_id=batch, states="Submitted,Running", **kw))
    assert [c.child_id for c in live] == [c.child_id for c in running]
    # window on creation time, inclusive at both ends, whole seconds
    t0, t1 = mid[100].created_at, mid[200].created_at
    win, _ = all_pages(lambda **kw: client.list_media_jobs(B, R, batch_id=batch, start_creation_time=t0,
                                                           end_creation_time=t1, **kw))
    assert [c.child_id for c in win] == [c.child_id for c in mid if t0 <= c.created_at <= t1]
    emulator_clock.advance(31)
    end, _ = all_pages(lambda **kw: client.list_media_jobs(B, R, batch_id=batch, **kw))
    assert len(end) == 500 and sum(c.state == "Failed" for c in end) == 50
    assert [c.child_id for c in end[: len(mid)]] == [c.child_id for c in mid]  # same IDs, same order


def test_cancelled_batch_cancels_its_unfinished_children(emulator, emulator_clock, client):
    batch = emulator.create_job(B, type="Job", children=300)
    emulator_clock.advance(5 + 20)
    client.cancel_job(B, R, batch)
    emulator_clock.advance(120)
    items, _ = all_pages(lambda **kw: client.list_media_jobs(B, R, batch_id=batch, **kw))
    assert 0 < len(items) < 300
    assert {c.state for c in items} <= {"Success", "Cancel"} and any(c.state == "Cancel" for c in items)


def test_filters_queue_tag_and_picture_jobs(emulator, emulator_clock, client):
    batch = emulator.create_job(B, type="Job", children=30)
    pic = emulator.create_job(B, type="Job", children=30, tag="PicProcess")
    emulator_clock.advance(100)
    q = "p893bcda225bf4945a378da6662e81a89"
    assert len(client.list_media_jobs(B, R, batch_id=batch, queue_id=q, tag="Transcode").items) == 30
    assert client.list_media_jobs(B, R, batch_id=batch, queue_id="pother").items == []
    assert client.list_media_jobs(B, R, batch_id=batch, tag="Snapshot").items == []
    assert client.list_media_jobs(B, R, batch_id=batch, pic=True).items == []
    pics = client.list_media_jobs(B, R, batch_id=pic, pic=True).items
    assert len(pics) == 30 and {c.kind for c in pics} == {ChildKind.PIC_JOB}
    assert client.list_media_jobs(B, R, batch_id="b" + "0" * 32).items == []  # unknown batch: an empty list


def test_workflow_executions_and_their_detail(emulator, emulator_clock, client):
    batch = emulator.create_job(B, type="Workflow", children=250, child_failure_rate=0.04)
    emulator_clock.advance(100)
    items, pages = all_pages(lambda **kw: client.list_workflow_executions(B, R, workflow_id=WF, batch_id=batch,
                                                                          **kw))
    assert len(items) == 250 and len({c.child_id for c in items}) == 250 and pages == 3
    assert all(c.child_id.startswith("i") and c.workflow_id == WF and c.ended_at is None for c in items)
    failed = [c for c in items if c.state == "Failed"]
    assert len(failed) == 10
    d = client.get_workflow_execution(B, R, failed[0].child_id)
    assert d.state == "Failed" and d.code and d.message and d.ended_at is not None
    assert d.object_key == failed[0].object_key and d.created_at == failed[0].created_at
    ok = client.get_workflow_execution(B, R, items[0].child_id if items[0].state == "Success" else items[1].child_id)
    assert ok.state == "Success" and ok.code is None and ok.ended_at is not None
    with pytest.raises(CIError) as ei:
        client.get_workflow_execution(B, R, "i" + "0" * 32)
    assert ei.value.status == 404
    assert client.list_workflow_executions(B, R, workflow_id="wother", batch_id=batch).items == []


def test_emulator_refuses_what_the_service_would(emulator, emulator_clock):
    import requests

    from fixtures.emulator import signed_headers

    batch = emulator.create_job(B, type="Job", children=10)
    for params, needle in (({"inventoryTriggerJobId": batch, "size": "101"}, "size 101"),
                           ({"inventoryTriggerJobId": batch, "states": "Done"}, "states"),
                           ({"inventoryTriggerJobId": batch, "nextToken": "garbage"}, "nextToken"),
                           ({"size": "10"}, "inventoryTriggerJobId is required")):
        r = requests.get(emulator.url + "/jobs", params=params, headers=signed_headers("GET", "/jobs", params))
        assert r.status_code == 400 and needle in r.text
    from fixtures.emulator import TEST_HOST

    r = requests.get(emulator.url + "/jobs", params={"inventoryTriggerJobId": batch},
                     headers={"Host": TEST_HOST})  # unsigned
    assert r.status_code == 403


def test_truncated_child_page_costs_that_page_only(emulator, emulator_clock):
    batch = emulator.create_job(B, type="Job", children=150)
    emulator_clock.advance(100)
    c = CIClient(StaticProvider(TEST_SECRET_ID, TEST_SECRET_KEY), endpoint=emulator.url, max_attempts=1)
    emulator.set_faults([FaultRule("truncate", path="/jobs", times=1)])
    with pytest.raises(RetryableError):  # cut short of its Content-Length: a transport error
        c.list_media_jobs(B, R, batch_id=batch)
    emulator.set_faults([FaultRule("not_xml", path="/jobs", times=1)])
    with pytest.raises(BadResponseError, match="not well-formed"):
        c.list_media_jobs(B, R, batch_id=batch)
    assert len(c.list_media_jobs(B, R, batch_id=batch).items) == 100
    c.close()


def test_lazy_100k_children_page_fast_and_flat(emulator, emulator_clock, client):
    import time
    import tracemalloc

    tracemalloc.start()
    batch = emulator.create_job(B, type="Job", children=100_000, child_failure_rate=0.02)
    emulator_clock.advance(5 + 40)
    t = time.perf_counter()
    first = client.list_media_jobs(B, R, batch_id=batch)
    last = client.list_media_jobs(B, R, batch_id=batch, order_by_time="Desc")
    live = client.list_media_jobs(B, R, batch_id=batch, states="Running")
    elapsed = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(first.items) == len(last.items) == len(live.items) == 100
    assert elapsed < 3.0 and peak < 20 * 1024 * 1024


# -- callbacks ----------------------------------------------------------------------------------------------------

class Receiver:
    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.bodies.append((self.headers.get("Content-Type", ""), body))
                answer(self, 200, b"ok")

        self.server = serve(H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_task_finish_xml_posted_per_child(emulator, emulator_clock, receiver):
    emulator.callback_interval = 0  # no background sweep: the test sweeps
    batch = emulator.create_job(B, type="Job", children=60, child_failure_rate=0.05, callback=receiver.url)
    emulator_clock.advance(5 + 30)
    first = emulator.flush_callbacks()
    assert 0 < first < 60 and len(receiver.bodies) == first
    emulator_clock.advance(60)
    assert emulator.flush_callbacks() == 60 - first
    assert emulator.flush_callbacks() == 0  # each child once
    truth = {v.child_id: v for v in emulator.child_views(B, batch)}
    seen = {}
    for ctype, body in receiver.bodies:
        assert ctype == "application/xml"
        root = etree.fromstring(body)
        assert root.tag == "Response" and root.findtext("EventName") == "TaskFinish"
        child = xmlparse.parse_media_job(root.find("JobsDetail"), ChildKind.JOB)
        assert root.findtext("JobsDetail/Input/BucketId") == B
        seen[child.child_id] = child
    assert set(seen) == set(truth)
    failed = [c for c in seen.values() if c.state == "Failed"]
    assert len(failed) == 3 and all(c.code and c.message for c in failed)
    assert all(c.ended_at == truth[c.child_id].ended_at for c in seen.values())


def test_workflow_finish_json_via_workflow_notify(emulator, emulator_clock, receiver):
    emulator.callback_interval = 0
    emulator.set_notify(WF, receiver.url, "JSON")
    batch = emulator.create_job(B, type="Workflow", children=20, child_failure_rate=0.1)
    emulator_clock.advance(100)
    assert emulator.flush_callbacks() == 20
    docs = [json.loads(b) for ctype, b in receiver.bodies if ctype == "application/json"]
    assert len(docs) == 20 and {d["EventName"] for d in docs} == {"WorkflowFinish"}
    ex = [d["WorkflowExecution"] for d in docs]
    assert {e["RunId"] for e in ex} == {v.child_id for v in emulator.child_views(B, batch)}
    assert sum(e["State"] == "Failed" for e in ex) == 2
    assert all(" " in e["CreateTime"] and e["CreateTime"].endswith("+0800") for e in ex)  # the third time form
    assert all(e["BucketId"] == B and e["WorkflowId"] == WF for e in ex)


def test_background_sweep_delivers_and_dead_receiver_is_bounded(emulator, emulator_clock, receiver):
    import time

    emulator.create_job(B, type="Job", children=10, callback=receiver.url)
    emulator_clock.advance(100)
    deadline = time.monotonic() + 5
    while len(receiver.bodies) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(receiver.bodies) == 10
    # a receiver that is gone: three failures, then skipped (dropped, logged), never a stall
    emulator.callback_interval = 0
    emulator.create_job(B, type="Job", children=40, callback="http://127.0.0.1:9/none")
    emulator_clock.advance(100)
    t = time.monotonic()
    emulator.flush_callbacks()
    assert time.monotonic() - t < 5
    dead = [r for r in emulator.callback_log if r.url.endswith(":9/none")]
    assert len(dead) == 40 and sum(r.error is not None and r.error.startswith("skipped") for r in dead) == 37


def test_remote_callback_urls_are_not_called_by_default(emulator, emulator_clock):
    emulator.callback_interval = 0
    emulator.create_job(B, type="Job", children=5, callback="http://example.com/cb")
    emulator_clock.advance(100)
    assert emulator.flush_callbacks() == 0 and emulator.callback_log == []


def test_cli_children_options_reach_the_batches():
    import argparse
    import re

    from jobwatch.emulator import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--port", "0", "--children", "40", "--child-failure-rate", "0.25",
                              "--secret-id", TEST_SECRET_ID, "--secret-key", TEST_SECRET_KEY])
    srv = cli.build(args)
    srv.start()
    try:
        batch = srv.create_job(B, type="Job")
        srv.set_state(B, batch, "Success")
        c = CIClient(StaticProvider(TEST_SECRET_ID, TEST_SECRET_KEY), endpoint=srv.url)
        items = c.list_media_jobs(B, R, batch_id=batch).items
        c.close()
    finally:
        srv.stop()
    # forced to Success at once: it processed every object, each child ended with its fate
    assert len(items) == 40 and sum(i.state == "Failed" for i in items) == 10
    assert all(i.ended_at is not None for i in items)
    full = srv.children.plan_for(B, batch)
    assert (full.count, full.failure_rate) == (40, 0.25)
    with pytest.raises(ValueError, match="children"):
        cli.build(parser.parse_args(["--children", "-1"]))


def test_slow_receiver_sweep_is_time_bounded_and_carries_on(emulator, emulator_clock):
    import time

    got: list[bytes] = []

    class Slow(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            time.sleep(0.1)
            answer(self, 200, b"ok")

    srv = serve(Slow)
    try:
        emulator.callback_interval = 0
        emulator.callback_sweep_seconds = 0.25
        batch = emulator.create_job(B, type="Job", children=8,
                                    callback=f"http://127.0.0.1:{srv.server_address[1]}/cb")
        emulator_clock.advance(100)
        counts = []
        while sum(counts) < 8 and len(counts) < 10:
            counts.append(emulator.flush_callbacks())
        assert counts[0] < 8 and sum(counts) == 8 and len(counts) > 1
        ids = [etree.fromstring(b).findtext("JobsDetail/JobId") for b in got]
        assert sorted(ids) == sorted(v.child_id for v in emulator.child_views(B, batch))  # each once
    finally:
        srv.shutdown()
        srv.server_close()


def test_unfinished_children_refreshed_by_id(emulator, emulator_clock, client):
    batch = emulator.create_job(B, type="Job", children=200, child_failure_rate=0.05)
    emulator_clock.advance(5 + 30)
    items, _ = all_pages(lambda **kw: client.list_media_jobs(B, R, batch_id=batch, **kw))
    live = [c.child_id for c in items if c.state in ("Submitted", "Running")]
    assert 0 < len(live) <= 100
    ghost = "j" + "f" * 32
    got = client.get_media_jobs(B, R, live + [ghost, live[0]])  # a repeat is asked once
    assert [c.child_id for c in got.items] == live and got.missing == [ghost]
    emulator.clear_log()
    emulator_clock.advance(60)
    done = client.get_media_jobs(B, R, live)
    assert all(c.state in ("Success", "Failed") and c.ended_at for c in done.items)
    assert len(emulator.request_log) == 1  # one request for up to 100 of them
    truth = {v.child_id: v.state for v in emulator.child_views(B, batch)}
    assert {c.child_id: c.state for c in done.items} == {i: truth[i] for i in live}
    assert client.get_media_jobs(B, R, live[:3], pic=True).missing == live[:3]  # not picture jobs
    with pytest.raises(ValidationError) as ei:
        client.get_media_jobs(B, R, [])
    assert ei.value.field == "job_ids"


def test_task_finish_json_in_both_documented_forms(emulator, emulator_clock, receiver):
    emulator.callback_interval = 0
    emulator.create_job(B, type="Job", children=6, callback=receiver.url, callback_format="JSON")
    emulator_clock.advance(100)
    assert emulator.flush_callbacks() == 6
    docs = [json.loads(b) for ctype, b in receiver.bodies if ctype == "application/json"]
    assert len(docs) == 6 and {d["EventName"] for d in docs} == {"TaskFinish"} and "Response" not in docs[0]
    forms = {type(d["JobsDetail"]).__name__ for d in docs}
    assert forms == {"dict", "list"}
    details = [d["JobsDetail"][0] if isinstance(d["JobsDetail"], list) else d["JobsDetail"] for d in docs]
    assert all(x["JobId"].startswith("j") and x["Input"]["BucketId"] == B and x["State"] == "Success"
               for x in details)
