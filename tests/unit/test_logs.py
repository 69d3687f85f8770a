"""Logging: canary secrets never reach a line (structured capture and real stdout), context per invocation,
JSON for CLS and console for people, configured once."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import subprocess
import sys

import pytest
import structlog
from structlog.testing import capture_logs

from jobwatch.app import logs
from jobwatch.core.redact import Secret

CANARY = "canary-7Hq2-SECRETVALUE"          # wrapped in Secret (remembered by the scrubber)
CANARY_TOKEN = "tok-unwrapped-5150"          # never wrapped: caught only by credential-shaped fields


@pytest.fixture(autouse=True)
def _reset():
    logs.reset_for_tests()
    yield
    logs.reset_for_tests()


class Leaky:
    """An object whose repr carries a secret, as a careless driver object might."""

    def __repr__(self) -> str:
        return f"Leaky(dsn=mysql://u:{CANARY}@db/x)"

    __str__ = __repr__


def _emit_everything(log) -> None:
    secret = Secret(CANARY)
    log.info("secret.wrapped", key=secret)
    log.info("secret.in.text", url=f"https://hooks.example/send?key={CANARY_TOKEN}", note=f"value {CANARY}")
    log.info("secret.nested", cfg={"a": [CANARY, {"b": secret}], "t": (CANARY,)}, obj=Leaky())
    log.info(f"secret in event {CANARY}")
    try:
        raise RuntimeError(f"driver said: password={CANARY_TOKEN} for {CANARY}")
    except RuntimeError:
        log.exception("poll.failed")
    log.error("error.as.value", err=ValueError(f"bad {CANARY}"))


def test_capture_logs_through_our_chain_masks_every_canary():
    logs.configure_logging("debug", "json", io.StringIO(), cache=False)
    logs.bind_invocation("req-1", "ci-jobwatch-dev", bucket="media-1250000000")
    with capture_logs(processors=logs.shared_processors()) as entries:
        _emit_everything(structlog.get_logger())
    text = repr(entries)
    assert CANARY not in text and CANARY_TOKEN not in text
    assert len(entries) == 6
    assert entries[0]["key"] == "***"
    assert entries[1]["url"] == "https://hooks.example/send?key=***"
    assert entries[2]["cfg"] == {"a": ["***", {"b": "***"}], "t": ["***"]}
    assert "RuntimeError: driver said: password=***" in entries[4]["exception"]
    assert "Traceback" in entries[4]["exception"]
    for e in entries:
        assert e["request_id"] == "req-1" and e["function_name"] == "ci-jobwatch-dev"
        assert e["bucket"] == "media-1250000000"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", e["timestamp"])


def test_json_lines_are_parseable_filtered_by_level_and_scrubbed():
    buf = io.StringIO()
    logs.configure_logging("info", "json", buf, cache=False)
    logs.bind_invocation("req-2", "fn")
    log = logs.get_logger("jobwatch.app.engine")
    log.debug("hidden.debug", x=1)
    _emit_everything(log)
    logging.getLogger("urllib3.connectionpool").warning("GET /x?sign=%s HTTP/1.1 %s", CANARY_TOKEN, CANARY)
    logging.getLogger("urllib3.connectionpool").info("below the libraries' floor")
    out = buf.getvalue()
    assert CANARY not in out and CANARY_TOKEN not in out
    lines = [json.loads(line) for line in out.splitlines()]
    events = [e["event"] for e in lines]
    assert "hidden.debug" not in events and "below the libraries' floor" not in events
    assert events[:3] == ["secret.wrapped", "secret.in.text", "secret.nested"]
    assert lines[0]["logger"] == "jobwatch.app.engine" and lines[0]["level"] == "info"
    stdlib = lines[-1]
    assert stdlib["logger"] == "urllib3.connectionpool" and stdlib["level"] == "warning"
    # a library's request line keeps its method, never its path or query (issue 19, defect 6)
    assert stdlib["request_id"] == "req-2" and stdlib["event"].startswith("GET /*** ")


def test_bind_invocation_forgets_the_previous_invocation():
    buf = io.StringIO()
    logs.configure_logging("info", "json", buf, cache=False)
    log = structlog.get_logger()
    logs.bind_invocation("req-a", "fn", job_id="j1")
    log.info("first")
    logs.bind_invocation("req-b", "fn")
    log.info("second")
    first, second = (json.loads(x) for x in buf.getvalue().splitlines())
    assert first["request_id"] == "req-a" and first["job_id"] == "j1"
    assert second["request_id"] == "req-b" and "job_id" not in second


def test_console_format_and_auto_detection():
    buf = io.StringIO()
    logs.configure_logging("info", "console", buf, cache=False)
    structlog.get_logger().info("poll.done", token=Secret(CANARY), jobs=3)
    line = buf.getvalue()
    assert "poll.done" in line and "jobs=3" in line and CANARY not in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert logs.resolve_format("auto", io.StringIO()) == "json"
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert logs.resolve_format("auto", tty) == "console"
    finally:
        os.close(master)
        os.close(slave)


def test_configure_is_idempotent_and_validates():
    buf = io.StringIO()
    logs.configure_logging("info", "json", buf, cache=False)
    processors = structlog.get_config()["processors"]
    logs.configure_logging("info", "json", buf, cache=False)
    assert structlog.get_config()["processors"] is processors  # not reconfigured
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_jobwatch_handler", False)]
    logs.configure_logging("warning", "json", buf, cache=False)
    assert len([h for h in logging.getLogger().handlers if getattr(h, "_jobwatch_handler", False)]) == len(ours) == 1
    with pytest.raises(ValueError, match="log level 'loud'"):
        logs.configure_logging("loud")
    with pytest.raises(ValueError, match="log format 'xml'"):
        logs.configure_logging("info", "xml")


SCRIPT = f"""
import logging, structlog
from jobwatch.app.logs import configure_logging, bind_invocation
from jobwatch.core.redact import Secret
configure_logging("info", "auto")
bind_invocation("req-real", "ci-jobwatch")
log = structlog.get_logger()
s = Secret({CANARY!r})
for i in range(3):
    log.info("tick", n=i, secret=s, text="k={CANARY}")
