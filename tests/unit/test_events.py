"""Event recognition and parsing (pure): every sample in events/, every trigger shape, and the reasons given
for what is refused. Also the handler's pure helpers: the time budget and fan-out sharding."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from jobwatch.triggers import events as ev
from jobwatch.app.fanout import MAX_CLIENT_CONTEXT, encode_shard, shard
from jobwatch.app.orchestrator import Budget
from jobwatch.triggers import apigw
from jobwatch.triggers.apigw import http_response
from jobwatch.triggers.scf import Invocation
from jobwatch.core.children import ChildKind
from jobwatch.core.errors import ValidationError
from jobwatch.core.models import JobKey

EVENTS = Path(__file__).resolve().parents[2] / "events"
BUCKET = "examplebucket-1250000000"
REGION = "ap-guangzhou"
DEFAULTS = ev.Defaults(REGION, BUCKET)
NO_DEFAULTS = ev.Defaults()


def sample(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def body(obj: object) -> dict:
    return {"Records": [{"Ckafka": {"msgBody": json.dumps(obj) if not isinstance(obj, str) else obj}}]}


# --- samples --------------------------------------------------------------------------------------------------

EXPECTED_KINDS = {
    "timer.json": ev.TimerEvent,
    "ckafka.json": ev.MessageBatch,
    "cmq_topic.json": ev.MessageBatch,
    "tdmq_eventbridge.json": ev.MessageBatch,
    "apigw_register.json": ev.HttpRequest,
    "apigw_status.json": ev.HttpRequest,
    "apigw_ui.json": ev.HttpRequest,
    "callback_apigw.json": ev.HttpRequest,
    "callback_ckafka.json": ev.MessageBatch,
    "direct_poll.json": ev.DirectCommand,
    "direct_track.json": ev.DirectCommand,
}


def test_every_sample_is_listed_here_and_recognised_without_defaults():
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(EXPECTED_KINDS)
    for name, kind in EXPECTED_KINDS.items():
        parsed = ev.parse_event(sample(name), DEFAULTS)
        assert isinstance(parsed, kind), name
        if isinstance(parsed, ev.MessageBatch):
            assert not [i for i in parsed.items if isinstance(i, ev.Rejected)], name


def test_sample_sources_and_contents():
    ck = ev.parse_event(sample("ckafka.json"), NO_DEFAULTS)
    assert ck.source is ev.Source.CKAFKA and len(ck.items) == 2
    assert [len(i.keys) for i in ck.items] == [2, 1] and ck.items[1].tags == {"team": "media"}
    assert ev.parse_event(sample("cmq_topic.json"), NO_DEFAULTS).source is ev.Source.CMQ
    assert ev.parse_event(sample("tdmq_eventbridge.json"), NO_DEFAULTS).source is ev.Source.TDMQ
    cb = ev.parse_event(sample("callback_ckafka.json"), DEFAULTS).items[0]
    assert isinstance(cb, ev.ChildCallback) and cb.event_name == "WorkflowFinish" and cb.state == "Success"
    assert (cb.child_id, cb.kind, cb.bucket, cb.region, cb.object_key, cb.workflow_id) == (
        "i166ee19017b011eda8a5525400c540df", ChildKind.WORKFLOW, "test-1234567890", REGION, "wk-test/game.mp4",
        "web6ac56c1ef54dbfa44d7f4103203be9")  # WorkflowFinish names no region: the default is used
    req = ev.parse_event(sample("callback_apigw.json"), NO_DEFAULTS)
    c2 = ev.parse_callback(req.body, NO_DEFAULTS, NO_DEFAULTS)
    assert (c2.event_name, c2.child_id, c2.kind, c2.bucket, c2.region, c2.state, c2.object_key, c2.queue_id,
            c2.tag) == ("TaskFinish", "ja66d6204f86711ec9ca1073b78d316d3", ChildKind.JOB, "test-123456789",
                        "ap-chongqing", "Success", "input/demo.mp4", "p2242ab62c7c94486915508540933a2c6",
                        "StreamExtract")
    status = ev.parse_event(sample("apigw_status.json"), NO_DEFAULTS)
    assert apigw.route(status) == (apigw.ApiRoute.READ, "b5bc8fbbcbde5c0994164d8399f767c45")
    track = ev.parse_event(sample("direct_track.json"), NO_DEFAULTS)
    assert track.action == "track" and len(track.keys) == 1 and track.tags == {"team": "media"}


# --- unrecognised -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("event", [[], "poll", 3, None, {}, {"hello": "world"}, {"Type": "Cron"}])
def test_unrecognised_events_name_what_was_expected(event):
    with pytest.raises(ev.EventError) as err:
        ev.parse_event(event, DEFAULTS)
    msg = str(err.value)
    assert "expected" in msg and "Timer" in msg and "action" in msg


# --- timer --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [None, "", "   ", "{}"])
def test_timer_without_options_ticks_with_defaults(message):
    t = ev.parse_timer({"Type": "Timer", "Message": message})
    assert t.options == ev.TickOptions() and t.problems == ()


def test_timer_options_and_problems():
    t = ev.parse_timer({"Type": "Timer", "TriggerName": "tick", "Message": '{"fanout": false, "discover": false}'})
    assert t.options == ev.TickOptions(discover=False, deliver=True, fanout=False) and t.trigger_name == "tick"
    bad_json = ev.parse_timer({"Type": "Timer", "Message": "user define msg body"})
    assert bad_json.options == ev.TickOptions() and "not JSON" in bad_json.problems[0]
    unknown = ev.parse_timer({"Type": "Timer", "Message": '{"fan_out": true}'})
    assert "unknown option" in unknown.problems[0] and "fan_out" in unknown.problems[0]
    not_bool = ev.parse_timer({"Type": "Timer", "Message": '{"deliver": "no"}'})
    assert "Message.deliver" in not_bool.problems[0] and "true or false" in not_bool.problems[0]


# --- queue records ------------------------------------------------------------------------------------------

def test_batch_rejects_bad_records_by_index_and_keeps_the_rest():
    good = {"bucket": BUCKET, "region": REGION, "job_ids": ["j1", "j2", "j1"]}
    event = {"Records": [
        {"Ckafka": {"msgBody": json.dumps(good)}},
        {"Ckafka": {"msgBody": "not json at all"}},
        {"Ckafka": {"msgBody": json.dumps({"bucket": "Bad_Bucket", "region": REGION, "job_id": "x"})}},
        {"Something": {}},
        {"Ckafka": {"msgBody": json.dumps({"region": REGION, "job_id": "j3"})}},
        {"Ckafka": {}},
        {"Ckafka": {"msgBody": json.dumps({"bucket": BUCKET, "region": REGION, "job_id": "../etc/passwd"})}},
    ]}
    batch = ev.parse_event(event, NO_DEFAULTS)
    assert isinstance(batch.items[0], ev.Watch)
    assert [k.job_id for k in batch.items[0].keys] == ["j1", "j2"]  # duplicates dropped, order kept
    rejected = {r.index: r.reason for r in batch.items if isinstance(r, ev.Rejected)}
    assert sorted(rejected) == [1, 2, 3, 4, 5, 6]
    assert "neither JSON nor XML" in rejected[1]
    assert "bucket" in rejected[2] and "Bad_Bucket" in rejected[2]
    assert "Ckafka" in rejected[3]
    assert "no bucket" in rejected[4] and "JOBWATCH_DEFAULT_BUCKET" in rejected[4]
    assert "msgBody is NoneType" in rejected[5]
    assert "job_id" in rejected[6] and "../etc/passwd" in rejected[6]


def test_records_not_a_list_is_an_event_error():
    with pytest.raises(ev.EventError, match="Records is dict"):
        ev.parse_event({"Records": {"Ckafka": {}}}, DEFAULTS)


@pytest.mark.parametrize("obj, words", [
    ({"bucket": BUCKET, "region": REGION}, ["names no job", "job_ids"]),
    ({"bucket": BUCKET, "region": REGION, "job_ids": []}, ["job_ids", "non-empty list"]),
    ({"bucket": BUCKET, "region": REGION, "job_ids": "j1"}, ["job_ids", "list"]),
    ({"bucket": BUCKET, "region": REGION, "job_ids": [f"j{i}" for i in range(1001)]}, ["at most 1000"]),
    ({"bucket": BUCKET, "region": "Guangzhou", "job_id": "j1"}, ["region", "Guangzhou"]),
    ({"bucket": BUCKET, "region": REGION, "job_id": "j1", "tags": ["a"]}, ["tags", "object"]),
    ({"bucket": BUCKET, "region": REGION, "job_id": "j1", "tags": {"a b": "x"}}, ["tags key", "a b"]),
    ({"bucket": BUCKET, "region": REGION, "job_id": "j1", "tags": {"a": {"b": 1}}}, ["tags.a"]),
    ([1, 2], ["list", "expected an object"]),
    ("", ["empty"]),
])
def test_watch_body_reasons(obj, words):
    item = ev.parse_message_body(obj if isinstance(obj, str) else json.dumps(obj), DEFAULTS, index=4)
    assert isinstance(item, ev.Rejected) and item.index == 4
    for w in words:
        assert w in item.reason, (w, item.reason)


def test_watch_defaults_and_dict_body():
    item = ev.parse_message_body({"job_id": "j9", "tags": {"n": 3}}, DEFAULTS)
    assert item == ev.Watch((JobKey(REGION, BUCKET, "j9"),), {"n": "3"})


def test_oversized_body_is_rejected():
    item = ev.parse_message_body("x" * (ev.MAX_BODY_BYTES + 1), DEFAULTS)
    assert isinstance(item, ev.Rejected) and "exceeds" in item.reason


# --- callbacks ----------------------------------------------------------------------------------------------

XML_CB = (b"<Response><EventName>TaskFinish</EventName><JobsDetail><Code>InternalError</Code><JobId>j1</JobId>"
          b"<State>Failed</State><Tag>Transcode</Tag><Input><BucketId>other-1250000000</BucketId>"
          b"<Region>ap-chongqing</Region><Object>in/a.mp4</Object></Input></JobsDetail></Response>")


def test_task_finish_bucket_precedence():
    cb = ev.parse_callback(XML_CB, NO_DEFAULTS, DEFAULTS)
    assert (cb.child_id, cb.bucket, cb.region, cb.state, cb.kind) == ("j1", "other-1250000000", "ap-chongqing",
                                                                      "Failed", ChildKind.JOB)
    explicit = ev.parse_callback(XML_CB, ev.Defaults(REGION, BUCKET), NO_DEFAULTS)
    assert (explicit.bucket, explicit.region) == (BUCKET, REGION)
    no_input = b"<Response><JobsDetail><JobId>j2</JobId><State>Success</State></JobsDetail></Response>"
    assert (ev.parse_callback(no_input, NO_DEFAULTS, DEFAULTS).bucket) == BUCKET
    with pytest.raises(ev.EventError, match="names no bucket"):
        ev.parse_callback(no_input, NO_DEFAULTS, NO_DEFAULTS)


def test_picture_and_workflow_spawned_tasks():
    pic = XML_CB.replace(b"Transcode", b"PicProcess")
    assert ev.parse_callback(pic, NO_DEFAULTS, DEFAULTS).kind is ChildKind.PIC_JOB
    wf = XML_CB.replace(b"</Input>", b"</Input><Workflow><RunId>i1</RunId><WorkflowId>w1</WorkflowId></Workflow>")
    assert ev.parse_callback(wf, NO_DEFAULTS, DEFAULTS).workflow_id == "w1"


def test_json_callback_shapes_are_tolerated():
    for obj in ({"EventName": "TaskFinish", "JobsDetail": {"JobId": "j1", "State": "Success"}},
                {"JobsDetail": {"JobId": "j1", "State": "Success"}},  # no EventName: the body says which
                {"Response": {"EventName": "TaskFinish", "JobsDetail": [{"JobId": "j1", "State": "Success"}]}},
                {"response": {"eventName": "TaskFinish", "jobsDetail": {"jobId": "j1", "state": "Success"}}}):
        cb = ev.parse_callback(json.dumps(obj).encode(), NO_DEFAULTS, DEFAULTS)
        assert cb.child_id == "j1" and cb.state == "Success" and cb.event_name == "TaskFinish"
        # the same body arriving as a queue message is recognised as a callback, not a watch request
        assert isinstance(ev.parse_message_body(json.dumps(obj), DEFAULTS), ev.ChildCallback)
    wf = {"EventName": "WorkflowFinish", "WorkflowExecution": {"RunId": "i1", "State": "Failed", "BucketId": BUCKET,
                                                               "WorkflowId": "w1", "Object": "a.mp4"}}
    cb = ev.parse_callback(json.dumps(wf).encode(), NO_DEFAULTS, NO_DEFAULTS)
    assert (cb.kind, cb.child_id, cb.region, cb.workflow_id, cb.state) == (ChildKind.WORKFLOW, "i1", None, "w1",
                                                                           "Failed")
    xml = (b"<Response><EventName>WorkflowFinish</EventName><WorkflowExecution><RunId>i1</RunId><State>Success"
           b"</State><BucketId>" + BUCKET.encode() + b"</BucketId></WorkflowExecution></Response>")
    assert ev.parse_callback(xml, NO_DEFAULTS, NO_DEFAULTS).event_name == "WorkflowFinish"


def test_other_events_are_ignored_not_refused():
    item = ev.parse_callback(b"<Response><EventName>TaskStart</EventName></Response>", NO_DEFAULTS, DEFAULTS)
    assert isinstance(item, ev.IgnoredCallback) and "TaskStart" in item.reason
    queued = ev.parse_event(body({"EventName": "X", "JobsDetail": {}}), DEFAULTS).items[0]
    assert isinstance(queued, ev.IgnoredCallback)


@pytest.mark.parametrize("raw, words", [
    (b"<Response><EventName>TaskFinish</EventName></Response>", ["no JobsDetail"]),
    (b"<Response><EventName>WorkflowFinish</EventName></Response>", ["no WorkflowExecution"]),
    (b"<Response><JobsDetail><State>Success</State></JobsDetail></Response>", ["no JobId"]),
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "y">]><Response/>', ["unreadable"]),
    (b"<Response><JobsDetail>", ["unreadable"]),
    (b"<Response/>", ["empty"]),
    (b"{\"JobsDetail\": []}", ["list of 0"]),
    (b"{\"JobsDetail\": [{\"JobId\": \"a\"}, {\"JobId\": \"b\"}]}", ["list of 2"]),
    (b"{\"JobsDetail\": {\"JobId\": \"j/../x\"}}", ["JobId", "j/../x"]),
    (b"{\"JobsDetail\": {\"JobId\": \"j1\", \"State\": {\"a\": 1}}}", ["State"]),
    (b"{\"JobsDetail\": {\"JobId\": \"j1\", \"QueueId\": \"p 1\"}}", ["QueueId"]),
    (b"{\"JobsDetail\": {\"JobId\": \"j1\", \"Input\": {\"Object\": \"a\\nb\"}}}", ["Object"]),
    (b"{\"JobsDetail\": {\"JobId\": \"j1\", \"Input\": {\"BucketId\": \"x\"}}}", ["bucket"]),
    (b"{\"EventName\": 5}", ["EventName"]),
    (b"\xff\xfe", ["neither XML nor JSON"]),
    (b"[1]", ["list"]),
    (b" " * (ev.MAX_CALLBACK_BYTES + 1), ["exceeds"]),
])
def test_bad_callbacks_say_why(raw, words):
    with pytest.raises((ev.EventError, ValidationError)) as err:
        ev.parse_callback(raw, NO_DEFAULTS, DEFAULTS)
    for w in words:
        assert w in str(err.value)


def test_xml_callback_in_a_queue_record():
    batch = ev.parse_event(body(XML_CB.decode()), DEFAULTS)
    assert isinstance(batch.items[0], ev.ChildCallback) and batch.items[0].state == "Failed"


# --- API Gateway --------------------------------------------------------------------------------------------

def _req(method: str, path: str, **kw: object) -> dict:
    return {"requestContext": {"httpMethod": method, "requestId": "r-1"}, "httpMethod": method, "path": path, **kw}


@pytest.mark.parametrize("method, path, expected", [
    ("POST", "/jobs", (apigw.ApiRoute.REGISTER, None)),
    ("POST", "/release/jobs/", (apigw.ApiRoute.REGISTER, None)),
    ("GET", "/jobs/j1", (apigw.ApiRoute.READ, "j1")),
    ("GET", "/svc/release/jobs/j1", (apigw.ApiRoute.READ, "j1")),
    ("POST", "/callback", (apigw.ApiRoute.CALLBACK, None)),
    ("GET", "/jobs", (apigw.ApiRoute.BAD_METHOD, None)),
    ("DELETE", "/jobs/j1", (apigw.ApiRoute.BAD_METHOD, None)),
    ("GET", "/callback", (apigw.ApiRoute.BAD_METHOD, None)),
    ("GET", "/", (apigw.ApiRoute.NOT_FOUND, None)),
    ("POST", "/jobsx", (apigw.ApiRoute.NOT_FOUND, None)),
])
def test_routes(method, path, expected):
    assert apigw.route(ev.parse_http(_req(method, path))) == expected


def test_http_parsing_headers_query_and_base64_body():
    raw = _req("POST", "/callback", headers={"X-Api-Key": "k1", "Content-Type": "text/xml"},
               queryString={"bucket": BUCKET, "multi": ["a", "b"]}, isBase64Encoded=True,
               body=base64.b64encode(XML_CB).decode())
    req = ev.parse_http(raw)
    assert req.headers["x-api-key"] == "k1" and req.query == {"bucket": BUCKET, "multi": "a"}
    assert req.body == XML_CB and req.request_id == "r-1"
    assert "k1" not in repr(req)
    with pytest.raises(ev.EventError, match="not base64"):
        ev.parse_http(_req("POST", "/callback", isBase64Encoded=True, body="***"))


def test_api_key_check():
    assert apigw.api_key_matches({"x-api-key": "s3cret"}, "s3cret")
    assert not apigw.api_key_matches({"x-api-key": "s3cre"}, "s3cret")
    assert not apigw.api_key_matches({}, "s3cret")
    assert not apigw.api_key_matches({"x-api-key": ""}, "")


def test_http_response_shape():
    r = http_response(404, {"error": "no"})
    assert r["isBase64Encoded"] is False and r["statusCode"] == 404
    assert r["headers"]["Content-Type"].startswith("application/json") and json.loads(r["body"]) == {"error": "no"}


# --- direct -------------------------------------------------------------------------------------------------

def test_direct_commands():
    poll = ev.parse_event({"action": "poll", "keys": [f"{REGION}/{BUCKET}/j1", f"{REGION}/{BUCKET}/j1"]}, DEFAULTS)
    assert poll.keys == (JobKey(REGION, BUCKET, "j1"),)
    track = ev.parse_event({"action": "track", "job_ids": ["a", "b"], "poll": False}, DEFAULTS)
    assert [k.job_id for k in track.keys] == ["a", "b"] and track.poll is False
    disc = ev.parse_event({"action": "discover", "targets": [f"{REGION}/{BUCKET}"]}, DEFAULTS)
    assert disc.targets == ((REGION, BUCKET),)
    assert ev.parse_event({"action": "purge", "older_than_days": 7}, DEFAULTS).older_than_days == 7.0
    tick = ev.parse_event({"action": "poll", "fanout": False}, DEFAULTS)
    assert tick.keys == () and tick.options.fanout is False


@pytest.mark.parametrize("event, words", [
    ({"action": "explode"}, ["'explode'", "poll", "track", "purge"]),
    ({"action": "track"}, ["names no job", "keys"]),
    ({"action": "untrack", "keys": "a/b/c"}, ["keys", "list"]),
    ({"action": "poll", "keys": ["ap-guangzhou/examplebucket-1250000000"]}, ["job_key", "region/bucket/job_id"]),
    ({"action": "poll", "poll": "yes"}, ["poll", "true or false"]),
    ({"action": "poll", "fanout": 1}, ["fanout"]),
    ({"action": "discover", "targets": ["ap-guangzhou"]}, ["targets", "region/bucket"]),
    ({"action": "purge", "older_than_days": -1}, ["older_than_days", "positive"]),
])
def test_direct_errors_name_the_field(event, words):
    with pytest.raises((ev.EventError, ValueError)) as err:
        ev.parse_event(event, DEFAULTS)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_shard_context_round_trips_as_a_direct_poll():
    keys = [JobKey(REGION, BUCKET, f"j{i}") for i in range(3)]
    cmd = ev.parse_event(json.loads(encode_shard(keys)), NO_DEFAULTS)
    assert cmd.action == "poll" and list(cmd.keys) == keys and cmd.due_only is True
    assert ev.parse_event({"action": "poll", "keys": [str(keys[0])]}, NO_DEFAULTS).due_only is False
    with pytest.raises(ev.EventError, match="due_only = 'yes': expected true or false"):
        ev.parse_event({"action": "poll", "keys": [str(keys[0])], "due_only": "yes"}, NO_DEFAULTS)


# --- budget and sharding ------------------------------------------------------------------------------------

def test_budget_keeps_the_margin_but_never_more_than_half_the_limit():
    b = Budget.of(100.0, 300.0, 10.0)
    assert b.stop == 390.0 and b.engine == 400.0  # the engine stops `margin` before its deadline: at 390
    short = Budget.of(100.0, 3.0, 5.0)
    assert short.stop == 101.5 and short.engine - 5.0 == 101.5


def test_invocation_context_defaults():
    assert Invocation.from_context({}).time_limit_s == 3.0
    assert Invocation.from_context(None).time_limit_s == 3.0
    inv = Invocation.from_context({"time_limit_in_ms": 300000, "request_id": "r", "function_name": "f"})
    assert (inv.time_limit_s, inv.request_id, inv.function_name) == (300.0, "r", "f")
    assert Invocation.from_context({"time_limit_in_ms": "junk"}).time_limit_s == 3.0


def test_shards_respect_size_count_and_event_bytes():
    keys = [JobKey(REGION, BUCKET, f"j{i:05d}") for i in range(25)]
    assert [len(s) for s in shard(keys, 10, 20)] == [10, 10, 5]
    assert [len(s) for s in shard(keys, 10, 2)] == [10, 10]
    big = [JobKey(REGION, BUCKET, f"j{i:0100d}") for i in range(2000)]
    shards = shard(big, 2000, 100)
    assert sum(len(s) for s in shards) == 2000 and len(shards) > 1
    assert all(len(encode_shard(s)) <= MAX_CLIENT_CONTEXT for s in shards)


# --- callbacks are hostile input: whatever arrives, only our errors come out ------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

_CB_KEYS = ["EventName", "JobsDetail", "WorkflowExecution", "Response", "JobId", "RunId", "State", "Input",
            "BucketId", "Region", "Object", "QueueId", "Tag", "Workflow", "WorkflowId", "Code", "Message", "x"]
_CB_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["TaskFinish", "WorkflowFinish", "Success", "Failed", "j1", BUCKET, REGION, "../x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_CB_KEYS), inner, max_size=6),
    max_leaves=25)


def _only_our_errors(raw: bytes) -> None:
    try:
        out = ev.parse_callback(raw, NO_DEFAULTS, DEFAULTS)
    except (ev.EventError, ValidationError):
        return
    assert isinstance(out, (ev.ChildCallback, ev.IgnoredCallback))
    if isinstance(out, ev.ChildCallback):  # what a callback yields is safe to put in a query
        assert ev._IDENT_RE.match(out.child_id) and out.bucket


@settings(max_examples=300, deadline=None)
@given(_CB_JSON)
def test_generated_callback_json_raises_only_our_errors(obj):
    _only_our_errors(json.dumps(obj).encode())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_CB_KEYS), st.text(alphabet="abcTaskFinish<>&;1", max_size=10), max_size=6))
def test_generated_callback_xml_raises_only_our_errors(fields):
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    for doc in (f"<Response><EventName>TaskFinish</EventName><JobsDetail>{inner}</JobsDetail></Response>",
                f"<Response><EventName>WorkflowFinish</EventName><WorkflowExecution>{inner}</WorkflowExecution>"
                "</Response>", f"<Response>{inner}</Response>"):
        _only_our_errors(doc.encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_generated_callback_bytes_raise_only_our_errors(raw):
    _only_our_errors(raw)
