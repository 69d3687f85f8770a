"""The status page's routes, over a plain request/response pair that both front doors translate to and from
(API Gateway in :mod:`jobwatch.triggers`, ``jobwatch serve`` in :mod:`jobwatch.cli.serve`).

Routes, below whatever prefix the page is served under (``/release`` on API Gateway's default domain)::

    GET  /ui                              overview (filters: state, bucket, tag; page, per)
    GET  /ui/jobs/{jobId}?region=&bucket= one job
    POST /ui/login                        form field api_key -> session cookie
    POST /ui/logout                       csrf_token; revokes the session
    POST /ui/jobs/{jobId}/untrack         csrf_token
    POST /ui/outbox/{noticeId}/retry      csrf_token
    GET  /ui/static/{app.css,app.js}

Reads and actions go through :class:`~jobwatch.app.App` only. Without a valid session a page request gets the
login page and a script's request (``X-Jobwatch-Partial``, or JSON asked for) a 401; a POST without the session's
CSRF token, or from another origin, gets a 403.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

import structlog

from jobwatch.core.errors import RetryableError, ValidationError
from jobwatch.core.models import JobKey, validate_bucket, validate_job_id
from jobwatch.core.regions import check_region
from jobwatch.core.records import JobQuery
from jobwatch.web import pages
from jobwatch.web.auth import COOKIE_NAME, REVOKED, Session, Sessions, read_cookie, set_cookie

if TYPE_CHECKING:
    from jobwatch.app.orchestrator import App

log = structlog.get_logger("jobwatch.web")

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send "Origin: null" on our own posts
}
STATIC = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
MAX_FORM_BYTES = 16 * 1024
PER_PAGE = 100
_UI_RE = re.compile(r"(?:^|/)ui(/.*)?$")


@dataclass(frozen=True)
class WebRequest:
    """One HTTP request as the page sees it. ``path`` may carry any prefix before ``/ui``; header names are
    lower-case; ``secure`` says the page is served over HTTPS (so the cookie gets ``Secure``)."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    secure: bool = True

    def __repr__(self) -> str:  # the body may hold the API key, the headers the session cookie
        return f"WebRequest({self.method} {self.path})"


@dataclass
class WebResponse:
    status: int
    body: str | bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def all_headers(self) -> dict[str, str]:
        out = {"Content-Type": self.content_type, "Cache-Control": "no-store", **SECURITY_HEADERS}
        out.update(self.headers)
        return out


def ui_subpath(path: str) -> str | None:
    """The part of ``path`` from ``ui`` on (``""`` for the overview, ``"/jobs/x"``...), or None when the path is
    not the status page's."""
    m = _UI_RE.search(path or "")
    return None if m is None else (m.group(1) or "")


def _root(sub: str) -> str:
    """``../`` per segment below ``ui``: links relative to the current page reach ``<prefix>/ui``."""
    return "../" * sub.count("/")


class _Revocations:
    """Logged-out sessions: this process's own (no store read for a session it saw end) and the store's, which
    every function instance shares."""

    def __init__(self, app: "App") -> None:
        self.app = app

    def add(self, session: Session, now: float) -> None:
        REVOKED.add(session, now)
        self.app.revoke_session(session.nonce, session.expires, now)

    def revoked(self, nonce: str, now: float) -> bool:
        return REVOKED.revoked(nonce, now) or self.app.session_revoked(nonce, now)


