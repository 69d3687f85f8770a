"""A batch's progress from its children (pure): buckets per state, the status text, rate and ETA."""

from datetime import datetime, timedelta, timezone

from jobwatch.core.progress import PROGRESS_KEYS, Progress, bucket_of

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_each_state_counts_in_one_bucket_and_unknown_ones_as_running():
    assert [bucket_of(s) for s in ("Success", "Failed", "Cancel", "Running", "Submitted", "Pause", "Paused?", None)] \
        == ["succeeded", "failed", "cancelled", "running", "waiting", "waiting", "running", "running"]
    p = Progress().counted("Submitted").counted("Submitted").counted("Submitted", -1).counted("Failed")
    assert (p.waiting, p.failed, p.total) == (1, 1, 0)  # total is kept by whoever counts a new child


def test_text_is_what_the_status_table_shows():
    p = Progress(total=12000, succeeded=11920, failed=40, waiting=40)
    assert p.text() == "99% 11,960/12,000, 40 failed"
    assert Progress(total=12000, succeeded=11720, failed=40, running=240).text() == "98% 11,760/12,000, 40 failed"
    assert Progress(total=3, succeeded=1, cancelled=2).text() == "100% 3/3, 2 cancelled"
    assert Progress().text() == "no children yet"
    assert list(p.counts()) == list(PROGRESS_KEYS) and p.counts()["failed"] == 40


def test_rate_and_eta_from_the_service_times():
    p = Progress(total=1000, succeeded=400, failed=100, running=500, first_child_at=T0,
                 last_end_at=T0 + timedelta(seconds=100), refreshed_at=T0 + timedelta(seconds=400))
    assert p.rate() == 5.0 and p.eta_seconds() == 100.0 and p.failed_share() == 0.2
    j = p.to_json()
    assert (j["percent"], j["rate_per_s"], j["eta_s"], j["done"]) == (50.0, 5.0, 100, 500)
    assert Progress(total=5, running=5, first_child_at=T0).eta_seconds() is None  # nothing finished yet
    assert Progress(total=5, succeeded=5, first_child_at=T0, last_end_at=T0).eta_seconds() == 0.0
    assert Progress().to_json()["percent"] is None
    assert p.pace_text() == "300/min, about 1m 40s left"
    assert Progress(total=5, succeeded=5, first_child_at=T0, last_end_at=T0).pace_text() is None
