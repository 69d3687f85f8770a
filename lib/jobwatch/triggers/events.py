"""SCF event recognition: each trigger's raw dict becomes one typed, read-only command.

Pure: no store, no network, no clock, so every shape is unit-tested without the handler. What cannot be
understood becomes an :class:`EventError` (a whole event) or a :class:`Rejected` item (one record of a batch)
whose reason names the field and the value and says what was expected; a batch is never refused as a whole
because of one record, since SCF retries a CKafka batch whole when the function raises.

Every region an event names (a message's ``region``, a callback's ``Input.Region`` or ``?region=``, a direct
invocation's ``keys`` and ``targets``) is checked here by :func:`jobwatch.core.regions.check_region`: a malformed
one is refused like any bad field; a well-formed one outside the regions this version knows is taken and logged
once per event as ``region_unknown`` (a warning naming the field, the region and a near miss), never refused,
because the list of Cloud Infinite regions could not be confirmed (see :mod:`jobwatch.core.regions`).

Shapes (see ``events/`` and the README): Timer, CKafka ``Records[].Ckafka``, legacy CMQ ``Records[].CMQ``,
TDMQ through EventBridge (``data.msgBody``), API Gateway integration requests, and direct invocations
(``{"action": ...}``). A message body either names jobs to watch or is one of CI's own per-child callbacks
(``TaskFinish`` / ``WorkflowFinish``, XML or JSON), which never names a batch job to watch.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import structlog

from jobwatch.core.errors import PermanentError, ValidationError
from jobwatch.core.children import ChildKind
from jobwatch.core.models import JobKey, validate_bucket
from jobwatch.core.progress import PIC_TAGS, ChildCallback
from jobwatch.core.regions import check_region, unknown_region_note

log = structlog.get_logger("jobwatch.triggers.events")

MAX_BODY_BYTES = 256 * 1024  # a queue message or HTTP body; CI callbacks are a few KB
MAX_JSON_DEPTH = 32  # our own shapes nest 4 deep; CI callbacks about 6
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_JOBS_PER_MESSAGE = 1000
MAX_TAGS = 20
DIRECT_ACTIONS = ("poll", "track", "untrack", "status", "discover", "deliver", "purge")
_TAG_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class EventError(PermanentError):
    """The event (or one record of it) is not of a shape this function accepts. The message names the field,
    the value and what was expected; it is returned to the caller, never raised out of the handler."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(reason)


class Source(str, enum.Enum):
    TIMER = "timer"
    CKAFKA = "ckafka"
    CMQ = "cmq"
    TDMQ = "tdmq"
    APIGW = "apigw"
    DIRECT = "direct"


@dataclass(frozen=True)
class Defaults:
    """Bucket and region used when a message or request names none (``JOBWATCH_DEFAULT_*``)."""

    region: str | None = None
    bucket: str | None = None


# --- commands -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TickOptions:
    """Options a timer's ``Message`` (its trigger argument) may set, as a JSON object."""

    discover: bool = True
    deliver: bool = True
    fanout: bool = True


@dataclass(frozen=True)
class TimerEvent:
    trigger_name: str | None
    time: str | None
    options: TickOptions
    problems: tuple[str, ...] = ()  # a bad Message: the tick still runs with defaults, and says why


@dataclass(frozen=True)
class Watch:
    """A message naming jobs to register and poll at once."""

    keys: tuple[JobKey, ...]
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    index: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason}


@dataclass(frozen=True)
class IgnoredCallback:
    """A well-formed body that is not a callback we act on (another event name): logged and acknowledged."""

    index: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "ignored": self.reason}


Item = Union[Watch, ChildCallback, IgnoredCallback, Rejected]


@dataclass(frozen=True)
class MessageBatch:
    """Queue records (CKafka, CMQ) or one TDMQ message, each parsed on its own."""

    source: Source
    items: tuple[Item, ...]


