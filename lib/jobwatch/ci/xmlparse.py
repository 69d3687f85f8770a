"""Hardened XML reading of the CI API's answers into typed records.

The parser resolves no entities, loads no DTD, reaches no network and refuses huge trees; a DOCTYPE is refused
outright (the service never sends one, so it can only be an attack or a proxy's page). Unknown elements are kept
in ``extra`` dictionaries: the service adds fields over time, and losing them would be worse than ignoring them.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable, Mapping

from lxml import etree

from jobwatch.core.children import ChildJob, ChildKind, ChildLookup, ChildPage
from jobwatch.core.errors import BadResponseError, CIError
from jobwatch.core.models import (
    Job, JobInput, JobOperation, JobState, ListingPage, QueryResult, TimeInterval, parse_time,
)
from jobwatch.core.errors import ValidationError

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)
_DOCTYPE_RE = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_document(body: bytes, *, status: int | None = None, request_id: str | None = None) -> etree._Element:
    """Parse a body into a root element, or raise :class:`BadResponseError` saying why not."""
    if not isinstance(body, (bytes, bytearray)):
        raise BadResponseError(f"body is {type(body).__name__}, expected bytes", status=status, request_id=request_id)
    if len(body) > MAX_BODY_BYTES:
        raise BadResponseError(
            f"body of {len(body)} bytes exceeds the {MAX_BODY_BYTES}-byte limit", status=status, request_id=request_id
        )
    if not body.strip():
        raise BadResponseError("empty body where XML was expected", status=status, request_id=request_id)
    # The service answers UTF-8. Any other encoding (UTF-16/32 hide a DOCTYPE from the byte search below) is
    # refused before the parser sees it.
    if b"\x00" in body:
        raise BadResponseError("body is not UTF-8 (NUL bytes: UTF-16 or UTF-32?)", status=status,
                               request_id=request_id)
    try:
        bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadResponseError(f"body is not UTF-8 (byte {exc.start})", status=status, request_id=request_id) from None
    if _DOCTYPE_RE.search(body):
        raise BadResponseError("DOCTYPE or ENTITY declarations are refused", status=status, request_id=request_id)
    try:
        root = etree.fromstring(bytes(body), _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise BadResponseError(f"not well-formed XML: {exc}", status=status, request_id=request_id) from None
    if root is None:
        raise BadResponseError("no root element", status=status, request_id=request_id)
    if _too_deep(root):
        raise BadResponseError(f"XML nested deeper than {MAX_DEPTH} levels", status=status, request_id=request_id)
    return root


# True when some element sits deeper than MAX_DEPTH: one compiled query, evaluated in C.
_TOO_DEEP = etree.XPath("boolean(/" + "*/" * MAX_DEPTH + "*)")


def _too_deep(root: etree._Element) -> bool:
    return bool(_TOO_DEEP(root))


def _text(el: etree._Element | None, tag: str) -> str | None:
    if el is None:
        return None
    child = el.find(tag)
    if child is None:
        return None
    return (child.text or "").strip()


def _children(el: etree._Element) -> dict[str, etree._Element]:
    """Element children by tag, the first of each (what ``find`` would return), in one pass over the children:
    a ``find`` per field cost more than parsing the document."""
    out: dict[str, etree._Element] = {}
    for c in el:
        tag = c.tag
        if isinstance(tag, str) and tag not in out:
            out[tag] = c
    return out


def _child_text(children: dict[str, etree._Element], tag: str) -> str | None:
    c = children.get(tag)
    return None if c is None else (c.text or "").strip()


def element_to_value(el: etree._Element) -> Any:
    """An element as plain data: text for a leaf, a dict for a container (repeated children become lists)."""
    children = [c for c in el if isinstance(c.tag, str)]
    if not children:
        return (el.text or "").strip()
    out: dict[str, Any] = {}
    for c in children:
        v = element_to_value(c)
        if c.tag in out:
            prev = out[c.tag]
            if isinstance(prev, list):
                prev.append(v)
            else:
                out[c.tag] = [prev, v]
        else:
            out[c.tag] = v
    return out


def _opt(text: str | None) -> str | None:
    return text if text not in (None, "", "-") else None


def _time(text: str | None, tag: str, job_id: str | None) -> Any:
    try:
        return parse_time(text, field_name=f"JobsDetail.{tag}")
    except ValidationError as exc:
        raise BadResponseError(f"job {job_id}: {exc}") from None


_INPUT_KNOWN = {"Prefix": "prefix", "Manifest": "manifest", "UrlFile": "url_file", "Object": "object"}
_JOB_KNOWN = frozenset({"JobId", "State", "Name", "Type", "Code", "Message", "CreationTime", "StartTime", "EndTime",
                        "Input", "Operation"})
_OP_KNOWN = {
    "WorkflowIds", "Tag", "QueueId", "JobParam", "Output", "TimeInterval", "UserData", "CallBack", "JobLevel",
}


def fingerprint(el: etree._Element) -> str:
    """A digest of one ``JobsDetail`` element as sent (its tail, the whitespace after it, left out)."""
    return _digest(etree.tostring(el, with_tail=False))


def _digest(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def parse_job(el: etree._Element) -> Job:
    """One ``JobsDetail`` element into a :class:`Job` (either variant)."""
    kids = _children(el)
    job_id = _opt(_child_text(kids, "JobId"))
    if not job_id:
        raise BadResponseError("JobsDetail without a JobId")
    state_raw = _child_text(kids, "State")
    if state_raw is None or state_raw == "":
        raise BadResponseError(f"job {job_id}: JobsDetail without a State")

    inp_el = kids.get("Input")
    inp_kw: dict[str, Any] = {}
    inp_extra: dict[str, Any] = {}
    if inp_el is not None:
        for c in inp_el:
            if not isinstance(c.tag, str):
                continue
            if c.tag in _INPUT_KNOWN and len(c) == 0:
                inp_kw[_INPUT_KNOWN[c.tag]] = _opt((c.text or "").strip())
            else:
                inp_extra[c.tag] = element_to_value(c)

    op_el = kids.get("Operation")
    op_kw: dict[str, Any] = {}
    op_extra: dict[str, Any] = {}
    if op_el is not None:
        op = _children(op_el)
        ids: list[str] = []
        for w in op_el.iterchildren("WorkflowIds"):
            text = _opt((w.text or "").strip())
            if text:
                ids.extend(x.strip() for x in text.split(",") if x.strip())
        op_kw["workflow_ids"] = tuple(ids)
        op_kw["tag"] = _opt(_child_text(op, "Tag"))
        op_kw["queue_id"] = _opt(_child_text(op, "QueueId"))
        op_kw["user_data"] = _opt(_child_text(op, "UserData"))
        op_kw["callback"] = _opt(_child_text(op, "CallBack"))
        op_kw["job_level"] = _opt(_child_text(op, "JobLevel"))
        jp = op.get("JobParam")
        if jp is not None:
            val = element_to_value(jp)
            op_kw["job_param"] = val if isinstance(val, dict) else {"value": val}
            op_kw["template_id"] = _opt(_text(jp, "TemplateId"))
        out = op.get("Output")
        if out is not None:
            val = element_to_value(out)
            op_kw["output"] = val if isinstance(val, dict) else {"value": val}
        ti = op.get("TimeInterval")
        if ti is not None:
            op_kw["time_interval"] = TimeInterval(_time(_text(ti, "Start"), "Start", job_id),
                                                  _time(_text(ti, "End"), "End", job_id))
        for c in op_el:
            if isinstance(c.tag, str) and c.tag not in _OP_KNOWN:
                op_extra[c.tag] = element_to_value(c)

    extra = {c.tag: element_to_value(c) for c in el if isinstance(c.tag, str) and c.tag not in _JOB_KNOWN}
    raw = etree.tostring(el, with_tail=False)  # serialised once: kept, and digested
    return Job(
        job_id=job_id,
        name=_opt(_child_text(kids, "Name")),
        type=_opt(_child_text(kids, "Type")),
        state=JobState.parse(state_raw),
        state_raw=state_raw,
        code=_opt(_child_text(kids, "Code")),
        message=_opt(_child_text(kids, "Message")),
        created_at=_time(_child_text(kids, "CreationTime"), "CreationTime", job_id),
        started_at=_time(_child_text(kids, "StartTime"), "StartTime", job_id),
        ended_at=_time(_child_text(kids, "EndTime"), "EndTime", job_id),
        input=JobInput(**inp_kw, extra=inp_extra),
        operation=JobOperation(**op_kw, extra=op_extra),
        extra=extra,
        raw_xml=raw,
        fingerprint=_digest(raw),
    )


def parse_response(body: bytes, *, status: int | None = None, request_id: str | None = None) -> QueryResult:
    """A ``<Response>`` of the query, list or create API."""
    root = _response_root(body, status, request_id)
    jobs: list[Job] = []
    non_exist: list[str] = []
    first: dict[str, str] = {}
    for el in root:  # one pass over the children (four findall/find calls cost as much as the parse)
        tag = el.tag
        if tag == "JobsDetail":
            jobs.append(parse_job(el))
        elif tag == "NonExistJobIds":
            non_exist.extend(x.strip() for x in (el.text or "").split(",") if x.strip())
        elif tag in ("NextToken", "RequestId") and tag not in first:
            first[tag] = (el.text or "").strip()
    return QueryResult(
        jobs=jobs,
        non_exist_ids=non_exist,
        next_token=_opt(first.get("NextToken")),
        request_id=_opt(first.get("RequestId")) or request_id,
    )


def parse_listing(body: bytes, recorded: Mapping[str, str | None], *, status: int | None = None,
                  request_id: str | None = None) -> ListingPage:
    """A list page read for a bulk refresh. ``recorded``: the jobs asked about, each with the fingerprint of its
    recorded answer. Only a job asked about whose answer differs is parsed: on a steady tick most are the same
    answer again, and parsing them was the largest cost of a listed job."""
    root = _response_root(body, status, request_id)
    changed: list[Job] = []
    unchanged: list[str] = []
    listed = 0
    first: dict[str, str] = {}
    for el in root:
        tag = el.tag
        if tag == "JobsDetail":
            listed += 1
            id_el = el.find("JobId")
            job_id = _opt((id_el.text or "").strip()) if id_el is not None else None
            if not job_id:
                raise BadResponseError("JobsDetail without a JobId", status=status, request_id=request_id)
            if job_id not in recorded:
                continue
            known = recorded[job_id]
            if known is not None and known == fingerprint(el):
                unchanged.append(job_id)
            else:
                changed.append(parse_job(el))
        elif tag in ("NextToken", "RequestId") and tag not in first:
            first[tag] = (el.text or "").strip()
    return ListingPage(changed, unchanged, listed, next_token=_opt(first.get("NextToken")),
                       request_id=_opt(first.get("RequestId")) or request_id)


def parse_error_element(root: etree._Element, *, status: int, request_id: str | None = None) -> CIError:
    from jobwatch.core.retry import is_retryable_error  # local: retry imports errors only, but keep the graph one-way

    code = _text(root, "Code") or "Unknown"
    message = _text(root, "Message") or ""
    rid = _opt(_text(root, "RequestId")) or request_id
    return CIError(
        code,
        message,
        status=status,
        request_id=rid,
        trace_id=_opt(_text(root, "TraceId")),
        retryable=is_retryable_error(status, code),
    )


def parse_error(body: bytes, *, status: int, request_id: str | None = None) -> CIError:
    """The ``<Error>`` body of a failed call. A body that is not an ``<Error>`` still gives a ``CIError``."""
    from jobwatch.core.retry import is_retryable_error

    try:
        root = parse_document(body, status=status, request_id=request_id)
    except BadResponseError as exc:
        return CIError(
            "Unknown", f"HTTP {status} without a readable error body ({exc.reason})", status=status,
            request_id=request_id, retryable=is_retryable_error(status, "Unknown"),
        )
    if root.tag != "Error":
        return CIError("Unknown", f"HTTP {status} with <{root.tag}> instead of <Error>", status=status,
                       request_id=request_id, retryable=is_retryable_error(status, "Unknown"))
    return parse_error_element(root, status=status, request_id=request_id)


# -- children of a batch job: media/picture job lists, workflow execution lists and details ---------------------
# Shapes and what is UNCONFIRMED: shared/reference/ci-children.md. A page that cannot be read whole is a
# BadResponseError naming the item and field: counting part of a page would move a caller's watermark past the
# unread rest, so the whole page is retried instead.

_CHILD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")


def _child_id(raw: str | None, what: str, where: str) -> str:
    cid = _opt(raw)
    if not cid:
        raise BadResponseError(f"{where} without a {what}")
    if not _CHILD_ID_RE.match(cid):
        raise BadResponseError(f"{where}: {what} {cid[:80]!r} is not letters, digits, '-' or '_'")
    return cid


def _child_time(kids: dict[str, etree._Element], tags: tuple[str, ...], where: str) -> Any:
    """The first present of ``tags`` (``CreateTime`` is documented for workflows, ``CreationTime`` elsewhere, and
    SDKs disagree), in any of the three documented forms; ``-`` or empty mean unset."""
    for tag in tags:
        if tag in kids:
            text = _child_text(kids, tag)
            try:
                return parse_time(text, field_name=tag)
            except ValidationError as exc:
                raise BadResponseError(f"{where}: {exc}") from None
    return None


def _object_key(raw: str | None) -> str | None:
    """The object key; an old draft shows a full COS URL in ``Object``, so such a URL is reduced to its key."""
    text = _opt(raw)
    if text and text.startswith(("http://", "https://")):
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(text)
        if parts.netloc.endswith(".myqcloud.com") and parts.path not in ("", "/"):
            return unquote(parts.path[1:])
    return text


def _error_field(text: str | None, state: str) -> str | None:
    """``Code``/``Message`` mean something only for a failed child; ``Success`` or empty mean none."""
    value = _opt(text)
    if value is None or (value == "Success" and state != "Failed"):
        return None
    return value


def _response_root(body: bytes, status: int | None, request_id: str | None) -> etree._Element:
    """The parsed ``<Response>``; an ``<Error>`` document raises the service's error, any other root is bad."""
    root = parse_document(body, status=status, request_id=request_id)
    if root.tag == "Error":
        raise parse_error_element(root, status=status or 0, request_id=request_id)
    if root.tag != "Response":
        raise BadResponseError(f"root element is <{root.tag}>, expected <Response>", status=status,
                               request_id=request_id)
    return root


