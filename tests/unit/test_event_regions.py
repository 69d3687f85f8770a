"""A region that reaches the function becomes part of a host name (``<bucket>.ci.<region>.myqcloud.com``) and a
store key, so every event path checks it where the event is parsed: a malformed one is refused naming the field
and the value (one record of a batch, never the batch), a well-formed one this version does not know is taken
with a structured warning, never dropped (the list of Cloud Infinite regions could not be confirmed)."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from jobwatch.core.errors import ValidationError
from jobwatch.core.models import CI_REGIONS
from jobwatch.triggers import events as ev

BUCKET = "examplebucket-1250000000"
REGION = "ap-guangzhou"
J1, J2 = "b" + "1" * 32, "b" + "2" * 32
DEFAULTS = ev.Defaults(REGION, BUCKET)

# 34 and 71 characters: the old pattern took both (up to 8 + 3 x 21 characters), but no region is that long, a
# store's region column holds 32 (MySQL VARCHAR(32)), and a DNS label at most 63.
TOO_LONG = ["ap-" + "x" * 20 + "-" + "y" * 10, "a" * 8 + "-" + "b" * 20 + "-" + "c" * 20 + "-" + "d" * 20]
MALFORMED = ["", " ", "AP-GUANGZHOU", "ap.guangzhou", "ap-guangzhou.evil.com", "ap/guangzhou", "ap guangzhou",
             "ap-guangzhou ", "ap-guangzhou\n", "ap_guangzhou", "ap-", "-ap-guangzhou", "ap-ｇuangzhou", *TOO_LONG]


def ckafka(*bodies: object) -> dict:
    return {"Records": [{"Ckafka": {"msgBody": json.dumps(b)}} for b in bodies]}


def task_finish_xml(region: str, bucket: str = BUCKET) -> bytes:
    return (f"<Response><EventName>TaskFinish</EventName><JobsDetail><JobId>j{'a' * 32}</JobId><State>Success"
            f"</State><Input><BucketId>{bucket}</BucketId><Region>{region}</Region></Input></JobsDetail>"
            "</Response>").encode()


def region_warnings(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["event"] == "region_unknown"]


# --- the rule itself ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", MALFORMED + [None, 5, ["ap-guangzhou"]])
def test_a_malformed_region_is_refused_naming_the_field_and_the_value(value):
    from jobwatch.core import regions

    with pytest.raises(ValidationError) as ei:
        regions.check_region(value, "Input.Region")
    assert ei.value.field == "Input.Region" and ei.value.value == value
    assert str(ei.value).startswith("invalid Input.Region ") and "ap-guangzhou" in str(ei.value)


@pytest.mark.parametrize("value", sorted(CI_REGIONS) + ["ap-newcity", "me-riyadh", "ap-shanghai-hq2"])
def test_every_well_formed_region_is_taken(value):
    from jobwatch.core import regions

    assert regions.check_region(value) == value


def test_unknown_regions_get_a_note_with_a_near_miss():
    from jobwatch.core import regions

    assert regions.unknown_region_note("ap-guangzhou") is None
    assert "did you mean ap-guangzhou?" in (regions.unknown_region_note("ap-guangzou") or "")
    note = regions.unknown_region_note("me-riyadh")
    assert note is not None and "did you mean" not in note and "not among the" in note


# --- queue records: one bad record, never the batch -----------------------------------------------------------

@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_region_rejects_its_record_and_keeps_the_rest(value):
    parsed = ev.parse_event(ckafka({"bucket": BUCKET, "region": value, "job_ids": [J1]},
                                   {"bucket": BUCKET, "region": REGION, "job_ids": [J2]}), DEFAULTS)
    bad, good = parsed.items
    assert isinstance(bad, ev.Rejected) and bad.index == 0, bad
    assert "region" in bad.reason and repr(value) in bad.reason
    assert isinstance(good, ev.Watch) and [k.job_id for k in good.keys] == [J2]


@pytest.mark.parametrize("value", TOO_LONG)
def test_a_too_long_region_is_refused_on_every_event_path(value):
    # TDMQ through EventBridge
    tdmq = {"type": "connector:tdmq", "data": {"msgBody": json.dumps({"region": value, "job_id": J1})}}
    (item,) = ev.parse_event(tdmq, DEFAULTS).items
    assert isinstance(item, ev.Rejected) and value in item.reason
    # direct invocations: keys and discovery targets
    with pytest.raises(ValidationError, match="invalid keys"):
        ev.parse_event({"action": "track", "keys": [f"{value}/{BUCKET}/{J1}"]}, DEFAULTS)
    with pytest.raises(ValidationError, match="invalid targets"):
        ev.parse_event({"action": "discover", "targets": [f"{value}/{BUCKET}"]}, DEFAULTS)
    # API Gateway: the job's place in the query
    with pytest.raises(ValidationError, match="invalid region"):
        ev.parse_watch({"job_id": J1, "region": value}, DEFAULTS, where="query")
    # CI callbacks: the body's Input.Region, or ?region= in the callback URL
    with pytest.raises(ValidationError) as ei:
        ev.parse_callback(task_finish_xml(value), ev.Defaults(), DEFAULTS)
    assert ei.value.field == "Input.Region" and ei.value.value == value
    with pytest.raises(ValidationError) as ei:
        ev.parse_callback(task_finish_xml(REGION), ev.Defaults(value, None), DEFAULTS)
    assert ei.value.field == "?region" and ei.value.value == value
    # ... and a callback in a queue record is rejected alone
    batch = ev.parse_event({"Records": [{"Ckafka": {"msgBody": task_finish_xml(value).decode()}},
                                        {"Ckafka": {"msgBody": task_finish_xml(REGION).decode()}}]}, DEFAULTS)
    assert isinstance(batch.items[0], ev.Rejected) and "Input.Region" in batch.items[0].reason
    assert batch.items[1].region == REGION


# --- well-formed but unknown: taken, and said -------------------------------------------------------------------

def test_an_unknown_region_is_taken_with_a_structured_warning():
    with capture_logs() as logs:
        parsed = ev.parse_event(ckafka({"bucket": BUCKET, "region": "ap-guangzou", "job_ids": [J1]},
                                       {"bucket": BUCKET, "region": REGION, "job_ids": [J2]}), DEFAULTS)
    first, second = parsed.items
    assert isinstance(first, ev.Watch) and first.keys[0].region == "ap-guangzou"
    assert isinstance(second, ev.Watch)
    (w,) = region_warnings(logs)
    assert w["log_level"] == "warning" and w["field"] == "region" and w["region"] == "ap-guangzou"
    assert "did you mean ap-guangzhou?" in w["note"]


def test_known_regions_say_nothing_and_callbacks_warn_too():
    with capture_logs() as logs:
        ev.parse_event(ckafka({"bucket": BUCKET, "region": REGION, "job_ids": [J1]}), DEFAULTS)
        ev.parse_event({"action": "discover", "targets": [f"{REGION}/{BUCKET}"]}, DEFAULTS)
    assert region_warnings(logs) == []
    with capture_logs() as logs:
        cb = ev.parse_callback(task_finish_xml("eu-newcity"), ev.Defaults(), DEFAULTS)
    assert cb.region == "eu-newcity"
    assert [(w["field"], w["region"]) for w in region_warnings(logs)] == [("Input.Region", "eu-newcity")]
