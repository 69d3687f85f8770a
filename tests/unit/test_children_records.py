"""The child records: final states as data, a JSON round trip, and a clear error for an unknown kind."""

from datetime import datetime, timedelta, timezone

import pytest

from jobwatch.core.children import ChildJob, ChildKind, ChildPage, is_final_child_state
from jobwatch.core.errors import ValidationError

CST = timezone(timedelta(hours=8))


@pytest.mark.parametrize("state,final", [
    ("Success", True), ("Failed", True), ("Cancel", True),
    ("Submitted", False), ("Running", False), ("Pause", False), ("Whatever", False), (None, False), ("", False),
    ("success", False),
])
def test_final_states(state, final):
    assert is_final_child_state(state) is final


def test_json_round_trip_keeps_every_field():
    c = ChildJob(child_id="j" + "a" * 32, kind=ChildKind.PIC_JOB, object_key="in/a b.jpg", state="Failed",
                 created_at=datetime(2022, 7, 7, 12, 12, 12, tzinfo=CST), started_at=None,
                 ended_at=datetime(2022, 7, 7, 12, 13, 0, tzinfo=CST), code="InternalError", message="boom",
                 workflow_id=None, queue_id="p1", tag="PicProcess")
    data = c.to_json()
    assert data["object"] == "in/a b.jpg" and data["kind"] == "pic_job" and data["code"] == "InternalError"
    assert ChildJob.from_json(data) == c
    assert c.is_final and c.failed


def test_unknown_kind_names_the_field():
    with pytest.raises(ValidationError) as ei:
        ChildKind.parse("batch")
    assert ei.value.field == "kind" and ei.value.value == "batch"


def test_page_defaults_are_not_shared():
    a, b = ChildPage(), ChildPage()
    a.items.append(1)
    assert b.items == [] and b.next_token is None
