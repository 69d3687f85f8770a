"""The operator commands, run through ``jobwatch.cli`` against the emulator and a SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY

from jobwatch.cli import main


@pytest.fixture
def env(monkeypatch, emulator, sqlite_url):
    values = {
        "JOBWATCH_STORE_URL": sqlite_url, "JOBWATCH_CI_ENDPOINT": emulator.url,
        "JOBWATCH_SECRET_ID": TEST_SECRET_ID, "JOBWATCH_SECRET_KEY": TEST_SECRET_KEY,
        "JOBWATCH_DEFAULT_BUCKET": TEST_BUCKET, "JOBWATCH_DEFAULT_REGION": TEST_REGION,
        "JOBWATCH_LOG_LEVEL": "warning", "JOBWATCH_POLL_MIN_SECONDS": "1",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def test_track_status_history_untrack(env, emulator, capsys):
    jid = emulator.create_job(TEST_BUCKET, state="Running")
    assert main(["track", jid, "--tag", "team=media", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["registered"] == 1 and summary["polled"] == 1 and summary["transitions"] == 1
    assert main(["track", jid, "--no-poll"]) == 0  # idempotent
    assert "0 new, 1 already tracked" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    assert rec["job_id"] == jid and rec["state"] == "Running" and rec["tags"] == {"team": "media"}
    assert main(["status"]) == 0
    table = capsys.readouterr().out
    assert "STATE" in table and "Running" in table and jid in table
    assert main(["history", jid, "--json"]) == 0
    assert [(h["from"], h["to"]) for h in json.loads(capsys.readouterr().out)] == [(None, "Running")]
    assert main(["untrack", jid]) == 0 and "untracked 1" in capsys.readouterr().out


def test_poll_outbox_and_dead_letter_retry(env, emulator, emulator_clock, capsys):
    jid = emulator.create_job(TEST_BUCKET)
    assert main(["track", jid, "--no-poll"]) == 0
    capsys.readouterr()
    assert main(["poll", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["polled"] == 1 and s["notices_queued"] == 1 and s["notices_delivered"] == 1  # the log sink
    assert main(["outbox", "--json"]) == 0
    (n,) = json.loads(capsys.readouterr().out)
    assert n["status"] == "done" and n["job_id"] == jid and n["to_state"] == "Submitted"
    assert main(["outbox", "--retry", "999999"]) == 3


def test_history_of_untracked_job_exits_3(env, capsys):
    assert main(["history", "nosuchjob"]) == 3


def test_bad_job_id_is_refused_with_field_and_value(env, capsys):
    assert main(["track", "bad;id"]) == 2
    err = capsys.readouterr().err
    assert "job_id" in err and "bad;id" in err
    assert main(["track", "ap-guangzhou/../x"]) == 2
    assert "invalid bucket '..'" in capsys.readouterr().err


def test_db_migrate_and_purge(env, capsys):
    assert main(["db", "migrate"]) == 0 and "schema version 3" in capsys.readouterr().out
    assert main(["db", "purge", "--older-than-days", "0"]) == 0
    assert "jobs: 0 deleted" in capsys.readouterr().out


def test_demo_finishes_with_every_job_final(tmp_path):
    """The README's main-job command, end to end in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-m", "jobwatch.cli", "demo", "--jobs", "4", "--speed", "80", "--interval", "0.2",
         "--timeout", "60", "--store", f"sqlite:///{tmp_path / 'demo.db'}"],
        capture_output=True, text=True, timeout=90, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4/4 jobs final" in proc.stdout
    assert "Submitted -> Running" in proc.stdout


def test_poll_discovers_new_jobs_of_configured_buckets(env, emulator, monkeypatch, capsys):
    monkeypatch.setenv("JOBWATCH_DISCOVERY", f"{TEST_REGION}/{TEST_BUCKET}")
    ids = {emulator.create_job(TEST_BUCKET) for _ in range(3)}
    assert main(["poll", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["discovered"] == 3 and s["polled"] == 3
    assert main(["status", "--json"]) == 0
    assert {r["job_id"] for r in json.loads(capsys.readouterr().out)} == ids


def test_discover_command_tracks_and_reports(env, emulator, capsys):
    ids = {emulator.create_job(TEST_BUCKET, state="Running") for _ in range(2)}
    assert main(["discover", "--bucket", TEST_BUCKET, "--region", TEST_REGION]) == 0
    assert "2 new job(s) tracked" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    assert {r["job_id"] for r in json.loads(capsys.readouterr().out)} == ids
    assert main(["discover", "--bucket", TEST_BUCKET, "--region", TEST_REGION]) == 0
    assert "0 new job(s) tracked" in capsys.readouterr().out
    assert main(["discover"]) == 2  # nothing configured, nothing given
    assert "JOBWATCH_DISCOVERY" in capsys.readouterr().err


def test_progress_shows_only_on_a_terminal():
    import io

    from jobwatch.cli.output import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        p = Progress("tracked", stream=stream)
        p(100)
        p.done()
        bar = Progress("purged", total=200, stream=stream)
        bar(50)
        bar.done()
    assert tty.getvalue() == ("\r\x1b[2Ktracked: 100\r\x1b[2K"
                              f"\r\x1b[2Kpurged [{'#' * 7}{'.' * 23}] 50/200\r\x1b[2K")
    assert pipe.getvalue() == ""


def test_package_steps_are_a_bar_on_a_terminal_and_lines_in_a_pipe(capsys):
    """Issue 16 item 7: `jobwatch package` (minutes of wheel installs) shows its step on a bar at a terminal."""
    import io

    from jobwatch.cli.output import Progress
    from jobwatch.cli.package import _step

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = Progress("packaging", stream=tty)
    for message in ("[1/5] preparing build/package", "[2/5] installing for CPython 3.10", "[3/5] copying"):
        _step(bar, message)
    bar.done()
    assert "packaging [######" in tty.getvalue() and "1/5  installing for CPython 3.10" in tty.getvalue()
    assert capsys.readouterr().err == ""  # nothing but the bar
    pipe = Progress("packaging", stream=io.StringIO())
    _step(pipe, "[1/5] preparing build/package")
    assert capsys.readouterr().err == "[1/5] preparing build/package\n"
