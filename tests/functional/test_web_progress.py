"""The status page over a batch whose children were counted on the emulator over real HTTP (issue 14's
progress): the overview's bar and label, the job page's counts and failed objects, each as the store holds them."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from fixtures.emulator import TEST_BUCKET, TEST_REGION
from test_batch_progress import _run_to_the_end
from test_handler import API_KEY, _handler_logging, harness  # noqa: F401  (fixtures)

from jobwatch.core.models import JobKey
from jobwatch.web import WebRequest, handle


def _get(app, cookie, path, **query):
    r = handle(app, WebRequest("GET", path, query, {"cookie": cookie}))
    assert r.status == 200, r.body[:500]
    return r.body


def test_progress_and_failed_objects_of_a_counted_batch(harness):
    emulator = harness.emulator
    batch = emulator.create_job(TEST_BUCKET, type="Job", children=300, child_failure_rate=0.1)
    _run_to_the_end(harness, batch)
    truth = emulator.child_views(TEST_BUCKET, batch)
    failed = sorted(c.object_key for c in truth if c.state == "Failed")
    assert len(truth) == 300 and failed
    app = harness.app
    login = handle(app, WebRequest("POST", "/ui/login", body=urlencode({"api_key": API_KEY}).encode()))
    cookie = login.headers["Set-Cookie"].split(";")[0]

    overview = _get(app, cookie, "/ui")
    label = f"{100}% 300/300, {len(failed)} failed"
    assert f'<span class="plabel">{label}</span>' in overview
    w_fail = re.search(r'<rect class="fail" x="([0-9.]+)" width="([0-9.]+)"', overview)
    assert w_fail and abs(float(w_fail.group(2)) - 100 * len(failed) / 300) < 0.01

    page = _get(app, cookie, f"/ui/jobs/{batch}", region=TEST_REGION, bucket=TEST_BUCKET)
    assert "<h2>Children</h2>" in page and f"<dt>failed</dt><dd>{len(failed)}</dd>" in page
    assert "<dt>total</dt><dd>300</dd>" in page and "final count" in page
    shown = re.findall(r'<td class="obj">([^<]*)</td>', page)
    assert sorted(shown) == failed  # fewer than 100: every failed object is listed
    assert app.job(JobKey(TEST_REGION, TEST_BUCKET, batch)).state == "Success"


def test_failed_polls_are_kept_and_drawn_on_the_timeline(harness):
    """The emulator answers 500 to two polls of a job: each failed poll is recorded with its time and the
    job page draws a red mark per failed poll and lists them, after the job has recovered."""
    from fixtures.emulator import TEST_BUCKET as B
    from test_handler import load_event

    from jobwatch.emulator import FaultRule

    h = harness
    (job_id,) = h.create(1)
    key = JobKey(TEST_REGION, B, job_id)
    h.invoke({"action": "track", "job_ids": [job_id], "poll": False})
    h.emulator.set_faults([FaultRule("status", path="/inventorytriggerjob/*", status=500, code="InternalError",
                                     message="<script>alert(4)</script> backend down", times=2)])
    for _ in range(2):
        h.invoke(load_event("timer.json"))
        h.clock.advance(120)
    h.invoke(load_event("timer.json"))  # the fault is spent: this poll succeeds
    tj = h.app.job(key)
    assert tj.error_count == 0 and tj.state is not None
    errors = h.app.job_detail(key).poll_errors
    assert len(errors) == 2 and errors[0].at < errors[1].at
    assert all("InternalError" in e.message for e in errors)

    login = handle(h.app, WebRequest("POST", "/ui/login", body=urlencode({"api_key": API_KEY}).encode()))
    page = _get(h.app, login.headers["Set-Cookie"].split(";")[0], f"/ui/jobs/{job_id}", region=TEST_REGION,
                bucket=B)
    assert page.count('<g class="poll-error">') == 2 and "<h2>Failed polls</h2>" in page
    assert "<script>alert(4)" not in page and "&lt;script&gt;alert(4)&lt;/script&gt;" in page