def _root(body: bytes, status: int | None, request_id: str | None) -> tuple[etree._Element, str | None]:
    root = _response_root(body, status, request_id)
    return root, _opt(_text(root, "RequestId")) or request_id


def parse_media_job(el: etree._Element, kind: ChildKind, where: str = "JobsDetail") -> ChildJob:
    """One media/picture ``JobsDetail`` into a :class:`ChildJob` (the list, the detail call and ``TaskFinish``
    share this shape)."""
    kids = _children(el)
    cid = _child_id(_child_text(kids, "JobId"), "JobId", where)
    where = f"{where} {cid}"
    state = _opt(_child_text(kids, "State"))
    if not state:
        raise BadResponseError(f"{where}: no State")
    inp = kids.get("Input")
    wf = kids.get("Workflow")
    return ChildJob(
        child_id=cid,
        kind=kind,
        object_key=_object_key(_text(inp, "Object")),
        state=state,
        created_at=_child_time(kids, ("CreationTime", "CreateTime"), where),
        started_at=_child_time(kids, ("StartTime",), where),
        ended_at=_child_time(kids, ("EndTime",), where),
        code=_error_field(_child_text(kids, "Code"), state),
        message=_error_field(_child_text(kids, "Message"), state),
        workflow_id=_opt(_text(wf, "WorkflowId")),
        queue_id=_opt(_child_text(kids, "QueueId")),
        tag=_opt(_child_text(kids, "Tag")),
    )


