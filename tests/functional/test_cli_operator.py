"""The operator's terminal (issue 16): the ``jobwatch`` CLI behaves like aws/gh/kubectl.

Every test goes through the real entry point: ``jobwatch.cli:main`` in this process, or the ``jobwatch`` console
script in a child process (Ctrl-C, pseudo-terminals, pipes). The CI API is the emulator over loopback, the store
real SQLite.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY

from jobwatch.cli import main
from jobwatch.core.models import JobKey
from jobwatch.store import PollRecord, open_store

JOBWATCH = str(Path(sys.executable).with_name("jobwatch"))
OTHER_BUCKET = "otherbucket-1250000000"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# -- helpers -------------------------------------------------------------------------------------------------------
@pytest.fixture
def env(monkeypatch, emulator, sqlite_url, tmp_path):
    """The environment of an operator pointed at the emulator, with no default bucket or region."""
    for k in list(os.environ):
        if k.startswith("JOBWATCH_") or k in ("NO_COLOR", "XDG_STATE_HOME"):
            monkeypatch.delenv(k)
    values = {
        "JOBWATCH_STORE_URL": sqlite_url, "JOBWATCH_CI_ENDPOINT": emulator.url,
        "JOBWATCH_SECRET_ID": TEST_SECRET_ID, "JOBWATCH_SECRET_KEY": TEST_SECRET_KEY,
        "JOBWATCH_LOG_LEVEL": "warning", "JOBWATCH_POLL_MIN_SECONDS": "1",
        "HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def _store(env):
    return open_store(env["JOBWATCH_STORE_URL"])


def _child_env(env, **extra):
    out = {k: v for k, v in os.environ.items() if not k.startswith("JOBWATCH_") and k != "NO_COLOR"}
    out.update(env)
    out.update({k: str(v) for k, v in extra.items()})
    out.setdefault("TERM", "xterm")
    return out


@dataclass
class Ran:
    rc: int
    out: str
    err: str = ""


def run_pipe(args, env, timeout=60, **extra) -> Ran:
    r = subprocess.run([JOBWATCH, *args], env=_child_env(env, **extra), capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return Ran(r.returncode, r.stdout, r.stderr)


def run_pty(args, env, timeout=60, answer: bytes | None = None, interrupt_after: float | None = None,
            **extra) -> Ran:
    """Run the console script with stdin, stdout and stderr on a pseudo-terminal, as in a terminal window."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([JOBWATCH, *args], env=_child_env(env, **extra), stdin=slave, stdout=slave,
                            stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    start = time.monotonic()
    answered = interrupted = False
    try:
        while True:
            if time.monotonic() - start > timeout:
                proc.kill()
                raise AssertionError(f"timed out; output so far: {b''.join(chunks)!r}")
            if interrupt_after is not None and not interrupted and time.monotonic() - start > interrupt_after:
                proc.send_signal(signal.SIGINT)
                interrupted = True
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
                if answer is not None and not answered and b"[y/N]" in b"".join(chunks):
                    os.write(master, answer)
                    answered = True
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
    rc = proc.wait(timeout=10)
    return Ran(rc, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n"))


def _record(store, key, state, *, error=None, name="nightly-transcode", tags=None):
    """Put one observed job in the store the way a poll would (for states the emulator cannot produce)."""
    from jobwatch.core.models import Job, JobState

    now = datetime.now(timezone.utc)
    store.track([key], now, tags)
    (tj,) = store.claim_due("test", now, 60, 1, [key])
    job = Job(job_id=key.job_id, name=name, type="Workflow", state=JobState.parse(state), state_raw=state,
              created_at=now - timedelta(days=3))
    after = tj.evolve(state=state, job=job, last_seen=now, last_change=now, error_count=1 if error else 0,
                      last_error=error, active=state not in ("Success", "Failed", "Cancel"))
    store.record_polls("test", [PollRecord(tj, after, [], [])])


# -- 1. a bare job ID is resolved from the store -------------------------------------------------------------------
def test_history_and_untrack_take_a_bare_job_id(env, emulator, capsys):
    jid = emulator.create_job(TEST_BUCKET, state="Running")
    assert main(["track", jid, "--bucket", TEST_BUCKET, "--region", TEST_REGION]) == 0
    capsys.readouterr()
    assert main(["history", jid]) == 0  # no --bucket/--region, no defaults: the store knows the job
    out = capsys.readouterr().out
    assert "Running" in out
    assert main(["untrack", jid]) == 0
    assert "untracked 1" in capsys.readouterr().out


def test_an_ambiguous_bare_job_id_lists_the_candidates_and_exits_2(env, capsys):
    store = _store(env)
    store.track([JobKey(TEST_REGION, TEST_BUCKET, "j1"), JobKey("ap-beijing", OTHER_BUCKET, "j1")],
                datetime.now(timezone.utc))
    store.close()
    assert main(["history", "j1"]) == 2
    err = capsys.readouterr().err
    assert f"{TEST_REGION}/{TEST_BUCKET}/j1" in err and f"ap-beijing/{OTHER_BUCKET}/j1" in err
    assert main(["history", f"ap-beijing/{OTHER_BUCKET}/j1"]) == 0


# -- 2. Ctrl-C (the SIGINT tests against a hanging endpoint: test_cli_interrupt.py) ------------------------------
def test_status_says_who_holds_a_lease_and_until_when(env, capsys):
    key = JobKey(TEST_REGION, TEST_BUCKET, "leased1")
    store = _store(env)
    now = datetime.now(timezone.utc)
    store.track([key], now - timedelta(minutes=5))
    store.claim_due("other-poller-7", now, 120, 10)
    store.close()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "leased1" in out
    assert re.search(r"1 job\(s\) leased by other-poller-7 until \d\d:\d\d:\d\d UTC", out), out
    assert main(["poll", "--no-discover"]) == 0  # the job is overdue, but leased: no bare "polled 0"
    shown = capsys.readouterr()
    assert shown.out.startswith("polled 0,") and "leased by other-poller-7 until" in shown.err


# -- 3. tracking a job that does not exist -------------------------------------------------------------------------
def test_track_of_a_job_that_does_not_exist_exits_3_and_tracks_nothing(env, emulator, capsys):
    assert main(["track", "nosuchjob1", "--bucket", TEST_BUCKET, "--region", TEST_REGION]) == 3
    err = capsys.readouterr().err
    assert "nosuchjob1" in err and "does not exist" in err
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["track", "nosuchjob1", "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--force",
                 "--no-poll"]) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    assert [r["job_id"] for r in json.loads(capsys.readouterr().out)] == ["nosuchjob1"]


