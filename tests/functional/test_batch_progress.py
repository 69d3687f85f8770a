"""A batch job's progress, counted from its children on the emulator over real HTTP, through the front doors:
``jobwatch status --json`` / ``children``, the final notice, ``children_failed`` notices, and CI's per-child
callbacks replayed as documented (they update the child, never create a batch job, never alert)."""

from __future__ import annotations

import json
import time

import pytest

from fixtures.emulator import TEST_BUCKET, TEST_REGION
from test_handler import _handler_logging, harness, load_event  # noqa: F401  (fixtures)

from jobwatch.cli import main
from jobwatch.core.models import JobKey
from jobwatch.emulator import FaultRule

COUNTS = ("total", "succeeded", "failed", "running", "waiting", "cancelled")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``jobwatch ARGV`` on the harness's store and emulator; its exit code, stdout and stderr."""
    capsys.readouterr()  # the function's own log lines so far
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _run_to_the_end(h, batch: str, step: float = 7) -> None:
    """Track ``batch`` and tick the function (timer events) through its life on the emulator's clock."""
    h.invoke({"action": "track", "job_ids": [batch]})
    _tick_until_counted(h, JobKey(TEST_REGION, TEST_BUCKET, batch), step)


def test_2000_objects_with_2pct_failures_end_with_exact_progress(harness, capsys):
    emulator = harness.emulator
    batch = emulator.create_job(TEST_BUCKET, type="Job", children=2000, child_failure_rate=0.02)
    _run_to_the_end(harness, batch)
    truth = emulator.child_views(TEST_BUCKET, batch)
    failed_truth = sorted((c.child_id, c.object_key, c.code) for c in truth if c.state == "Failed")
    assert len(truth) == 2000 and len(failed_truth) == 40

    rc, out, _ = cli(capsys, "status", "--json")
    assert rc == 0
    (rec,) = json.loads(out)
    assert rec["state"] == "Success"
    assert {k: rec["progress"][k] for k in COUNTS} == {"total": 2000, "succeeded": 1960, "failed": 40,
                                                       "running": 0, "waiting": 0, "cancelled": 0}
    assert rec["progress"]["complete"] is True and rec["progress"]["percent"] == 100.0

    rc, out, _ = cli(capsys, "children", batch, "--failed", "--json", "--limit", "1000")
    assert rc == 0
    listed = json.loads(out)
    assert sorted((c["child_id"], c["object"], c["code"]) for c in listed) == failed_truth
    assert all(c["state"] == "Failed" and c["message"] and c["created_at"] and c["ended_at"] for c in listed)

    rc, out, _ = cli(capsys, "status")
    assert rc == 0 and "100% 2,000/2,000, 40 failed" in out

    notices = [e.notice for e in harness.app.outbox_entries(limit=1000)]
    (final,) = [n for n in notices if n.kind.value == "transition" and n.to_state == "Success"]
    payload = final.payload()
    assert payload["progress"] == {"total": 2000, "succeeded": 1960, "failed": 40, "running": 0, "waiting": 0,
                                   "cancelled": 0}
    sample = payload["failed_sample"]
    assert len(sample) == 10 and {(s["child_id"], s["object"], s["code"]) for s in sample} <= set(failed_truth)
    # the first failed child was told once; 2% stays under the 5% threshold
    assert [n.idempotency_key.rsplit("#", 1)[1] for n in notices if n.kind.value == "children_failed"] == \
        ["children_failed:first"]


def test_children_pages_and_an_untracked_job(harness, capsys):
    emulator = harness.emulator
    batch = emulator.create_job(TEST_BUCKET, type="Job", children=30, child_failure_rate=0.1)
    _run_to_the_end(harness, batch)
    rc, out, err = cli(capsys, "children", batch, "--json", "--limit", "20")
    first = json.loads(out)
    cursor = err.split("--cursor ")[1].strip()
    rc, out, _ = cli(capsys, "children", batch, "--json", "--limit", "20", "--cursor", cursor)
    assert rc == 0
    rest = json.loads(out)
    assert len(first) == 20 and len(rest) == 10
    assert {c["child_id"] for c in first + rest} == {c.child_id for c in emulator.child_views(TEST_BUCKET, batch)}
    rc, text, _ = cli(capsys, "children", batch)
    assert "100% 30/30, 3 failed" in text and "CHILD" in text
    assert cli(capsys, "children", "bnotracked0000000000000000000000")[0] == 3