@dataclass(frozen=True)
class HttpRequest:
    """An API Gateway integration request. Header names are lower-cased; the body is raw bytes."""

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    path_params: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None

    def __repr__(self) -> str:  # headers may carry the API key
        return f"HttpRequest({self.method} {self.path}, {len(self.body)} bytes)"


@dataclass(frozen=True)
class DirectCommand:
    """``{"action": ..., ...}`` from scripts, ``scf invoke`` and fan-out shards."""

    action: str
    keys: tuple[JobKey, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    poll: bool = True
    options: TickOptions = field(default_factory=TickOptions)
    targets: tuple[tuple[str, str], ...] = ()  # discover: (region, bucket) pairs
    older_than_days: float | None = None  # purge
    due_only: bool = False  # poll: only those of ``keys`` still due (fan-out shards), not all of them now


Event = Union[TimerEvent, MessageBatch, HttpRequest, DirectCommand]

EXPECTED = ('a Timer event {"Type": "Timer", ...}, a CKafka or CMQ batch {"Records": [...]}, a TDMQ message '
            'through EventBridge {"type": "connector:tdmq", "data": {"msgBody": ...}}, an API Gateway request '
            '{"requestContext": ..., "httpMethod": ..., "path": ...}, or a direct invocation {"action": one of '
            + ", ".join(DIRECT_ACTIONS) + "}")


# --- recognition --------------------------------------------------------------------------------------------

def parse_event(event: Any, defaults: Defaults = Defaults()) -> Event:
    """Recognise an SCF event. Raises :class:`EventError` naming what was expected when it is none of them."""
    token = _WARNED.set(set())
    try:
        return _parse_event(event, defaults)
    finally:
        _WARNED.reset(token)


def _parse_event(event: Any, defaults: Defaults) -> Event:
    if not isinstance(event, dict):
        raise EventError(f"event is {type(event).__name__}, expected a JSON object: {EXPECTED}", field="event")
    if event.get("Type") == "Timer":
        return parse_timer(event)
    if "Records" in event:
        return parse_records(event, defaults)
    if "requestContext" in event and ("httpMethod" in event or "path" in event):
        return parse_http(event)
    if "action" in event:
        return parse_direct(event, defaults)
    data = event.get("data")
    if isinstance(data, dict) and "msgBody" in data:
        item = parse_message_body(data.get("msgBody"), defaults, index=0)
        return MessageBatch(Source.TDMQ, (item,))
    keys = ", ".join(sorted(str(k) for k in event)[:10]) or "none"
    raise EventError(f"unrecognised event (top-level keys: {keys}); expected {EXPECTED}", field="event")


def parse_timer(event: Mapping[str, Any]) -> TimerEvent:
    message = event.get("Message")
    options, problems = TickOptions(), []
    if isinstance(message, str) and message.strip():
        try:
            obj = load_json(message, "Message")
        except EventError as exc:
            obj = None
            problems.append(f"{exc.reason}: expected an object of options "
                            '{"discover": bool, "deliver": bool, "fanout": bool}, or empty; ticking with defaults')
        if obj is not None:
            try:
                options = _tick_options(obj, "Message")
            except EventError as exc:
                problems.append(exc.reason + "; ticking with defaults")
    elif message not in (None, "") and not isinstance(message, str):
        problems.append(f"Message is {type(message).__name__}, expected a string; ticking with defaults")
    return TimerEvent(_opt_str(event.get("TriggerName")), _opt_str(event.get("Time")), options, tuple(problems))


def _tick_options(obj: Any, where: str) -> TickOptions:
    if not isinstance(obj, dict):
        raise EventError(f"{where} is {type(obj).__name__}, expected an object of options", field=where)
    known = {"discover", "deliver", "fanout"}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise EventError(f"{where}: unknown option(s) {unknown}, expected {sorted(known)}", field=where)
    values = {}
    for k, v in obj.items():
        if not isinstance(v, bool):
            raise EventError(f"{where}.{k} = {v!r}: expected true or false", field=f"{where}.{k}")
        values[k] = v
    return TickOptions(**values)


def parse_records(event: Mapping[str, Any], defaults: Defaults) -> MessageBatch:
    records = event.get("Records")
    if not isinstance(records, list):
        raise EventError(f"Records is {type(records).__name__}, expected a list of CKafka or CMQ records",
                         field="Records")
    items: list[Item] = []
    kinds: set[Source] = set()
    for i, rec in enumerate(records):
        body: Any
        if isinstance(rec, dict) and isinstance(rec.get("Ckafka"), dict):
            kinds.add(Source.CKAFKA)
            body = rec["Ckafka"].get("msgBody")
        elif isinstance(rec, dict) and isinstance(rec.get("CMQ"), dict):
            kinds.add(Source.CMQ)
            body = rec["CMQ"].get("msgBody")
        else:
            shown = sorted(rec)[:5] if isinstance(rec, dict) else type(rec).__name__
            items.append(Rejected(i, f"record {i} ({shown}): expected {{\"Ckafka\": {{\"msgBody\": ...}}}} or "
                                     f"{{\"CMQ\": {{\"msgBody\": ...}}}}"))
            continue
        items.append(parse_message_body(body, defaults, index=i))
    source = Source.CMQ if kinds == {Source.CMQ} else Source.CKAFKA
    return MessageBatch(source, tuple(items))


def parse_message_body(body: Any, defaults: Defaults, *, index: int = 0) -> Item:
    """One record's body: a watch request or a CI callback. Never raises: a bad body becomes ``Rejected``."""
    try:
        if isinstance(body, dict):
            obj: Any = load_json(json.dumps(body, ensure_ascii=False), "msgBody")  # bounded like text
        elif isinstance(body, (str, bytes, bytearray)):
            text = utf8_text(body, "msgBody").strip()
            if not text:
                raise EventError("msgBody is empty: expected a JSON object naming jobs, or a CI job callback")
            if text.startswith("<"):
                return _indexed(parse_callback(text.encode("utf-8"), Defaults(), defaults), index)
            try:
                obj = load_json(text, "msgBody")
            except EventError as exc:
                raise EventError(f"{exc.reason}; neither JSON nor XML: expected "
                                 '{"bucket": ..., "region": ..., "job_ids": [...]} or a CI job callback') from None
        else:
            raise EventError(f"msgBody is {type(body).__name__}, expected a string")
        if isinstance(obj, dict) and _callback_root(obj) is not None:
            return parse_callback_json(obj, Defaults(), defaults, index=index)
        return parse_watch(obj, defaults)
    except (EventError, ValidationError) as exc:
        return Rejected(index, _reason(exc))
    except Exception as exc:  # a parser's own failure on input we did not foresee: this record only
        return Rejected(index, f"msgBody unreadable ({type(exc).__name__})")


def parse_watch(obj: Any, defaults: Defaults, *, where: str = "body") -> Watch:
    """``{"bucket": ..., "region": ..., "job_ids": [...]}`` or ``"job_id"``; optional ``"tags"``."""
    if not isinstance(obj, dict):
        raise EventError(f"{where} is {type(obj).__name__}, expected an object "
                         '{"bucket": ..., "region": ..., "job_ids": [...]}', field=where)
    region, bucket = _place(obj, defaults, where)
    ids = _job_ids(obj, where)
    tags = parse_tags(obj.get("tags"), f"{where}.tags")
    keys = tuple(dict.fromkeys(JobKey(region, bucket, j) for j in ids))
    return Watch(keys, tags)


def _place(obj: Mapping[str, Any], defaults: Defaults, where: str) -> tuple[str, str]:
    bucket = obj.get("bucket", defaults.bucket)
    region = obj.get("region", defaults.region)
    if bucket is None:
        raise EventError(f"{where}: no bucket (and JOBWATCH_DEFAULT_BUCKET is unset): expected \"bucket\": "
                         "\"<name>-<APPID>\"", field="bucket")
    if region is None:
        raise EventError(f"{where}: no region (and JOBWATCH_DEFAULT_REGION is unset): expected \"region\": "
                         "\"ap-guangzhou\" or similar", field="region")
    return _region(region, "region"), validate_bucket(bucket)


# (field, region) pairs already warned about in the event being parsed: a batch of records naming one unknown
# region says so once. Outside parse_event (API Gateway routes parse their parts themselves) every call warns.
_WARNED: contextvars.ContextVar[set[tuple[str, str]] | None] = contextvars.ContextVar("jobwatch_region_warned",
                                                                                       default=None)


def _region(value: Any, field: str) -> str:
    """``value`` checked as a region (:func:`~jobwatch.core.regions.check_region`: a malformed one raises naming
    ``field``); a well-formed one this version does not know is taken, with a ``region_unknown`` warning."""
    region = check_region(value, field)
    note = unknown_region_note(region)
    if note is not None:
        warned = _WARNED.get()
        if warned is None or (field, region) not in warned:
            if warned is not None:
                warned.add((field, region))
            log.warning("region_unknown", field=field, region=region, note=note)
    return region


def _job_ids(obj: Mapping[str, Any], where: str) -> list[str]:
    if "job_ids" in obj:
        ids = obj["job_ids"]
        if not isinstance(ids, list) or not ids:
            raise EventError(f"{where}.job_ids = {_short(ids)!r}: expected a non-empty list of job IDs",
                             field="job_ids")
        if len(ids) > MAX_JOBS_PER_MESSAGE:
            raise EventError(f"{where}.job_ids has {len(ids)} IDs, at most {MAX_JOBS_PER_MESSAGE} per message",
                             field="job_ids")
        return list(ids)
    if "job_id" in obj:
        return [obj["job_id"]]
    shown = sorted(obj)[:8]
    raise EventError(f"{where} (keys {shown}) names no job: expected \"job_ids\": [...] or \"job_id\": \"...\"",
                     field="job_ids")


def parse_tags(raw: Any, where: str = "tags") -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise EventError(f"{where} is {type(raw).__name__}, expected an object of string values", field=where)
    if len(raw) > MAX_TAGS:
        raise EventError(f"{where} has {len(raw)} entries, at most {MAX_TAGS}", field=where)
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not _TAG_KEY_RE.match(str(k)):
            raise EventError(f"{where} key {_short(k)!r}: expected 1-64 of [A-Za-z0-9_.:-]", field=where)
        if not isinstance(v, (str, int, float)) or isinstance(v, bool) or len(str(v)) > 256:
            raise EventError(f"{where}.{k} = {_short(v)!r}: expected a string of at most 256 characters",
                             field=where)
        out[str(k)] = str(v)
    return out


# --- CI callbacks (per child) --------------------------------------------------------------------------------

MAX_CALLBACK_BYTES = 64 * 1024  # a documented callback is 1-3 KB; anything far larger is not CI's
CALLBACK_EVENTS = ("TaskFinish", "WorkflowFinish")
_IDENT_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
_STATE_RE = re.compile(r"^[A-Za-z]{1,32}\Z")
_MAX_OBJECT = 1024  # COS object keys are at most 850 bytes


def _ci_get(obj: Mapping[str, Any], name: str) -> Any:
    """A field by name, ignoring case (the JSON form's casing is not documented)."""
    if name in obj:
        return obj[name]
    low = name.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return None


def _callback_root(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The object holding EventName/JobsDetail/WorkflowExecution (inside ``Response`` or not), or None when
    ``obj`` is not shaped like a CI callback."""
    inner = _ci_get(obj, "Response")
    root = inner if isinstance(inner, dict) else obj
    if any(_ci_get(root, k) is not None for k in ("EventName", "JobsDetail", "WorkflowExecution")):
        return root
    return None


def parse_callback(body: bytes, explicit: Defaults, fallback: Defaults) -> ChildCallback | IgnoredCallback:
    """A CI callback body: ``TaskFinish`` or ``WorkflowFinish``, XML (``<Response>...``) or JSON (with or without
    ``Response``; ``JobsDetail`` an object or a one-element list). Hostile input: size-capped, parsed with
    entities and network off, every field validated. Raises :class:`EventError` naming the field when the body
    is malformed; returns :class:`IgnoredCallback` for a well-formed body of another event.

    The child's bucket comes, in order, from ``explicit`` (the request's query), the body, then ``fallback``
    (the settings); so does its region, which a ``WorkflowFinish`` body does not carry (then it may stay None)."""
    if not isinstance(body, (bytes, bytearray)):
        raise EventError(f"callback body is {type(body).__name__}, expected bytes", field="body")
    if len(body) > MAX_CALLBACK_BYTES:
        raise EventError(f"callback body of {len(body)} bytes exceeds {MAX_CALLBACK_BYTES}", field="body")
    text = bytes(body).lstrip()
    if text.startswith(b"<"):
        from jobwatch.ci import xmlparse  # lazy: lxml is not needed by most invocations
        from jobwatch.core.errors import BadResponseError

        try:
            root = xmlparse.parse_document(bytes(body))
        except BadResponseError as exc:
            raise EventError(f"callback XML unreadable: {exc.reason}", field="body") from None
        obj = {root.tag: xmlparse.element_to_value(root)} if isinstance(root.tag, str) else {}
        inner = obj.get("Response")
        if root.tag == "Response" and not isinstance(inner, dict):
            raise EventError("callback XML <Response> is empty: expected EventName and JobsDetail or "
                             "WorkflowExecution", field="body")
        return parse_callback_json(obj, explicit, fallback)
    try:
        obj = load_json(body, "callback body")
    except EventError as exc:
        raise EventError(f"{exc.reason}; neither XML nor JSON: expected CI's TaskFinish or WorkflowFinish "
                         '(<Response><EventName>... or {"EventName": ..., "JobsDetail": {...}})', field="body") from None
    if not isinstance(obj, dict):
        raise EventError(f"callback JSON is {type(obj).__name__}, expected an object with EventName", field="body")
    return parse_callback_json(obj, explicit, fallback)


def parse_callback_json(obj: Mapping[str, Any], explicit: Defaults, fallback: Defaults,
                        *, index: int = 0) -> ChildCallback | IgnoredCallback:
    """The callback as plain data (XML already turned into dicts). See :func:`parse_callback`."""
    root = _callback_root(obj)
    if root is None:
        raise EventError(f"callback (keys {sorted(str(k) for k in obj)[:8]}) has no EventName, JobsDetail or "
                         "WorkflowExecution", field="EventName")
    event = _ci_get(root, "EventName")
    if event is not None and not isinstance(event, str):
        raise EventError(f"callback EventName is {type(event).__name__}, expected a string", field="EventName")
    detail = _ci_get(root, "JobsDetail")
    execution = _ci_get(root, "WorkflowExecution")
    if event is None:  # undocumented, but the body says which it is
        event = "TaskFinish" if detail is not None else "WorkflowFinish"
    if event not in CALLBACK_EVENTS:
        return IgnoredCallback(index, f"callback event {_short(event)!r} is not one of {', '.join(CALLBACK_EVENTS)}")
    if event == "TaskFinish":
        if detail is None:
            raise EventError("TaskFinish callback has no JobsDetail: expected the finished job's detail",
                             field="JobsDetail")
        return _task_finish(_one(detail, "JobsDetail"), explicit, fallback)
    if execution is None:
        raise EventError("WorkflowFinish callback has no WorkflowExecution", field="WorkflowExecution")
    return _workflow_finish(_one(execution, "WorkflowExecution"), explicit, fallback)


def _one(value: Any, name: str) -> Mapping[str, Any]:
    if isinstance(value, list):  # the JSON form sends a one-element list on several doc pages
        if len(value) != 1:
            raise EventError(f"callback {name} is a list of {len(value)}, expected one child", field=name)
        value = value[0]
    if not isinstance(value, dict):
        raise EventError(f"callback {name} is {'empty' if value in ('', None) else type(value).__name__}, "
                         "expected an object", field=name)
    return value


def _task_finish(d: Mapping[str, Any], explicit: Defaults, fallback: Defaults) -> ChildCallback:
    inp = _ci_get(d, "Input")
    inp = inp if isinstance(inp, dict) else {}
    wf = _ci_get(d, "Workflow")
    wf = wf if isinstance(wf, dict) else {}
    child_id = _required_ident(_ci_get(d, "JobId"), "JobId")
    tag = _ident(_ci_get(d, "Tag"), "Tag")
    bucket, region = _place_of(explicit, fallback, _ci_get(inp, "BucketId"), _ci_get(inp, "Region"), child_id)
    return ChildCallback(
        "TaskFinish", child_id, ChildKind.PIC_JOB if tag in PIC_TAGS else ChildKind.JOB, bucket, region,
        state=_state(_ci_get(d, "State")), object_key=_object(_ci_get(inp, "Object")),
        queue_id=_ident(_ci_get(d, "QueueId"), "QueueId"), tag=tag,
        workflow_id=_ident(_ci_get(wf, "WorkflowId"), "Workflow.WorkflowId"),
        extra={"code": _text(_ci_get(d, "Code"), "Code", 128)},
    )


def _workflow_finish(d: Mapping[str, Any], explicit: Defaults, fallback: Defaults) -> ChildCallback:
    run_id = _required_ident(_ci_get(d, "RunId"), "RunId")
    bucket, region = _place_of(explicit, fallback, _ci_get(d, "BucketId"), None, run_id)
    return ChildCallback(
        "WorkflowFinish", run_id, ChildKind.WORKFLOW, bucket, region, state=_state(_ci_get(d, "State")),
        object_key=_object(_ci_get(d, "Object")),
        workflow_id=_ident(_ci_get(d, "WorkflowId"), "WorkflowId"),
    )


def _place_of(explicit: Defaults, fallback: Defaults, body_bucket: Any, body_region: Any,
              child_id: str) -> tuple[str, str | None]:
    bucket = explicit.bucket or _opt_str(body_bucket) or fallback.bucket
    if bucket is None:
        raise EventError(f"callback for child {child_id!r} names no bucket (no BucketId, no ?bucket= and "
                         "JOBWATCH_DEFAULT_BUCKET unset)", field="bucket")
    # the region named first wins, and an error names where it came from
    for where, region in (("?region", explicit.region), ("Input.Region", _opt_str(body_region)),
                          ("JOBWATCH_DEFAULT_REGION", fallback.region)):
        if region:
            return validate_bucket(bucket), _region(region, where)
    return validate_bucket(bucket), None


def _required_ident(value: Any, name: str) -> str:
    if value in (None, ""):
        raise EventError(f"callback has no {name}", field=name)
    ident = _ident(value, name)
    assert ident is not None
    return ident


def _ident(value: Any, name: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _IDENT_RE.match(value):
        raise EventError(f"callback {name} = {_short(value)!r}: expected letters, digits, '-' or '_' (1-128)",
                         field=name)
    return value


def _state(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _STATE_RE.match(value):
        raise EventError(f"callback State = {_short(value)!r}: expected a state such as Success or Failed",
                         field="State")
    return value


def _text(value: Any, name: str, limit: int) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise EventError(f"callback {name} is {type(value).__name__}, expected a string", field=name)
    return str(value)[:limit]


def _object(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or len(value) > _MAX_OBJECT or any(ord(c) < 32 for c in value):
        raise EventError(f"callback Object = {_short(value)!r}: expected an object key of at most {_MAX_OBJECT} "
                         "characters without control characters", field="Object")
    return value


# --- API Gateway ----------------------------------------------------------------------------------------------

def parse_http(event: Mapping[str, Any]) -> HttpRequest:
    rc = event.get("requestContext")
    ctx: dict[str, Any] = rc if isinstance(rc, dict) else {}
    method = str(event.get("httpMethod") or ctx.get("httpMethod") or "").upper()
    path = str(event.get("path") or "")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()} \
        if isinstance(event.get("headers"), dict) else {}
    query_raw = event.get("queryString") or event.get("queryStringParameters") or {}
    query = {str(k): (v[0] if isinstance(v, list) and v else str(v)) for k, v in query_raw.items()} \
        if isinstance(query_raw, dict) else {}
    body_raw = event.get("body")
    if body_raw is None:
        body = b""
    elif isinstance(body_raw, str):
        if event.get("isBase64Encoded") is True:
            try:
                body = base64.b64decode(body_raw, validate=True)
            except (binascii.Error, ValueError):
                raise EventError("isBase64Encoded is true but body is not base64", field="body") from None
        else:
            body = utf8_text(body_raw, "body").encode("utf-8")
    elif isinstance(body_raw, dict):
        try:
            body = json.dumps(body_raw, ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError, UnicodeEncodeError):
            raise EventError("body object is not JSON-encodable UTF-8 text", field="body") from None
    else:
        raise EventError(f"body is {type(body_raw).__name__}, expected a string", field="body")
    if len(body) > MAX_BODY_BYTES:
        raise EventError(f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}", field="body")
    pp = event.get("pathParameters")
    params: dict[str, Any] = pp if isinstance(pp, dict) else {}
    return HttpRequest(method, path, headers, query, body, {str(k): str(v) for k, v in params.items()},
                       _opt_str(ctx.get("requestId")))


# --- direct invocation ----------------------------------------------------------------------------------------

def parse_direct(event: Mapping[str, Any], defaults: Defaults) -> DirectCommand:
    action = event.get("action")
    if action not in DIRECT_ACTIONS:
        raise EventError(f"action {_short(action)!r}: expected one of {', '.join(DIRECT_ACTIONS)}", field="action")
    keys = _direct_keys(event, defaults)
    if action in ("track", "untrack") and not keys:
        raise EventError(f"action {action!r} names no job: expected \"keys\": [\"region/bucket/job_id\", ...] or "
                         '"job_ids"/"job_id" (with "bucket" and "region", or their defaults)', field="keys")
    poll = event.get("poll", True)
    if not isinstance(poll, bool):
        raise EventError(f"poll = {poll!r}: expected true or false", field="poll")
    due_only = event.get("due_only", False)
    if not isinstance(due_only, bool):
        raise EventError(f"due_only = {_short(due_only)!r}: expected true or false", field="due_only")
    opts = {k: event[k] for k in ("discover", "deliver", "fanout") if k in event}
    options = _tick_options(opts, "event") if opts else TickOptions()
    targets: tuple[tuple[str, str], ...] = ()
    if "targets" in event:
        raw = event["targets"]
        if not isinstance(raw, list):
            raise EventError(f"targets = {_short(raw)!r}: expected a list of \"region/bucket\"", field="targets")
        parsed = []
        for t in raw:
            region, sep, bucket = str(t).partition("/")
            if not sep:
                raise EventError(f"targets item {_short(t)!r}: expected \"region/bucket\"", field="targets")
            parsed.append((_region(region, "targets"), validate_bucket(bucket)))
        targets = tuple(parsed)
    days = event.get("older_than_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float)) or days <= 0):
        raise EventError(f"older_than_days = {days!r}: expected a positive number", field="older_than_days")
    return DirectCommand(action, keys, parse_tags(event.get("tags")), poll, options, targets,
                         float(days) if days is not None else None, due_only)


def _direct_keys(event: Mapping[str, Any], defaults: Defaults) -> tuple[JobKey, ...]:
    out: list[JobKey] = []
    raw = event.get("keys")
    if raw is not None:
        if not isinstance(raw, list):
            raise EventError(f"keys = {_short(raw)!r}: expected a list of \"region/bucket/job_id\"", field="keys")
        for k in raw:
            key = JobKey.parse(k)
            _region(key.region, "keys")
            out.append(key)
    if "job_ids" in event or "job_id" in event:
        out.extend(parse_watch(dict(event), defaults, where="event").keys)
    return tuple(dict.fromkeys(out))


# --- helpers --------------------------------------------------------------------------------------------------

def _indexed(item: Item, index: int) -> Item:
    return IgnoredCallback(index, item.reason) if isinstance(item, IgnoredCallback) else item


def _opt_str(v: Any) -> str | None:
    return str(v) if v not in (None, "") else None


def _short(v: Any, n: int = 80) -> Any:
    if isinstance(v, str) and len(v) > n:
        return v[:n] + "..."
    if isinstance(v, (list, dict)):
        s = json.dumps(v, default=str)
        return s if len(s) <= n else s[:n] + "..."
    return v


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, EventError) else str(exc)


def utf8_text(raw: str | bytes, where: str) -> str:
    """Outside text as a str that is surely UTF-8 (no lone surrogates, which raise far away, when the text is
    encoded for the store, a log line or an answer), at most ``MAX_BODY_BYTES``."""
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) > MAX_BODY_BYTES:
            raise EventError(f"{where} of {len(raw)} bytes exceeds {MAX_BODY_BYTES}", field=where)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError(f"{where} is not UTF-8 text (byte {exc.start})", field=where) from None
    if len(raw) > MAX_BODY_BYTES:  # a character is at least one byte
        raise EventError(f"{where} of {len(raw)} characters exceeds {MAX_BODY_BYTES} bytes", field=where)
    bad = _SURROGATE.search(raw)
    if bad is not None:
        raise EventError(f"{where} holds a lone surrogate at character {bad.start()}: not UTF-8 text", field=where)
    if len(raw.encode("utf-8")) > MAX_BODY_BYTES:
        raise EventError(f"{where} exceeds {MAX_BODY_BYTES} bytes", field=where)
    return raw


def load_json(raw: str | bytes, where: str) -> Any:
    """Outside JSON, bounded: UTF-8 text of at most ``MAX_BODY_BYTES``, nesting at most ``MAX_JSON_DEPTH``, no
    lone surrogate in any string (escaped ones included). Every failure is an :class:`EventError` naming
    ``where``; never a RecursionError or a UnicodeError that would sink a whole batch."""
    text = utf8_text(raw, where)
    depth = _nesting(text) if text.count("[") + text.count("{") > MAX_JSON_DEPTH else 0
    if depth > MAX_JSON_DEPTH:
        raise EventError(f"{where} nests {depth} levels deep, more than {MAX_JSON_DEPTH}", field=where)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise EventError(f"{where} {_short(text)!r} is not JSON ({type(exc).__name__})", field=where) from None
    if "\\u" in text and _SURROGATE.search(json.dumps(obj, ensure_ascii=False)):
        raise EventError(f"{where} holds an escaped lone surrogate: not UTF-8 text", field=where)
    return obj


def _nesting(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (a linear scan, before the recursive parser runs)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


__all__ = [
    "EventError", "Source", "Defaults", "TickOptions", "TimerEvent", "Watch", "ChildCallback", "IgnoredCallback",
    "Rejected", "MessageBatch", "HttpRequest", "DirectCommand", "parse_event", "parse_timer", "parse_records",
    "parse_message_body", "parse_watch", "parse_tags", "parse_callback", "parse_callback_json", "parse_http",
    "parse_direct", "DIRECT_ACTIONS", "EXPECTED", "load_json", "utf8_text", "MAX_JSON_DEPTH",
]