# -- 4. configured defaults ----------------------------------------------------------------------------------------
def test_track_untrack_history_use_the_configured_default_bucket_and_region(env, emulator, tmp_path, monkeypatch,
                                                                           capsys):
    cfg = tmp_path / "jobwatch.toml"
    cfg.write_text(f'default_bucket = "{TEST_BUCKET}"\ndefault_region = "{TEST_REGION}"\n')
    monkeypatch.setenv("JOBWATCH_CONFIG_FILE", str(cfg))
    jid = emulator.create_job(TEST_BUCKET, state="Running")
    assert main(["track", jid]) == 0
    capsys.readouterr()
    assert main(["history", jid, "--json"]) == 0
    assert [h["to"] for h in json.loads(capsys.readouterr().out)] == ["Running"]
    assert main(["untrack", jid]) == 0


# -- 5. discovery respects untrack ---------------------------------------------------------------------------------
def test_discover_does_not_retrack_a_job_the_operator_untracked(env, emulator, emulator_clock, capsys):
    first = emulator.create_job(TEST_BUCKET, state="Pause")  # paused: still under way after the clock moves
    assert main(["discover", "--bucket", TEST_BUCKET, "--region", TEST_REGION]) == 0
    assert main(["untrack", first]) == 0
    emulator_clock.advance(60)
    second = emulator.create_job(TEST_BUCKET, state="Running")
    assert main(["discover", "--bucket", TEST_BUCKET, "--region", TEST_REGION]) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    active = {r["job_id"]: r["active"] for r in json.loads(capsys.readouterr().out)}
    assert active == {first: False, second: True}
    assert main(["track", first]) == 0  # tracking it again is the way back
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    assert {r["job_id"]: r["active"] for r in json.loads(capsys.readouterr().out)} == {first: True, second: True}


# -- 6. the store: read-only commands create nothing ---------------------------------------------------------------
@pytest.mark.parametrize("args,code", [(["status"], 0), (["history", "j1"], 3), (["outbox"], 0),
                                       (["untrack", "j1"], 3)])
def test_read_only_commands_on_a_missing_store_say_so_and_create_nothing(env, tmp_path, monkeypatch, capsys,
                                                                         args, code):
    path = tmp_path / "not" / "yet" / "jobwatch.db"
    monkeypatch.setenv("JOBWATCH_STORE_URL", f"sqlite:///{path}")
    assert main(args) == code
    assert f"no store yet at {path}" in capsys.readouterr().err
    assert not (tmp_path / "not").exists()


