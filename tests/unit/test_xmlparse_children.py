"""Parsing the child lists of a batch job (``/jobs``, ``/pic_jobs``, ``/workflowexecution``) and one workflow
execution's detail: the documented samples, the three time forms, single-item pages, and hostile input."""

from datetime import datetime, timedelta, timezone

import pytest

from jobwatch.ci import xmlparse
from jobwatch.core.children import ChildKind
from jobwatch.core.errors import BadResponseError, CIError

CST = timezone(timedelta(hours=8))
J1 = "j" + "1" * 32
J2 = "j" + "2" * 32
R1 = "i166ee19017b011eda8a5525400c540df"
R2 = "i" + "2" * 32

# The DescribeMediaJobs sample shape (no RequestId, a token on a short page).
MEDIA_PAGE = f"""<Response>
  <JobsDetail>
    <Code>Success</Code><Message/>
    <JobId>{J1}</JobId><State>Running</State>
    <CreationTime>2022-07-07T12:12:12+0800</CreationTime><StartTime>2022-07-07T12:12:13+0800</StartTime>
    <EndTime>-</EndTime>
    <QueueId>p893bcda225bf4945a378da6662e81a89</QueueId><Tag>Transcode</Tag>
    <Input><Object>test.mp4</Object></Input>
    <Operation><Output><Region>ap-chongqing</Region><Bucket>b-1</Bucket><Object>o.mp4</Object></Output>
      <UserData/><JobLevel>0</JobLevel></Operation>
  </JobsDetail>
  <JobsDetail>
    <Code>InvalidInput</Code><Message>the input is not a media file</Message>
    <JobId>{J2}</JobId><State>Failed</State>
    <CreationTime>2022-07-07T12:12:14+0800</CreationTime><StartTime>2022-07-07T12:12:15+0800</StartTime>
    <EndTime>2022-07-07T12:12:20+0800</EndTime>
    <QueueId>p893bcda225bf4945a378da6662e81a89</QueueId><Tag>Transcode</Tag>
    <Input><Object>dir/bad file.mp4</Object></Input>
    <Workflow><RunId>{R1}</RunId><WorkflowId>w1</WorkflowId><Name>n</Name></Workflow>
  </JobsDetail>
  <NextToken>225508</NextToken>
</Response>""".encode()

# The workflow instance list sample (+08:00 offsets, one element per execution).
WF_PAGE = f"""<Response>
  <RequestId>NjJmMjEyMmFfZWM0YTYyNjRfN2U2NV8yNmI0</RequestId>
  <WorkflowExecutionList>
    <RunId>{R1}</RunId><WorkflowId>web6ac56c1ef54dbfa44d7f4103203be9</WorkflowId>
    <Object>wk-test/game.mp4</Object><CreateTime>2022-08-09T14:54:17+08:00</CreateTime><State>Success</State>
  </WorkflowExecutionList>
  <WorkflowExecutionList>
    <RunId>{R2}</RunId><WorkflowId>web6ac56c1ef54dbfa44d7f4103203be9</WorkflowId>
    <Object>https://test-1234567890.cos.ap-chongqing.myqcloud.com/wk-test/a%20b.mp4</Object>
    <CreationTime>2022-08-09T14:54:18+08:00</CreationTime><State>Failed</State>
  </WorkflowExecutionList>
  <NextToken>115716</NextToken>
</Response>""".encode()

WF_DETAIL = f"""<Response><RequestId>r</RequestId><WorkflowExecution>
  <WorkflowId>w1</WorkflowId><Name>wf</Name><RunId>{R1}</RunId><CreateTime>2022-08-09T14:54:17+08:00</CreateTime>
  <Object>wk-test/game.mp4</Object><State>Failed</State><Topology><Dependencies/></Topology>
  <Tasks><Type>Snapshot</Type><JobId>{J1}</JobId><CreateTime>2022-08-09 14:54:40+0800</CreateTime>
    <Name>Snapshot_1</Name><State>Success</State><StartTime>2022-08-09 14:54:41+0800</StartTime>
    <EndTime>2022-08-09 14:54:42+0800</EndTime><Code>Success</Code><Message/></Tasks>
  <Tasks><Type>Transcode</Type><JobId>{J2}</JobId><CreateTime>2022-08-09T14:54:40+08:00</CreateTime>
    <Name>Transcode_1</Name><State>Failed</State><StartTime>2022-08-09T14:54:43+0800</StartTime>
    <EndTime>2022-08-09T14:55:01+0800</EndTime><Code>InvalidInput</Code><Message>no video stream</Message></Tasks>
</WorkflowExecution></Response>""".encode()