def handle(app: "App", req: WebRequest, *, clock: Callable[[], float] | None = None) -> WebResponse:
    sub = ui_subpath(req.path)
    if sub is None:
        return WebResponse(404, "not a status page path", "text/plain; charset=utf-8")
    root = _root(sub)
    method = req.method.upper()
    if sub == "/":  # /ui/ would make every relative link one level off
        return _redirect("../ui")
    if sub.startswith("/static/") and method in ("GET", "HEAD"):
        return _static(sub[len("/static/"):])
    api_key = app.settings.api_key
    if api_key is None:
        return WebResponse(403, pages.message_page(root, "Status page disabled",
                                                   "Set JOBWATCH_API_KEY to sign in to the status page."))
    revocations = _Revocations(app)
    sessions = Sessions(api_key.reveal(), clock=clock, revoked=revocations) if clock else \
        Sessions(api_key.reveal(), revoked=revocations)
    if method == "POST" and not _same_origin(req.headers):
        log.warning("ui_cross_origin_post", path=sub)
        return _forbidden(root, "cross-origin form posts are refused")
    if sub == "/login":
        return _login(req, sessions, root) if method == "POST" else _redirect("../ui")
    session = sessions.verify(read_cookie(req.headers))
    if session is None:
        if _wants_api(req):
            return WebResponse(401, json.dumps({"error": "sign in at /ui first"}), "application/json")
        status = 200 if method == "GET" and sub == "" else 401
        return WebResponse(status, pages.login(root, None if status == 200 else "Your session has ended: sign in."))
    csrf = sessions.csrf_token(session)
    try:
        if method == "POST":
            form = _form(req)
            if not sessions.csrf_ok(session, form.get("csrf_token")):
                log.warning("ui_csrf_refused", path=sub)
                return _forbidden(root, "the form's CSRF token is missing or wrong: reload the page and try again")
            if sub == "/logout":  # revoked here, not only dropped by the browser: a copy of the cookie is refused
                sessions.revoke(session)
                log.info("ui_logout")
                return _redirect("../ui", cookie=set_cookie("", max_age=0, secure=req.secure))
            return _post(app, req, sub, form, root)
        if method not in ("GET", "HEAD"):
            return WebResponse(405, pages.message_page(root, "Not allowed", f"{method} is not allowed here"),
                               headers={"Allow": "GET, POST"})
        return _get(app, req, sub, root, csrf)
    except _Unplaced as exc:
        if not exc.candidates:
            return WebResponse(404, pages.message_page(root, "Not tracked",
                                                       f"job {exc.job_id}: no tracked job has this ID"))
        return WebResponse(409, pages.candidates_page(root, exc.job_id, exc.candidates))
    except ValidationError as exc:  # a bad job ID, bucket or region in the URL
        return WebResponse(400, pages.message_page(root, "Bad request", str(exc)))
    except RetryableError as exc:
        log.error("ui_store_unavailable", error=str(exc))
        return WebResponse(503, pages.message_page(root, "Store unavailable", "The store did not answer; "
                                                   "try again in a moment."))


# --- GET ------------------------------------------------------------------------------------------------------

def _get(app: "App", req: WebRequest, sub: str, root: str, csrf: str) -> WebResponse:
    if sub == "":
        query = _overview_query(req.query)
        return WebResponse(200, pages.page("Jobs", pages.overview(app.overview(query), root, csrf), root,
                                           csrf=csrf, live=True))
    m = re.fullmatch(r"/jobs/([^/]+)", sub)
    if m:
        key = _job_key(app, m.group(1), req.query)
        detail = app.job_detail(key)
        if detail is None:
            return WebResponse(404, pages.message_page(root, "Not tracked", f"job {key} is not tracked"))
        return WebResponse(200, pages.page(detail.job.key.job_id, pages.job(detail, root, csrf), root,
                                           csrf=csrf, live=True))
    return WebResponse(404, pages.message_page(root, "Not found", f"no page at ui{sub}"))


def _overview_query(q: Mapping[str, str]) -> JobQuery:
    def intval(name: str, default: int, lo: int, hi: int) -> int:
        try:
            return max(lo, min(hi, int(q.get(name) or default)))
        except ValueError:
            return default

    per = intval("per", PER_PAGE, 10, 500)
    page = intval("page", 1, 1, 10 ** 6)
    return JobQuery(state=q.get("state") or None, bucket=q.get("bucket") or None, tag=q.get("tag") or None,
                    offset=(page - 1) * per, limit=per)


class _Unplaced(Exception):
    """A bare job ID in the URL that names no tracked job (404) or several (409, listing them)."""

    def __init__(self, job_id: str, candidates: list[JobKey]) -> None:
        super().__init__(job_id)
        self.job_id = job_id
        self.candidates = candidates


