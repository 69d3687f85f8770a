"""CIClient's child-list calls over real loopback HTTP against a scripted server: what is sent (path, every
query parameter, signed), the stop rule on short pages, the 100 cap, and unreadable pages. The same calls against
the emulator are in test_emulator_children.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from fixtures.loopback import answer, serve
from jobwatch.ci import signing
from jobwatch.ci.client import CIClient
from jobwatch.ci.credentials import StaticProvider
from jobwatch.core.children import ChildKind
from jobwatch.core.errors import BadResponseError, CIError, ValidationError

SID = "AKIDchildtest00000000000000000000"
KEY = "CANARY-children-secret-key-91b"
BUCKET = "examplebucket-1250000000"
REGION = "ap-guangzhou"
BATCH = "b" + "3" * 32
CST = timezone(timedelta(hours=8))


def media_page(n: int, token: str | None, start: int = 0) -> bytes:
    items = "".join(
        f"<JobsDetail><Code>Success</Code><JobId>j{i:032x}</JobId><State>Success</State>"
        f"<CreationTime>2022-07-07T12:12:12+0800</CreationTime><StartTime>-</StartTime><EndTime>-</EndTime>"
        f"<Input><Object>in/{i}.mp4</Object></Input></JobsDetail>" for i in range(start, start + n))
    tok = f"<NextToken>{token}</NextToken>" if token is not None else ""
    return f"<Response>{items}{tok}</Response>".encode()


class Scripted:
    def __init__(self) -> None:
        self.replies: list[tuple[int, bytes]] = []
        self.seen: list[tuple[str, dict[str, str], bool]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                path = unquote(split.path)
                params = parse_qsl(split.query, keep_blank_values=True)
                auth = signing.parse_authorization(self.headers["Authorization"])
                start, end = (int(x) for x in auth.key_time.split(";"))
                expected = signing.authorization(
                    SID, KEY, "GET", path, dict(params), {"host": self.headers["Host"]}, start, end)
                ok = expected == self.headers["Authorization"] and \
                    set(auth.url_param_list) == {k.lower() for k, _ in params}
                outer.seen.append((path, dict(params), ok))
                status, body = outer.replies.pop(0) if outer.replies else (200, media_page(0, None))
                answer(self, status, body, {"Content-Type": "application/xml", "x-ci-request-id": "rid-h"})

        self.server = serve(H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def ci():
    s = Scripted()
    yield s
    s.server.shutdown()
    s.server.server_close()


@pytest.fixture
def client(ci):
    c = CIClient(StaticProvider(SID, KEY), endpoint=ci.url, max_attempts=2, sleep=lambda s: None)
    yield c
    c.close()


def test_media_list_sends_every_filter_signed(ci, client):
    ci.replies.append((200, media_page(3, "225508")))
    page = client.list_media_jobs(
        BUCKET, REGION, batch_id=BATCH, queue_id="p893bcda225bf4945a378da6662e81a89", tag="Transcode",
        states=["Running", "Failed"], start_creation_time=datetime(2022, 7, 7, 12, 0, tzinfo=CST),
        end_creation_time=datetime(2022, 7, 7, 4, 30, tzinfo=timezone.utc), size=500, next_token="abc")
    path, params, ok = ci.seen[0]
    assert path == "/jobs" and ok
    assert params == {"inventoryTriggerJobId": BATCH, "queueId": "p893bcda225bf4945a378da6662e81a89",
                      "tag": "Transcode", "states": "Running,Failed", "orderByTime": "Asc", "size": "100",
                      "startCreationTime": "2022-07-07T12:00:00+0800",
                      "endCreationTime": "2022-07-07T04:30:00+0000", "nextToken": "abc"}
    # 3 items for a page of 100 with a token still set: the documented caveat, so this is the last page
    assert [c.object_key for c in page.items] == ["in/0.mp4", "in/1.mp4", "in/2.mp4"]
    assert page.next_token is None and page.request_id == "rid-h"


def test_full_page_keeps_its_token_and_pictures_use_pic_jobs(ci, client):
    ci.replies.append((200, media_page(10, "t2")))
    page = client.list_media_jobs(BUCKET, REGION, batch_id=BATCH, size=10, pic=True)
    assert ci.seen[0][0] == "/pic_jobs" and ci.seen[0][2]
    assert len(page.items) == 10 and page.next_token == "t2"
    assert {c.kind for c in page.items} == {ChildKind.PIC_JOB}


def test_empty_page_with_token_ends(ci, client):
    ci.replies.append((200, media_page(0, "999")))
    page = client.list_media_jobs(BUCKET, REGION, batch_id=BATCH)
    assert page.items == [] and page.next_token is None


def test_workflow_list_and_detail_paths(ci, client):
    ci.replies.append((200, b"<Response><RequestId>r1</RequestId><WorkflowExecutionList><RunId>i1</RunId>"
                            b"<WorkflowId>w1</WorkflowId><Object>a.mp4</Object><CreateTime>2022-08-09T14:54:17+08:00"
                            b"</CreateTime><State>Failed</State></WorkflowExecutionList><NextToken/></Response>"))
    page = client.list_workflow_executions(BUCKET, REGION, workflow_id="w1", batch_id=BATCH, states="Failed",
                                           order_by_time="Desc", size=1)
    path, params, ok = ci.seen[0]
    assert path == "/workflowexecution" and ok
    assert params == {"workflowId": "w1", "jobId": BATCH, "states": "Failed", "orderByTime": "Desc", "size": "1"}
    assert [(c.child_id, c.state) for c in page.items] == [("i1", "Failed")] and page.next_token is None
    ci.replies.append((200, b"<Response><WorkflowExecution><RunId>i1</RunId><State>Failed</State><Tasks>"
                            b"<Name>t</Name><State>Failed</State><Code>E1</Code><Message>m</Message>"
                            b"<EndTime>2022-08-09 14:55:00+0800</EndTime></Tasks></WorkflowExecution></Response>"))
    c = client.get_workflow_execution(BUCKET, REGION, "i1")
    assert ci.seen[1][0] == "/workflowexecution/i1" and ci.seen[1][2]
    assert (c.code, c.message, c.ended_at) == ("E1", "t: m", datetime(2022, 8, 9, 14, 55, tzinfo=CST))


def test_unknown_run_and_wrong_run(ci, client):
    ci.replies.append((200, b"<Response><RequestId>r</RequestId></Response>"))
    with pytest.raises(CIError) as ei:
        client.get_workflow_execution(BUCKET, REGION, "i9")
    assert ei.value.status == 404 and not ei.value.retryable
    ci.replies += [(200, b"<Response><WorkflowExecution><RunId>i8</RunId><State>Success</State>"
                         b"</WorkflowExecution></Response>")] * 2
    with pytest.raises(BadResponseError, match="asked for workflow execution i9, got i8"):
        client.get_workflow_execution(BUCKET, REGION, "i9")


def test_truncated_page_is_retried_then_a_bad_response(ci, client):
    good = media_page(2, None)
    ci.replies += [(200, good[:40]), (200, good)]
    assert len(client.list_media_jobs(BUCKET, REGION, batch_id=BATCH).items) == 2  # retried once, then read
    ci.replies += [(200, good[:40]), (200, good[:41])]
    with pytest.raises(BadResponseError, match="not well-formed"):
        client.list_media_jobs(BUCKET, REGION, batch_id=BATCH)


@pytest.mark.parametrize("call,field", [
    (lambda c: c.list_media_jobs(BUCKET, REGION, batch_id="b/../x"), "batch_id"),
    (lambda c: c.list_media_jobs(BUCKET, REGION, batch_id=BATCH, states="Done"), "states"),
    (lambda c: c.list_media_jobs(BUCKET, REGION, batch_id=BATCH, size=0), "size"),
    (lambda c: c.list_media_jobs(BUCKET, REGION, batch_id=BATCH, order_by_time="asc"), "order_by_time"),
    (lambda c: c.list_media_jobs(BUCKET, REGION, batch_id=BATCH, start_creation_time=datetime(2022, 1, 1)),
     "start_creation_time"),
    (lambda c: c.list_workflow_executions(BUCKET, REGION, workflow_id="w1", batch_id=BATCH, states="Pause"),
     "states"),
    (lambda c: c.list_workflow_executions(BUCKET, REGION, workflow_id="w 1", batch_id=BATCH), "workflow_id"),
    (lambda c: c.get_workflow_execution(BUCKET, REGION, "i1?x=1"), "run_id"),
])
def test_bad_arguments_are_refused_before_sending(ci, client, call, field):
    with pytest.raises(ValidationError) as ei:
        call(client)
    assert ei.value.field == field and ci.seen == []


def test_lookup_by_ids_path_and_404_as_missing(ci, client):
    ci.replies.append((200, media_page(2, None).replace(b"</Response>", b"<NonExistJobIds>j9</NonExistJobIds>"
                                                                        b"</Response>")))
    res = client.get_media_jobs(BUCKET, REGION, [f"j{0:032x}", f"j{1:032x}", "j9"])
    path, params, ok = ci.seen[0]
    assert path == f"/jobs/j{0:032x},j{1:032x},j9" and params == {} and ok
    assert len(res.items) == 2 and res.missing == ["j9"]
    ci.replies.append((404, b"<Error><Code>NoSuchJob</Code><Message>m</Message><RequestId>r4</RequestId></Error>"))
    res = client.get_media_jobs(BUCKET, REGION, "j8", pic=True)
    assert ci.seen[1][0] == "/pic_jobs/j8" and res.items == [] and res.missing == ["j8"]
    with pytest.raises(ValidationError):
        client.get_media_jobs(BUCKET, REGION, [f"j{i}" for i in range(101)])
