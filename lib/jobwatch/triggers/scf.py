"""The function's per-event entry points: what ``handler/index.py`` calls with a recognised event.

:func:`run` is the one call the handler makes: it builds (or reuses) the App, configures logging, binds the
invocation's request ID and function name to every log line, recognises the event (:mod:`jobwatch.events`) and
dispatches it to the App's operations, and returns a JSON-serialisable summary (for API Gateway, an integration
response). The rules the triggers impose live here:

* Raise only for faults a retry can cure (:class:`~jobwatch.errors.RetryableError`, i.e. the store is down):
  SCF retries a CKafka batch whole, so anything else (a bad record, a bad event, even a bug while polling) is
  reported in the answer and the log, never raised. Registration comes before polling, so jobs a failed poll
  left behind are still tracked, and the timer polls them later.
* Repeats are harmless: registering a tracked job does nothing, and polling a job whose state has not changed
  writes no history and queues no notice, so a retried batch duplicates nothing.
* The time budget is the context's ``time_limit_in_ms`` from the invocation's start (there is no remaining-time
  call in Python), minus ``JOBWATCH_SAFETY_MARGIN_SECONDS`` but never more than half the limit, so a short
  timeout still gets work done. Without a ``time_limit_in_ms`` (local harnesses pass ``{}``) the limit is taken
  to be SCF's default timeout, 3 s: the safe guess.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import structlog

from jobwatch.triggers import events as ev
from jobwatch.app.orchestrator import App, RunSummary
from jobwatch.core.errors import ConfigError, JobwatchError, RetryableError, ValidationError
from jobwatch.core.models import JobKey
from jobwatch.core.redact import scrub

log = structlog.get_logger("jobwatch.handler")

DEFAULT_TIME_LIMIT_MS = 3000  # SCF's default function timeout
# Loggers are cached on first use in production (structlog's advice for speed). Tests that run the handler next to
# tests configuring other streams set this to False, so no module keeps a logger bound to a finished test's setup.
LOG_CACHE = True


# --- invocation context and budget ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Invocation:
    request_id: str | None
    function_name: str | None
    time_limit_s: float

    @classmethod
    def from_context(cls, context: Any) -> "Invocation":
        ctx = context if isinstance(context, dict) else {}
        raw = ctx.get("time_limit_in_ms")
        try:
            limit_ms = float(raw) if raw is not None else DEFAULT_TIME_LIMIT_MS
        except (TypeError, ValueError):
            limit_ms = DEFAULT_TIME_LIMIT_MS
        if limit_ms <= 0:
            limit_ms = DEFAULT_TIME_LIMIT_MS
        return cls(_s(ctx.get("request_id")), _s(ctx.get("function_name")), limit_ms / 1000.0)


@dataclass(frozen=True)
class Budget:
    """Deadlines on the App's monotonic clock. The engine stops ``safety_margin`` before the deadline it is
    given, so it gets ``engine``, which puts its stop at ``limit - margin``; the outbox and fan-out use ``stop``."""

    start: float
    stop: float  # start + limit - effective margin: no new work after this
    engine: float

    @classmethod
    def of(cls, start: float, limit_s: float, margin_s: float) -> "Budget":
        effective = min(margin_s, limit_s / 2)
        stop = start + limit_s - effective
        return cls(start, stop, stop + margin_s)


# --- entry ----------------------------------------------------------------------------------------------------

def run(get_app: Callable[[], App], event: Any, context: Any, started_wall: float | None = None, *,
        invoker: Any = None) -> Any:
    """Everything ``main_handler`` does. ``get_app`` returns the instance's App (built once by the handler);
    ``started_wall`` is ``time.monotonic()`` at the handler's first line, so building the App counts against
    the budget."""
    from jobwatch.app.logs import bind_invocation, configure_logging

    t0 = time.monotonic() if started_wall is None else started_wall
    ctx = context if isinstance(context, dict) else {}
    try:
        app = get_app()
    except ConfigError as exc:
        configure_logging("info", "json", cache=LOG_CACHE)
        bind_invocation(_s(ctx.get("request_id")), _s(ctx.get("function_name")))
        log.error("configuration_invalid", problems=exc.problems)
        if isinstance(event, dict) and "requestContext" in event:
            return http_response(500, {"error": "the function's configuration is invalid; see its log"})
        raise  # nothing can be done; a retry after the configuration is fixed loses no message
    s = app.settings
    configure_logging(s.log_level, s.log_format, cache=LOG_CACHE)
    inv = Invocation.from_context(ctx)
    bind_invocation(inv.request_id, inv.function_name or s.function_name)
    started = app.monotonic() - (time.monotonic() - t0)
    return handle(app, event, ctx, started, invoker=invoker)


def handle(app: App, event: Any, context: Mapping[str, Any], started: float, *, invoker: Any = None) -> Any:
    """Recognise ``event`` and dispatch it; ``started`` is the invocation's start on ``app.monotonic``."""
    inv = Invocation.from_context(context)
    budget = Budget.of(started, inv.time_limit_s, app.settings.safety_margin_seconds)
    defaults = ev.Defaults(app.settings.default_region, app.settings.default_bucket)
    try:
        parsed = ev.parse_event(event, defaults)
    except (ev.EventError, ValidationError) as exc:
        reason = _reason(exc)
        log.warning("event_unrecognised", reason=reason)
        if isinstance(event, dict) and "requestContext" in event:
            return http_response(400, {"error": reason})
        return {"ok": False, "error": reason}
    trigger = _trigger(parsed)
    structlog.contextvars.bind_contextvars(trigger=trigger)
    try:
        if isinstance(parsed, ev.HttpRequest):
            return _http(app, parsed, budget)
        if isinstance(parsed, ev.TimerEvent):
            out = _tick(app, parsed.options, budget, context, "timer", invoker, list(parsed.problems))
        elif isinstance(parsed, ev.MessageBatch):
            out = _batch(app, parsed, budget)
        else:
            out = _direct(app, parsed, budget, context, invoker)
    except RetryableError as exc:
        log.error("invocation_failed_retryable", error=str(exc))
        raise  # the store is down: fail, so SCF retries the event
    except Exception as exc:  # a bug: report it; raising would make SCF retry a poison event thousands of times
        msg = scrub(f"{type(exc).__name__}: {exc}")[:500]
        log.exception("invocation_error", error=msg)
        if isinstance(parsed, ev.HttpRequest):
            return http_response(500, {"error": "internal error; see the function's log"})
        return {"ok": False, "trigger": trigger, "error": f"internal error: {msg}"}
    log.info("invocation_summary", **{k: v for k, v in out.items() if k not in ("jobs",)})
    return out


