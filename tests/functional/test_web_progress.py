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
