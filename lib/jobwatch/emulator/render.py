"""The emulator's XML answers, in the shapes the CI documents show (built with lxml, never by string pasting).

Times are written as the service writes them, in China Standard Time with a ``+0800`` offset, and ``-`` when
unset. Errors follow CI's ``<Error>`` form, which has no ``<Resource>`` node (COS's has one).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterable

from lxml import etree

from jobwatch.emulator.state import JobView

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