def parse_media_job_page(body: bytes, kind: ChildKind, *, status: int | None = None,
                         request_id: str | None = None) -> ChildPage:
    """A ``GET /jobs`` or ``/pic_jobs`` answer: repeated ``JobsDetail`` and a ``NextToken`` (raw: the caller
    applies the stop rule, which needs the page size it asked for)."""
    return _page(body, status, request_id, "JobsDetail",
                 lambda el, where: parse_media_job(el, kind, where))


def parse_media_job_lookup(body: bytes, kind: ChildKind, *, status: int | None = None,
                           request_id: str | None = None) -> ChildLookup:
    """A ``GET /jobs/<id,id,...>`` answer: ``JobsDetail`` per job found, ``NonExistJobIds`` for the others."""
    root, rid = _root(body, status, request_id)
    items = [parse_media_job(el, kind, f"JobsDetail[{i}]") for i, el in enumerate(root.iterchildren("JobsDetail"))]
    missing = [x.strip() for el in root.iterchildren("NonExistJobIds") for x in (el.text or "").split(",")
               if x.strip()]
    return ChildLookup(items=items, missing=missing, request_id=rid)


def _workflow_execution(el: etree._Element, where: str) -> tuple[dict[str, etree._Element], ChildJob]:
    kids = _children(el)
    cid = _child_id(_child_text(kids, "RunId"), "RunId", where)
    where = f"{where} {cid}"
    state = _opt(_child_text(kids, "State"))
    if not state:
        raise BadResponseError(f"{where}: no State")
    child = ChildJob(
        child_id=cid,
        kind=ChildKind.WORKFLOW,
        object_key=_object_key(_child_text(kids, "Object")),
        state=state,
        created_at=_child_time(kids, ("CreateTime", "CreationTime"), where),
        workflow_id=_opt(_child_text(kids, "WorkflowId")),
    )
    return kids, child