try:
    1 / 0
except ZeroDivisionError as e:
    log.exception("boom {CANARY}")
logging.getLogger("pymysql").error("Access denied password=%s", {CANARY_TOKEN!r})
"""


def test_real_stdout_of_a_process_is_json_lines_without_secrets():
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert CANARY not in r.stdout and CANARY_TOKEN not in r.stdout
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [e["event"] for e in lines[:3]] == ["tick"] * 3
    assert all(e["request_id"] == "req-real" for e in lines)
    assert lines[3]["event"] == "boom ***" and "ZeroDivisionError" in lines[3]["exception"]
    assert lines[4]["logger"] == "pymysql" and lines[4]["event"] == "Access denied password=***"


def test_default_stream_follows_sys_stdout_even_for_cached_loggers(capsys):
    """Configured without a stream and cached, lines still go to the stdout of the moment (pytest swaps it)."""
    logs.configure_logging("info", "json")
    log = structlog.get_logger()
    log.info("first", secret=Secret(CANARY))
    first = capsys.readouterr().out
    swapped = io.StringIO()
    real = sys.stdout
    sys.stdout = swapped
    try:
        log.info("second")
    finally:
        sys.stdout = real
    assert json.loads(first)["event"] == "first" and CANARY not in first
    assert json.loads(swapped.getvalue())["event"] == "second"


def test_console_lines_are_short_and_human():
    """Issue 16 item 7: a transition on a terminal was the whole event dict; now it is one short line."""
    buf = io.StringIO()
    logs.configure_logging("info", "console", buf, cache=False)
    log = structlog.get_logger()
    log.info("job_transition", bucket="examplebucket-1250000000", region="ap-guangzhou", job_id="j1",
             from_state="Submitted", to_state="Running", seq=2, code=None, next_poll_at="2026-01-01T00:00:30+00:00")
    log.warning("job_poll_failed", job_id="j2", error="connection refused " * 20, error_count=3,
                job={"whole": "record", "with": ["many", "fields"]})
    log.info("other_event", job={"a": 1}, count=5)
    log.warning("notice", sink="log", job_id="j3", kind="transition", from_state=None, to_state="Failed",
                job={"job_id": "j3", "operation": {"workflow_ids": ["w1"]}})  # the log sink's copy of a notice
    log.info("notice", sink="log", job_id="j3", kind="transition", to_state="Failed")  # echo: dropped at info
    log.info("notice_delivered", notice="x", sink="log")  # echo: dropped at info
    first, second, third, fourth = buf.getvalue().splitlines()
    assert first.endswith("j1  Submitted -> Running") and len(first) < 40
    assert "{" not in buf.getvalue() and "\x1b[" not in buf.getvalue()  # no dicts; not a terminal: no colour
    assert second.split("  ", 1)[1].startswith("warning: j2  poll failed (3x): connection refused")
    assert len(second) <= 140 and second.endswith("refused…")  # cut at a word, never mid-word
    assert third.endswith("other_event  count=5")
    assert fourth.endswith("warning: j3  notice (transition): - -> Failed")


def test_colour_only_on_a_terminal_without_no_color():
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert logs.colours_wanted(tty, {"TERM": "xterm"})
            assert not logs.colours_wanted(tty, {"TERM": "xterm", "NO_COLOR": "1"})
            assert logs.colours_wanted(tty, {"TERM": "xterm", "NO_COLOR": ""})  # no-color.org: empty is unset
            assert not logs.colours_wanted(tty, {"TERM": "dumb"})
        assert not logs.colours_wanted(io.StringIO(), {})
    finally:
        os.close(master)
        os.close(slave)


def test_auto_is_json_in_scf_even_on_a_terminal(monkeypatch):
    monkeypatch.setenv("SCF_FUNCTIONNAME", "ci-jobwatch")
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert logs.resolve_format("auto", tty) == "json"
    finally:
        os.close(master)
        os.close(slave)
