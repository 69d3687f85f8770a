"""Structured logging: JSON lines on stdout that CLS can index, with secrets scrubbed on the way out.

Configured once per process (the SCF instance, or the CLI). Every event passes, in order: the invocation's
context variables (request ID, function name; bound per invocation by :func:`bind_invocation`), the level, an
ISO UTC timestamp, exception formatting, then :func:`redact_processor`, which scrubs every string, including the
formatted traceback, through :func:`jobwatch.redact.scrub_value`. Redaction runs after exceptions are turned into
text, so a secret inside a driver's error message is masked too. Records of the standard library's ``logging``
(urllib3, PyMySQL, the Tencent Cloud SDK) go through the same chain, with the paths and queries of URLs in their
text masked (a webhook's path is its credential), and never below WARNING: their debug lines are request lines.

Every line, ours and the libraries', leaves through one :class:`LineWriter`: one lock, one write per whole line
(structlog's ``print`` wrote a line and its newline apart, under another lock than the standard library's, so two
JSON objects could share a line and CLS dropped both).

Loggers are cached on first use (structlog's advice for speed), so configure before logging; tests that
reconfigure pass ``cache=False``. Worker threads do not inherit context variables: run work items with
``contextvars.copy_context().run`` to keep the request ID on their lines.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import threading
from typing import Any, MutableMapping, TextIO

import structlog
from structlog.typing import Processor

from jobwatch.core.redact import MASK, Secret, might_hold_secret, scrub, scrub_value

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
FORMATS = ("auto", "json", "console")

_lock = threading.Lock()
_current: tuple[Any, ...] | None = None
_PLAIN = (str, int, float, bool, type(None))
_PLAIN_TYPES = frozenset(_PLAIN)


def _scrub_any(value: Any) -> Any:
    """Like ``scrub_value``, but objects of other types become scrubbed text: their repr may hold a secret."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, _PLAIN):
        return scrub_value(value)
    if isinstance(value, dict):
        return {k: _scrub_any(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub_any(v) for v in value]
    if isinstance(value, BaseException):
        return scrub_value(value)
    return scrub(str(value))


def redact_processor(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Scrub every value (and ``exc_info`` not yet formatted) of one event."""
    exc = event_dict.pop("exc_info", None)
    if exc:
        # Formatting happens earlier in the chain; an exc_info still here (capture_logs) must not leak either.
        event_dict["exception"] = scrub(_format_exc(exc))
    values = event_dict.values()
    if all(type(v) in _PLAIN_TYPES for v in values) and not might_hold_secret(
            "\n".join(v for v in values if type(v) is str)):
        return event_dict  # nothing to mask: skip the per-field pass (most lines, at one scan)
    for key, value in list(event_dict.items()):
        event_dict[key] = _scrub_any(value)
    return event_dict


def _format_exc(exc: Any) -> str:
    import traceback

    if isinstance(exc, BaseException):
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if exc is True:
        exc = sys.exc_info()
    if isinstance(exc, tuple) and exc[0] is not None:
        return "".join(traceback.format_exception(*exc))
    return ""


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time of writing, not at configuration time.

    A cached logger keeps its file for the life of the process; if that were the ``sys.stdout`` of the moment,
    anything that swaps stdout later (pytest's capture, a CLI redirect) would leave loggers writing to a
    closed stream.
    """

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return _isatty(sys.stdout)


_STDOUT = _CurrentStdout()
_WRITE_LOCK = threading.RLock()  # one for every line of the process (reentrant: a signal handler may log)


class LineWriter:
    """The one writer of log lines: each line leaves in a single write, under the one lock, then a flush."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def line(self, text: str) -> None:
        data = text + "\n"
        with _WRITE_LOCK:
            self.stream.write(data)
            self.stream.flush()


class _LineLogger:
    """What structlog calls with the rendered line (in place of its PrintLogger)."""

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.line(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


class _LineHandler(logging.Handler):
    """The standard library's records, formatted by our chain, out through the same writer."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.line(self.format(record))
        except Exception:
            self.handleError(record)


# A URL's path and query, or a request line's target: what a library writes of a webhook call. Scheme and host
# stay readable.
_URL_TAIL = re.compile(r"((?:\b[a-z][a-z0-9+.-]*://[^/\s\"'?#]+)|(?:\b(?:GET|POST|PUT|DELETE|HEAD|PATCH|OPTIONS) ))"
                       r"[/?][^\s\"']*")
_BARE_PATH = re.compile(r"(?<=[\s'\"(:=])/(?!/)[^\s\"']+")


def _mask_urls(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """For library records only: mask what follows the host of every URL, and every bare absolute path."""
    ev = event_dict.get("event")
    if isinstance(ev, str) and "/" in ev:
        ev = _URL_TAIL.sub(lambda m: m.group(1) + "/" + MASK, ev)
        event_dict["event"] = _BARE_PATH.sub("/" + MASK, ev)
    return event_dict


def _timestamper() -> Processor:
    return structlog.processors.TimeStamper(fmt="iso", utc=True)


def shared_processors() -> list[Processor]:
    """The chain before rendering; tests pass it to ``structlog.testing.capture_logs(processors=...)``."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _logger_key,
        _timestamper(),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_processor,
    ]


class HumanRenderer:
    """One short line per event for a person at a terminal: ``12:00:01  j1  Submitted -> Running``.

    The JSON form carries every field for CLS; a person watching a poll of 1,500 jobs wants the change, not the
    record. Known events get a sentence; others their name and a few short ``key=value`` pairs (no nested
    records, long values cut at a word). Colour only on a terminal and never when ``NO_COLOR`` is set and not empty
    (https://no-color.org) or ``TERM=dumb``.
    """

    _SKIP = frozenset({"event", "level", "timestamp", "logger", "request_id", "function_name", "exception",
                       "next_poll_at", "seq", "region", "bucket"})
    _COLOURS = {"warning": "\x1b[33m", "error": "\x1b[31m", "critical": "\x1b[31m"}

    def __init__(self, colors: bool, tty: bool = False) -> None:
        self.colors = colors
        self.tty = tty  # each line first erases the terminal's line: a progress bar may be drawn there

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        ev = dict(event_dict)
        level = str(ev.get("level") or method)
        when = str(ev.get("timestamp") or "")[11:19]
        text = self._sentence(ev)
        if level in ("warning", "error", "critical"):
            text = f"{level}: {text}"
            if self.colors:
                text = f"{self._COLOURS[level]}{text}\x1b[0m"
        exc = ev.get("exception")
        line = f"{when}  {text}" if when else text
        if self.tty:
            line = "\r\x1b[2K" + line
        return f"{line}\n{exc}" if exc else line

    def _sentence(self, ev: dict[str, Any]) -> str:
        name = str(ev.get("event", ""))
        job = ev.get("job_id") or (ev.get("job") if isinstance(ev.get("job"), str) else None)
        if name == "job_transition":
            arrow = f"{ev.get('from_state') or '-'} -> {ev.get('to_state')}"
            if self.colors:
                arrow = f"{ev.get('from_state') or '-'} -> {_state_colour(ev.get('to_state'))}"
            code = f" ({ev['code']})" if ev.get("code") not in (None, "", "Success") else ""
            return f"{job}  {arrow}{code}"
        if name == "notice":  # the log sink's copy of a notice: the change, not the payload
            return f"{job}  notice ({ev.get('kind')}): {ev.get('from_state') or '-'} -> {ev.get('to_state') or '-'}"
        if name == "job_poll_failed":
            return f"{job}  poll failed ({ev.get('error_count')}x): {shorten(str(ev.get('error')), 100)}"
        pairs = [f"{k}={shorten(str(v), 60)}" for k, v in ev.items()
                 if k not in self._SKIP and k not in ("job_id", "job") and not isinstance(v, (dict, list, tuple)) and v is not None]
        head = f"{job}  {name}" if job else name
        line = "  ".join([head, " ".join(pairs)]) if pairs else head
        return line if len(line) <= 160 else shorten(line, 160)


# Info lines a person at a terminal does not need: copies of a change already shown (the log sink's notice, its
# delivery receipt) and a batch's children counts on every tick (`status` and `children` show them).
_ECHOES = frozenset({"notice", "notice_delivered", "children_counted"})


def _drop_echoes(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop the info lines that repeat a transition already shown (three lines per change become one)."""
    if event_dict.get("event") in _ECHOES and method == "info":
        raise structlog.DropEvent
    return event_dict


def _state_colour(state: Any) -> str:
    colour = {"Success": "\x1b[32m", "Failed": "\x1b[31m", "Cancel": "\x1b[33m", "Vanished": "\x1b[33m"}.get(
        str(state))
    return f"{colour}{state}\x1b[0m" if colour else str(state)


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` at a word boundary, with an ellipsis: never mid-word unless one word is longer."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[:width - 1]
    space = cut.rfind(" ")
    if space > width // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def colours_wanted(stream: Any, environ: Any = None) -> bool:
    """Colour on a terminal, unless ``NO_COLOR`` is set to a non-empty value (https://no-color.org: an empty one
    does not count) or ``TERM=dumb``."""
    import os

    env = os.environ if environ is None else environ
    return _isatty(stream) and not env.get("NO_COLOR") and env.get("TERM") != "dumb"


def _renderer(fmt: str, stream: TextIO) -> Processor:
    if fmt == "console":
        return HumanRenderer(colors=colours_wanted(stream), tty=_isatty(stream))
    return structlog.processors.JSONRenderer(
        serializer=functools.partial(json.dumps, ensure_ascii=False, default=str))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def resolve_format(fmt: str, stream: Any) -> str:
    """``auto`` means console on a terminal (a person), JSON otherwise (SCF, pipes, CLS); always JSON in SCF."""
    import os

    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "auto":
        in_scf = bool(os.environ.get("SCF_FUNCTIONNAME") or os.environ.get("SCF_RUNTIME"))
        return "console" if _isatty(stream) and not in_scf else "json"
    return fmt


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None, *,
                      cache: bool = True) -> None:
    """Set up structlog and the standard library's logging. Repeated calls with the same arguments do nothing."""
    global _current
    level = level.lower()
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    out: Any = stream if stream is not None else _STDOUT  # a TextIO, or our stdout proxy
    resolved = resolve_format(fmt, out)
    key = (level, resolved, id(out), cache)
    if _current == key:
        return
    with _lock:
        if _current == key:
            return
        renderer = _renderer(resolved, out)
        writer = LineWriter(out)
        # A person at a terminal gets the change once: the log sink's copy of each notice and its delivery
        # receipt are for CLS (and for a terminal at debug level).
        quiet = [_drop_echoes] if resolved == "console" and LEVELS[level] > logging.DEBUG else []
        structlog.configure(
            processors=[*shared_processors(), *quiet, renderer],
            wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
            logger_factory=lambda *args: _LineLogger(writer),
            context_class=dict,
            cache_logger_on_first_use=cache,
        )
        _configure_stdlib(LEVELS[level], writer, renderer)
        _current = key


_STDLIB_HANDLER_FLAG = "_jobwatch_handler"


def _configure_stdlib(level: int, writer: LineWriter, renderer: Processor) -> None:
    """Route library log records through the same redaction and renderer and the same writer, replacing only
    our own handler."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _timestamper(),
            _mask_urls,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
    )
    handler = _LineHandler(writer)
    handler.setFormatter(formatter)
    setattr(handler, _STDLIB_HANDLER_FLAG, True)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _STDLIB_HANDLER_FLAG, False):
            root.removeHandler(h)
    root.addHandler(handler)
    # Libraries' debug and info lines are request lines and connection chatter (urllib3 logs every URL with its
    # query): WARNING at least, even when we debug. Our own lines go through structlog, not this handler.
    root.setLevel(max(level, logging.WARNING))


def bind_invocation(request_id: str | None, function_name: str | None, **extra: Any) -> None:
    """Start an invocation's context: forget the previous invocation's values, bind this one's."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, function_name=function_name, **extra)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; ``name`` is bound as ``logger`` so lines say which module wrote them."""
    # Initial values, not .bind(): bind() on the lazy proxy would build the logger now, before configuration.
    # ("logger" itself is a parameter name of structlog's wrap_logger, hence the rename in the chain.)
    return structlog.get_logger(**({"logger_name": name} if name else {}))


def _logger_key(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Name the module under ``logger``, the key the standard library's records use too."""
    name = event_dict.pop("logger_name", None)
    if name is not None:
        event_dict["logger"] = name
    return event_dict


def reset_for_tests() -> None:
    """Forget the configuration (tests that configure with different streams), including the loggers that our
    modules' proxies cached under it: structlog keeps the assembled logger as the proxy's ``bind`` attribute, and
    one built on a test's captured stream would write to that stream after it is closed."""
    global _current
    from structlog._config import BoundLoggerLazyProxy

    with _lock:
        for name, module in list(sys.modules.items()):
            if name == "jobwatch" or name.startswith("jobwatch."):
                for value in list(vars(module).values()):
                    if isinstance(value, BoundLoggerLazyProxy):
                        value.__dict__.pop("bind", None)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        root = logging.getLogger()
        for h in list(root.handlers):
            if getattr(h, _STDLIB_HANDLER_FLAG, False):
                root.removeHandler(h)
        _current = None