def _trigger(parsed: ev.Event) -> str:
    if isinstance(parsed, ev.TimerEvent):
        return "timer"
    if isinstance(parsed, ev.MessageBatch):
        return parsed.source.value
    if isinstance(parsed, ev.HttpRequest):
        return "apigw"
    return f"direct:{parsed.action}"


# --- timer and polling --------------------------------------------------------------------------------------

def _tick(app: App, options: ev.TickOptions, budget: Budget, context: Mapping[str, Any], action: str,
          invoker: Any, problems: list[str]) -> dict[str, Any]:
    summary = app.tick(budget.engine, discover=options.discover, deliver=False, action=action)
    fanout: dict[str, Any] | None = None
    if options.fanout and app.settings.fanout and summary.tick.left > 0:
        fanout = _fan_out(app, context, budget, invoker)
        summary.fanned_out, summary.shards = fanout["keys"], fanout["shards"]
    if options.deliver:
        summary.drain = app.outbox.drain(budget.stop)
    summary.elapsed = app.monotonic() - budget.start
    summary.rejected.extend({"field": "Message", "reason": p} for p in problems)
    out = _summary(summary, action)
    if fanout is not None and fanout["errors"]:
        out["fanout_errors"] = fanout["errors"]
    return out


def _fan_out(app: App, context: Mapping[str, Any], budget: Budget, invoker: Any) -> dict[str, Any]:
    from jobwatch.app import fanout

    s = app.settings
    try:
        target = fanout.Target.resolve(s, context, app.environ)
    except ValueError as exc:
        log.warning("fanout_unconfigured", reason=str(exc))
        return {"shards": 0, "keys": 0, "errors": [str(exc)]}
    keys = fanout.due_keys(app.store, app.clock(), s.fanout_shard_size * s.fanout_max_shards)
    if invoker is None:
        timeout = max(1.0, min(5.0, (budget.stop - app.monotonic()) / 2))
        invoker = fanout.sdk_invoker(lambda: app.credentials.get(), timeout=timeout)
    res = fanout.fan_out(keys, target, invoker, shard_size=s.fanout_shard_size, max_shards=s.fanout_max_shards)
    return res.as_dict()


def _poll(app: App, summary: RunSummary, keys: Sequence[JobKey], budget: Budget, *,
          due_only: bool = False) -> None:
    """Poll ``keys`` now (due or not, or only the due ones; final and untracked ones are skipped by the claim)
    and deliver."""
    keys = list(dict.fromkeys(keys))
    if keys:
        summary.tick = app.engine.tick(budget.engine, keys=keys, due_only=due_only)
    summary.drain = app.outbox.drain(budget.stop)
    summary.elapsed = app.monotonic() - budget.start


# --- queue messages -------------------------------------------------------------------------------------------