def parse_workflow_execution_page(body: bytes, *, status: int | None = None,
                                  request_id: str | None = None) -> ChildPage:
    """A ``GET /workflowexecution`` answer: one ``WorkflowExecutionList`` element per execution (a single-item
    page is one element, never a special case here). The list has no end time, code or message."""
    return _page(body, status, request_id, "WorkflowExecutionList",
                 lambda el, where: _workflow_execution(el, where)[1])


def _page(body: bytes, status: int | None, request_id: str | None, item_tag: str,
          parse_item: Callable[[etree._Element, str], ChildJob]) -> ChildPage:
    """Repeated ``item_tag`` elements and a ``NextToken`` (raw: the caller applies the stop rule, which needs the
    page size it asked for). Each item is named by its position, so an error says which one was bad."""
    root, rid = _root(body, status, request_id)
    items: list[ChildJob] = []
    token: str | None = None
    for i, el in enumerate(root.iterchildren(item_tag)):
        items.append(parse_item(el, f"{item_tag}[{i}]"))
    for el in root.iterchildren("NextToken"):
        token = _opt((el.text or "").strip())
        break
    return ChildPage(items=items, next_token=token, request_id=rid)


_MAX_MESSAGE = 1000


def workflow_execution_from_element(el: etree._Element, where: str = "WorkflowExecution") -> ChildJob:
    """A ``WorkflowExecution`` with its ``Tasks`` (detail call and ``WorkflowFinish``): the execution failed if
    one task failed, so code and message are those of its failed task(s); it started with its first task and
    ended with its last one."""
    kids, child = _workflow_execution(el, where)
    where = f"{where} {child.child_id}"
    starts, ends = [], []
    codes: list[str] = []
    messages: list[str] = []
    for i, task in enumerate(el.iterchildren("Tasks")):
        tk = _children(task)
        twhere = f"{where} Tasks[{i}]"
        start = _child_time(tk, ("StartTime",), twhere) or _child_time(tk, ("CreateTime", "CreationTime"), twhere)
        end = _child_time(tk, ("EndTime",), twhere)
        if start is not None:
            starts.append(start)
        if end is not None:
            ends.append(end)
        tstate = _opt(_child_text(tk, "State")) or ""
        code = _opt(_child_text(tk, "Code"))
        if tstate == "Failed" or (code is not None and code != "Success"):
            name = _opt(_child_text(tk, "Name")) or _opt(_child_text(tk, "Type")) or f"task {i}"
            if code and code != "Success":
                codes.append(code)
            msg = _opt(_child_text(tk, "Message"))
            messages.append(f"{name}: {msg}" if msg else name)
    final = child.state in ("Success", "Failed", "Cancel")
    failed = child.state == "Failed"
    message = "; ".join(messages) if failed and messages else None
    if message and len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE - 3] + "..."
    return ChildJob(
        child_id=child.child_id, kind=ChildKind.WORKFLOW, object_key=child.object_key, state=child.state,
        created_at=child.created_at,
        started_at=min(starts) if starts else None,
        ended_at=(max(ends) if ends else None) if final else None,
        code=(codes[0] if codes else None) if failed else None,
        message=message,
        workflow_id=child.workflow_id,
    )


def parse_workflow_execution(body: bytes, *, status: int | None = None,
                             request_id: str | None = None) -> ChildJob | None:
    """A ``GET /workflowexecution/<RunId>`` answer; ``None`` when it holds no ``WorkflowExecution`` (what the
    service answers for an unknown RunId is UNCONFIRMED)."""
    root, _ = _root(body, status, request_id)
    el = root.find("WorkflowExecution")
    if el is None:
        return None
    return workflow_execution_from_element(el)