def test_workflow_batch_reads_the_error_of_failed_runs_only(harness, capsys):
    emulator = harness.emulator
    batch = emulator.create_job(TEST_BUCKET, type="Workflow", children=300, child_failure_rate=0.05)
    _run_to_the_end(harness, batch)
    details = [r for r in emulator.request_log if r.path.startswith("/workflowexecution/")]
    assert len(details) == 15  # one detail call per failed execution, none for the others
    rc, out, _ = cli(capsys, "children", batch, "--failed", "--json", "--limit", "100")
    assert rc == 0
    listed = json.loads(out)
    assert len(listed) == 15 and all(c["code"] and c["message"] for c in listed)
    rc, out, _ = cli(capsys, "status", "--json")
    assert rc == 0
    (rec,) = json.loads(out)
    assert (rec["progress"]["total"], rec["progress"]["failed"]) == (300, 15)


# --- callbacks of a tracked batch's children --------------------------------------------------------------------

def test_replayed_task_finish_counts_the_child_and_sends_no_notice(harness):
    h = harness
    batch = h.emulator.create_job(TEST_BUCKET, type="Job", children=50, child_failure_rate=0.0)
    h.invoke({"action": "track", "job_ids": [batch]})
    h.clock.advance(5 + 30)  # Running: about half the children exist, some ended
    h.invoke(load_event("timer.json"))
    before = h.app.progress(JobKey(TEST_REGION, TEST_BUCKET, batch))
    outbox_before = {e.notice.idempotency_key for e in h.store.list_outbox(limit=1000)}
    h.clock.advance(10)  # more children end; CI calls back for one of them before our next tick
    child = next(c for c in h.emulator.child_views(TEST_BUCKET, batch) if c.state == "Success"
                 and h.store.known_children(JobKey(TEST_REGION, TEST_BUCKET, batch), [c.child_id]).get(c.child_id)
                 != "Success")
    event = load_event("callback_apigw.json")
    event["body"] = (event["body"].replace("test-123456789", TEST_BUCKET).replace("ap-chongqing", TEST_REGION)
                     .replace("ja66d6204f86711ec9ca1073b78d316d3", child.child_id)
                     .replace("p2242ab62c7c94486915508540933a2c6", child.queue_id)
                     .replace("<Tag>StreamExtract</Tag>", f"<Tag>{child.tag}</Tag>"))
    polls = len([r for r in h.emulator.request_log if r.path.startswith("/inventorytriggerjob/")])
    resp = h.invoke(event)
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 200 and body["registered"] == 0 and body["polled"] == 0
    (cb,) = body["callbacks"]
    # recorded Running by the last refresh: read back by ID and counted at once; not recorded yet: a refresh
    assert cb["outcome"] in ("recorded", "refresh_prompted") and cb["recorded_state"] == "Success"
    assert cb["batches"] == [str(JobKey(TEST_REGION, TEST_BUCKET, batch))]
    after = h.app.progress(JobKey(TEST_REGION, TEST_BUCKET, batch))
    assert after.succeeded > before.succeeded and after.total >= before.total
    assert [k.job_id for k in (tj.key for tj in h.store.list_jobs())] == [batch]  # no job made of the child
    assert polls == len([r for r in h.emulator.request_log if r.path.startswith("/inventorytriggerjob/")])
    assert {e.notice.idempotency_key for e in h.store.list_outbox(limit=1000)} == outbox_before  # no notice