def _batch(app: App, batch: ev.MessageBatch, budget: Budget) -> dict[str, Any]:
    summary = RunSummary(batch.source.value)
    to_poll: list[JobKey] = []
    callbacks: list[ev.Callback] = []
    for index, item in enumerate(batch.items):
        if isinstance(item, ev.Rejected):
            summary.rejected.append(item.as_dict())
            log.warning("record_rejected", index=item.index, reason=item.reason)
            continue
        keys = item.keys if isinstance(item, ev.Watch) else (item.key,)
        tags = dict(item.tags) if isinstance(item, ev.Watch) else None
        try:
            _register(app, summary, keys, tags)
        except RetryableError:
            raise
        except JobwatchError as exc:
            reason = f"not registered: {scrub(str(exc))[:300]}"
            summary.rejected.append({"index": index, "reason": reason})
            log.warning("record_rejected", index=index, reason=reason)
            continue
        if isinstance(item, ev.Callback):
            callbacks.append(item)
        to_poll.extend(keys)
    _poll(app, summary, to_poll, budget)
    out = _summary(summary, batch.source.value)
    if callbacks:
        out["callbacks"] = [_callback_result(app, c) for c in callbacks]
    return out


def _register(app: App, summary: RunSummary, keys: Sequence[JobKey], tags: dict[str, str] | None) -> None:
    r = app.register(list(keys), tags=tags or None, poll=False)
    summary.registered += r.registered
    summary.already_tracked += r.already_tracked


def _callback_result(app: App, cb: ev.Callback) -> dict[str, Any]:
    """What CI said and what our own query found (the latter is what was recorded)."""
    tj = app.store.get(cb.key)
    return {"job": str(cb.key), "event": cb.event_name, "callback_state": cb.state,
            "recorded_state": tj.state if tj else None}


# --- direct invocation ----------------------------------------------------------------------------------------

def _direct(app: App, cmd: ev.DirectCommand, budget: Budget, context: Mapping[str, Any],
            invoker: Any) -> dict[str, Any]:
    action = cmd.action
    if action == "poll":
        if not cmd.keys:
            return _tick(app, cmd.options, budget, context, "poll", invoker, [])
        summary = RunSummary("poll")
        _poll(app, summary, cmd.keys, budget, due_only=cmd.due_only)
        return _summary(summary, "poll")
    if action == "track":
        summary = RunSummary("track")
        _register(app, summary, cmd.keys, dict(cmd.tags))
        if cmd.poll:
            _poll(app, summary, cmd.keys, budget)
        return _summary(summary, "track")
    if action == "untrack":
        return {"ok": True, "action": action, "untracked": app.untrack(cmd.keys)}
    if action == "status":
        out: dict[str, Any] = {"ok": True, "action": action, "counts": app.store.counts()}
        if cmd.keys:
            out["jobs"] = [record_json(tj) if tj else {"key": str(k), "tracked": False}
                           for k, tj in ((k, app.store.get(k)) for k in cmd.keys)]
        return out
    if action == "discover":
        summary = RunSummary("discover")
        for region, bucket in cmd.targets or app.settings.discovery or ():
            try:
                summary.discovered += app.engine.discover(region, bucket, budget.engine)
            except RetryableError:
                raise
            except JobwatchError as exc:
                summary.rejected.append({"discovery": f"{region}/{bucket}", "reason": scrub(str(exc))[:300]})
        summary.elapsed = app.monotonic() - budget.start
        return _summary(summary, "discover")
    if action == "deliver":
        summary = RunSummary("deliver")
        summary.drain = app.outbox.drain(budget.stop)
        summary.elapsed = app.monotonic() - budget.start
        return _summary(summary, "deliver")
    if action == "purge":
        return {"ok": True, "action": action, "purged": app.purge(cmd.older_than_days)}
    raise AssertionError(f"unhandled action {action!r}")  # parse_direct admits only DIRECT_ACTIONS


# --- API Gateway --------------------------------------------------------------------------------------------

