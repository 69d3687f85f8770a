"""Readable messages: the facts people need, durations, escaping, and the webhook signer's published vector."""

from datetime import datetime, timezone

from jobwatch.core.models import JobKey, Notice, NoticeKind
from jobwatch.notify import render
from jobwatch.notify.webhook import decode_secret, sign
from jobwatch.core.redact import Secret


def make(kind=NoticeKind.TRANSITION, to="Failed", name="nightly*_job", code="InternalError", message="boom <b>"):
    job = {"job_id": "b01", "name": name, "code": code, "message": message,
           "started_at": "2025-01-01T00:00:00+00:00", "ended_at": "2025-01-02T03:04:05+00:00"}
    return Notice("key-1", kind, JobKey("ap-guangzhou", "media-1250000000", "b01"), "Running", to,
                  datetime(2025, 1, 2, 3, 5, tzinfo=timezone.utc), job, {"team": "media"})


def test_duration_text():
    assert render.duration_text(12) == "12s"
    assert render.duration_text(90) == "1m 30s"
    assert render.duration_text(7500) == "2h 5m"
    assert render.duration_text(3 * 86400 + 4 * 3600 + 59) == "3d 4h"
    assert render.duration_text(None) is None and render.duration_text(-1) is None


def test_markdown_has_the_facts_and_escapes_names():
    md = render.markdown(make())
    assert md.startswith("### ❌ Job nightly\\*\\_job: Failed")
    for piece in ("**Job:** nightly\\*\\_job (`b01`)", "**Bucket:** media-1250000000 (ap-guangzhou)",
                  "**State:** Running -> Failed", "**Ran for:** 1d 3h", "**Error:** InternalError boom \\<b\\>",
                  "**Tags:** team=media", "key `key-1`"):
        assert piece in md, piece


def test_slack_flavour_escapes_html_entities():
    md = render.markdown(make(), flavour="slack")
    assert md.startswith("*❌ Job nightly")
    assert "boom &lt;b&gt;" in md and "*State:* Running -&gt; Failed" in md


def test_success_shows_no_error_line():
    md = render.markdown(make(to="Success", code="Success", message="ok"))
    assert "Error" not in md and "✅" in md


def test_stalled_and_vanished_titles():
    assert "stalled in Running" in render.title(make(kind=NoticeKind.STALLED, to="Running"))
    assert "vanished" in render.title(make(kind=NoticeKind.VANISHED, to=None))
    assert "moving again (Success)" in render.title(make(kind=NoticeKind.RECOVERED, to="Success"))


def test_long_messages_are_cut():
    f = render.fields(make(message="x" * 5000))
    assert len(f["message"]) == render.MAX_MESSAGE + 1
    assert len(render.markdown(make(message="x" * 5000))) <= render.MAX_TOTAL


def test_text_form():
    t = render.text(make())
    assert t.splitlines()[1:4] == ["Job: nightly*_job (b01)", "Bucket: media-1250000000 (ap-guangzhou)",
                                   "State: Running -> Failed"]


def test_signer_reproduces_the_standard_webhooks_vector():
    key = decode_secret(Secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}') == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert decode_secret(Secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")) == key  # the prefix is optional


# --- a batch's progress and failed objects (issue 14) -----------------------------------------------------------

from dataclasses import replace  # noqa: E402

DETAIL = {"progress": {"total": 12000, "succeeded": 11920, "failed": 40, "running": 0, "waiting": 40,
                       "cancelled": 0},
          "failed_sample": [{"object": f"in/clip_{i}*.mp4", "child_id": f"j{i}", "code": "InvalidInput",
                             "message": "bad"} for i in range(10)]}


def test_batch_notice_shows_progress_and_the_first_failed_objects():
    n = replace(make(to="Success", code="Success", message=""), detail=DETAIL)
    md = render.markdown(n)
    assert "**Progress:** 11,960 / 12,000 done, 40 failed" in md
    assert ("**Failed objects:** `in/clip_0*.mp4` (InvalidInput), `in/clip_1*.mp4` (InvalidInput), "
            "`in/clip_2*.mp4` (InvalidInput) and 37 more") in md
    assert "clip_3" not in md
    assert "Progress: 11,960 / 12,000 done, 40 failed" in render.text(n)
    assert "*Progress:* 11,960 / 12,000 done, 40 failed" in render.markdown(n, flavour="slack")
    assert render.fields(n)["progress"] == "11,960 / 12,000 done, 40 failed"


def test_children_failed_title_and_no_progress_line_without_detail():
    n = replace(make(kind=NoticeKind.CHILDREN_FAILED, to="Running"), detail=DETAIL)
    assert render.title(n) == "ℹ️ Job nightly*_job: 40 failed objects"
    assert "Progress" not in render.markdown(make()) and "Failed objects" not in render.text(make())
    hostile = replace(make(), detail={"progress": {"total": "x"}, "failed_sample": ["nope", {"object": 5}]})
    assert "Progress" not in render.markdown(hostile) and "`5`" in render.markdown(hostile)