def test_api_gateway_reads_progress_and_pages_children(harness):
    from test_handler import API_KEY, with_api_key

    emulator = harness.emulator
    batch = emulator.create_job(TEST_BUCKET, type="Job", children=120, child_failure_rate=0.1)
    _run_to_the_end(harness, batch)
    read = harness.invoke(with_api_key(load_event("apigw_status.json", [batch]), API_KEY))
    body = json.loads(read["body"])
    assert read["statusCode"] == 200 and body["state"] == "Success"
    assert {k: body["progress"][k] for k in ("total", "succeeded", "failed")} == {"total": 120, "succeeded": 108,
                                                                                 "failed": 12}
    event = with_api_key(load_event("apigw_status.json", [batch]), API_KEY)
    event["path"] = event["requestContext"]["path"] = f"/jobs/{batch}/children"
    seen, cursor = [], None
    for _ in range(5):
        q = {"failed": "true", "limit": "5", **({"cursor": cursor} if cursor else {})}
        resp = harness.invoke({**event, "queryString": q, "queryStringParameters": q})
        page = json.loads(resp["body"])
        assert resp["statusCode"] == 200 and len(page["children"]) <= 5 and page["progress"]["failed"] == 12
        seen += page["children"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 12 and all(c["state"] == "Failed" and c["object"] and c["code"] for c in seen)
    assert len({c["child_id"] for c in seen}) == 12
    bad = harness.invoke({**event, "queryString": {"limit": "0"}, "queryStringParameters": {"limit": "0"}})
    assert bad["statusCode"] == 400 and "limit" in json.loads(bad["body"])["error"]
    nokey = harness.invoke(with_api_key(event, None))
    assert nokey["statusCode"] == 401


# --- bad pages, thresholds, the held final notice ----------------------------------------------------------------

@pytest.mark.parametrize("rule", [
    FaultRule("truncate", path="/jobs"), FaultRule("not_xml", path="/jobs"),
    FaultRule("status", path="/jobs", status=503, code="SlowDown"),
    FaultRule("status", path="/jobs", status=429, code="RequestLimitExceeded"),
])
def test_a_bad_page_costs_that_page_only(harness, rule):
    """A malformed, truncated or throttled child page: the recorded progress is untouched, the tick goes on,
    and the next tick reads the same page again; the counts end exact."""
    h = harness
    batch = h.emulator.create_job(TEST_BUCKET, type="Job", children=400, child_failure_rate=0.05)
    key = JobKey(TEST_REGION, TEST_BUCKET, batch)
    h.invoke({"action": "track", "job_ids": [batch]})
    h.clock.advance(5 + 30)
    h.invoke(load_event("timer.json"))
    before = h.app.progress(key)
    assert 0 < before.total < 400
    h.emulator.set_faults([rule])
    h.clock.advance(10)
    out = h.invoke(load_event("timer.json"))
    assert out["ok"] and out["polled"] == 1 and out["children"]["errors"] == 1 and out["children"]["pages"] == 0
    assert h.app.progress(key).counts() == before.counts()  # nothing recorded from the bad page
    h.emulator.set_faults([])
    _tick_until_counted(h, key)
    p = h.app.progress(key)
    assert (p.total, p.failed, p.succeeded) == (400, 20, 380)


def _tick_until_counted(h, key: JobKey, step: float = 7) -> None:
    """Timer ticks until the batch ended and its children's final count is done."""
    for _ in range(40):
        h.clock.advance(step)
        h.invoke(load_event("timer.json"))
        p = h.app.progress(key)
        if p is not None and p.complete:
            return
    raise AssertionError(f"{key} never ended with its children counted: {h.app.job(key)}, {h.app.progress(key)}")


def test_failed_share_over_the_threshold_is_told_once_more(harness, monkeypatch):
    h = harness
    batch = h.emulator.create_job(TEST_BUCKET, type="Job", children=600, child_failure_rate=0.2)
    _run_to_the_end(h, batch)
    kinds = [e.notice.idempotency_key.rsplit("#", 1)[1] for e in h.store.list_outbox(limit=1000)
             if e.notice.kind.value == "children_failed"]
    assert kinds == ["children_failed:first", "children_failed:threshold"]
    (over,) = [e.notice for e in h.store.list_outbox(limit=1000)
               if e.notice.idempotency_key.endswith("children_failed:threshold")]
    p = over.payload()["progress"]
    assert p["failed"] / (p["succeeded"] + p["failed"]) > 0.05 and over.payload()["failed_threshold"] == 5.0
    assert len(over.payload()["failed_sample"]) == 10


def test_the_final_notice_waits_for_the_count_and_goes_without_it_at_the_hold(harness):
    """The batch's final notice is written with its transition but held for the children's final count; when
    the children cannot be listed at all it still goes at JOBWATCH_CHILDREN_FINAL_HOLD_SECONDS (300 s)."""
    h = harness
    batch = h.emulator.create_job(TEST_BUCKET, type="Job", children=50)
    key = JobKey(TEST_REGION, TEST_BUCKET, batch)
    h.invoke({"action": "track", "job_ids": [batch]})
    h.emulator.set_faults([FaultRule("status", path="/jobs", status=500, code="InternalError")])
    h.clock.advance(5 + 60 + 1)
    out = h.invoke(load_event("timer.json"))
    assert out["transitions"] == 1 and h.app.job(key).state == "Success"
    final = [e for e in h.store.list_outbox(limit=100) if e.notice.to_state == "Success"]
    assert [e.status for e in final] == ["pending"]  # written, not sent: it waits for the count
    h.clock.advance(200)
    h.invoke(load_event("timer.json"))
    assert [e.status for e in h.store.list_outbox(limit=100) if e.notice.to_state == "Success"] == ["pending"]
    h.clock.advance(101)
    h.invoke(load_event("timer.json"))
    (sent,) = [e for e in h.store.list_outbox(limit=100) if e.notice.to_state == "Success"]
    assert sent.status == "done"
    # the listing recovers: the count is finished after all, and the batch is no longer refreshed after it
    h.emulator.set_faults([])
    _tick_until_counted(h, key)
    assert h.app.progress(key).total == 50


# --- the callbacks the emulator sends, replayed through the function ------------------------------------------

def test_the_emulators_callbacks_through_api_gateway_and_ckafka_count_children_and_track_nothing(harness):
    """Every TaskFinish (XML, the batch's CallBack) and WorkflowFinish (JSON, the workflow's notify URL) the
    emulator POSTs while two tracked batches run, replayed through /callback and a CKafka record: each answered,
    none tracked or polled as a batch job, and the batches' counts end exact."""
    from test_emulator_children import WF, Receiver

    h, emu = harness, harness.emulator
    receiver = Receiver()
    try:
        emu.callback_interval = 0  # the test sweeps
        emu.set_notify(WF, receiver.url, "JSON")
        jobs = emu.create_job(TEST_BUCKET, type="Job", children=60, child_failure_rate=0.05, callback=receiver.url)
        flows = emu.create_job(TEST_BUCKET, type="Workflow", children=20, child_failure_rate=0.1)
        h.invoke({"action": "track", "job_ids": [jobs, flows]})
        outcomes = []
        for _ in range(12):
            h.clock.advance(10)
            emu.flush_callbacks()
            bodies, receiver.bodies = receiver.bodies, []
            for ctype, body in bodies:
                if ctype == "application/xml":
                    event = load_event("callback_apigw.json")
                    event["body"] = body.decode()
                    resp = h.invoke(event)
                    assert resp["statusCode"] == 200, resp
                    outcomes += [c["outcome"] for c in json.loads(resp["body"])["callbacks"]]
                else:
                    out = h.invoke({"Records": [{"Ckafka": {"msgBody": body.decode()}}]})
                    assert out["ok"] and out["rejected"] == [], out
                    outcomes += [c["outcome"] for c in out["callbacks"]]
            h.invoke(load_event("timer.json"))
        assert len(outcomes) == 80 and "unknown" not in outcomes
        assert sorted(tj.key.job_id for tj in h.store.list_jobs()) == sorted([jobs, flows])
        assert {r.path for r in emu.request_log if r.path.startswith("/inventorytriggerjob/")} == \
            {f"/inventorytriggerjob/{jobs}", f"/inventorytriggerjob/{flows}"}
        for batch, total, failed in ((jobs, 60, 3), (flows, 20, 2)):
            key = JobKey(TEST_REGION, TEST_BUCKET, batch)
            _tick_until_counted(h, key)
            p = h.app.progress(key)
            assert (p.total, p.failed, p.succeeded) == (total, failed, total - failed)
        assert all(e.notice.key.job_id in (jobs, flows) for e in h.store.list_outbox(limit=1000))
    finally:
        receiver.close()


def test_picture_jobs_are_read_from_pic_jobs(harness):
    batch = harness.emulator.create_job(TEST_BUCKET, type="Job", tag="PicProcess", children=150,
                                        child_failure_rate=0.1)
    _run_to_the_end(harness, batch)
    p = harness.app.progress(JobKey(TEST_REGION, TEST_BUCKET, batch))
    assert (p.total, p.failed) == (150, 15)
    paths = {r.path for r in harness.emulator.request_log if not r.path.startswith("/inventorytriggerjob")}
    assert paths == {"/pic_jobs"}


def test_children_of_a_running_batch_show_rate_and_time_left(harness, capsys):
    h = harness
    batch = h.emulator.create_job(TEST_BUCKET, type="Job", children=500)
    h.invoke({"action": "track", "job_ids": [batch]})
    h.clock.advance(5 + 40)
    h.invoke(load_event("timer.json"))
    rc, text, _ = cli(capsys, "children", batch, "--limit", "3")
    p = h.app.progress(JobKey(TEST_REGION, TEST_BUCKET, batch))
    assert rc == 0 and 0 < p.done < p.total
    assert f"{p.text()}; " in text and "/min, about " in text and " left" in text


def test_a_burst_of_callbacks_costs_one_refresh(harness):
    """Unauthenticated callbacks cannot make us hammer CI: a batch refreshed in the last JOBWATCH_POLL_MIN_SECONDS
    is listed again at most once, whatever the number of callbacks; a callback naming a child recorded unfinished
    costs one read of that child by ID (GET /jobs/<id>), and one naming a child recorded final costs nothing."""
    h = harness
    batch = h.emulator.create_job(TEST_BUCKET, type="Job", children=200)
    h.invoke({"action": "track", "job_ids": [batch]})
    h.clock.advance(5 + 30)
    h.invoke(load_event("timer.json"))
    h.clock.advance(10)  # POLL_MIN_SECONDS since that refresh
    key = JobKey(TEST_REGION, TEST_BUCKET, batch)
    views = h.emulator.child_views(TEST_BUCKET, batch)
    known = h.store.known_children(key, [c.child_id for c in views])
    done = [c for c in views if c.state == "Success" and known.get(c.child_id) != "Success"][:30]
    assert len(done) >= 10  # ended since the last refresh: CI calls back for each
    recorded_unfinished = {c.child_id for c in done if known.get(c.child_id) is not None}
    assert recorded_unfinished and len(recorded_unfinished) < len(done)  # both kinds in the burst

    def burst() -> tuple[list[int], list[int]]:
        lists, reads = [], []
        for child in done:
            event = load_event("callback_apigw.json")
            event["body"] = (event["body"].replace("test-123456789", TEST_BUCKET)
                             .replace("ap-chongqing", TEST_REGION)
                             .replace("ja66d6204f86711ec9ca1073b78d316d3", child.child_id)
                             .replace("p2242ab62c7c94486915508540933a2c6", child.queue_id)
                             .replace("<Tag>StreamExtract</Tag>", f"<Tag>{child.tag}</Tag>"))
            n = len(h.emulator.request_log)
            assert h.invoke(event)["statusCode"] == 200
            new = h.emulator.request_log[n:]
            lists.append(sum(1 for r in new if r.path == "/jobs"))
            reads.append(sum(1 for r in new if r.path.startswith("/jobs/")))
        return lists, reads

    lists, reads = burst()
    assert len([n for n in lists if n]) == 1, lists  # one refresh for the children not recorded yet
    assert sum(reads) == len(recorded_unfinished) and max(reads) == 1, reads
    assert h.store.known_children(key, [c.child_id for c in done]) == {c.child_id: "Success" for c in done}
    assert burst() == ([0] * len(done), [0] * len(done))  # the same burst again: every child recorded final


def test_a_batch_tracked_after_it_ended_gets_one_notice_with_its_failures(harness):
    h = harness
    batch = h.emulator.create_job(TEST_BUCKET, type="Job", children=100, child_failure_rate=0.1)
    h.clock.advance(5 + 60 + 1)  # ended before anyone watched it
    h.invoke({"action": "track", "job_ids": [batch]})
    notices = [e.notice for e in h.store.list_outbox(limit=100)]
    assert [(n.kind.value, n.to_state) for n in notices] == [("transition", "Success")]
    assert notices[0].payload()["progress"]["failed"] == 10 and len(notices[0].payload()["failed_sample"]) == 10
    assert [e.status for e in h.store.list_outbox(limit=100)] == ["done"]  # counted and sent in that invocation


@pytest.mark.parametrize("kind", ["Job", "Workflow"])
def test_a_batch_with_no_children_yet_costs_its_lease_and_nothing_more(harness, kind):
    """A steady tick refreshes the children of up to 100 polled batches; a batch not started yet has none.
    Such a batch costs its lease (taken and given back: two writes) and its page, no more: no write for a page
    that changed nothing, no count of unsettled children when none is recorded (its progress, written with its
    children, says so), no look for failed runs' errors. (On MariaDB each is a round trip or a commit; they
    were seven.)"""
    batch = harness.emulator.create_job(TEST_BUCKET, type=kind, children=0)
    key = JobKey(TEST_REGION, TEST_BUCKET, batch)
    harness.invoke({"action": "track", "job_ids": [batch]})  # first sight: polled, children read once
    harness.clock.advance(11)
    assert harness.app.engine.tick().polled == 1  # polled again, still under way: its children are due again
    assert harness.app.store.get(key).active
    statements: list[str] = []
    conn = harness.app.store._connection()
    conn.set_trace_callback(statements.append)
    try:
        res = harness.app.children_refresher.refresh()
    finally:
        conn.set_trace_callback(None)
    assert (res.batches, res.pages, res.errors) == (1, 1, 0)
    assert harness.app.store.get_progress(key).refreshed_at == harness.clock.now()
    writes = [s for s in statements if s.startswith("BEGIN IMMEDIATE")]
    reads = [s for s in statements if s == "BEGIN"]
    assert (len(writes), len(reads)) == (2, 0), statements


def test_the_children_of_many_batches_are_read_side_by_side(harness):
    """A steady tick refreshes the children of up to 100 polled batches. Read one batch after another, at 50 ms a
    page that is 5 s of every invocation; they are read side by side within the tick's request limit (each
    batch's own pages stay in order: one paging token). Same counts, same leases given back."""
    h = harness
    batches = [h.emulator.create_job(TEST_BUCKET, type="Job", children=0) for _ in range(8)]
    keys = [JobKey(TEST_REGION, TEST_BUCKET, b) for b in batches]
    h.invoke({"action": "track", "job_ids": batches})
    h.clock.advance(11)
    assert h.app.engine.tick().polled == 8  # polled again, still under way: their children are due again
    latency = 0.25
    h.emulator.set_faults([FaultRule("latency", path="/jobs", latency=latency)])
    started = time.monotonic()
    res = h.app.children_refresher.refresh()
    took = time.monotonic() - started
    assert (res.batches, res.pages, res.errors, res.lease_lost) == (8, 8, 0, 0)
    assert took < 4 * latency, f"8 batches' pages took {took:.2f} s at {latency} s each"
    for k in keys:
        p = h.app.store.get_progress(k)
        assert p.refreshed_at == h.clock.now() and p.total == 0
    # every lease given back: a refresh of the same batches, due again, takes them all
    h.emulator.set_faults([])
    h.clock.advance(1)
    h.store.request_children_refresh(keys, h.clock.now())
    assert h.app.children_refresher.refresh().batches == 8


def test_a_throttled_children_page_lowers_the_request_limit_for_the_rest(harness):
    """Batches read side by side share the engine's adaptive limit: CI's throttling answer on a children page
    halves it, as it does for a poll, so the batches still to read go fewer at a time."""
    h = harness
    batches = [h.emulator.create_job(TEST_BUCKET, type="Job", children=0) for _ in range(3)]
    h.invoke({"action": "track", "job_ids": batches})
    h.clock.advance(11)
    assert h.app.engine.tick().polled == 3
    limit = h.app.engine.limit
    before = limit.allowed
    h.emulator.set_faults([FaultRule("status", path="/jobs", status=429, code="RequestLimitExceeded")])
    res = h.app.children_refresher.refresh()
    assert res.throttled == 3 and res.errors == 3
    assert limit.allowed <= before // 2