def http_response(status: int, payload: Any) -> dict[str, Any]:
    return {"isBase64Encoded": False, "statusCode": status,
            "headers": {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"},
            "body": json.dumps(payload, default=str, ensure_ascii=False)}


def _http(app: App, req: ev.HttpRequest, budget: Budget) -> dict[str, Any]:
    try:
        resp = _http_inner(app, req, budget)
    except RetryableError as exc:  # API Gateway does not retry: answer, so the caller can
        log.error("http_store_unavailable", error=str(exc))
        resp = http_response(503, {"error": "the store is unavailable; retry later"})
    log.info("http_answered", method=req.method, path=req.path, status=resp["statusCode"])
    return resp


def _http_inner(app: App, req: ev.HttpRequest, budget: Budget) -> dict[str, Any]:
    r, job_id = ev.route(req)
    if r is ev.Route.NOT_FOUND:
        return http_response(404, {"error": f"no route for {req.method} {req.path}", "routes": ev.ROUTES_TEXT})
    if r is ev.Route.BAD_METHOD:
        return http_response(405, {"error": f"method {req.method} not allowed on {req.path}",
                                   "routes": ev.ROUTES_TEXT})
    s = app.settings
    defaults = ev.Defaults(s.default_region, s.default_bucket)
    key_ok = s.api_key is not None and ev.api_key_matches(req.headers, s.api_key.reveal())
    if r is ev.Route.CALLBACK:
        return _http_callback(app, req, budget, defaults, key_ok)
    if s.api_key is None:
        return http_response(403, {"error": "operator API disabled: JOBWATCH_API_KEY is not set"})
    if not key_ok:
        log.warning("http_unauthorised", path=req.path)
        return http_response(401, {"error": "missing or wrong x-api-key header"})
    if r is ev.Route.READ:
        try:
            place = ev.parse_watch({"job_id": job_id, **_place_query(req)}, defaults, where="query")
        except (ev.EventError, ValidationError) as exc:
            return http_response(400, {"error": _reason(exc)})
        key = place.keys[0]
        tj = app.store.get(key)
        if tj is None:
            return http_response(404, {"error": f"job {key} is not tracked"})
        body = record_json(tj)
        body["history"] = [{"seq": t.seq, "from": t.from_state, "to": t.to_state,
                            "observed_at": t.observed_at.isoformat()} for t in app.store.history(key)]
        return http_response(200, body)
    # REGISTER
    try:
        obj = json.loads(req.body.decode("utf-8")) if req.body.strip() else None
    except (ValueError, UnicodeDecodeError):
        return http_response(400, {"error": 'body is not JSON: expected {"bucket": ..., "region": ..., '
                                            '"job_ids": [...]}'})
    try:
        watch = ev.parse_watch(obj, defaults)
    except (ev.EventError, ValidationError) as exc:
        return http_response(400, {"error": _reason(exc)})
    summary = RunSummary("register")
    _register(app, summary, watch.keys, dict(watch.tags))
    _poll(app, summary, watch.keys, budget)
    out = _summary(summary, "register")
    out["jobs"] = [record_json(tj) for tj in (app.store.get(k) for k in watch.keys) if tj is not None]
    log.info("invocation_summary", **{k: v for k, v in out.items() if k != "jobs"})
    return http_response(200, out)


def _place_query(req: ev.HttpRequest) -> dict[str, str]:
    return {k: req.query[k] for k in ("bucket", "region") if req.query.get(k)}


def _http_callback(app: App, req: ev.HttpRequest, budget: Budget, defaults: ev.Defaults,
                   key_ok: bool) -> dict[str, Any]:
    q = _place_query(req)
    try:
        cb = ev.parse_callback(req.body, ev.Defaults(q.get("region"), q.get("bucket")), defaults)
    except (ev.EventError, ValidationError) as exc:
        log.warning("callback_rejected", reason=_reason(exc))
        return http_response(400, {"error": _reason(exc)})
    # The callback is unauthenticated (CI cannot send our key) and only a hint: nothing it says is recorded,
    # the job is queried with our own credentials. It may still start tracking a job, so only in buckets this
    # function is configured for, unless the caller has the API key or the job is tracked already.
    s = app.settings
    allowed = {s.default_bucket, *(b for _, b in s.discovery or ())} - {None}
    if not key_ok and cb.key.bucket not in allowed and app.store.get(cb.key) is None:
        log.warning("callback_refused", job=str(cb.key))
        return http_response(403, {"error": f"callback for job {cb.key}: bucket {cb.key.bucket} is not "
                                            "configured (JOBWATCH_DEFAULT_BUCKET or JOBWATCH_DISCOVERY) and the "
                                            "job is not tracked"})
    summary = RunSummary("callback")
    _register(app, summary, [cb.key], None)
    _poll(app, summary, [cb.key], budget)
    out = _summary(summary, "callback")
    out["callbacks"] = [_callback_result(app, cb)]
    log.info("invocation_summary", **out)
    return http_response(200, out)


# --- output ---------------------------------------------------------------------------------------------------

def _summary(summary: RunSummary, action: str) -> dict[str, Any]:
    out = {"ok": True, **summary.as_dict()}
    out["action"] = action
    return out


def record_json(tj: Any) -> dict[str, Any]:
    return tj.to_json()


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, ev.EventError) else str(exc)


def _s(v: Any) -> str | None:
    return str(v) if v not in (None, "") else None


__all__ = ["run", "handle", "Invocation", "Budget", "http_response", "record_json", "DEFAULT_TIME_LIMIT_MS"]