def test_media_page_documented_shape():
    page = xmlparse.parse_media_job_page(MEDIA_PAGE, ChildKind.JOB, request_id="hdr-rid")
    assert page.next_token == "225508" and page.request_id == "hdr-rid"  # no RequestId in the body: the header's
    a, b = page.items
    assert (a.child_id, a.kind, a.object_key, a.state) == (J1, ChildKind.JOB, "test.mp4", "Running")
    assert a.created_at == datetime(2022, 7, 7, 12, 12, 12, tzinfo=CST)
    assert a.started_at == datetime(2022, 7, 7, 12, 12, 13, tzinfo=CST)
    assert a.ended_at is None and a.code is None and a.message is None  # "Success" is not an error code
    assert (a.queue_id, a.tag, a.workflow_id) == ("p893bcda225bf4945a378da6662e81a89", "Transcode", None)
    assert (b.state, b.code, b.message, b.object_key) == ("Failed", "InvalidInput", "the input is not a media file",
                                                          "dir/bad file.mp4")
    assert b.ended_at == datetime(2022, 7, 7, 12, 12, 20, tzinfo=CST) and b.workflow_id == "w1"


def test_media_page_single_item_empty_and_picture_kind():
    one = MEDIA_PAGE.split(b"<JobsDetail>")[0] + b"<JobsDetail>" + MEDIA_PAGE.split(b"<JobsDetail>")[1]
    one = one.split(b"</JobsDetail>")[0] + b"</JobsDetail></Response>"
    page = xmlparse.parse_media_job_page(one, ChildKind.PIC_JOB)
    assert [c.child_id for c in page.items] == [J1] and page.items[0].kind is ChildKind.PIC_JOB
    assert page.next_token is None
    empty = xmlparse.parse_media_job_page(b"<Response><NextToken></NextToken></Response>", ChildKind.JOB)
    assert empty.items == [] and empty.next_token is None


def test_workflow_page_colon_offset_both_time_names_and_cos_url():
    page = xmlparse.parse_workflow_execution_page(WF_PAGE)
    assert page.request_id == "NjJmMjEyMmFfZWM0YTYyNjRfN2U2NV8yNmI0" and page.next_token == "115716"
    a, b = page.items
    assert (a.child_id, a.kind, a.state, a.object_key) == (R1, ChildKind.WORKFLOW, "Success", "wk-test/game.mp4")
    assert a.created_at == datetime(2022, 8, 9, 14, 54, 17, tzinfo=CST)
    assert a.workflow_id == "web6ac56c1ef54dbfa44d7f4103203be9" and a.ended_at is None and a.code is None
    assert b.created_at == datetime(2022, 8, 9, 14, 54, 18, tzinfo=CST)  # CreationTime (Go SDK's name) accepted
    assert b.object_key == "wk-test/a b.mp4"


def test_workflow_detail_error_from_failed_task_and_times_from_tasks():
    c = xmlparse.parse_workflow_execution(WF_DETAIL)
    assert (c.child_id, c.state, c.code) == (R1, "Failed", "InvalidInput")
    assert c.message == "Transcode_1: no video stream"
    assert c.started_at == datetime(2022, 8, 9, 14, 54, 41, tzinfo=CST)  # space separator, +0800
    assert c.ended_at == datetime(2022, 8, 9, 14, 55, 1, tzinfo=CST)
    assert xmlparse.parse_workflow_execution(b"<Response><RequestId>r</RequestId></Response>") is None


def test_workflow_detail_running_has_no_end_and_success_no_error():
    body = WF_DETAIL.replace(b"<State>Failed</State><Topology>", b"<State>Running</State><Topology>")
    c = xmlparse.parse_workflow_execution(body)
    assert c.state == "Running" and c.ended_at is None and c.code is None and c.message is None


