"""The emulator's HTTP server: the CI batch-job API on loopback, with backdoors for tests and demos.

Request handling, in the order the service's layers would meet a request: faults (a gateway or throttle in
front), the bucket from ``Host`` (``<bucket>.ci.<region>.myqcloud.com``, or the ``.cos.`` host the official SDK
sends when pointed at an IP), the signature (see ``auth``), then the API. Job state lives in ``state.JobTable``
and is derived from the injected clock; signature validity is judged on a separate ``auth_clock`` (the wall clock
by default) because clients sign with real time while tests move the lifecycle clock by hours.

The stdlib server stalls 40 ms per keep-alive request unless writes are buffered and Nagle is off (see
pitfalls.md), hence ``wbufsize = -1`` and ``disable_nagle_algorithm``.
"""

from __future__ import annotations

import base64
import io
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.message import Message
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

from jobwatch.core.children import ChildKind
from jobwatch.core.errors import BadResponseError, ValidationError
from jobwatch.core.models import validate_bucket
from jobwatch.ci.xmlparse import parse_document
from jobwatch.emulator import render
from jobwatch.emulator.auth import TempCredential, verify
from jobwatch.emulator import children as kids
from jobwatch.emulator.clock import Clock, SystemClock
from jobwatch.emulator.faults import FaultEngine, FaultRule, Plan
from jobwatch.emulator.state import STATES, ApiError, JobSpec, JobTable, JobView, Lifecycle, ListQuery, invalid