def _job_key(app: "App", job_id: str, q: Mapping[str, str]) -> JobKey:
    from urllib.parse import unquote

    s = app.settings
    job_id = validate_job_id(unquote(job_id))
    region = q.get("region") or s.default_region
    bucket = q.get("bucket") or s.default_bucket
    if not region or not bucket:  # a bare job ID: fine while one tracked job (or one active one) has it
        found = app.locate(job_id)
        if len(found) == 1:
            return found[0]
        raise _Unplaced(job_id, found)
    return JobKey(check_region(region), validate_bucket(bucket), job_id)


# --- POST -----------------------------------------------------------------------------------------------------

def _login(req: WebRequest, sessions: Sessions, root: str) -> WebResponse:
    form = _form(req)
    if not sessions.key_matches(form.get("api_key", "")):
        log.warning("ui_login_refused")
        return WebResponse(401, pages.login(root, "That is not the API key."))
    log.info("ui_login")
    return _redirect("../ui", cookie=set_cookie(sessions.issue(), max_age=sessions.ttl, secure=req.secure))


def _post(app: "App", req: WebRequest, sub: str, form: Mapping[str, str], root: str) -> WebResponse:
    m = re.fullmatch(r"/jobs/([^/]+)/untrack", sub)
    if m:
        key = _job_key(app, m.group(1), req.query)
        n = app.untrack([key])
        log.info("ui_untrack", job=str(key), untracked=n)
        return _redirect(f"{root}{pages.job_href('', key)}")
    m = re.fullmatch(r"/outbox/([0-9]{1,18})/retry", sub)
    if m:
        ok = app.retry_notice(int(m.group(1)))
        log.info("ui_retry_notice", notice=int(m.group(1)), queued=ok)
        if not ok:
            return WebResponse(404, pages.message_page(root, "Not retried", f"notice #{m.group(1)} was not "
                                                       "found or is already delivered"))
        return _redirect(root + _back(form.get("next", "")))
    return WebResponse(404, pages.message_page(root, "Not found", f"no action at ui{sub}"))


def _back(next_value: str) -> str:
    """Where a retry returns: the overview with its filters (``?state=..``) or a job page (``/jobs/<id>?..``).
    Only these shapes are taken from the form, never a URL, so the field cannot redirect anywhere else."""
    if re.fullmatch(r"(/jobs/[A-Za-z0-9_-]{1,128})?(\?[A-Za-z0-9_.~%=&+-]*)?", next_value):
        return "ui" + next_value
    return "ui"


# --- helpers --------------------------------------------------------------------------------------------------

def _form(req: WebRequest) -> dict[str, str]:
    if len(req.body) > MAX_FORM_BYTES:
        return {}
    try:
        return dict(parse_qsl(req.body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return {}


def _same_origin(headers: Mapping[str, str]) -> bool:
    """A POST whose ``Origin`` names another host is refused (SameSite=Strict already keeps the cookie from it;
    this also covers the login form). No Origin header (old clients, curl) passes: the CSRF token still holds."""
    origin = headers.get("origin")
    if not origin or origin == "null":
        return origin != "null"
    host = headers.get("x-forwarded-host") or headers.get("host") or ""
    return urlsplit(origin).netloc.lower() == host.lower()


def _wants_api(req: WebRequest) -> bool:
    accept = req.headers.get("accept", "")
    return bool(req.headers.get("x-jobwatch-partial")) or ("application/json" in accept and "text/html" not in accept)


def _redirect(location: str, *, cookie: str | None = None) -> WebResponse:
    headers = {"Location": location}
    if cookie:
        headers["Set-Cookie"] = cookie
    return WebResponse(303, "", "text/plain; charset=utf-8", headers)


def _forbidden(root: str, why: str) -> WebResponse:
    return WebResponse(403, pages.message_page(root, "Refused", why))


def _static(name: str) -> WebResponse:
    ctype = STATIC.get(name)
    if ctype is None:
        return WebResponse(404, "no such file", "text/plain; charset=utf-8")
    text = resources.files("jobwatch.web").joinpath("static").joinpath(name).read_text(encoding="utf-8")
    return WebResponse(200, text, ctype, {"Cache-Control": "public, max-age=300"})


__all__ = ["WebRequest", "WebResponse", "handle", "ui_subpath", "COOKIE_NAME", "Session"]