@pytest.mark.parametrize("body,needle", [
    (MEDIA_PAGE[: len(MEDIA_PAGE) // 2], "not well-formed"),  # truncated
    (MEDIA_PAGE.replace(f"<JobId>{J2}</JobId>".encode(), b""), "JobsDetail[1] without a JobId"),
    (MEDIA_PAGE.replace(b"<State>Failed</State>", b""), f"JobsDetail[1] {J2}: no State"),
    (MEDIA_PAGE.replace(b"2022-07-07T12:12:14+0800", b"yesterday"), "CreationTime"),
    (MEDIA_PAGE.replace(J1.encode(), b"j1/../../x"), "is not letters"),
    (b"<!DOCTYPE r [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><Response>&x;</Response>", "DOCTYPE"),
    (b"<html><body>502</body></html>", "expected <Response>"),
    (b"", "empty body"),
    (b"<Response>" + b"<a>" * 40 + b"</a>" * 40 + b"</Response>", "deeper"),
])
def test_media_page_malformed_is_a_bad_response_naming_the_problem(body, needle):
    with pytest.raises(BadResponseError) as ei:
        xmlparse.parse_media_job_page(body, ChildKind.JOB)
    assert needle in str(ei.value)
    assert ei.value.retryable


@pytest.mark.parametrize("body,needle", [
    (WF_PAGE.replace(f"<RunId>{R2}</RunId>".encode(), b""), "WorkflowExecutionList[1] without a RunId"),
    (WF_PAGE.replace(b"2022-08-09T14:54:17+08:00", b"2022-13-40T99:00:00+08:00"), "CreateTime"),
    (WF_DETAIL.replace(b"2022-08-09T14:55:01+0800", b"soon"), "Tasks[1]: invalid EndTime"),
])
def test_workflow_malformed(body, needle):
    with pytest.raises(BadResponseError) as ei:
        if b"WorkflowExecutionList" in body:
            xmlparse.parse_workflow_execution_page(body)
        else:
            xmlparse.parse_workflow_execution(body)
    assert needle in str(ei.value)


def test_error_body_is_a_ci_error():
    body = b"<Error><Code>SlowDown</Code><Message>m</Message><RequestId>r</RequestId></Error>"
    with pytest.raises(CIError) as ei:
        xmlparse.parse_workflow_execution_page(body, status=503)
    assert ei.value.code == "SlowDown" and ei.value.retryable


def test_long_failure_message_is_capped():
    body = WF_DETAIL.replace(b"no video stream", b"x" * 5000)
    c = xmlparse.parse_workflow_execution(body)
    assert len(c.message) == 1000 and c.message.endswith("...")


def test_media_lookup_found_and_missing():
    body = MEDIA_PAGE.replace(b"<NextToken>225508</NextToken>", b"<NonExistJobIds>jx1, jx2</NonExistJobIds>")
    found = xmlparse.parse_media_job_lookup(body, ChildKind.JOB)
    assert [c.child_id for c in found.items] == [J1, J2] and found.missing == ["jx1", "jx2"]
    none = xmlparse.parse_media_job_lookup(b"<Response><RequestId>r</RequestId></Response>", ChildKind.JOB)
    assert none.items == [] and none.missing == [] and none.request_id == "r"


# The documented callback bodies (ci-children.md 3.1, 3.2): the same element parsers read them.
TASK_FINISH = b"""<Response>
  <EventName>TaskFinish</EventName>
  <JobsDetail>
    <Code>Success</Code><CreationTime>2022-06-30T19:27:39+0800</CreationTime><EndTime>2022-06-30T19:27:42+0800</EndTime>
    <Input><BucketId>test-123456789</BucketId><Object>input/demo.mp4</Object><Region>ap-chongqing</Region></Input>
    <JobId>ja66d6204f86711ec9ca1073b78d316d3</JobId><Message/>
    <Operation><UserData>u</UserData></Operation>
    <QueueId>p2242ab62c7c94486915508540933a2c6</QueueId><StartTime>2022-06-30T19:27:40+0800</StartTime>
    <State>Success</State><Tag>StreamExtract</Tag>
  </JobsDetail>
</Response>"""

WORKFLOW_FINISH = b"""<Response>
  <EventName>WorkflowFinish</EventName>
  <WorkflowExecution>
    <WorkflowId>web6ac56c1ef54dbfa44d7f4103203be9</WorkflowId><WorkflowName>workflow-3</WorkflowName>
    <RunId>i166ee19017b011eda8a5525400c540df</RunId><State>Success</State>
    <BucketId>test-1234567890</BucketId><Object>wk-test/game.mp4</Object>
    <CreateTime>2022-08-09 14:54:17+0800</CreateTime>
    <CosHeaders><Key>Content-Type</Key><Value>video/mp4</Value></CosHeaders>
    <Tasks><Type>Snapshot</Type><CreateTime>2022-08-09 14:54:40+0800</CreateTime><EndTime>2022-08-09 14:54:42+0800</EndTime>
      <State>Success</State><JobId>j23c11e1e17b011edaab4ab15ec33d076</JobId><Name>Snapshot_1581665960536</Name>
      <TemplateId>t07740e32081b44ad7a0aea03adcffd54a</TemplateId><TemplateName>snapshot_1280*720_3</TemplateName></Tasks>
  </WorkflowExecution>
</Response>"""


def test_documented_task_finish_detail():
    root = xmlparse.parse_document(TASK_FINISH)
    c = xmlparse.parse_media_job(root.find("JobsDetail"), ChildKind.JOB)
    assert (c.child_id, c.state, c.object_key, c.tag) == ("ja66d6204f86711ec9ca1073b78d316d3", "Success",
                                                          "input/demo.mp4", "StreamExtract")
    assert c.ended_at == datetime(2022, 6, 30, 19, 27, 42, tzinfo=CST) and c.code is None


def test_documented_workflow_finish_space_separated_times():
    root = xmlparse.parse_document(WORKFLOW_FINISH)
    c = xmlparse.workflow_execution_from_element(root.find("WorkflowExecution"))
    assert (c.child_id, c.state, c.object_key) == ("i166ee19017b011eda8a5525400c540df", "Success", "wk-test/game.mp4")
    assert c.created_at == datetime(2022, 8, 9, 14, 54, 17, tzinfo=CST)
    assert c.started_at == datetime(2022, 8, 9, 14, 54, 40, tzinfo=CST)  # no StartTime: the task's CreateTime
    assert c.ended_at == datetime(2022, 8, 9, 14, 54, 42, tzinfo=CST) and c.code is None


def test_oversized_page_refused_before_parsing():
    body = b"<Response>" + b"<JobsDetail><JobId>j1</JobId><State>Success</State></JobsDetail>" * 80_000 + \
        b"</Response>"
    with pytest.raises(BadResponseError, match="exceeds"):
        xmlparse.parse_media_job_page(body, ChildKind.JOB)
