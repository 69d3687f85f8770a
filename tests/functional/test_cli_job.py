"""``jobwatch job show|list`` end to end against the emulator, in process; exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY
from jobwatch.cli import main

ENV_NAMES = ["JOBWATCH_SECRET_ID", "JOBWATCH_SECRET_KEY", "JOBWATCH_SESSION_TOKEN", "TENCENTCLOUD_SECRETID",
             "TENCENTCLOUD_SECRETKEY", "TENCENTCLOUD_SESSIONTOKEN", "TENCENTCLOUD_SECRET_ID",
             "TENCENTCLOUD_SECRET_KEY", "JOBWATCH_CI_ENDPOINT", "JOBWATCH_CREDENTIALS_PROFILE", "JOBWATCH_ROLE_ARN"]


@pytest.fixture
def env(monkeypatch, tmp_path, emulator):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no stray ~/.tencentcloud/credentials
    monkeypatch.setenv("JOBWATCH_SECRET_ID", TEST_SECRET_ID)
    monkeypatch.setenv("JOBWATCH_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("JOBWATCH_CI_ENDPOINT", emulator.url)
    return monkeypatch


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_show_json(env, emulator, emulator_clock, capsys):
    jid = emulator.create_job(TEST_BUCKET, name="demo", type="Workflow")
    emulator_clock.advance(10)
    code, out, err = run(capsys, "job", "show", jid, "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--json")
    assert code == 0, err
    data = json.loads(out)
    for key in ("job_id", "name", "type", "state", "code", "message", "created_at", "started_at", "ended_at",
                "input", "operation"):
        assert key in data
    assert (data["job_id"], data["name"], data["type"], data["state"]) == (jid, "demo", "Workflow", "Running")
    assert data["created_at"].startswith("2026-01-01T") and data["ended_at"] is None
    assert data["operation"]["workflow_ids"] == ["w7476ff3564ee45b7b490d64bccaba6cc"]


def test_show_human(env, emulator, capsys):
    jid = emulator.create_job(TEST_BUCKET, name="demo")
    code, out, _ = run(capsys, "job", "show", jid, "--bucket", TEST_BUCKET, "--region", TEST_REGION)
    assert code == 0 and f"job       {jid}" in out and "state     Submitted" in out


def test_show_missing_job_exits_3(env, emulator, capsys):
    code, out, err = run(capsys, "job", "show", "b" + "1" * 32, "--bucket", TEST_BUCKET, "--region", TEST_REGION)
    assert code == 3 and out == "" and "does not exist" in err and "b" + "1" * 32 in err


def test_api_error_exits_2_with_code_and_request_id(env, emulator, capsys):
    env.setenv("JOBWATCH_SECRET_KEY", "wrong-key-0000000000")
    code, _, err = run(capsys, "job", "show", "b" + "1" * 32, "--bucket", TEST_BUCKET, "--region", TEST_REGION)
    assert code == 2 and "SignatureDoesNotMatch" in err and "HTTP 403" in err
    rid = emulator.request_log[-1].request_id
    assert rid and f"request id {rid}" in err
    assert "wrong-key-0000000000" not in err


@pytest.mark.parametrize("argv,needle", [
    (["job", "show", "j1", "--bucket", "NoAppId", "--region", TEST_REGION], "invalid bucket 'NoAppId'"),
    (["job", "show", "j/1", "--bucket", TEST_BUCKET, "--region", TEST_REGION], "invalid job_id 'j/1'"),
    (["job", "list", "--bucket", TEST_BUCKET, "--region", "Beijing"], "invalid --region 'Beijing'"),
    (["job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--since", "last week"],
     "invalid --since 'last week'"),
    (["job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--states", "Done"], "invalid states 'Done'"),
    (["job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--limit", "0"], "invalid --limit 0"),
])
def test_bad_input_exits_2_before_any_request(env, emulator, capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2 and needle in err
    assert emulator.request_log == []


def test_argparse_usage_errors_exit_2(env, capsys):
    assert main(["job", "show", "j1", "--region", TEST_REGION, "--bogus"]) == 2  # main returns, not SystemExit
    assert "--bogus" in capsys.readouterr().err
    assert main(["job", "show", "j1", "--region", TEST_REGION]) == 2  # no bucket given, none configured
    assert "--bucket" in capsys.readouterr().err


def test_no_credentials_exits_2(env, capsys):
    env.delenv("JOBWATCH_SECRET_ID")
    env.delenv("JOBWATCH_SECRET_KEY")
    code, _, err = run(capsys, "job", "show", "j1", "--bucket", TEST_BUCKET, "--region", TEST_REGION)
    assert code == 2 and "no credentials found" in err


def test_scf_variables_and_endpoint_flag(env, emulator, capsys):
    env.delenv("JOBWATCH_SECRET_ID")
    env.delenv("JOBWATCH_SECRET_KEY")
    tmp_id, tmp_key, token = emulator.issue_token(TEST_SECRET_ID)
    env.setenv("TENCENTCLOUD_SECRETID", tmp_id)
    env.setenv("TENCENTCLOUD_SECRETKEY", tmp_key)
    env.setenv("TENCENTCLOUD_SESSIONTOKEN", token)
    env.setenv("JOBWATCH_CI_ENDPOINT", "http://127.0.0.1:9")  # the flag wins over the variable
    jid = emulator.create_job(TEST_BUCKET)
    code, out, err = run(capsys, "job", "show", jid, "--bucket", TEST_BUCKET, "--region", TEST_REGION,
                         "--endpoint", emulator.url, "--json")
    assert code == 0, err
    assert json.loads(out)["job_id"] == jid


def test_list_json_with_filters_and_limit(env, emulator, capsys):
    ids = emulator.preload(TEST_BUCKET, 30)
    code, out, err = run(capsys, "job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--json")
    assert code == 0, err
    everything = json.loads(out)
    assert {j["job_id"] for j in everything} == set(ids)
    code, out, _ = run(capsys, "job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--json",
                       "--states", "Running,Failed", "--states", "Success", "--type", "Workflow")
    some = json.loads(out)
    expected = {j["job_id"] for j in everything
                if j["state"] in ("Running", "Failed", "Success") and j["type"] == "Workflow"}
    assert code == 0 and some and {j["job_id"] for j in some} == expected
    code, out, _ = run(capsys, "job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--json",
                       "--limit", "7")
    assert code == 0 and len(json.loads(out)) == 7


def test_list_since_until(env, emulator, capsys):
    from datetime import datetime, timezone

    old = emulator.create_job(TEST_BUCKET, name="old", created_at=datetime(2025, 6, 1, tzinfo=timezone.utc))
    new = emulator.create_job(TEST_BUCKET, name="new", created_at=datetime(2025, 12, 1, tzinfo=timezone.utc))
    code, out, _ = run(capsys, "job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION, "--json",
                       "--since", "2025-09-01", "--until", "2025-12-02T00:00:00+08:00")
    assert code == 0 and [j["job_id"] for j in json.loads(out)] == [new]
    code, out, err = run(capsys, "job", "list", "--bucket", TEST_BUCKET, "--region", TEST_REGION)
    assert code == 0 and old in out and new in out and "2 job(s)" in err


def test_emulator_subcommand_delegates(capsys):
    # main returns the exit code (as for `jobwatch --help` and every usage error), never raises SystemExit
    assert main(["emulator", "--help"]) == 0 and "--preload" in capsys.readouterr().out


def test_top_level_help_does_not_import_the_emulator():
    code = ("import sys, contextlib, io\n"
            "from jobwatch.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try: main(['--help'])\n"
            "    except SystemExit as e: assert e.code == 0\n"
            "assert 'job' in out.getvalue() and 'emulator' in out.getvalue()\n"
            "print('jobwatch.emulator' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
