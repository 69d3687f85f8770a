"""API Gateway: the operator API (``POST /jobs``, ``GET /jobs/{jobId}``), CI's callback (``POST /callback``), and
the status page (``/ui`` and below, handed to :mod:`jobwatch.web`).

API Gateway does not retry, so every answer is an HTTP response: 400 for bad input, 401/403 for keys, 404/405 for
routes, 503 when the store is down (the caller may retry), never an exception.
"""

from __future__ import annotations

import enum
import hmac
import json
import re
from typing import Any, Mapping

import structlog

from jobwatch.app.orchestrator import App, Budget
from jobwatch.core.errors import RetryableError, ValidationError
from jobwatch.triggers import events as ev

log = structlog.get_logger("jobwatch.triggers.apigw")


class ApiRoute(str, enum.Enum):
    REGISTER = "register"  # POST /jobs
    READ = "read"  # GET /jobs/{jobId}
    CHILDREN = "children"  # GET /jobs/{jobId}/children
    CALLBACK = "callback"  # POST /callback
    NOT_FOUND = "not_found"
    BAD_METHOD = "bad_method"


ROUTES_TEXT = "POST /jobs, GET /jobs/{jobId}, GET /jobs/{jobId}/children, POST /callback"
_JOB_PATH_RE = re.compile(r"(?:^|/)jobs/([^/]+)/?$")
_CHILDREN_PATH_RE = re.compile(r"(?:^|/)jobs/([^/]+)/children/?$")
MAX_CHILDREN_PAGE = 1000


def route(req: ev.HttpRequest) -> tuple[ApiRoute, str | None]:
    """The route and, for reads, the job ID. Paths are matched on their end, so a stage or service prefix
    in front (``/release/jobs``) does not matter."""
    path = req.path.rstrip("/") or "/"
    m = _CHILDREN_PATH_RE.search(path)
    if m:
        job_id = req.path_params.get("jobId") or m.group(1)
        return (ApiRoute.CHILDREN, job_id) if req.method == "GET" else (ApiRoute.BAD_METHOD, None)
    m = _JOB_PATH_RE.search(path)
    if m:
        job_id = req.path_params.get("jobId") or m.group(1)
        return (ApiRoute.READ, job_id) if req.method == "GET" else (ApiRoute.BAD_METHOD, None)
    if path.endswith("/jobs") or path == "jobs":
        return (ApiRoute.REGISTER, None) if req.method == "POST" else (ApiRoute.BAD_METHOD, None)
    if path.endswith("/callback"):
        return (ApiRoute.CALLBACK, None) if req.method == "POST" else (ApiRoute.BAD_METHOD, None)
    return ApiRoute.NOT_FOUND, None


