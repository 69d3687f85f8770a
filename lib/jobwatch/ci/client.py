"""The signed client of the CI batch-job API (``/inventorytriggerjob``): query, list, create, cancel; and one
page at a time of a batch's children (``/jobs``, ``/pic_jobs``, ``/workflowexecution``).

One pooled ``requests.Session``; connect and read timeouts; every attempt signed afresh (new key time, current
credentials); retries decided by :mod:`jobwatch.retry`. Inputs are validated before any URL is built, bodies are
read with a size cap and parsed only by :mod:`jobwatch.xmlparse`. Errors carry the service's code and request
ID, never a header: the ``Authorization`` value and the session token stay inside :meth:`CIClient._send`.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import os
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar
from urllib.parse import quote, urlsplit

import requests
import structlog
import urllib3
from lxml import etree
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from requests.structures import CaseInsensitiveDict

from jobwatch.ci import signing
from jobwatch.ci import xmlparse
from jobwatch.ci.credentials import CredentialsProvider
from jobwatch.core.children import (
    MAX_CHILD_LOOKUP, MAX_CHILD_PAGE_SIZE, ChildJob, ChildKind, ChildLookup, ChildPage,
)
from jobwatch.core.errors import BadResponseError, CIError, JobwatchError, TransportError, ValidationError
from jobwatch.core.models import (
    Job, JobInput, JobOperation, JobState, ListingPage, QueryResult, format_ci_time, validate_bucket,
    validate_job_id, validate_region,
)
from jobwatch.core.redact import scrub
from jobwatch.core.retry import Backoff, parse_retry_after, should_retry, worst_case_seconds

__all__ = ["CIClient", "JobSpec", "ConnectError", "ci_host", "DEFAULT_USER_AGENT"]

DEFAULT_USER_AGENT = "ci-jobwatch/0.1"
_log = structlog.get_logger("jobwatch.ci.client")

# 404 codes that mean "this job does not exist" (the service normally answers 200 + NonExistJobIds instead).
_MISSING_JOB_CODES = frozenset({"NoSuchJob", "NoSuchResource", "NoSuchKey", "JobNotExist", "NotFound",
                                "ResourceNotFound", "InvalidJobId"})
_LIST_TYPES = ("Workflow", "Job")
_ORDERS = ("Desc", "Asc")
_STATE_NAMES = {s.value for s in JobState if s is not JobState.UNKNOWN} | {"All"}
T = TypeVar("T")
_NAME_RE = re.compile(r"^[\w\-\u4e00-\u9fff]{1,128}$")


class ConnectError(TransportError):
    """The connection was never made, so the request was not sent: even a create may be resent."""


def ci_host(bucket: str, region: str) -> str:
    return f"{bucket}.ci.{region}.myqcloud.com"


@dataclass(frozen=True)
class JobSpec:
    """A batch job to create. ``type`` ``Job`` (independent node: ``operation.tag`` and usually ``queue_id``,
    ``template_id``/``job_param``, ``output``) or ``Workflow`` (``operation.workflow_ids``). ``input`` names
    exactly one source: prefix, manifest, URL file or object."""

    name: str
    input: JobInput
    operation: JobOperation = field(default_factory=JobOperation)
    type: str = "Job"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValidationError("name", self.name, "expected Chinese, letters, digits, '-' or '_' (1-128)")
        if self.type not in _LIST_TYPES:
            raise ValidationError("type", self.type, "expected Job or Workflow")
        sources = [v for v in (self.input.prefix, self.input.manifest, self.input.url_file, self.input.object)
                   if v]
        if len(sources) != 1:
            raise ValidationError("input", self.input, "expected exactly one of prefix, manifest, url_file, object")
        if self.type == "Workflow" and not self.operation.workflow_ids:
            raise ValidationError("operation.workflow_ids", self.operation.workflow_ids,
                                  "a Workflow job needs at least one workflow ID")
        if self.type == "Job" and not self.operation.tag:
            raise ValidationError("operation.tag", self.operation.tag, "a Job job needs a Tag (e.g. Transcode)")

    def to_xml(self) -> bytes:
        """The documented ``<Request>`` body."""
        root = etree.Element("Request")
        _sub(root, "Name", self.name)
        _sub(root, "Type", self.type)
        inp = etree.SubElement(root, "Input")
        for tag, val in (("Prefix", self.input.prefix), ("Manifest", self.input.manifest),
                         ("UrlFile", self.input.url_file), ("Object", self.input.object)):
            _sub(inp, tag, val)
        _dict_into(inp, self.input.extra)
        op = etree.SubElement(root, "Operation")
        o = self.operation
        if o.time_interval is not None:
            ti = etree.SubElement(op, "TimeInterval")
            if o.time_interval.start:
                _sub(ti, "Start", format_ci_time(o.time_interval.start))
            if o.time_interval.end:
                _sub(ti, "End", format_ci_time(o.time_interval.end))
        if o.workflow_ids:
            _sub(op, "WorkflowIds", ",".join(o.workflow_ids))
        _sub(op, "QueueId", o.queue_id)
        _sub(op, "UserData", o.user_data)
        _sub(op, "CallBack", o.callback)
        _sub(op, "Tag", o.tag)
        if o.template_id or o.job_param:
            jp = etree.SubElement(op, "JobParam")
            if o.template_id and "TemplateId" not in o.job_param:
                _sub(jp, "TemplateId", o.template_id)
            _dict_into(jp, o.job_param)
        if o.output:
            _dict_into(etree.SubElement(op, "Output"), o.output)
        _sub(op, "JobLevel", o.job_level)
        _dict_into(op, o.extra)
        return etree.tostring(root, xml_declaration=False, encoding="utf-8")


def _sub(parent: etree._Element, tag: str, value: str | None) -> None:
    if value is not None and value != "":
        etree.SubElement(parent, tag).text = str(value)


def _dict_into(parent: etree._Element, data: Mapping[str, Any]) -> None:
    for k, v in data.items():
        for item in (v if isinstance(v, list) else [v]):
            if isinstance(item, Mapping):
                _dict_into(etree.SubElement(parent, k), item)
            else:
                _sub(parent, k, "" if item is None else str(item))


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    request_id: str | None


class _KeepHeaders(AuthBase):
    """A no-op auth: stops requests from replacing our Authorization header with ~/.netrc credentials."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