_HOST_RE = re.compile(r"^(?P<bucket>[a-z0-9-]+-[0-9]+)\.(?:ci|cos)\.(?P<region>[a-z0-9-]+)\.myqcloud\.com\.?$")
_JOB_PATH_RE = re.compile(r"^/inventorytriggerjob/([^/]+)$")
_RUN_PATH_RE = re.compile(r"^/workflowexecution/([^/]+)$")
_MEDIA_PATH_RE = re.compile(r"^/(jobs|pic_jobs)/([^/]+)$")
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it; ``status`` is 0 when no answer was sent (reset, hang)."""

    method: str
    path: str
    bucket: str | None
    job_id: str | None
    status: int
    time: datetime
    fault: str | None = None
    request_id: str = ""
    query: str = ""  # the raw query string, as sent (still percent-encoded)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver listens with a backlog of 5: a burst of 32 new connections (a poller's first requests at the
    # default concurrency) loses SYNs and waits out a 1 s retransmit, which is the emulator's limit, not ours.
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1
    disable_nagle_algorithm = True
    server_version = "tencent-ci"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection's thread does not live forever
    emulator: "EmulatorServer"

    def setup(self) -> None:
        super().setup()
        self.emulator._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.emulator._track(self.connection, False)

    def version_string(self) -> str:
        return "tencent-ci"

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The signature clock, not the lifecycle clock: a client compares Date with its own wall time.
        return formatdate(self.emulator.auth_clock.now().timestamp() if timestamp is None else timestamp,
                          usegmt=True)

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read request_log instead
        pass

    def _dispatch(self) -> None:
        self.emulator._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch


class EmulatorServer:
    """The CI batch-job API over real HTTP. ``start()``, use ``url``, ``stop()`` (or use as a context manager)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: dict[str, str] | None = None,
        clock: Clock | None = None,
        seed: int = 0,
        lifecycle: Lifecycle | None = None,
        faults: Iterable[FaultRule] = (),
        *,
        auth_clock: Clock | None = None,
        max_skew: float = 900.0,
        monotonic: Callable[[], float] = time.monotonic,
        list_type_default: str | None = None,
        children: int = 0,
        child_failure_rate: float = 0.0,
        allow_remote_callbacks: bool = False,
        callback_interval: float = 0.2,
    ) -> None:
        if list_type_default not in (None, "Workflow", "Job"):
            raise ValidationError("list_type_default", list_type_default, "expected None, Workflow or Job")
        self.host = host
        # What a listing without ``type`` shows: None lists both variants; "Workflow" behaves like the official
        # SDK's default (UNCONFIRMED whether the service itself defaults so), which hides every Job-type job from
        # a caller that forgets to say which.
        self.list_type_default = list_type_default
        self._port = port
        self.credentials: dict[str, str] = dict(credentials or {})
        self.clock: Clock = clock or SystemClock()
        self.auth_clock: Clock = auth_clock or SystemClock()
        self.seed = seed
        self.lifecycle = lifecycle or Lifecycle()
        self.max_skew = max_skew
        # Job IDs draw from their own stream, so they depend on the seed and creation order only, never on how
        # many requests (each with a request ID) came in between.
        self._job_ids = random.Random(f"jobs:{seed}")
        self._ids = random.Random(f"ids:{seed}")
        self._ids_lock = threading.Lock()
        self._counter = 0
        self.jobs = JobTable(self.clock, self.lifecycle, seed, self._new_job_id)
        self.faults = FaultEngine(faults, seed, monotonic)
        # A batch's children (issue 14): ``children`` per batch unless set per job; computed, never stored.
        self.children = kids.ChildRegistry(seed, kids.ChildPlan(children, child_failure_rate),
                                           allow_remote_callbacks=allow_remote_callbacks)
        self.callback_interval = callback_interval
        self.callback_sweep_seconds = 5.0  # at most this long delivering per sweep
        self._sweep_lock = threading.Lock()
        self._sweeper: threading.Thread | None = None
        self.temporary: dict[str, TempCredential] = {}
        self.request_log: list[RequestRecord] = []
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life ---------------------------------------------------------------------------------------------
    def start(self) -> "EmulatorServer":
        if self._httpd is not None:
            return self
        handler = type("EmulatorHandler", (_Handler,), {"emulator": self})
        self._httpd = _Server((self.host, self._port), handler)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"ci-emulator-{self.port}", daemon=True)
        self._thread.start()
        if self.callback_interval > 0:
            self._sweeper = threading.Thread(target=self._sweep_loop, name=f"ci-emulator-callbacks-{self.port}",
                                             daemon=True)
            self._sweeper.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake any hung or delayed answer, and close open keep-alive connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
            self._sweeper = None

    def __enter__(self) -> "EmulatorServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            return self._port
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(conn)

    # -- backdoors ----------------------------------------------------------------------------------------
    def issue_token(self, secret_id: str, duration_seconds: float = 7200) -> tuple[str, str, str]:
        """Temporary credentials (as STS would give) bound to a known permanent key: (SecretId, SecretKey, token)."""
        if secret_id not in self.credentials:
            raise ValidationError("secret_id", secret_id, "not a permanent SecretId of this emulator")
        with self._ids_lock:
            tmp_id = "AKIDTMP" + "".join(self._ids.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                                         for _ in range(29))
            tmp_key = f"{self._ids.getrandbits(160):040x}"
            token = base64.b64encode(self._ids.getrandbits(384).to_bytes(48, "big")).decode() + "/tok+en="
        expires = self.auth_clock.now() + timedelta(seconds=duration_seconds)
        self.temporary[tmp_id] = TempCredential(tmp_key, token, secret_id, expires)
        return tmp_id, tmp_key, token

    def create_job(self, bucket: str, name: str = "demo", type: str = "Workflow", state: str | None = None,
                   created_at: datetime | None = None, workflow_id: str = "w7476ff3564ee45b7b490d64bccaba6cc",
                   *, children: int | None = None, child_failure_rate: float | None = None,
                   callback: str | None = None, callback_format: str | None = None, tag: str | None = None,
                   prefix: str | None = None) -> str:
        """A job as the default create body would make it. ``children``/``child_failure_rate`` override the
        emulator's defaults for this batch; ``callback``/``callback_format`` go into its Operation (CallBack,
        CallBackFormat); ``tag`` replaces Transcode (``PicProcess``: children are picture jobs)."""
        validate_bucket(bucket)
        spec = JobSpec.default(name, type, workflow_id)
        op = spec.operation
        for el_name, value in (("CallBack", callback), ("CallBackFormat", callback_format), ("Tag", tag)):
            if value is not None:
                el = op.find(el_name)
                (el if el is not None else _sub_el(op, el_name)).text = value
        if prefix is not None:
            spec.input.find("Prefix").text = prefix  # type: ignore[union-attr]
        plan = None
        if children is not None or child_failure_rate is not None:
            base = self.children.default
            plan = kids.ChildPlan(base.count if children is None else children,
                                  base.failure_rate if child_failure_rate is None else child_failure_rate)
        job_id = self.jobs.create(bucket, spec, state=state, created_at=created_at).job_id
        if plan is not None:
            self.children.set_plan(bucket, job_id, plan)
        return job_id

    def set_children(self, bucket: str, job_id: str, count: int, failure_rate: float = 0.0) -> None:
        """How many children one batch spawns and which share fails (instead of the emulator's defaults)."""
        self.jobs.require(bucket, job_id)
        self.children.set_plan(bucket, job_id, kids.ChildPlan(count, failure_rate))

    def set_notify(self, target_id: str, url: str, fmt: str = "XML") -> None:
        """The callback URL of a queue (``QueueId``) or a workflow (``WorkflowId``): its batches' children POST
        ``TaskFinish`` / ``WorkflowFinish`` there unless the batch names its own ``CallBack``."""
        self.children.set_notify(target_id, url, fmt)

    def child_views(self, bucket: str, job_id: str, lane: str | None = None) -> list[kids.ChildView]:
        """Ground truth for tests: every child of one batch (or of one of its workflows) as of now."""
        now = self.clock.now()
        with self.jobs.lock:
            job = self.jobs.require(bucket, job_id)
            spawns = [self.children.spawn(bucket, job, ln, kind, now) for ln, kind in kids.lanes(job)
                      if lane is None or ln == lane]
        return [sp.view(i) for sp in spawns if sp is not None for i in range(sp.visible())]

    @property
    def callback_log(self) -> list[kids.CallbackRecord]:
        return list(self.children.log)

    def flush_callbacks(self) -> int:
        """Send the callbacks of every child that ended since the last sweep (at most a bounded number per
        lane); returns how many POSTs were attempted. The background sweep calls this too."""
        reg = self.children
        if reg.default.count == 0 and not reg.plans:
            return 0
        sent = 0
        with self._sweep_lock:
            now = self.clock.now()
            work = []
            for bucket, job in self.jobs.all_jobs():
                if reg.plan_for(bucket, job.view.job_id).count == 0:
                    continue
                for lane, kind in kids.lanes(job):
                    target = reg.target(job, lane)
                    if target is None:
                        continue
                    with self.jobs.lock:
                        sp = reg.spawn(bucket, job, lane, kind, now)
                    if sp is not None:
                        work.append((sp, target, reg.regions.get(bucket, "ap-guangzhou")))
            deadline = time.monotonic() + self.callback_sweep_seconds
            for sp, target, region in work:
                for view in reg.due(sp):
                    event, body, ctype = kids.callback_body(sp, view, target.fmt, region)
                    reg.deliver(target, event, view.child_id, body, ctype)
                    sent += 1
                    if time.monotonic() > deadline:  # a slow receiver: the rest waits for the next sweep
                        return sent
        return sent

    def _sweep_loop(self) -> None:
        """Sweeps every ``callback_interval`` seconds; set it to 0 to pause them (tests then call
        :meth:`flush_callbacks` themselves)."""
        while not self._stopping.wait(self.callback_interval if self.callback_interval > 0 else 0.1):
            if self.callback_interval <= 0:
                continue
            try:
                self.flush_callbacks()
            except Exception:  # best effort: a sweep that fails is tried again next time
                pass

    def job_state(self, bucket: str, job_id: str) -> str:
        return self.jobs.require(bucket, job_id).state

    def job_view(self, bucket: str, job_id: str) -> JobView:
        return self.jobs.require(bucket, job_id).view

    def set_state(self, bucket: str, job_id: str, state: str) -> None:
        self.jobs.set_state(bucket, job_id, state)

    def pause(self, bucket: str, job_id: str) -> None:
        self.jobs.set_state(bucket, job_id, "Pause")

    def resume(self, bucket: str, job_id: str) -> None:
        """Back to the state the job was paused in, keeping the time it had already spent there."""
        job = self.jobs.require(bucket, job_id)
        self.jobs.set_state(bucket, job_id, job.paused_from or "Running")

    def delete_job(self, bucket: str, job_id: str) -> None:
        """The job vanishes: queries answer NonExistJobIds for it."""
        self.jobs.delete(bucket, job_id)

    def preload(self, bucket: str, n: int) -> list[str]:
        """``n`` jobs spread over every state and both types, created a minute apart going back from now."""
        validate_bucket(bucket)
        if not isinstance(n, int) or n < 0:
            raise ValidationError("n", n, "expected a count >= 0")
        rng = random.Random(f"preload:{self.seed}:{bucket}")
        now = self.clock.now()
        ids = []
        for i in range(n):
            typ = "Job" if rng.random() < 0.4 else "Workflow"
            ids.append(self.create_job(bucket, name=f"preload-{i}", type=typ, state=STATES[i % len(STATES)],
                                       created_at=now - timedelta(minutes=n - i)))
        return ids

    def set_faults(self, rules: Iterable[FaultRule]) -> None:
        self.faults.set_rules(rules)

    def clear_log(self) -> None:
        self.request_log.clear()

    # -- request handling ---------------------------------------------------------------------------------
    def _new_job_id(self) -> str:
        with self._ids_lock:
            return f"b{self._job_ids.getrandbits(128):032x}"

    def _request_id(self) -> str:
        with self._ids_lock:
            self._counter += 1
            raw = f"{int(self.clock.now().timestamp()):08x}_{self._ids.getrandbits(32):08x}_" \
                  f"{self._ids.getrandbits(12):03x}_{self._counter:x}"
        return base64.b64encode(raw.encode()).decode()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        # Every record is logged *before* the answer leaves, so a test that got its answer sees the record.
        method = h.command
        split = urlsplit(h.path)
        path = unquote(split.path)
        rid = self._request_id()
        bucket = _bucket(h.headers.get("Host", ""))
        m = _JOB_PATH_RE.match(path)
        job_id = m.group(1) if m else None

        def log(status: int, fault: str | None = None) -> None:
            self.request_log.append(RequestRecord(method, path, bucket, job_id, status, self.clock.now(), fault, rid,
                                                  split.query))

        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        refusal = None
        if not 0 <= length <= MAX_BODY:
            refusal = ApiError(400, "InvalidArgument", f"Content-Length must be 0 to {MAX_BODY}")
        elif "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            refusal = ApiError(411, "MissingContentLength", "send a Content-Length, not chunks")
        if refusal is not None:
            h.close_connection = True
            log(refusal.status)
            self._send_error(h, rid, refusal)
            return
        body = h.rfile.read(length) if length else b""

        plan = self.faults.plan(method, path)
        if plan.delay > 0:
            self._stopping.wait(plan.delay)
        action = plan.action
        if action is not None and action.kind in ("reset", "hang"):
            log(0, plan.label)
            if action.kind == "hang":
                self._stopping.wait(action.max_hold)
            _reset(h)
            return
        if action is not None:  # status or qps
            msg = action.message or ("Please reduce your request rate." if action.error_code == "SlowDown"
                                     else f"emulated {action.status} {action.error_code}")
            exc = ApiError(503 if action.kind == "qps" else action.status, action.error_code, msg)
            log(exc.status, plan.label)
            self._send_error(h, rid, exc)
            return

        try:
            status, payload, job_id = self._api(h, method, path, split.query, body, bucket, job_id, rid, plan)
        except ApiError as exc:
            log(exc.status, plan.label)
            self._send_error(h, rid, exc, plan)
        except Exception as exc:  # an emulator bug: answer like the service would, and keep the type visible
            log(500, plan.label)
            self._send_error(h, rid, ApiError(500, "InternalError", f"emulator error: {type(exc).__name__}"))
        else:
            log(status, plan.label)
            self._send(h, status, payload, rid, plan)

    def _api(self, h: BaseHTTPRequestHandler, method: str, path: str, query: str, body: bytes,
             bucket: str | None, job_id: str | None, rid: str, plan: Plan) -> tuple[int, bytes, str | None]:
        if bucket is None:
            raise ApiError(404, "NoSuchBucket", f"Host {h.headers.get('Host', '')!r} names no bucket: expected "
                           "<BucketName-APPID>.ci.<Region>.myqcloud.com")
        params = parse_qsl(query, keep_blank_values=True)
        bare = frozenset(p for p in query.split("&") if p and "=" not in p)
        headers: Any = _Headers(h.headers)  # verify reads with .get only
        verify(method=method, path=path, params=params, bare_params=bare, headers=headers,
               credentials=self.credentials, temporary=self.temporary, now=self.auth_clock.now(),
               max_skew=self.max_skew)
        pmap = dict(params)

        if path == "/inventorytriggerjob":
            if method == "GET":
                query = ListQuery.from_params(pmap)
                if query.type is None and self.list_type_default is not None:
                    query = replace(query, type=self.list_type_default)
                stale = plan.modifiers.get("stale")
                page, token, shown = self.jobs.list(bucket, query, stale_window=stale.window if stale else None)
                if stale is not None and not shown:
                    plan.spared("stale")
                return 200, render.response(rid, page, next_token=token), None
            if method == "POST":
                try:
                    root = parse_document(body)
                except BadResponseError as exc:
                    raise invalid(f"the request body is not valid XML: {exc.reason}") from None
                view = self.jobs.create(bucket, JobSpec.from_request(root))
                return 200, render.response(rid, [view]), view.job_id
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on /inventorytriggerjob")
        if job_id is not None:
            if method == "GET":
                found, missing = [], []
                nonexist, wrong = plan.modifiers.get("nonexist"), plan.modifiers.get("wrong_job")
                stale = plan.modifiers.get("stale")
                took: set[str] = set()  # the modifiers that changed this answer
                for jid in [j for j in job_id.split(",") if j]:
                    job = self.jobs.job(bucket, jid)
                    if job is not None and nonexist is not None and job.changed_at is not None and \
                            (self.clock.now() - job.changed_at).total_seconds() < nonexist.window:
                        job = None
                        took.add("nonexist")
                    if job is None:
                        missing.append(jid)
                        continue
                    if wrong is not None:
                        other = self.jobs.neighbour(bucket, jid)
                        if other is not None:
                            job = other
                            took.add("wrong_job")
                    old = job.stale_view(self.clock.now(), stale.window) if stale is not None else None
                    if old is not None:
                        took.add("stale")
                    found.append(old if old is not None else job.view)
                for kind in set(plan.modifiers) & {"nonexist", "wrong_job", "stale"} - took:
                    plan.spared(kind)
                return 200, render.response(rid, found, non_exist=missing), job_id
            if method == "PUT":
                if "cancel" not in pmap:
                    raise invalid("PUT /inventorytriggerjob/<jobId> needs the cancel sub-resource (?cancel)")
                self.jobs.cancel(bucket, job_id)
                return 200, b"", job_id
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on /inventorytriggerjob/<jobId>")
        if method == "GET" and (path in ("/jobs", "/pic_jobs", "/workflowexecution") or _RUN_PATH_RE.match(path)
                                or _MEDIA_PATH_RE.match(path)):
            return self._children_api(path, pmap, bucket, h.headers.get("Host", ""), rid)
        raise ApiError(404, "NoSuchKey", f"no API at {path}")

    def _children_api(self, path: str, p: dict[str, str], bucket: str, host: str,
                      rid: str) -> tuple[int, bytes, str | None]:
        """The child lists of a batch (``/jobs``, ``/pic_jobs``, ``/workflowexecution``) and one execution.
        The service lists every job of a queue or workflow; the emulator has only batch children, so it asks
        for the batch (``inventoryTriggerJobId`` / ``jobId``)."""
        p = {k: v for k, v in p.items() if v != ""}
        region = _region(host) or "ap-guangzhou"
        self.children.regions[bucket] = region
        m = _RUN_PATH_RE.match(path)
        if m is not None:
            view = self._find_child(bucket, m.group(1), (ChildKind.WORKFLOW,))
            if view is None:
                raise ApiError(404, "NoSuchKey", f"workflow execution {m.group(1)!r} does not exist")
            return 200, render.workflow_execution(rid, view), None
        m = _MEDIA_PATH_RE.match(path)
        if m is not None:  # one job or several, comma-separated, as the Python SDK sends them
            kind = ChildKind.PIC_JOB if m.group(1) == "pic_jobs" else ChildKind.JOB
            ids = [j for j in m.group(2).split(",") if j]
            if not 1 <= len(ids) <= kids.MAX_LOOKUP:
                raise invalid(f"1 to {kids.MAX_LOOKUP} job IDs, comma-separated")
            found, missing = [], []
            for cid in dict.fromkeys(ids):
                view = self._find_child(bucket, cid, (kind,))
                if view is None:
                    missing.append(cid)
                else:
                    found.append(view)
            return 200, render.media_job_lookup(rid, found, missing, bucket, region), None
        workflow = path == "/workflowexecution"
        batch_param = "jobId" if workflow else "inventoryTriggerJobId"
        batch_id = p.get(batch_param)
        if batch_id is None:
            raise invalid(f"the emulator lists a batch job's children only: {batch_param} is required")
        if workflow and "workflowId" not in p:
            raise invalid("workflowId is required")
        q = kids.ChildQuery.from_params(p, kids.WORKFLOW_STATES if workflow else kids.MEDIA_STATES)
        now = self.clock.now()
        sp = None
        with self.jobs.lock:
            job = self.jobs.job(bucket, batch_id)
            if job is not None:
                for lane, kind in kids.lanes(job):
                    wanted = (kind is ChildKind.WORKFLOW and lane == p["workflowId"]) if workflow else (
                        kind is (ChildKind.PIC_JOB if path == "/pic_jobs" else ChildKind.JOB))
                    if wanted:
                        sp = self.children.spawn(bucket, job, lane, kind, now)
        if sp is not None and not workflow and (
                p.get("queueId", sp.queue_id) != sp.queue_id or p.get("tag", sp.tag) != sp.tag
                or "workflowId" in p):
            sp = None  # filtered out: another queue or tag, or workflow-spawned jobs (none here)
        views: list[kids.ChildView] = []
        token = ""
        if sp is not None:
            views, token = kids.list_children(sp, q, trailing_token=self.children.trailing_token)
        if workflow:
            return 200, render.workflow_executions(rid, views, token), batch_id
        return 200, render.media_jobs(views, bucket, region, token), batch_id

    def _find_child(self, bucket: str, child_id: str, kinds: tuple[ChildKind, ...]) -> kids.ChildView | None:
        """A child by ID: its prefix names the batch (learnt from the bucket's batches on a miss)."""
        reg = self.children
        hit = reg.prefixes.get((bucket, child_id[:21]))
        if hit is None:
            for b, each in self.jobs.all_jobs():
                if b == bucket:
                    reg.learn(b, each)
            hit = reg.prefixes.get((bucket, child_id[:21]))
            if hit is None:
                return None
        batch_id, lane = hit
        now = self.clock.now()
        with self.jobs.lock:
            job = self.jobs.job(bucket, batch_id)
            if job is None:
                return None
            spawns = [reg.spawn(bucket, job, ln, kind, now) for ln, kind in kids.lanes(job)
                      if ln == lane and kind in kinds]
        for sp in spawns:
            i = sp.index_of(child_id) if sp is not None else None
            if sp is not None and i is not None:
                return sp.view(i)
        return None

    # -- answers ------------------------------------------------------------------------------------------
    def _send_error(self, h: BaseHTTPRequestHandler, rid: str, exc: ApiError, plan: Plan | None = None) -> None:
        with self._ids_lock:
            trace = base64.b64encode(f"trace_{self._ids.getrandbits(64):016x}_{rid[:8]}".encode()).decode()
        self._send(h, exc.status, render.error(exc.code, exc.message, rid, trace), rid, plan, trace=trace)

    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: bytes, rid: str, plan: Plan | None,
              trace: str | None = None) -> None:
        mods = plan.modifiers if plan is not None else {}
        ctype = "application/xml"
        if "not_xml" in mods and payload:
            payload = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
                       b"</h1></center><hr><center>nginx</center></body></html>\n")
        if "content_type" in mods:
            ctype = mods["content_type"].content_type
        announced = len(payload)
        if "truncate" in mods and payload:
            payload = payload[: max(1, len(payload) // 2)]
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(announced))
        h.send_header("Connection", "keep-alive")
        h.send_header("x-ci-request-id", rid)
        if trace is not None:
            h.send_header("x-ci-trace-id", trace)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)
        if announced != len(payload):
            h.wfile.flush()
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_WR)
            except OSError:
                pass


class _Headers:
    """Case-insensitive read access to received headers (the first value of a repeated header)."""

    def __init__(self, msg: Message) -> None:
        self._msg = msg

    def get(self, name: str, default: str | None = None) -> str | None:
        v = self._msg.get(name)
        return default if v is None else str(v).strip()


def _bucket(host: str) -> str | None:
    name = host.strip().lower()
    if name.startswith("["):
        return None
    name = name.rsplit(":", 1)[0] if ":" in name else name
    m = _HOST_RE.match(name)
    return m.group("bucket") if m else None


def _region(host: str) -> str | None:
    name = host.strip().lower().rsplit(":", 1)[0]
    m = _HOST_RE.match(name)
    return m.group("region") if m else None


def _sub_el(parent: Any, tag: str) -> Any:
    from lxml import etree

    return etree.SubElement(parent, tag)


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Close with SO_LINGER 0, so the kernel sends RST: the client sees ECONNRESET, not a clean end."""
    h.close_connection = True
    try:
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The descriptor closes only when the handler's file objects let go of it.
        h.rfile.close()
        h.wfile.close()
        h.connection.close()
    except OSError:
        pass
    h.wfile = io.BytesIO()  # the handler flushes wfile after us