def api_key_matches(headers: Mapping[str, str], expected: str) -> bool:
    """Constant-time comparison of ``x-api-key`` (names are already lower-cased)."""
    given = headers.get("x-api-key")
    if given is None or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def http_response(status: int, payload: Any) -> dict[str, Any]:
    return {"isBase64Encoded": False, "statusCode": status,
            "headers": {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"},
            "body": json.dumps(payload, default=str, ensure_ascii=False)}


def handle(app: App, req: ev.HttpRequest, budget: Budget) -> dict[str, Any]:
    try:
        resp = _route(app, req, budget)
    except RetryableError as exc:  # API Gateway does not retry: answer, so the caller can
        log.error("http_store_unavailable", error=str(exc))
        resp = http_response(503, {"error": "the store is unavailable; retry later"})
    log.info("http_answered", method=req.method, path=req.path, status=resp["statusCode"])
    return resp


def _ui(app: App, req: ev.HttpRequest) -> dict[str, Any] | None:
    """The status page (``/ui`` and below, behind any stage prefix) as an integration response; None for other
    paths. API Gateway is reached over HTTPS, so the session cookie is always ``Secure`` here."""
    from jobwatch import web

    if web.ui_subpath(req.path) is None:
        return None
    resp = web.handle(app, web.WebRequest(req.method, req.path, req.query, req.headers, req.body, secure=True))
    body = resp.body if isinstance(resp.body, str) else resp.body.decode("utf-8")
    return {"isBase64Encoded": False, "statusCode": resp.status, "headers": resp.all_headers(), "body": body}


def _route(app: App, req: ev.HttpRequest, budget: Budget) -> dict[str, Any]:
    page = _ui(app, req)
    if page is not None:
        return page
    r, job_id = route(req)
    if r is ApiRoute.NOT_FOUND:
        return http_response(404, {"error": f"no route for {req.method} {req.path}", "routes": ROUTES_TEXT})
    if r is ApiRoute.BAD_METHOD:
        return http_response(405, {"error": f"method {req.method} not allowed on {req.path}", "routes": ROUTES_TEXT})
    s = app.settings
    defaults = ev.Defaults(s.default_region, s.default_bucket)
    if r is ApiRoute.CALLBACK:
        return _callback(app, req, budget, defaults)
    key_ok = s.api_key is not None and api_key_matches(req.headers, s.api_key.reveal())
    if s.api_key is None:
        return http_response(403, {"error": "operator API disabled: JOBWATCH_API_KEY is not set"})
    if not key_ok:
        log.warning("http_unauthorised", path=req.path)
        return http_response(401, {"error": "missing or wrong x-api-key header"})
    if r is ApiRoute.READ:
        return _read(app, req, job_id, defaults)
    if r is ApiRoute.CHILDREN:
        return _children(app, req, job_id, defaults)
    return _register(app, req, budget, defaults)


def _read(app: App, req: ev.HttpRequest, job_id: str | None, defaults: ev.Defaults) -> dict[str, Any]:
    try:
        place = ev.parse_watch({"job_id": job_id, **_place_query(req)}, defaults, where="query")
    except (ev.EventError, ValidationError) as exc:
        return http_response(400, {"error": _reason(exc)})
    key = place.keys[0]
    tj = app.job(key)
    if tj is None:
        return http_response(404, {"error": f"job {key} is not tracked"})
    body = tj.to_json()
    body["history"] = [{"seq": t.seq, "from": t.from_state, "to": t.to_state,
                        "observed_at": t.observed_at.isoformat()} for t in app.history(key)]
    progress = app.progress(key)
    body["progress"] = progress.to_json() if progress is not None else None
    return http_response(200, body)


def _children(app: App, req: ev.HttpRequest, job_id: str | None, defaults: ev.Defaults) -> dict[str, Any]:
    """A page of a batch's children: ``?failed=true`` only the failed ones, ``?limit=`` (1-1000, default 100),
    ``?cursor=`` the previous page's ``next_cursor``."""
    try:
        place = ev.parse_watch({"job_id": job_id, **_place_query(req)}, defaults, where="query")
        failed = _flag(req.query.get("failed"), "failed")
        limit = _int(req.query.get("limit"), "limit", 100, 1, MAX_CHILDREN_PAGE)
        cursor = req.query.get("cursor") or None
        if cursor is not None and not re.match(r"^[A-Za-z0-9_-]{1,128}\Z", cursor):
            raise ValidationError("cursor", cursor, "expected the next_cursor of a previous page")
    except (ev.EventError, ValidationError) as exc:
        return http_response(400, {"error": _reason(exc)})
    key = place.keys[0]
    if app.job(key) is None:
        return http_response(404, {"error": f"job {key} is not tracked"})
    page = app.children(key, failed_only=failed, limit=limit, cursor=cursor)
    return http_response(200, {"key": str(key), "progress": page.progress.to_json() if page.progress else None,
                               "children": [c.to_json() for c in page.items], "next_cursor": page.cursor})


def _flag(raw: str | None, name: str) -> bool:
    if raw in (None, "", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise ValidationError(name, raw, "expected true or false")


def _int(raw: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise ValidationError(name, raw, f"expected a whole number {lo}-{hi}") from None
    if not lo <= value <= hi:
        raise ValidationError(name, raw, f"expected a whole number {lo}-{hi}")
    return value


def _register(app: App, req: ev.HttpRequest, budget: Budget, defaults: ev.Defaults) -> dict[str, Any]:
    try:
        obj = ev.load_json(req.body, "body") if req.body.strip() else None
    except ev.EventError as exc:
        return http_response(400, {"error": f'{exc.reason}: expected {{"bucket": ..., "region": ..., '
                                            '"job_ids": [...]}'})
    try:
        watch = ev.parse_watch(obj, defaults)
    except (ev.EventError, ValidationError) as exc:
        return http_response(400, {"error": _reason(exc)})
    out = app.register(watch.keys, tags=dict(watch.tags), budget=budget, action="register").as_dict()
    out["jobs"] = [tj.to_json() for tj in (app.job(k) for k in watch.keys) if tj is not None]
    log.info("invocation_summary", **{k: v for k, v in out.items() if k != "jobs"})
    return http_response(200, out)


def _place_query(req: ev.HttpRequest) -> dict[str, str]:
    return {k: req.query[k] for k in ("bucket", "region") if req.query.get(k)}


def _callback(app: App, req: ev.HttpRequest, budget: Budget, defaults: ev.Defaults) -> dict[str, Any]:
    """CI's per-child callback (``TaskFinish`` / ``WorkflowFinish``). Unauthenticated (CI cannot send our key),
    so it never starts tracking anything and nothing its body says is recorded: a child already recorded under a
    tracked batch is read back by ID with our credentials and recorded at once, with the batch's counts; another
    prompts a children refresh of the tracked batches that could own it (see ``App.child_callbacks``). A body of
    another event, or a child no tracked batch could own, is logged and acknowledged (200)."""
    q = _place_query(req)
    try:
        cb = ev.parse_callback(req.body, ev.Defaults(q.get("region"), q.get("bucket")), defaults)
    except (ev.EventError, ValidationError) as exc:
        log.warning("callback_rejected", reason=_reason(exc))
        return http_response(400, {"error": _reason(exc)})
    if isinstance(cb, ev.IgnoredCallback):
        log.info("callback_ignored", reason=cb.reason)
        return http_response(200, {"ok": True, "action": "callback", "ignored": cb.reason})
    out = app.child_callbacks([cb], budget, action="callback").as_dict()
    log.info("invocation_summary", **out)
    return http_response(200, out)


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, ev.EventError) else str(exc)


__all__ = ["ApiRoute", "ROUTES_TEXT", "api_key_matches", "handle", "http_response", "route"]
