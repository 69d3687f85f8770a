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

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import structlog

from jobwatch.triggers import apigw
from jobwatch.triggers import events as ev
from jobwatch.app.orchestrator import App, Budget
from jobwatch.core.errors import ConfigError, RetryableError, ValidationError
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


# --- entry ----------------------------------------------------------------------------------------------------

def run(get_app: Callable[[], App], event: Any, context: Any, started_at: float | None = None, *,
        invoker: Any = None) -> Any:
    """Everything ``main_handler`` does. ``get_app`` returns the instance's App (built once by the handler);
    ``started_at`` is ``time.monotonic()`` at the handler's first line, so building the App counts against
    the budget."""
    from jobwatch.app.logs import bind_invocation, configure_logging

    t0 = time.monotonic() if started_at is None else started_at
    ctx = context if isinstance(context, dict) else {}
    try:
        app = get_app()
    except ConfigError as exc:
        configure_logging("info", "json", cache=LOG_CACHE)
        bind_invocation(_s(ctx.get("request_id")), _s(ctx.get("function_name")))
        log.error("configuration_invalid", problems=exc.problems)
        if isinstance(event, dict) and "requestContext" in event:
            return apigw.http_response(500, {"error": "the function's configuration is invalid; see its log"})
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
        why = reason(exc)
        log.warning("event_unrecognised", reason=why)
        if isinstance(event, dict) and "requestContext" in event:
            return apigw.http_response(400, {"error": why})
        return {"ok": False, "error": why}
    trigger = _trigger(parsed)
    structlog.contextvars.bind_contextvars(trigger=trigger)
    try:
        if isinstance(parsed, ev.HttpRequest):
            return apigw.handle(app, parsed, budget)
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
            return apigw.http_response(500, {"error": "internal error; see the function's log"})
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


# --- timer, queue messages, direct invocation ------------------------------------------------------------------

def _tick(app: App, options: ev.TickOptions, budget: Budget, context: Mapping[str, Any], action: str,
          invoker: Any, problems: list[str]) -> dict[str, Any]:
    summary = app.tick(budget, discover=options.discover, deliver=options.deliver,
                       fanout_context=context if options.fanout else None, invoker=invoker, action=action)
    summary.rejected.extend({"field": "Message", "reason": p} for p in problems)
    return summary.as_dict()


def _batch(app: App, batch: ev.MessageBatch, budget: Budget) -> dict[str, Any]:
    """Watch requests are registered and polled; CI's per-child callbacks never register anything: they prompt
    a children refresh of the batches that could own the child (``App.child_callbacks``)."""
    rejected: list[dict[str, Any]] = []
    ignored: list[dict[str, Any]] = []
    items: list[tuple[Sequence[JobKey], Mapping[str, str] | None]] = []
    callbacks: list[ev.ChildCallback] = []
    for item in batch.items:
        if isinstance(item, ev.Rejected):
            rejected.append(item.as_dict())
            log.warning("record_rejected", index=item.index, reason=item.reason)
        elif isinstance(item, ev.IgnoredCallback):
            ignored.append(item.as_dict())
            log.info("callback_ignored", index=item.index, reason=item.reason)
        elif isinstance(item, ev.Watch):
            items.append((item.keys, dict(item.tags) or None))
        else:
            callbacks.append(item)
    action = batch.source.value
    if items or not callbacks:
        summary, _ = app.register_each(items, budget, action=action)
        out = summary.as_dict()
    if callbacks:
        cb = app.child_callbacks(callbacks, budget, action=action).as_dict()
        if items:
            out["callbacks"] = cb["callbacks"]
            out["notices_delivered"] += cb["notices_delivered"]
            if "children" in cb:
                out["children"] = cb["children"]
        else:
            out = cb
    out["rejected"][:0] = rejected
    if ignored:
        out["ignored"] = ignored
    return out


def _direct(app: App, cmd: ev.DirectCommand, budget: Budget, context: Mapping[str, Any],
            invoker: Any) -> dict[str, Any]:
    action = cmd.action
    if action == "poll":
        if not cmd.keys:
            return _tick(app, cmd.options, budget, context, "poll", invoker, [])
        return app.poll(cmd.keys, budget, due_only=cmd.due_only).as_dict()
    if action == "track":
        return app.register(cmd.keys, tags=dict(cmd.tags), poll=cmd.poll, budget=budget).as_dict()
    if action == "untrack":
        return {"ok": True, "action": action, "untracked": app.untrack(cmd.keys)}
    if action == "status":
        out: dict[str, Any] = {"ok": True, "action": action, "counts": app.counts()}
        if cmd.keys:
            out["jobs"] = [tj.to_json() if tj else {"key": str(k), "tracked": False}
                           for k, tj in ((k, app.job(k)) for k in cmd.keys)]
        return out
    if action == "discover":
        return app.discover(budget, list(cmd.targets) or None).as_dict()
    if action == "deliver":
        return app.deliver(budget).as_dict()
    if action == "purge":
        return {"ok": True, "action": action, "purged": app.purge(cmd.older_than_days)}
    raise AssertionError(f"unhandled action {action!r}")  # parse_direct admits only DIRECT_ACTIONS


def reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, ev.EventError) else str(exc)


def _s(v: Any) -> str | None:
    return str(v) if v not in (None, "") else None


__all__ = ["run", "handle", "Invocation", "reason", "DEFAULT_TIME_LIMIT_MS"]
