"""The emulator's XML answers, in the shapes the CI documents show (built with lxml, never by string pasting).

Times are written as the service writes them, in China Standard Time with a ``+0800`` offset, and ``-`` when
unset. Errors follow CI's ``<Error>`` form, which has no ``<Resource>`` node (COS's has one).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable

from lxml import etree

from jobwatch.emulator.state import JobView

if TYPE_CHECKING:
    from jobwatch.emulator.children import ChildView

CST = timezone(timedelta(hours=8))
_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def ci_time(dt: datetime | None) -> str:
    """``2022-06-27T15:23:10+0800``, or ``-`` for "not set"."""
    if dt is None:
        return "-"
    return dt.astimezone(CST).strftime("%Y-%m-%dT%H:%M:%S%z")


def _sub(parent: etree._Element, tag: str, text: str | None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    el.text = text
    return el


def job_detail(v: JobView) -> etree._Element:
    """One ``<JobsDetail>`` node with the fields in the document's order; Input and Operation as created."""
    d = etree.Element("JobsDetail")
    _sub(d, "Code", v.code)
    _sub(d, "Type", v.type)
    _sub(d, "Message", v.message or None)
    _sub(d, "Name", v.name)
    _sub(d, "JobId", v.job_id)
    _sub(d, "State", v.state)
    _sub(d, "CreationTime", ci_time(v.created_at))
    _sub(d, "StartTime", ci_time(v.start_time))
    _sub(d, "EndTime", ci_time(v.end_time))
    d.append(etree.fromstring(etree.tostring(v.input)))
    d.append(etree.fromstring(etree.tostring(v.operation)))
    return d


def response(request_id: str, jobs: Iterable[JobView], *, non_exist: Iterable[str] = (),
             next_token: str | None = None) -> bytes:
    root = etree.Element("Response")
    _sub(root, "RequestId", request_id)
    for v in jobs:
        root.append(job_detail(v))
    missing = list(non_exist)
    if missing:
        _sub(root, "NonExistJobIds", ",".join(missing))
    if next_token is not None:
        _sub(root, "NextToken", next_token)
    return _DECL + etree.tostring(root)


def error(code: str, message: str, request_id: str, trace_id: str) -> bytes:
    root = etree.Element("Error")
    _sub(root, "Code", code)
    _sub(root, "Message", message)
    _sub(root, "RequestId", request_id)
    _sub(root, "TraceId", trace_id)
    return _DECL + etree.tostring(root)


# -- children of a batch job (issue 14): list answers, one workflow execution, and the per-child callbacks ------
# Each in its documented shape and time form: media jobs ``+0800``; workflow lists and details ``+08:00``;
# ``WorkflowFinish`` a space separator and ``+0800``. JSON callbacks have no ``Response`` wrapper.

def _t_colon(dt: datetime | None) -> str:
    if dt is None:
        return "-"
    s = dt.astimezone(CST).strftime("%Y-%m-%dT%H:%M:%S%z")
    return s[:-2] + ":" + s[-2:]


def _t_space(dt: datetime | None) -> str:
    return "-" if dt is None else dt.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S%z")


def _media_fields(v: "ChildView", bucket: str, region: str) -> dict[str, Any]:
    """A media job's ``JobsDetail`` as nested data (one source for the XML and JSON forms)."""
    ext = v.object_key.rsplit(".", 1)[-1] if "." in v.object_key else "mp4"
    out: dict[str, Any] = {
        "Code": v.code, "Message": v.message, "JobId": v.child_id, "State": v.state,
        "CreationTime": ci_time(v.created_at), "StartTime": ci_time(v.started_at), "EndTime": ci_time(v.ended_at),
        "QueueId": v.queue_id or "", "Tag": v.tag or "",
        "Input": {"BucketId": bucket, "Object": v.object_key, "Region": region},
        "Operation": {"Output": {"Bucket": bucket, "Object": f"output/{v.child_id}.{ext}", "Region": region},
                      "UserData": "", "JobLevel": "0"},
    }
    if v.state in ("Success", "Failed", "Cancel"):
        out["Progress"] = "100" if v.state == "Success" else "0"
    return out


def _dict_xml(parent: etree._Element, data: dict[str, Any]) -> None:
    for k, val in data.items():
        if isinstance(val, dict):
            _dict_xml(etree.SubElement(parent, k), val)
        elif isinstance(val, list):
            for item in val:
                _dict_xml(etree.SubElement(parent, k), item)
        else:
            _sub(parent, k, None if val == "" else str(val))


