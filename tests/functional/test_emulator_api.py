"""The API's shapes: create validation, list filters and paging, hosts and buckets, headers and error bodies."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from lxml import etree

from fixtures.emulator import TEST_BUCKET, TEST_HOST, TEST_START, signed_headers
from jobwatch.ci.xmlparse import parse_error, parse_response

LIST = "/inventorytriggerjob"
JOB_XML = """<Request><Name>{name}</Name><Type>Job</Type><Input><Prefix>input</Prefix></Input>
<Operation><TimeInterval><Start>2022-02-01T12:00:00+0800</Start><End>2022-05-01T12:00:00+0800</End></TimeInterval>
<QueueId>p893bcda225bf4945a378da6662e81a89</QueueId><UserData>this is my inventorytriggerjob</UserData>
<CallBack>https://www.callback.com</CallBack><Tag>Transcode</Tag>
<JobParam><TemplateId>t1460606b9752148c4ab182f55163ba7cd</TemplateId></JobParam>
<Output><Region>ap-chongqing</Region><Bucket>test-1234567890</Bucket><Object>out.mp4</Object></Output>
<JobLevel>0</JobLevel></Operation></Request>"""
WF_XML = """<Request><Name>wf</Name><Type>Workflow</Type><Input><Manifest>m.json</Manifest></Input>
<Operation><WorkflowIds>w1</WorkflowIds></Operation></Request>"""


def post(emulator, body: str | bytes, host: str = TEST_HOST):
    data = body.encode() if isinstance(body, str) else body
    headers = signed_headers("POST", LIST, host=host, extra={"content-type": "application/xml"})
    return requests.post(emulator.url + LIST, data=data, headers=headers, timeout=5)


def get_list(emulator, **params):
    params = {k: str(v) for k, v in params.items()}
    return requests.get(emulator.url + LIST, params=params, headers=signed_headers("GET", LIST, params), timeout=5)


def list_ok(emulator, **params):
    r = get_list(emulator, **params)
    assert r.status_code == 200, r.text
    return parse_response(r.content)


def test_create_job_variant_echoes_its_operation(emulator):
    r = post(emulator, JOB_XML.format(name="demo"))
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/xml"
    res = parse_response(r.content)
    (job,) = res.jobs
    assert job.state_raw == "Submitted" and job.type == "Job" and job.name == "demo"
    assert job.operation.tag == "Transcode" and job.operation.queue_id == "p893bcda225bf4945a378da6662e81a89"
    assert job.operation.user_data == "this is my inventorytriggerjob"
    assert res.request_id == r.headers["x-ci-request-id"]
    assert emulator.request_log[-1].job_id == job.job_id and emulator.request_log[-1].status == 200
    wf = parse_response(post(emulator, WF_XML).content).jobs[0]
    assert wf.operation.workflow_ids == ("w1",) and wf.input.manifest == "m.json"


@pytest.mark.parametrize("body,field", [
    (JOB_XML.format(name="bad name!"), "Name"),
    (JOB_XML.format(name="x" * 129), "Name"),
    (JOB_XML.format(name="ok").replace("<Type>Job</Type>", "<Type>Batch</Type>"), "Type"),
    (JOB_XML.format(name="ok").replace("<Input><Prefix>input</Prefix></Input>", ""), "Input"),
    (JOB_XML.format(name="ok").replace("<Tag>Transcode</Tag>", ""), "Tag"),
    (WF_XML.replace("<WorkflowIds>w1</WorkflowIds>", ""), "WorkflowIds"),
    (JOB_XML.format(name="ok").replace("2022-02-01T12:00:00+0800", "yesterday"), "Start"),
    ("<Request><Name>x</Name>", "XML"),
    ('<!DOCTYPE r [<!ENTITY e "x">]><Request/>', "XML"),
    ("<Job/>", "Request"),
])
def test_create_refuses_bad_bodies_naming_the_field(emulator, body, field):
    r = post(emulator, body)
    err = parse_error(r.content, status=r.status_code)
    assert r.status_code == 400 and err.code == "InvalidArgument" and field in err.message
    assert b"<Resource>" not in r.content and err.trace_id == r.headers["x-ci-trace-id"]


def test_list_filters(emulator, emulator_clock):
    a = emulator.create_job(TEST_BUCKET, name="a", type="Job", created_at=TEST_START - timedelta(hours=3))
    b = emulator.create_job(TEST_BUCKET, name="b", type="Workflow", state="Running",
                            created_at=TEST_START - timedelta(hours=2), workflow_id="wA")
    c = emulator.create_job(TEST_BUCKET, name="c", type="Workflow", state="Failed",
                            created_at=TEST_START - timedelta(hours=1), workflow_id="wB")
    ids = lambda res: [j.job_id for j in res.jobs]  # noqa: E731
    assert ids(list_ok(emulator)) == [c, b, a]  # Desc by default, both types without a type filter
    assert ids(list_ok(emulator, orderByTime="Asc")) == [a, b, c]
    assert ids(list_ok(emulator, type="Job")) == [a]
    assert ids(list_ok(emulator, states="Running,Failed")) == [c, b]
    assert ids(list_ok(emulator, states="All")) == [c, b, a]
    # inclusive window, in the service's +0800 form
    assert ids(list_ok(emulator, startCreationTime="2026-01-01T06:00:00+0800",
                       endCreationTime="2026-01-01T07:00:00+0800")) == [c, b]
    assert ids(list_ok(emulator, workflowId="wB")) == [c]
    assert ids(list_ok(emulator, jobId=b)) == [b]
    assert ids(list_ok(emulator, name="a")) == [a]
    assert ids(list_ok(emulator, workflowId="", jobId="", nextToken="")) == [c, b, a]  # the SDK's empty values


@pytest.mark.parametrize("params,name", [
    ({"size": 101}, "size"), ({"size": 0}, "size"), ({"size": "ten"}, "size"), ({"type": "Batch"}, "type"),
    ({"states": "Running,Done"}, "states"), ({"orderByTime": "Up"}, "orderByTime"),
    ({"startCreationTime": "yesterday"}, "startCreationTime"), ({"nextToken": "not-a-token!"}, "nextToken"),
])
def test_list_refuses_bad_parameters(emulator, params, name):
    r = get_list(emulator, **params)
    err = parse_error(r.content, status=r.status_code)
    assert r.status_code == 400 and err.code == "InvalidArgument" and name in err.message


def test_paging_visits_every_job_once(emulator):
    created = set(emulator.preload(TEST_BUCKET, 250))
    seen: list[str] = []
    token, pages = "", 0
    while True:
        res = list_ok(emulator, size=100, nextToken=token) if token else list_ok(emulator, size=100)
        seen += [j.job_id for j in res.jobs]
        pages += 1
        token = res.next_token or ""
        if not token:
            break
    assert pages == 3 and len(seen) == 250 and set(seen) == created
    assert list_ok(emulator).next_token  # default size 10 leaves more


def test_buckets_are_separate_and_cos_host_is_accepted(emulator):
    other = "otherbucket-1250000000"
    emulator.create_job(other, name="mine")
    assert list_ok(emulator).jobs == []
    cos_host = f"{other}.cos.ap-guangzhou.myqcloud.com"
    r = requests.get(emulator.url + LIST, headers=signed_headers("GET", LIST, host=cos_host), timeout=5)
    assert [j.name for j in parse_response(r.content).jobs] == ["mine"]


def test_host_without_bucket_is_refused(emulator):
    r = requests.get(emulator.url + LIST, headers=signed_headers("GET", LIST, host="127.0.0.1"), timeout=5)
    assert r.status_code == 404 and parse_error(r.content, status=404).code == "NoSuchBucket"


def test_query_several_ids_and_time_format(emulator):
    known = emulator.create_job(TEST_BUCKET, state="Running")
    path = f"/inventorytriggerjob/{known},bnope"
    r = requests.get(emulator.url + path, headers=signed_headers("GET", path), timeout=5)
    root = etree.fromstring(r.content)
    assert root.findtext("JobsDetail/JobId") == known and root.findtext("NonExistJobIds") == "bnope"
    assert root.findtext("JobsDetail/CreationTime") == "2026-01-01T08:00:00+0800"
    assert root.findtext("JobsDetail/EndTime") == "-"
    assert [c.tag for c in root.find("JobsDetail")][:9] == [
        "Code", "Type", "Message", "Name", "JobId", "State", "CreationTime", "StartTime", "EndTime"]


def test_wrong_method_and_unknown_path(emulator):
    path = "/inventorytriggerjob/b1"
    r = requests.delete(emulator.url + path, headers=signed_headers("DELETE", path), timeout=5)
    assert r.status_code == 405
    r = requests.put(emulator.url + path, headers=signed_headers("PUT", path), timeout=5)
    assert r.status_code == 400 and "cancel" in r.text
    r = requests.get(emulator.url + "/nosuchapi", headers=signed_headers("GET", "/nosuchapi"), timeout=5)
    assert r.status_code == 404


def test_paging_ascending_shows_jobs_created_meanwhile_once_and_honours_the_cap(emulator, emulator_clock):
    first = [emulator.create_job(TEST_BUCKET, name=f"a{i}", created_at=TEST_START - timedelta(seconds=300 - i))
             for i in range(150)]
    res = list_ok(emulator, size=100, orderByTime="Asc", type="Workflow")
    assert [j.job_id for j in res.jobs] == first[:100] and res.next_token
    # created while the client pages: one after the cursor (shown later), one before it (keyset: not shown)
    late = emulator.create_job(TEST_BUCKET, name="late", created_at=TEST_START)
    early = emulator.create_job(TEST_BUCKET, name="early", created_at=TEST_START - timedelta(seconds=400))
    rest = list_ok(emulator, size=100, orderByTime="Asc", type="Workflow", nextToken=res.next_token)
    assert [j.job_id for j in rest.jobs] == first[100:] + [late] and not rest.next_token
    assert early not in [j.job_id for j in rest.jobs]
    assert get_list(emulator, size=101).status_code == 400  # the cap


def test_list_window_is_inclusive_at_both_ends_with_an_encoded_plus(emulator):
    at = [emulator.create_job(TEST_BUCKET, name=f"t{i}", created_at=TEST_START + timedelta(seconds=i))
          for i in range(4)]
    ids = lambda res: [j.job_id for j in res.jobs]  # noqa: E731
    # requests encodes '+' as %2B; a bare '+' would arrive as a space (and be refused)
    assert ids(list_ok(emulator, orderByTime="Asc", startCreationTime="2026-01-01T08:00:01+0800",
                       endCreationTime="2026-01-01T08:00:02+0800")) == at[1:3]
    bare = requests.get(emulator.url + LIST + "?startCreationTime=2026-01-01T08:00:01+0800",
                        headers=signed_headers("GET", LIST, {"startCreationTime": "2026-01-01T08:00:01 0800"}),
                        timeout=5)
    assert bare.status_code == 400 and b"startCreationTime" in bare.content
