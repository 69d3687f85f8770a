"""Stall rules and the stall decision, under freezegun: a job's clock moves, the decision follows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from jobwatch.core.errors import ConfigError, ValidationError
from jobwatch.core.stall import StallRules, StallThresholds, evaluate_stall, parse_duration

UTC = timezone.utc
T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
BUCKET = "media-1250000000"
RULES = StallRules.parse({
    "running": "2h", "submitted": "30m", "paused": "1d", "repeat": "1h",
    "buckets": {"slow-1250000000": {"running": "8h"}, BUCKET: {"repeat": "off"}},
    "tags": {"team:live": {"running": "20m"}, "tier:gold": {"running": "40m", "paused": "2h"}},
})


def now() -> datetime:
    return datetime.now(UTC)


def decide(state="Running", since=T0, last=None, bucket="other-1250000000", tags=None, rules=RULES):
    return evaluate_stall(state, since, now(), last, bucket, tags or {}, rules)


@pytest.mark.parametrize("value,seconds", [(90, 90), ("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200),
                                           ("1.5d", 129600), (2.5, 2.5)])
def test_parse_duration(value, seconds):
    assert parse_duration(value, field_name="x") == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["off", "none", None, ""])
def test_parse_duration_off(value):
    assert parse_duration(value, field_name="x") is None


@pytest.mark.parametrize("value", ["2 weeks", "-5", 0, True, "h"])
def test_parse_duration_refuses(value):
    with pytest.raises(ValidationError, match="stall.running"):
        parse_duration(value, field_name="stall.running")


def test_stalled_once_then_repeated_no_more_often_than_the_interval():
    with freeze_time(T0 + timedelta(hours=1, minutes=59)) as frozen:
        d = decide()
        assert (d.stalled, d.notify) == (False, False) and d.threshold == timedelta(hours=2)
        frozen.tick(timedelta(minutes=1))
        d = decide()
        assert (d.stalled, d.notify) == (True, True) and d.elapsed == timedelta(hours=2)
        first = now()
        frozen.tick(timedelta(minutes=59))
        assert (decide(last=first).stalled, decide(last=first).notify) == (True, False)
        frozen.tick(timedelta(minutes=1))
        assert decide(last=first).notify is True


def test_submitted_and_paused_have_their_own_thresholds():
    with freeze_time(T0 + timedelta(minutes=31)):
        assert decide("Submitted").notify is True
        assert decide("Running").stalled is False
        assert decide("Pause").stalled is False
    with freeze_time(T0 + timedelta(days=1)):
        assert decide("Pause").notify is True


@pytest.mark.parametrize("state", ["Success", "Failed", "Cancel", "Unknown", "SomethingNew"])
def test_terminal_and_unknown_states_never_stall(state):
    with freeze_time(T0 + timedelta(days=30)):
        d = decide(state)
        assert (d.stalled, d.notify) == (False, False)


def test_bucket_override_changes_only_its_fields():
    with freeze_time(T0 + timedelta(hours=3)):
        assert decide(bucket="slow-1250000000").stalled is False  # running 8h there
        assert decide(bucket="slow-1250000000", state="Submitted").stalled is True  # submitted still 30m
    with freeze_time(T0 + timedelta(hours=9)):
        assert decide(bucket="slow-1250000000").notify is True


def test_repeat_off_notifies_once_per_stay():
    with freeze_time(T0 + timedelta(hours=3)):
        first = now()
    with freeze_time(T0 + timedelta(days=3)):
        d = decide(bucket=BUCKET, last=first)
        assert (d.stalled, d.notify) == (True, False)


def test_tag_overrides_win_over_the_bucket_and_the_shortest_tag_wins():
    t = RULES.for_job("slow-1250000000", {"team": "live", "tier": "gold"})
    assert t.running == timedelta(minutes=20) and t.paused == timedelta(hours=2)
    assert t.submitted == timedelta(minutes=30) and t.repeat == timedelta(hours=1)
    with freeze_time(T0 + timedelta(minutes=25)):
        assert decide(bucket="slow-1250000000", tags={"team": "live"}).notify is True
        assert decide(bucket="slow-1250000000", tags={"team": "vod"}).stalled is False


def test_a_notice_from_an_earlier_stay_does_not_hold_back_the_next():
    old = T0 - timedelta(minutes=10)  # notified while it was in its previous state
    with freeze_time(T0 + timedelta(hours=2)):
        assert decide(last=old).notify is True


def test_naive_datetimes_are_refused():
    with freeze_time(T0):
        with pytest.raises(ValidationError, match="since"):
            evaluate_stall("Running", T0.replace(tzinfo=None), now(), None, BUCKET, {}, RULES)


def test_defaults_and_plain_values():
    assert StallRules.parse().default == StallThresholds()
    r = StallRules.parse(None, running="3h", repeat="off")
    assert r.default.running == timedelta(hours=3) and r.default.submitted == timedelta(hours=3)
    assert r.default.repeat is None and r.default.paused == StallThresholds().paused
    assert StallRules.parse('{"running": 60}').default.running == timedelta(seconds=60)


def test_every_problem_reported():
    with pytest.raises(ConfigError) as ei:
        StallRules.parse({"runing": "1h", "paused": "soon", "buckets": {"BAD": {}, "ok-1250000000": {"x": 1}},
                          "tags": {"novalue": {}, "a:b": "1h"}})
    text = "\n".join(ei.value.problems)
    for want in ["unknown field 'runing'", "invalid stall.paused 'soon'", "invalid bucket 'BAD'",
                 "stall.buckets.ok-1250000000: unknown field 'x'", "invalid tag 'novalue'", "stall.tags.a:b: expected"]:
        assert want in text, want
    with pytest.raises(ConfigError, match="not JSON"):
        StallRules.parse("{running: 1}")