def media_jobs(views: Iterable["ChildView"], bucket: str, region: str, next_token: str) -> bytes:
    """``GET /jobs`` / ``/pic_jobs``: like the documented sample, no ``RequestId`` in the body (the header has
    it), repeated ``JobsDetail``, then ``NextToken``."""
    root = etree.Element("Response")
    for v in views:
        _dict_xml(etree.SubElement(root, "JobsDetail"), _media_fields(v, bucket, region))
    _sub(root, "NextToken", next_token or None)
    return _DECL + etree.tostring(root)


def workflow_executions(request_id: str, views: Iterable["ChildView"], next_token: str) -> bytes:
    """``GET /workflowexecution``: one ``WorkflowExecutionList`` per execution; ``CreateTime`` with ``+08:00``."""
    root = etree.Element("Response")
    _sub(root, "RequestId", request_id)
    for v in views:
        el = etree.SubElement(root, "WorkflowExecutionList")
        _sub(el, "RunId", v.child_id)
        _sub(el, "WorkflowId", v.workflow_id)
        _sub(el, "Object", v.object_key)
        _sub(el, "CreateTime", _t_colon(v.created_at))
        _sub(el, "State", v.state)
    _sub(root, "NextToken", next_token or None)
    return _DECL + etree.tostring(root)


def _task(v: "ChildView", fmt_time: Any) -> dict[str, Any]:
    return {"Type": "Transcode", "JobId": v.task_job_id or "", "CreateTime": fmt_time(v.created_at),
            "Name": "Transcode_1581665960536", "State": v.state, "StartTime": fmt_time(v.started_at),
            "EndTime": fmt_time(v.ended_at), "Code": v.code, "Message": v.message,
            "TemplateId": "t01e57db1c2d154d2fb57aa5de9313a897", "TemplateName": "emulated_transcode"}


def workflow_execution(request_id: str, v: "ChildView") -> bytes:
    """``GET /workflowexecution/<RunId>``: the execution and its (one) task, which holds code and message."""
    root = etree.Element("Response")
    _sub(root, "RequestId", request_id)
    _dict_xml(etree.SubElement(root, "WorkflowExecution"), {
        "WorkflowId": v.workflow_id or "", "Name": "emulated-workflow", "RunId": v.child_id,
        "CreateTime": _t_colon(v.created_at), "Object": v.object_key, "State": v.state,
        "Tasks": _task(v, _t_colon),
    })
    return _DECL + etree.tostring(root)


def task_finish(v: "ChildView", bucket: str, region: str, fmt: str) -> bytes:
    """The documented ``TaskFinish`` callback of one media/picture job. The JSON pages show ``JobsDetail`` both
    as an object and as a one-element list: odd-numbered children get the list, so receivers meet both."""
    detail = _media_fields(v, bucket, region)
    if fmt == "JSON":
        import json

        return json.dumps({"EventName": "TaskFinish", "JobsDetail": [detail] if v.index % 2 else detail},
                          ensure_ascii=False).encode()
    root = etree.Element("Response")
    _sub(root, "EventName", "TaskFinish")
    _dict_xml(etree.SubElement(root, "JobsDetail"), detail)
    return _DECL + etree.tostring(root)


def workflow_finish(v: "ChildView", bucket: str, fmt: str) -> bytes:
    """The documented ``WorkflowFinish`` callback of one workflow execution (space-separated times)."""
    execution = {
        "WorkflowId": v.workflow_id or "", "WorkflowName": "emulated-workflow", "RunId": v.child_id,
        "State": v.state, "BucketId": bucket, "Object": v.object_key, "CreateTime": _t_space(v.created_at),
        "CosHeaders": [{"Key": "Content-Type", "Value": "video/mp4"}],
        "Tasks": _task(v, _t_space),
    }
    if fmt == "JSON":
        import json

        return json.dumps({"EventName": "WorkflowFinish", "WorkflowExecution": execution},
                          ensure_ascii=False).encode()
    root = etree.Element("Response")
    _sub(root, "EventName", "WorkflowFinish")
    _dict_xml(etree.SubElement(root, "WorkflowExecution"), execution)
    return _DECL + etree.tostring(root)


def media_job_lookup(request_id: str, views: Iterable["ChildView"], missing: Iterable[str], bucket: str,
                     region: str) -> bytes:
    """``GET /jobs/<id,id,...>``: ``JobsDetail`` per job found, ``NonExistJobIds`` for the rest."""
    root = etree.Element("Response")
    _sub(root, "RequestId", request_id)
    for v in views:
        _dict_xml(etree.SubElement(root, "JobsDetail"), _media_fields(v, bucket, region))
    gone = list(missing)
    if gone:
        _sub(root, "NonExistJobIds", ",".join(gone))
    return _DECL + etree.tostring(root)