class CIClient:
    """Client of one account's CI batch-job API; safe to share between threads (one pooled session)."""

    def __init__(
        self,
        credentials_provider: CredentialsProvider,
        *,
        endpoint: str | None = None,
        session: requests.Session | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        backoff: Backoff = Backoff(),
        max_attempts: int = 4,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        sign_window: int = 600,
        verify: bool | str = True,
        pool_size: int = 32,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        if endpoint is not None:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValidationError("endpoint", endpoint, "expected http(s)://host[:port] with no path")
            endpoint = f"{parts.scheme}://{parts.netloc}"
        if max_attempts < 1:
            raise ValidationError("max_attempts", max_attempts, "expected at least 1")
        if not 1 <= sign_window <= 86400:
            raise ValidationError("sign_window", sign_window, "expected 1 to 86400 seconds")
        self._provider = credentials_provider
        self._endpoint = endpoint
        self._timeout = (connect_timeout, read_timeout)
        self._backoff = backoff
        self._max_attempts = max_attempts
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._sign_window = sign_window
        self._verify = verify
        self._user_agent = user_agent
        self._skew = 0.0  # server time minus our clock, learnt from a RequestTimeTooSkewed answer
        self._own_session = session is None
        # Proxies from the environment, per base URL, read once (None: the caller's session decides).
        self._env_proxies: dict[str, dict[str, str]] | None = None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=8, pool_maxsize=pool_size, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            # requests reads the proxy variables and the CA bundle variables from os.environ on every request
            # (a tenth of its cost per call here); a function's environment is fixed, so read them once.
            session.trust_env = False
            self._env_proxies = {}
            if verify is True:
                self._verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._session = session
        if verify is False:
            _log.warning("ci_tls_verify_disabled", endpoint=endpoint,
                         note="TLS certificates are not checked; use only against a local emulator")

    @property
    def worst_case_seconds(self) -> float:
        """The longest one call can take, retries and pauses included (leases must outlast it)."""
        return worst_case_seconds(self._timeout[0], self._timeout[1], self._max_attempts, self._backoff)

    # -- public API ---------------------------------------------------------------------------------------

    def get_job(self, bucket: str, region: str, job_id: str) -> QueryResult:
        """One job. A job the service does not know comes back in ``non_exist_ids`` (never as an exception),
        whether the service says so with ``NonExistJobIds`` or with a 404."""
        validate_bucket(bucket)
        validate_region(region)
        validate_job_id(job_id)
        try:
            return self._call("GET", bucket, region, f"/inventorytriggerjob/{job_id}",
                              parse=lambda ans: _about(_parse(ans), job_id))
        except CIError as exc:
            if exc.status == 404 and exc.code != "NoSuchBucket" and (
                    exc.code in _MISSING_JOB_CODES or exc.code.startswith("NoSuch")):
                return QueryResult(jobs=[], non_exist_ids=[job_id], request_id=exc.request_id)
            raise

    def list_page(
        self,
        bucket: str,
        region: str,
        *,
        states: Iterable[JobState | str] | str | None = None,
        type: str | None = None,
        order_by_time: str | None = None,
        start_creation_time: datetime | None = None,
        end_creation_time: datetime | None = None,
        workflow_id: str | None = None,
        job_id: str | None = None,
        name: str | None = None,
        size: int = 100,
        next_token: str | None = None,
    ) -> QueryResult:
        """One page of ``GET /inventorytriggerjob`` of one variant. ``type`` (``Workflow`` or ``Job``) is
        required: the official SDK silently sends ``Workflow`` when it is left out, and a listing that relies on
        any default may miss every job of the other variant."""
        params = _page_query(bucket, region, states=states, type=type, order_by_time=order_by_time,
                             start_creation_time=start_creation_time, end_creation_time=end_creation_time,
                             workflow_id=workflow_id, job_id=job_id, name=name, size=size, next_token=next_token)
        return self._call("GET", bucket, region, "/inventorytriggerjob", params, parse=_parse)

    def list_changes(self, bucket: str, region: str, recorded: Mapping[str, str | None], **filters: Any) -> ListingPage:
        """One page of ``GET /inventorytriggerjob`` (the filters of :meth:`list_page`, ``type`` required) read
        for a bulk refresh: of the jobs in ``recorded`` (job ID -> fingerprint of its recorded answer), those
        whose answer changed, parsed, and those whose answer is the recorded one, named; others only counted."""
        params = _page_query(bucket, region, **filters)
        return self._call("GET", bucket, region, "/inventorytriggerjob", params,
                          parse=lambda ans: xmlparse.parse_listing(ans.body, recorded, status=ans.status,
                                                                   request_id=ans.request_id))

    def list_jobs(self, bucket: str, region: str, **filters: Any) -> Iterator[Job]:
        """Every job matching the filters (those of :meth:`list_page`), following ``NextToken`` lazily. Without
        ``type``, both variants, each listing sending its type, merged by creation time in the listing's order
        (newest first unless ``order_by_time="Asc"``), so a caller that stops early sees the right jobs."""
        filters.pop("next_token", None)
        typ = filters.pop("type", None)
        if typ is not None:
            yield from self._list_type(bucket, region, typ, filters)
            return
        newest_first = filters.get("order_by_time") != "Asc"
        floor = datetime.min.replace(tzinfo=timezone.utc)
        yield from heapq.merge(*(self._list_type(bucket, region, t, filters) for t in _LIST_TYPES),
                               key=lambda j: j.created_at or floor, reverse=newest_first)

    def _list_type(self, bucket: str, region: str, typ: str, filters: dict[str, Any]) -> Iterator[Job]:
        token: str | None = None
        seen: set[str] = set()
        while True:
            page = self.list_page(bucket, region, next_token=token, type=typ, **filters)
            yield from page.jobs
            token = page.next_token
            if not token or token in seen:  # a repeated token would loop forever
                return
            seen.add(token)

    def create_job(self, bucket: str, region: str, spec: JobSpec) -> Job:
        """Create a batch job; returns it as the service reports it (normally ``Submitted``). Not resent after
        a timeout (it could create the job twice), only when the service surely did not act on it."""
        validate_bucket(bucket)
        validate_region(region)
        result = self._call("POST", bucket, region, "/inventorytriggerjob", body=spec.to_xml(), idempotent=False,
                            parse=_parse)
        if not result.jobs:
            raise BadResponseError("create answered without a JobsDetail", request_id=result.request_id)
        return result.jobs[0]

    def cancel_job(self, bucket: str, region: str, job_id: str) -> str | None:
        """Cancel a job (``PUT /inventorytriggerjob/<id>?cancel``); returns the request ID."""
        validate_bucket(bucket)
        validate_region(region)
        validate_job_id(job_id)
        ans: _Answer = self._call("PUT", bucket, region, f"/inventorytriggerjob/{job_id}", {"cancel": None})
        return ans.request_id

    # -- children of a batch job (issue 14): one page per call, so the caller keeps to its own budget ------

    def list_media_jobs(
        self,
        bucket: str,
        region: str,
        *,
        batch_id: str,
        queue_id: str | None = None,
        tag: str | None = None,
        states: Iterable[str] | str | None = None,
        start_creation_time: datetime | None = None,
        end_creation_time: datetime | None = None,
        order_by_time: str = "Asc",
        size: int = 100,
        next_token: str | None = None,
        pic: bool = False,
    ) -> ChildPage:
        """One page of the media jobs (``GET /jobs``) or picture jobs (``pic=True``: ``GET /pic_jobs``) a
        ``Type=Job`` batch spawned, found by ``inventoryTriggerJobId``. ``next_token`` is None on the last page,
        which is also any empty or short page: the documented samples carry a token on their last page."""
        validate_bucket(bucket)
        validate_region(region)
        params: dict[str, str | None] = {"inventoryTriggerJobId": _child_ref("batch_id", batch_id)}
        if queue_id:
            params["queueId"] = _child_ref("queue_id", queue_id)
        if tag:
            params["tag"] = _child_ref("tag", tag)
        eff = _child_list_params(params, states=states, allowed=_MEDIA_STATES, start=start_creation_time,
                                 end=end_creation_time, order=order_by_time, size=size, next_token=next_token)
        kind = ChildKind.PIC_JOB if pic else ChildKind.JOB
        page: ChildPage = self._call(
            "GET", bucket, region, "/pic_jobs" if pic else "/jobs", params,
            parse=lambda a: xmlparse.parse_media_job_page(a.body, kind, status=a.status, request_id=a.request_id))
        return _stop_rule(page, eff)

    def get_media_jobs(self, bucket: str, region: str, job_ids: Iterable[str], *, pic: bool = False) -> ChildLookup:
        """Some media (or picture) jobs by ID, comma-separated in one ``GET /jobs/<ids>`` (up to 100): how the
        children not yet final are refreshed without listing the batch again. IDs the service does not know come
        back in ``missing``, whether it says so with ``NonExistJobIds`` or with a 404."""
        validate_bucket(bucket)
        validate_region(region)
        ids = list(dict.fromkeys(_child_ref("job_ids", j) for j in ([job_ids] if isinstance(job_ids, str)
                                                                    else job_ids)))
        if not 1 <= len(ids) <= MAX_CHILD_LOOKUP:
            raise ValidationError("job_ids", len(ids), f"expected 1 to {MAX_CHILD_LOOKUP} job IDs")
        kind = ChildKind.PIC_JOB if pic else ChildKind.JOB
        try:
            found: ChildLookup = self._call(
                "GET", bucket, region, f"/{'pic_jobs' if pic else 'jobs'}/{','.join(ids)}",
                parse=lambda a: xmlparse.parse_media_job_lookup(a.body, kind, status=a.status,
                                                                request_id=a.request_id))
        except CIError as exc:
            if exc.status == 404 and exc.code != "NoSuchBucket":
                return ChildLookup(items=[], missing=ids, request_id=exc.request_id)
            raise
        return found

    def list_workflow_executions(
        self,
        bucket: str,
        region: str,
        *,
        workflow_id: str,
        batch_id: str,
        states: Iterable[str] | str | None = None,
        start_creation_time: datetime | None = None,
        end_creation_time: datetime | None = None,
        order_by_time: str = "Asc",
        size: int = 100,
        next_token: str | None = None,
    ) -> ChildPage:
        """One page of the executions of ``workflow_id`` a ``Type=Workflow`` batch started (``GET
        /workflowexecution?workflowId=&jobId=<batch>``). Items carry no end time, code or message: read a
        failed one with :meth:`get_workflow_execution`. Same stop rule as :meth:`list_media_jobs`."""
        validate_bucket(bucket)
        validate_region(region)
        params: dict[str, str | None] = {"workflowId": _child_ref("workflow_id", workflow_id),
                                         "jobId": _child_ref("batch_id", batch_id)}
        eff = _child_list_params(params, states=states, allowed=_WORKFLOW_STATES, start=start_creation_time,
                                 end=end_creation_time, order=order_by_time, size=size, next_token=next_token)
        page: ChildPage = self._call(
            "GET", bucket, region, "/workflowexecution", params,
            parse=lambda a: xmlparse.parse_workflow_execution_page(a.body, status=a.status,
                                                                   request_id=a.request_id))
        return _stop_rule(page, eff)

    def get_workflow_execution(self, bucket: str, region: str, run_id: str) -> ChildJob:
        """One workflow execution with its tasks (``GET /workflowexecution/<RunId>``): code and message of its
        failed task(s), start and end from its tasks. An unknown RunId raises :class:`CIError` with status 404
        (the service's own 404, or ``NoSuchWorkflowExecution`` when it answers 200 with nothing)."""
        validate_bucket(bucket)
        validate_region(region)
        run_id = _child_ref("run_id", run_id)

        def parse(a: _Answer) -> ChildJob | None:
            return xmlparse.parse_workflow_execution(a.body, status=a.status, request_id=a.request_id)

        child: ChildJob | None = self._call("GET", bucket, region, f"/workflowexecution/{run_id}", parse=parse)
        if child is None:
            raise CIError("NoSuchWorkflowExecution", f"no workflow execution {run_id}", status=404)
        if child.child_id != run_id:
            raise BadResponseError(f"asked for workflow execution {run_id}, got {child.child_id}")
        return child

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> "CIClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CIClient(endpoint={self._endpoint!r}, provider={self._provider!r})"

    # -- one call, with retries ---------------------------------------------------------------------------

    def _call(self, method: str, bucket: str, region: str, path: str,
              params: Mapping[str, str | None] | None = None, *, body: bytes | None = None,
              idempotent: bool = True, parse: Callable[[_Answer], T] | None = None) -> T:
        """Send until an answer parses, a failure is final, or attempts run out. ``parse`` runs inside the
        loop so that a garbled 2xx body is retried like a broken connection."""
        params = dict(params or {})
        attempt = 0
        while True:
            outcome = self._attempt(method, bucket, region, path, params, body)
            if isinstance(outcome, _Answer):
                if parse is None:
                    return outcome  # type: ignore[return-value]
                try:
                    return parse(outcome)
                except (BadResponseError, CIError) as exc:
                    outcome = exc
            error: JobwatchError = outcome
            attempt += 1
            if isinstance(error, TransportError):
                retry = should_retry(transport=True, sent=not isinstance(error, ConnectError),
                                     idempotent=idempotent)
                retry_after = None
            elif isinstance(error, CIError):
                retry = should_retry(status=error.status, code=error.code, idempotent=idempotent)
                retry_after = error.retry_after
            else:  # BadResponseError on a 2xx: a broken proxy or connection; reading again is harmless
                retry = idempotent and error.retryable
                retry_after = None
            if not retry or attempt >= self._max_attempts:
                raise error
            delay = self._backoff.delay(attempt - 1, self._rand, retry_after)
            _log.warning("ci_retry", method=method, path=path, bucket=bucket, attempt=attempt, delay=round(delay, 3),
                         error=type(error).__name__, code=getattr(error, "code", None),
                         request_id=getattr(error, "request_id", None))
            self._sleep(delay)

    def _attempt(self, method: str, bucket: str, region: str, path: str, params: dict[str, str | None],
                 body: bytes | None) -> _Answer | JobwatchError:
        """One signed request. Returns the answer or the error to consider (raised by the caller, outside any
        ``except`` block, so no requests exception with our headers rides along as ``__context__``)."""
        host = ci_host(bucket, region)
        headers = self._signed_headers(method, host, path, params, body)
        base = self._endpoint or f"https://{host}"
        url = base + quote(path, safe="/") + _query(params)
        failure: JobwatchError | None = None
        resp: requests.Response | None = None
        try:
            resp = self._send(method, url, headers, body, base)
        except requests.exceptions.ConnectTimeout:
            failure = ConnectError(f"{method} {host}{path}: connect timeout after {self._timeout[0]} s")
        except requests.exceptions.Timeout:
            failure = TransportError(f"{method} {host}{path}: read timeout after {self._timeout[1]} s")
        except requests.exceptions.ConnectionError as exc:
            reason = scrub(str(exc))[:300]
            cls = ConnectError if _never_connected(exc) else TransportError
            failure = cls(f"{method} {host}{path}: connection failed: {reason}")
        except requests.exceptions.RequestException as exc:
            failure = TransportError(f"{method} {host}{path}: {type(exc).__name__}: {scrub(str(exc))[:300]}")
        if failure is not None or resp is None:
            return failure or TransportError(f"{method} {host}{path}: no response")
        try:
            return self._read(resp)
        finally:
            resp.close()

    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
              base: str) -> requests.Response:
        if not self._own_session:  # the caller's session: its defaults, hooks and adapters all apply
            return self._session.request(method, url, headers=headers, data=body, timeout=self._timeout,
                                         verify=self._verify, stream=True, allow_redirects=False,
                                         auth=_KeepHeaders(), proxies=self._proxies_for(base))
        # Our own session has nothing to merge (no cookies, hooks, default headers, redirects or environment):
        # hand the request straight to its adapter. Session.request spent a third of a call merging nothing.
        # The URL is ours, built from validated parts and quoted, and the headers are complete.
        prep = requests.PreparedRequest()
        prep.method, prep.url, prep.headers, prep.body = method, url, CaseInsensitiveDict(headers), body
        return self._session.get_adapter(url).send(prep, stream=True, timeout=self._timeout, verify=self._verify,
                                                   proxies=self._proxies_for(base))

    def _proxies_for(self, base: str) -> dict[str, str] | None:
        """HTTP(S)_PROXY / NO_PROXY as requests would apply them to ``base``, looked up once per base URL."""
        if self._env_proxies is None:
            return None
        proxies = self._env_proxies.get(base)
        if proxies is None:
            proxies = self._env_proxies[base] = dict(requests.utils.get_environ_proxies(base + "/"))
        return proxies

    def _read(self, resp: requests.Response) -> _Answer | JobwatchError:
        status = resp.status_code
        rid = resp.headers.get("x-ci-request-id") or resp.headers.get("x-cos-request-id")
        limit = xmlparse.MAX_BODY_BYTES
        declared = resp.headers.get("Content-Length")
        failure: JobwatchError | None = None
        if declared and declared.isdigit() and int(declared) > limit:
            return BadResponseError(f"body of {declared} bytes exceeds the {limit}-byte limit", status=status,
                                    request_id=rid)
        try:
            # One bounded read from urllib3's response (requests' iter_content would wrap it in a generator per
            # call): at most one byte past the limit, so an endless body is cut off, not buffered.
            data = resp.raw.read(limit + 1, decode_content=True) or b""
            if len(data) > limit:
                return BadResponseError(f"body exceeds the {limit}-byte limit", status=status, request_id=rid)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            failure = TransportError(f"reading the answer failed: {type(exc).__name__}: {scrub(str(exc))[:200]}")
        if failure is not None:
            return failure
        body = bytes(data)
        if 200 <= status < 300:
            return _Answer(status, body, rid)
        err = xmlparse.parse_error(body, status=status, request_id=rid)
        err.retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._clock())
        if err.code == "RequestTimeTooSkewed":
            self._learn_skew(resp.headers.get("Date"))
        return err

    def _learn_skew(self, date: str | None) -> None:
        """Sign later attempts with the server's idea of now, so a skewed local clock does not fail every call."""
        if not date:
            return
        try:
            server = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        self._skew = server - self._clock()
        _log.warning("ci_clock_skew", skew_seconds=round(self._skew, 1))

    def _signed_headers(self, method: str, host: str, path: str, params: Mapping[str, str | None],
                        body: bytes | None) -> dict[str, str]:
        creds = self._provider.get()  # per attempt: temporary keys may have been refreshed meanwhile
        signed = {"host": host}
        if creds.token:
            signed["x-ci-security-token"] = creds.token.reveal()
        if body is not None:
            signed["content-type"] = "application/xml"
            signed["content-length"] = str(len(body))
            signed["content-md5"] = base64.b64encode(hashlib.md5(body).digest()).decode("ascii")
        now = int(self._clock() + self._skew)
        auth = signing.authorization(
            creds.secret_id, creds.secret_key.reveal(), method, path,
            {k: "" if v is None else v for k, v in params.items()}, signed, now - 60, now + self._sign_window,
        )
        headers = {_header_name(k): v for k, v in signed.items()}
        headers["Authorization"] = auth
        headers["User-Agent"] = self._user_agent
        headers["Accept"] = "application/xml"
        return headers