def test_demo_uses_its_own_store_not_the_users(env, tmp_path):
    users = tmp_path / "users" / "jobwatch.db"
    r = run_pipe(["demo", "--jobs", "2", "--speed", "200", "--interval", "0.1", "--timeout", "60"],
                 env, timeout=120, JOBWATCH_STORE_URL=f"sqlite:///{users}", JOBWATCH_CI_ENDPOINT="")
    assert r.rc == 0, r.err
    assert not (tmp_path / "users").exists()
    assert "2/2 jobs final" in r.out


# -- 7. terminal output: human on a terminal, plain in a pipe, JSON when asked -------------------------------------
def test_poll_logs_one_human_line_per_transition_on_a_terminal_and_json_in_a_pipe(env, emulator, capsys):
    jids = [emulator.create_job(TEST_BUCKET, state="Running") for _ in range(3)]
    assert main(["track", *jids, "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--no-poll"]) == 0
    r = run_pty(["poll", "--no-discover"], env, JOBWATCH_LOG_LEVEL="info")
    assert r.rc == 0, r.out
    lines = [ANSI.sub("", ln).split("\r")[-1] for ln in r.out.splitlines()]  # as the terminal shows them
    logged = [ln for ln in lines if re.match(r"\d\d:\d\d:\d\d  ", ln)]
    assert len(logged) == 3, r.out  # one line per transition: not the notice's copy nor its receipt
    assert all(ln.endswith("-> Running") and len(ln) < 80 for ln in logged), r.out
    assert "{" not in r.out and "polled 3" in r.out
    assert f"polling [{'#' * 30}] 3/3" in r.out  # the progress bar, on stderr, on a terminal only ...
    assert not any("polling [" in ln and re.search(r"\d\d:\d\d:\d\d  ", ln) for ln in lines)  # ... erased by a log line
    for jid in jids:
        emulator.set_state(TEST_BUCKET, jid, "Pause")
    time.sleep(1.5)  # due again (JOBWATCH_POLL_MIN_SECONDS=1)
    r = run_pipe(["poll", "--no-discover"], env, JOBWATCH_LOG_LEVEL="info")
    assert r.rc == 0 and r.out.startswith("polled 3,"), r.out + r.err
    logged = [json.loads(ln) for ln in r.err.splitlines() if ln.strip()]  # every line is JSON
    assert sorted(e["job_id"] for e in logged if e["event"] == "job_transition" and e["to_state"] == "Pause") \
        == sorted(jids)
    assert "\x1b[" not in r.out + r.err and "\r" not in r.err and "polling" not in r.err


def test_log_format_json_on_a_terminal(env, emulator):
    jid = emulator.create_job(TEST_BUCKET, state="Running")
    r = run_pty(["--log-format", "json", "track", jid, "--bucket", TEST_BUCKET, "--region", TEST_REGION], env,
                JOBWATCH_LOG_LEVEL="info")
    assert r.rc == 0, r.out
    events = [json.loads(ln) for ln in r.out.splitlines() if ln.startswith("{")]
    assert any(e["event"] == "job_transition" and e["job_id"] == jid for e in events)
    emulator.set_state(TEST_BUCKET, jid, "Pause")
    r = run_pty(["track", jid, "--log-format", "json"], env, JOBWATCH_LOG_LEVEL="info")  # after the command too
    assert any(json.loads(ln)["to_state"] == "Pause" for ln in r.out.splitlines() if ln.startswith("{")), r.out


def test_machine_output_never_mixes_with_logs(env, emulator):
    emulator.create_job(TEST_BUCKET, state="Running")
    r = run_pipe(["job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--json"], env,
                 JOBWATCH_VERIFY_TLS="false")
    assert r.rc == 0, r.err
    assert len(json.loads(r.out)) == 1  # stdout is the JSON and nothing else
    assert "ci_tls_verify_disabled" in r.err