def _parse(ans: _Answer) -> QueryResult:
    return xmlparse.parse_response(ans.body, status=ans.status, request_id=ans.request_id)


def _about(res: QueryResult, job_id: str) -> QueryResult:
    """An answer that names neither the job asked for nor it as missing is about something else (a proxy's
    cache, a mixed-up connection): unreadable for this question, so retried, never taken as the job's state."""
    if any(j.job_id == job_id for j in res.jobs) or job_id in res.non_exist_ids:
        return res
    named = ", ".join([j.job_id for j in res.jobs][:3] + list(res.non_exist_ids)[:3]) or "no job"
    raise BadResponseError(f"answer about {named[:200]}, not job {job_id}", status=200, request_id=res.request_id)


def _header_name(k: str) -> str:
    return {"host": "Host", "content-type": "Content-Type", "content-length": "Content-Length",
            "content-md5": "Content-MD5"}.get(k, k)


def _query(params: Mapping[str, str | None]) -> str:
    if not params:
        return ""
    parts = [signing.encode(k) if v is None else f"{signing.encode(k)}={signing.encode(v)}"
             for k, v in params.items()]
    return "?" + "&".join(parts)


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when urllib3 failed before sending (refused, DNS, unreachable): the request surely had no effect."""
    import urllib3.exceptions as u3

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (u3.NewConnectionError, u3.ConnectTimeoutError)):
            return True
        nxt = getattr(cur, "reason", None)
        if not isinstance(nxt, BaseException) and cur.args and isinstance(cur.args[0], BaseException):
            nxt = cur.args[0]
        cur = nxt if isinstance(nxt, BaseException) else None
    return False


def _page_query(bucket: str, region: str, **filters: Any) -> dict[str, str | None]:
    """The checked query of one list page: ``type`` is required (a page lists one variant, and the official SDK
    silently sends ``Workflow`` when it is left out)."""
    validate_bucket(bucket)
    validate_region(region)
    params = _list_params(**filters)
    if filters.get("type") is None:
        raise ValidationError("type", None, "expected Workflow or Job (a page lists one variant; say which)")
    return params


def _list_params(*, states: Iterable[JobState | str] | str | None = None, type: str | None = None,
                 order_by_time: str | None = None, start_creation_time: datetime | None = None,
                 end_creation_time: datetime | None = None, workflow_id: str | None = None,
                 job_id: str | None = None, name: str | None = None, size: int = 100,
                 next_token: str | None = None) -> dict[str, str | None]:
    """The documented query parameters, each checked (a bad filter is our bug, not the service's)."""
    p: dict[str, str | None] = {}
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 100:
        raise ValidationError("size", size, "expected 1 to 100")
    p["size"] = str(size)
    if states is not None:
        items = states.split(",") if isinstance(states, str) else list(states)
        names = [s.value if isinstance(s, JobState) else str(s).strip() for s in items]
        for n in names:
            if n not in _STATE_NAMES:
                raise ValidationError("states", n, f"expected some of {', '.join(sorted(_STATE_NAMES))}")
        if names:
            p["states"] = ",".join(names)
    if type is not None:
        if type not in _LIST_TYPES:
            raise ValidationError("type", type, "expected Workflow or Job")
        p["type"] = type
    if order_by_time is not None:
        if order_by_time not in _ORDERS:
            raise ValidationError("order_by_time", order_by_time, "expected Desc or Asc")
        p["orderByTime"] = order_by_time
    for pname, fname, dt in (("startCreationTime", "start_creation_time", start_creation_time),
                             ("endCreationTime", "end_creation_time", end_creation_time)):
        if dt is not None:
            if not isinstance(dt, datetime) or dt.tzinfo is None:
                raise ValidationError(fname, dt, "expected a timezone-aware datetime")
            p[pname] = format_ci_time(dt)
    if workflow_id is not None:
        if not re.match(r"^[A-Za-z0-9_-]{1,128}$", workflow_id or ""):
            raise ValidationError("workflow_id", workflow_id, "expected letters, digits, '-' or '_'")
        p["workflowId"] = workflow_id
    if job_id is not None:
        p["jobId"] = validate_job_id(job_id)
    if name is not None:
        if not isinstance(name, str) or not name or len(name) > 128:
            raise ValidationError("name", name, "expected 1 to 128 characters")
        p["name"] = name
    if next_token is not None and next_token != "":
        if not isinstance(next_token, str) or len(next_token) > 1024:
            raise ValidationError("next_token", next_token, "expected a string of at most 1024 characters")
        p["nextToken"] = next_token
    return p


# -- children list parameters ------------------------------------------------------------------------------------
_MEDIA_STATES = frozenset({"All", "Submitted", "Running", "Success", "Failed", "Pause", "Cancel"})
_WORKFLOW_STATES = frozenset({"All", "Running", "Success", "Failed", "Cancel"})  # no Submitted/Pause documented
_REF_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")


def _child_ref(field_name: str, value: Any) -> str:
    """An ID or tag that goes into a query or a path: letters, digits, '-' and '_' only."""
    if not isinstance(value, str) or not _REF_RE.match(value):
        raise ValidationError(field_name, value, "expected letters, digits, '-' or '_' (1-128 characters)")
    return value


def _child_list_params(p: dict[str, str | None], *, states: Iterable[str] | str | None, allowed: frozenset[str],
                       start: datetime | None, end: datetime | None, order: str, size: int,
                       next_token: str | None) -> int:
    """Adds the shared list parameters to ``p``; returns the page size actually asked for (capped at 100)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValidationError("size", size, "expected a page size of at least 1")
    size = min(size, MAX_CHILD_PAGE_SIZE)
    if order not in _ORDERS:
        raise ValidationError("order_by_time", order, "expected Desc or Asc")
    p["orderByTime"] = order
    p["size"] = str(size)
    if states is not None:
        items = states.split(",") if isinstance(states, str) else list(states)
        names = [str(getattr(s, "value", s)).strip() for s in items]
        for n in names:
            if n not in allowed:
                raise ValidationError("states", n, f"expected some of {', '.join(sorted(allowed))}")
        if names:
            p["states"] = ",".join(names)
    for pname, fname, dt in (("startCreationTime", "start_creation_time", start),
                             ("endCreationTime", "end_creation_time", end)):
        if dt is not None:
            if not isinstance(dt, datetime) or dt.tzinfo is None:
                raise ValidationError(fname, dt, "expected a timezone-aware datetime")
            p[pname] = format_ci_time(dt)
    if next_token is not None and next_token != "":
        if not isinstance(next_token, str) or len(next_token) > 1024:
            raise ValidationError("next_token", next_token, "expected a string of at most 1024 characters")
        p["nextToken"] = next_token
    return size


def _stop_rule(page: ChildPage, size: int) -> ChildPage:
    """Last page = empty token, or an empty or short page (the documented samples return 2 of 10 items with a
    token still set, so the token alone cannot be trusted to end)."""
    if page.next_token is not None and len(page.items) < size:
        return ChildPage(items=page.items, next_token=None, request_id=page.request_id)
    return page