def test_status_and_demo_look_human_on_a_terminal_and_plain_in_a_pipe(env, emulator, capsys):
    store = _store(env)
    _record(store, JobKey(TEST_REGION, TEST_BUCKET, "ok1"), "Success")
    _record(store, JobKey(TEST_REGION, TEST_BUCKET, "bad1"), "Failed")
    store.close()
    tty = run_pty(["status"], env)
    assert tty.rc == 0 and "\x1b[32mSuccess" in tty.out and "\x1b[31mFailed" in tty.out  # coloured states
    assert "NAME" in tty.out and "nightly-transcode" in tty.out
    no_color = run_pty(["status"], env, NO_COLOR="1")
    assert "\x1b[" not in no_color.out and "Success" in no_color.out
    piped = run_pipe(["status"], env)
    assert piped.rc == 0 and "\x1b[" not in piped.out and piped.out.splitlines()[0].startswith("JOB")
    demo_args = ["demo", "--jobs", "2", "--speed", "200", "--interval", "0.1", "--timeout", "60"]
    tty = run_pty(demo_args, env, timeout=120, JOBWATCH_CI_ENDPOINT="")
    assert tty.rc == 0, tty.out
    assert re.search(r"\x1b\[3[12]m(Success|Failed)", tty.out) and "2/2 jobs final" in tty.out
    assert "Traceback" not in tty.out
    piped = run_pipe(demo_args, env, timeout=120, JOBWATCH_CI_ENDPOINT="")
    assert piped.rc == 0 and "\x1b[" not in piped.out + piped.err and "\r" not in piped.out + piped.err
    assert "2/2 jobs final" in piped.out


def test_demo_ctrl_c_prints_no_traceback(env):
    r = run_pty(["demo", "--jobs", "2", "--speed", "1", "--timeout", "60"], env, timeout=60, interrupt_after=3,
                JOBWATCH_CI_ENDPOINT="")
    assert r.rc == 130 and "Traceback" not in r.out and "interrupted" in r.out.lower()


# -- 8. exit codes -------------------------------------------------------------------------------------------------
def test_untrack_of_an_unknown_job_exits_3(env, capsys):
    assert main(["untrack", f"{TEST_REGION}/{TEST_BUCKET}/nosuchjob"]) == 3
    assert "nosuchjob" in capsys.readouterr().err


def test_config_problems_exit_2_everywhere(env, monkeypatch, capsys):
    monkeypatch.setenv("JOBWATCH_CONCURRENCY", "0")
    for args in (["config", "check"], ["config", "show"], ["status"], ["poll"], ["track", "j1"]):
        assert main(args) == 2, args
        shown = capsys.readouterr()
        assert "JOBWATCH_CONCURRENCY" in shown.err + shown.out


def test_poll_counts_a_notice_delivered_only_when_every_sink_took_it(env, emulator, monkeypatch, capsys):
    from http.server import BaseHTTPRequestHandler

    from fixtures.loopback import answer, serve

    class Down(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            answer(self, 500, b"down")

        def log_message(self, *a):
            pass

    srv = serve(Down)
    try:
        monkeypatch.setenv("JOBWATCH_NOTIFY", f"log://;webhook+http://127.0.0.1:{srv.server_port}/hook")
        jid = emulator.create_job(TEST_BUCKET, state="Running")
        assert main(["track", jid, "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--no-poll"]) == 0
        capsys.readouterr()
        main(["poll", "--no-discover", "--json"])
        s = json.loads(capsys.readouterr().out)
        assert s["notices_queued"] == 1 and s["notices_delivered"] == 0
        main(["poll", "--no-discover"])
        assert "0 notices delivered" in capsys.readouterr().out
    finally:
        srv.shutdown()
        srv.server_close()


# -- 9. tables -----------------------------------------------------------------------------------------------------
def test_every_table_has_headers_and_history_never_prints_none(env, emulator, capsys):
    jid = emulator.create_job(TEST_BUCKET, state="Running")
    assert main(["job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:2] == ["JOB", "ID"]
    assert main(["track", jid, "--bucket", TEST_BUCKET, "--region", TEST_REGION]) == 0
    capsys.readouterr()
    assert main(["history", jid]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["SEQ", "OBSERVED", "FROM"] and "None" not in out
    assert main(["outbox"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:2] == ["ID", "STATUS"]


def test_status_shows_name_age_since_creation_and_whole_words_of_errors(env, capsys):
    store = _store(env)
    error = "CI error InternalError (HTTP 500, request id abc): the service is temporarily unavailable"
    _record(store, JobKey(TEST_REGION, TEST_BUCKET, "e1"), "Running", error=error)
    store.close()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["JOB", "NAME", "STATE"]
    assert "nightly-transcode" in row and "3.0d" in row  # created three days ago, tracked just now
    shown = row[row.index("1 (") + 3:]
    assert shown.endswith("…)"), row  # cut, and says so
    kept = shown[:-2]
    assert error.startswith(kept) and error[len(kept)] == " ", f"cut mid-word: {row!r}"


def test_status_never_stops_silently_at_1000_rows(env, capsys):
    store = _store(env)
    store.track([JobKey(TEST_REGION, TEST_BUCKET, f"m{i:04d}") for i in range(1005)], datetime.now(timezone.utc))
    store.close()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert sum(1 for ln in out.splitlines() if re.match(r"^ap-guangzhou/\S+/m\d{4}", ln)) == 1005
    assert main(["status", "--limit", "1000"]) == 0
    out = capsys.readouterr()
    assert sum(1 for ln in out.out.splitlines() if re.match(r"^ap-guangzhou/\S+/m\d{4}", ln)) == 1000
    assert "5 more not shown" in out.out + out.err


def test_output_formats_wide_json_yaml(env, emulator, capsys):
    jid = emulator.create_job(TEST_BUCKET, state="Running")
    assert main(["track", jid, "--bucket", TEST_BUCKET, "--region", TEST_REGION]) == 0
    capsys.readouterr()
    assert main(["status", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["job_id"] == jid
    assert main(["status", "-o", "wide"]) == 0
    assert "NEXT POLL" in capsys.readouterr().out.splitlines()[0]
    assert main(["status", "-o", "yaml"]) == 0
    y = capsys.readouterr().out
    assert y.startswith("- ") and f'job_id: "{jid}"' in y
    assert main(["history", jid, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["to"] == "Running"
    assert main(["job", "show", jid, "--bucket", TEST_BUCKET, "--region", TEST_REGION, "-o", "yaml"]) == 0
    assert f'job_id: "{jid}"' in capsys.readouterr().out


# -- 10. validation ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,field,value", [
    (["poll", "--budget", "-1"], "--budget", "-1"),
    (["db", "purge", "--older-than-days", "-3"], "--older-than-days", "-3"),
    # a malformed region; a well-formed one this version does not know (ap-guangzou) is used with a warning, as
    # the function takes it (tests/functional/test_cli_regions.py)
    (["track", "j1", "--bucket", TEST_BUCKET, "--region", "ap.guangzhou"], "--region", "ap.guangzhou"),
])
def test_bad_values_are_refused_naming_the_field_and_value(env, capsys, args, field, value):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert field in err and value in err


def test_a_store_url_with_query_options_is_refused(env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JOBWATCH_STORE_URL", f"sqlite:///{tmp_path}/s.db?mode=ro")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "JOBWATCH_STORE_URL" in err and "'mode'" in err


# -- 11. the everyday conventions ----------------------------------------------------------------------------------
def test_version_and_bare_command(env):
    from importlib.metadata import version

    r = run_pipe(["--version"], env)
    assert r.rc == 0 and r.out.strip() == f"jobwatch {version('ci-jobwatch')}"
    r = run_pipe([], env)
    assert r.rc == 0 and r.out.startswith("usage: jobwatch") and "status" in r.out


def test_every_option_has_help_text():
    import argparse

    from jobwatch.cli.commands import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "jobwatch")
    from jobwatch.emulator.cli import add_arguments  # `jobwatch emulator` parses its own options

    emulator = argparse.ArgumentParser(prog="jobwatch emulator")
    add_arguments(emulator)
    walk(emulator, "jobwatch emulator")
    assert missing == []


def test_db_purge_dry_run_and_confirmation_on_a_terminal(env, capsys):
    key = JobKey(TEST_REGION, TEST_BUCKET, "old1")
    store = _store(env)
    _record(store, key, "Success")
    store.close()
    assert main(["db", "purge", "--older-than-days", "0", "--dry-run"]) == 0
    assert "would delete" in capsys.readouterr().out
    r = run_pty(["db", "purge", "--older-than-days", "0"], env, answer=b"n\n")
    assert "[y/N]" in r.out and r.rc == 1
    store = _store(env)
    assert store.get(key) is not None  # declined: nothing deleted
    store.close()
    r = run_pty(["db", "purge", "--older-than-days", "0"], env, answer=b"y\n")
    assert r.rc == 0 and "jobs: 1 deleted" in r.out
    store = _store(env)
    assert store.get(key) is None
    store.close()


def test_emulator_banner_prints_the_export_lines(env, tmp_path):
    proc = subprocess.Popen([JOBWATCH, "emulator", "--port", "0"], env=_child_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("JOBWATCH_SECRET_KEY" in ln for ln in lines):
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        reader.join(5)
    exports = dict(re.findall(r"^export (JOBWATCH_\w+)=(\S+)$", "".join(lines), re.M))
    assert set(exports) >= {"JOBWATCH_CI_ENDPOINT", "JOBWATCH_SECRET_ID", "JOBWATCH_SECRET_KEY"}, lines
    assert exports["JOBWATCH_CI_ENDPOINT"].startswith("http://127.0.0.1:")


def test_status_watch_refreshes_in_place(env, emulator, capsys):
    jid = emulator.create_job(TEST_BUCKET, state="Running")
    assert main(["track", jid, "--bucket", TEST_BUCKET, "--region", TEST_REGION]) == 0
    r = run_pty(["status", "--watch", "--interval", "0.3"], env, timeout=30, interrupt_after=2.0)
    assert r.rc == 130 and "Traceback" not in r.out
    assert r.out.count("\x1b[H\x1b[2J") >= 3 and r.out.count(jid) >= 3


# -- QA pass: clear errors instead of tracebacks, bare IDs, empty machine output ---------------------------------
@pytest.mark.parametrize("args,field,value", [
    (["poll", "--budget", "inf"], "--budget", "inf"),
    (["poll", "--budget", "1e308"], "--budget", "1e308"),
    (["poll", "--budget", "nan"], "--budget", "nan"),
    (["serve", "--port", "99999"], "--port", "99999"),
    (["emulator", "--port", "99999"], "--port", "99999"),
    (["demo", "--speed", "0"], "--speed", "0"),
    (["demo", "--interval", "-1"], "--interval", "-1"),
    (["children", "j1", "--limit", "0"], "--limit", "0"),
    (["children", "j1", "--limit", "-5"], "--limit", "-5"),
    (["children", "j1", "--limit", "5000"], "--limit", "5000"),
    (["track", "j1", "--bucket", "Bad_Bucket", "--region", TEST_REGION], "--bucket", "Bad_Bucket"),
    (["status", "-w", "--interval", "0"], "--interval", "0"),  # QA 2: 0 redrew as fast as the CPU allowed
    (["status", "-w", "--interval", "-2"], "--interval", "-2"),
    (["status", "-w", "--interval", "inf"], "--interval", "inf"),
    (["status", "-w", "--interval", "nan"], "--interval", "nan"),
])
def test_out_of_range_values_exit_2_naming_the_option(env, capsys, args, field, value):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert field in err and value in err and "Traceback" not in err


def test_bucket_alone_is_used_with_the_default_region(env, emulator, monkeypatch, capsys):
    """QA: `track JOB --bucket X` without --region ignored --bucket: the ID tracked elsewhere was taken instead."""
    jid = emulator.create_job(TEST_BUCKET, state="Running")
    elsewhere = JobKey(TEST_REGION, OTHER_BUCKET, jid)
    store = _store(env)
    store.track([elsewhere], datetime.now(timezone.utc))
    store.close()
    monkeypatch.setenv("JOBWATCH_DEFAULT_REGION", TEST_REGION)
    assert main(["track", jid, "--bucket", TEST_BUCKET]) == 0
    assert "tracking 1 new" in capsys.readouterr().out
    store = _store(env)
    try:
        assert store.find_keys(jid) == sorted([elsewhere, JobKey(TEST_REGION, TEST_BUCKET, jid)],
                                              key=lambda k: (k.region, k.bucket))
    finally:
        store.close()


@pytest.mark.parametrize("args,missing", [(["--bucket", TEST_BUCKET], "--region"),
                                          (["--region", TEST_REGION], "--bucket")])
def test_one_half_of_bucket_and_region_without_a_default_is_refused(env, capsys, args, missing):
    assert main(["track", "j1", *args]) == 2
    err = capsys.readouterr().err
    assert f"invalid {missing} " in err and "Traceback" not in err


def test_a_bare_id_untracked_in_one_bucket_means_the_active_one(env, capsys):
    """QA: after untracking region/bucketA/ID, `history ID` still said "tracked in more than one bucket"."""
    a, b = JobKey(TEST_REGION, TEST_BUCKET, "j1"), JobKey("ap-beijing", OTHER_BUCKET, "j1")
    store = _store(env)
    store.track([a, b], datetime.now(timezone.utc))
    store.close()
    assert main(["untrack", str(a)]) == 0
    capsys.readouterr()
    assert main(["history", "j1"]) == 0
    assert main(["children", "j1"]) == 0
    assert str(b) in capsys.readouterr().out
    assert main(["untrack", str(b)]) == 0  # none active, two exist: ambiguous again, both named
    capsys.readouterr()
    assert main(["history", "j1"]) == 2
    err = capsys.readouterr().err
    assert str(a) in err and str(b) in err


@pytest.mark.parametrize("args,expected", [(["status", "--json"], "[]"), (["status", "-o", "yaml"], "[]"),
                                           (["outbox", "--json"], "[]")])
def test_machine_output_on_a_missing_store_is_an_empty_list(env, tmp_path, monkeypatch, capsys, args, expected):
    path = tmp_path / "none" / "jobwatch.db"
    monkeypatch.setenv("JOBWATCH_STORE_URL", f"sqlite:///{path}")
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == expected and f"no store yet at {path}" in err


@pytest.mark.parametrize("args,code,out", [(["status", "--json"], 0, "[]"), (["history", "j1"], 3, None),
                                           (["outbox", "--json"], 0, "[]")])
def test_read_only_commands_on_an_empty_sqlite_file_create_no_tables(env, tmp_path, monkeypatch, capsys, args, code,
                                                                     out):
    """An existing file that holds no store (created empty, by `touch` or another tool) is read as no store yet,
    as an empty MySQL database is: a read creates no tables in it, and does not even write its header."""
    path = tmp_path / "jobwatch.db"
    path.touch()
    monkeypatch.setenv("JOBWATCH_STORE_URL", f"sqlite:///{path}")
    assert main(args) == code
    got = capsys.readouterr()
    assert f"no store yet at {path}" in got.err and "Traceback" not in got.err
    if out is not None:
        assert got.out.strip() == out
    assert path.stat().st_size == 0
    assert main(["db", "migrate"]) == 0  # once set up, the same command reads it
    capsys.readouterr()
    assert main(["status", "--json"]) == 0 and "no store yet" not in capsys.readouterr().err


def test_status_into_a_closed_pipe_prints_no_traceback(env):
    """QA: `jobwatch status | head -1` printed a BrokenPipeError traceback."""
    store = _store(env)
    for i in range(3):
        _record(store, JobKey(TEST_REGION, TEST_BUCKET, f"pipe{i}"), "Running")
    store.close()
    r, w = os.pipe()
    os.close(r)  # the reader has gone before jobwatch writes a byte
    try:
        p = subprocess.run([JOBWATCH, "status"], env=_child_env(env), stdout=w, stderr=subprocess.PIPE, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    finally:
        os.close(w)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    assert p.returncode == 141


# -- QA pass 2: readable cuts, display width, an empty NO_COLOR, read-only commands on MySQL -----------------------
def test_an_empty_no_color_does_not_turn_colour_off(env):
    """QA 2: no-color.org: only a NO_COLOR that is set and not empty turns colour off; `NO_COLOR=` did too."""
    store = _store(env)
    _record(store, JobKey(TEST_REGION, TEST_BUCKET, "ok1"), "Success")
    store.close()
    assert "\x1b[32mSuccess" in run_pty(["status"], env, NO_COLOR="").out
    assert "\x1b[" not in run_pty(["status"], env, NO_COLOR="1").out


URL_ERROR = ("transport error: GET https://examplebucket-1250000000.ci.ap-guangzhou.myqcloud.com/inventorytriggerjob/"
             "j0123456789abcdef0123456789abcdef timed out after 30s (attempt 3 of 3)")


def _display_width(text: str) -> int:
    import unicodedata

    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _columns_line_up(lines: list[str], headers: list[str]) -> None:
    """Each header's first display column is where every row's cell starts (two spaces before it)."""
    def cells(line: str) -> list[str]:  # one slot per display column
        out: list[str] = []
        for c in line:
            w = _display_width(c)
            out.extend([c] + ["\0"] * (w - 1) if w else [])
            if not w and out:
                out[-1] += c
        return out

    head = cells(lines[0])
    starts = [_display_width(lines[0][:lines[0].index(h)]) for h in headers]
    for line in lines[1:]:
        row = cells(line)
        for h, col in zip(headers, starts):
            assert row[col - 2:col] == [" ", " "] and row[col] not in (" ", "\0"), (h, line, lines[0])
    assert head  # the header itself was read


def test_status_errors_shorten_a_long_url_between_words_and_keep_one_line_per_job(env, capsys):
    """QA 2: a URL in an error was cut mid-token (`...ci.ap-gu…`), losing what happened to it; a newline, tab or
    escape sequence in an error broke the table (wide: its own LAST ERROR column)."""
    store = _store(env)
    _record(store, JobKey(TEST_REGION, TEST_BUCKET, "u1"), "Running", error=URL_ERROR)
    _record(store, JobKey(TEST_REGION, TEST_BUCKET, "u2"), "Running",
            error="first line\nsecond\tline \x1b[2Jcleared \x07bell")
    store.close()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[0].splitlines()
    assert len(table) == 3 and "\x1b" not in out and "\x07" not in out, out
    header = table[0]
    shown = {ln.split()[0].rsplit("/", 1)[1]: ln[header.index("ERRORS"):] for ln in table[1:]}
    cell = shown["u1"]
    assert cell.startswith("1 (") and cell.endswith(")") and _display_width(cell[3:-1]) <= 60, cell
    words = URL_ERROR.split()
    for word in cell[3:-1].split():
        if word in words:
            continue
        head, marker, tail = word.partition("…")
        assert marker, f"{word!r} is not a word of the error: {cell!r}"
        if tail:  # a long token shortened in its middle: its start and its end, both whole
            assert any(w.startswith(head) and w.endswith(tail) for w in words), cell
        else:  # the cut itself: after a whole word
            assert head.rstrip(",;:") in [w.rstrip(",;:") for w in words], f"cut mid-word: {cell!r}"
    assert "https://exampl" in cell and "abcdef" in cell and "timed out" in cell, cell
    assert main(["status", "-o", "wide"]) == 0
    wide = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert len(wide) == 3 and "first line second line" in wide[-1] and "\x1b" not in wide[-1], wide


def test_tables_line_up_wide_and_combining_characters(env, capsys):
    """QA 2: columns were padded by code points, so a CJK name (two columns per character) pushed its row right."""
    store = _store(env)
    _record(store, JobKey(TEST_REGION, TEST_BUCKET, "c1"), "Running", name="夜间转码-全量任务",
            tags={"团队": "媒体处理"})
    _record(store, JobKey(TEST_REGION, TEST_BUCKET, "c2"), "Success", name="nightly", tags={"team": "media"})
    _record(store, JobKey(TEST_REGION, TEST_BUCKET, "c3"), "Failed", name="re\u0301sume\u0301-export")
    _record(store, JobKey(TEST_REGION, TEST_BUCKET, "c4"), "Running", name="很长的作业名称" * 4)
    store.close()
    assert main(["status"]) == 0
    table = capsys.readouterr().out.split("\n\n")[0].splitlines()
    _columns_line_up(table, ["NAME", "STATE", "PROGRESS", "AGE", "LAST CHANGE", "NEXT POLL", "ERRORS"])
    long_name = next(ln for ln in table if "很长" in ln)
    name = long_name[table[0].index("NAME"):].split("  ")[0]
    assert "…" in name and 28 <= _display_width(name) <= 30, name  # cut to 30 columns, not 30 characters
    assert main(["status", "-o", "wide"]) == 0
    table = capsys.readouterr().out.split("\n\n")[0].splitlines()
    _columns_line_up(table, ["NAME", "STATE", "AGE", "TRACKED", "POLLS", "LEASE", "TAGS", "LAST ERROR"])


def _mysql_tables(url: str) -> list[str]:
    import pymysql
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = pymysql.connect(host=parts.hostname, port=parts.port, user=parts.username, password="",
                           database=parts.path.strip("/"))
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.mysql
@pytest.mark.parametrize("args,code,out", [(["status"], 0, None), (["status", "--json"], 0, "[]"),
                                           (["status", "-o", "yaml"], 0, "[]"), (["history", "j1"], 3, None),
                                           (["outbox", "--json"], 0, "[]"), (["untrack", "j1"], 3, None),
                                           (["children", "j1"], 3, None),
                                           (["db", "purge", "--older-than-days", "1", "--yes"], 0, None)])
def test_read_only_commands_on_an_empty_mysql_database_create_no_tables(env, mysql_url, monkeypatch, capsys,
                                                                        args, code, out):
    """QA 2: `jobwatch status` on an empty MySQL/MariaDB database created the schema: a read must not migrate.
    It now says so as for a missing SQLite file (stderr; `[]` for machine output)."""
    monkeypatch.setenv("JOBWATCH_STORE_URL", mysql_url)
    assert main(args) == code
    got = capsys.readouterr()
    assert f"no store yet at {mysql_url.replace('root@', '')} " in got.err and "Traceback" not in got.err
    if out is not None:
        assert got.out.strip() == out
    assert _mysql_tables(mysql_url) == []
    assert main(["db", "migrate"]) == 0  # once set up, the same command reads it
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    got = capsys.readouterr()
    assert got.out.strip() == "[]" and "no store yet" not in got.err
