"""The settings table, the loader's conversions and checks, the TOML file, the CLI and the README table."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobwatch.app import config
from jobwatch.app.config import SETTINGS, Kind, Settings, check_environment, load_settings, render_markdown_table
from jobwatch.core.errors import ConfigError
from jobwatch.core.redact import Secret, scrub

ROOT = Path(__file__).resolve().parents[2]
CANARY = "canary-SECRET-9f8e7d6c"


def test_settings_fields_match_the_table_one_to_one():
    assert [f.name for f in dataclasses.fields(Settings)] == [d.attr for d in SETTINGS]
    assert len({d.name for d in SETTINGS}) == len(SETTINGS)
    for d in SETTINGS:
        assert d.name == "JOBWATCH_" + d.attr.upper()
        assert d.doc.strip(), d.name
        if d.kind is Kind.ENUM:
            assert d.default in d.choices


def test_the_named_attributes_exist():
    names = {d.attr for d in SETTINGS}
    for attr in ("store_url", "ci_endpoint", "verify_tls", "secret_id", "secret_key", "session_token",
                 "credentials_profile", "role_arn", "role_session_name", "role_duration", "sts_endpoint",
                 "sign_window", "http_connect_timeout", "http_read_timeout", "http_max_attempts",
                 "http_pool_size", "concurrency", "lease_seconds", "batch_size", "poll_min_seconds",
                 "poll_max_seconds", "poll_backoff", "poll_jitter", "error_backoff_max_seconds", "confirmations",
                 "safety_margin_seconds", "discovery", "default_region", "default_bucket", "notify",
                 "notify_timeout", "notify_max_attempts", "notify_backoff_base", "notify_backoff_cap",
                 "stall_running_seconds", "stall_paused_seconds", "stall_repeat_seconds", "stall_rules",
                 "retention_days", "log_level", "log_format", "api_key", "fanout", "fanout_shard_size",
                 "fanout_max_shards", "scf_endpoint", "function_name", "function_namespace", "function_qualifier",
                 "config_file"):
        assert attr in names, attr


def test_defaults_load_and_have_documented_values():
    s = load_settings({"HOME": "/home/op"})
    assert s.store_url.reveal() == "sqlite:////home/op/.local/state/ci-jobwatch/jobwatch.db"
    assert (s.verify_tls, s.role_session_name, s.role_duration, s.sign_window) == (True, "ci-jobwatch", 7200, 600)
    assert (s.http_connect_timeout, s.http_read_timeout, s.http_max_attempts, s.http_pool_size) == (3.05, 10, 4, 32)
    assert (s.concurrency, s.lease_seconds, s.batch_size) == (32, 120, 200)
    assert (s.poll_min_seconds, s.poll_max_seconds, s.poll_backoff, s.poll_jitter) == (30, 900, 1.5, 0.1)
    assert (s.error_backoff_max_seconds, s.confirmations, s.safety_margin_seconds) == (1800, 2, 5)
    assert (s.notify_timeout, s.notify_max_attempts, s.notify_backoff_base, s.notify_backoff_cap) == (5, 8, 30, 3600)
    assert (s.stall_running_seconds, s.stall_paused_seconds, s.stall_repeat_seconds) == (21600, 3600, 21600)
    assert (s.retention_days, s.log_level, s.log_format, s.fanout) == (30, "info", "auto", False)
    assert (s.fanout_shard_size, s.fanout_max_shards, s.function_namespace) == (200, 20, None)
    assert s.discovery == () and s.stall_rules == {} and s.notify is None and s.api_key is None
    assert check_environment({}) == []


def test_conversions_of_each_kind():
    s = load_settings({
        "JOBWATCH_VERIFY_TLS": "off", "JOBWATCH_FANOUT": "Yes", "JOBWATCH_CONCURRENCY": " 64 ",
        "JOBWATCH_POLL_BACKOFF": "2", "JOBWATCH_LEASE_SECONDS": "5m", "JOBWATCH_STALL_RUNNING_SECONDS": "2h",
        "JOBWATCH_HTTP_READ_TIMEOUT": "1.5", "JOBWATCH_NOTIFY_BACKOFF_CAP": "1d", "JOBWATCH_LOG_LEVEL": "DEBUG",
        "JOBWATCH_DISCOVERY": "ap-guangzhou/media-1250000000, ap-beijing/logs-1250000000",
        "JOBWATCH_STALL_RULES": '{"media-1250000000": {"running_seconds": 600}}',
        "JOBWATCH_CI_ENDPOINT": "http://127.0.0.1:8123/", "JOBWATCH_API_KEY": CANARY,
        "JOBWATCH_STORE_URL": "mysql://watch:pw-xyz-123@127.0.0.1:3306/test",
        "JOBWATCH_SECRET_ID": "AKIDexample", "JOBWATCH_SECRET_KEY": "key-abcdef-123",
    })
    assert s.verify_tls is False and s.fanout is True and s.concurrency == 64
    assert s.poll_backoff == 2.0 and s.lease_seconds == 300 and s.stall_running_seconds == 7200
    assert s.http_read_timeout == 1.5 and s.notify_backoff_cap == 86400 and s.log_level == "debug"
    assert s.discovery == (("ap-guangzhou", "media-1250000000"), ("ap-beijing", "logs-1250000000"))
    assert s.stall_rules == {"media-1250000000": {"running_seconds": 600.0}}
    assert s.ci_endpoint == "http://127.0.0.1:8123"
    assert isinstance(s.api_key, Secret) and s.api_key.reveal() == CANARY
    assert isinstance(s.secret_key, Secret) and s.secret_key.reveal() == "key-abcdef-123"
    assert s.store_url.reveal() == "mysql://watch:pw-xyz-123@127.0.0.1:3306/test"
    assert s.store_url_display == "mysql://watch:***@127.0.0.1:3306/test"
    # the store password alone is known to the scrubber (it appears alone in driver errors)
    assert "pw-xyz-123" not in scrub("Access denied for user 'watch' using password pw-xyz-123")
    text = repr(s)
    for secret in (CANARY, "pw-xyz-123", "key-abcdef-123"):
        assert secret not in text


def test_fallback_variables_of_scf():
    s = load_settings({"SCF_FUNCTIONNAME": "ci-jobwatch-dev", "SCF_NAMESPACE": "ops",
                       "TENCENTCLOUD_REGION": "ap-shanghai"})
    # The namespace is not a setting's fallback: fan-out takes it from the invocation context first.
    assert (s.function_name, s.function_namespace, s.default_region) == ("ci-jobwatch-dev", None, "ap-shanghai")
    s = load_settings({"SCF_FUNCTIONNAME": "x", "JOBWATCH_FUNCTION_NAME": "mine"})
    assert s.function_name == "mine"


def test_empty_variable_counts_as_unset():
    assert load_settings({"JOBWATCH_CONCURRENCY": "", "JOBWATCH_API_KEY": "  "}).concurrency == 32


BROKEN = {
    "JOBWATCH_CONCURRENCY": "0",
    "JOBWATCH_POLL_JITTER": "0.9",
    "JOBWATCH_HTTP_MAX_ATTEMPTS": "three",
    "JOBWATCH_VERIFY_TLS": "maybe",
    "JOBWATCH_LOG_LEVEL": "loud",
    "JOBWATCH_LEASE_SECONDS": "10 minutes",
    "JOBWATCH_ROLE_DURATION": "100",
    "JOBWATCH_CONFIRMATIONS": "2.5",
    "JOBWATCH_DISCOVERY": "ap-guangzhou/media-1250000000,Bad_Bucket",
    "JOBWATCH_STALL_RULES": '{"media-1250000000": {"runing_seconds": 5}}',
    "JOBWATCH_CI_ENDPOINT": "ftp://example",
    "JOBWATCH_STORE_URL": f"mysql://watch:{CANARY}@db.internal/",
    "JOBWATCH_SECRET_KEY": CANARY,
    "JOBWATCH_NOTIFY": f"webhook=https://hooks.example/?key={CANARY}",
    "JOBWATCH_CONCURENCY": "8",
    "JOBWATCH_POLL_MIN_SECONDS": "1000",
    "JOBWATCH_TEST_MYSQL_URL": "ignored: reserved prefix",
}


def test_every_problem_is_reported_at_once_naming_variable_and_value():
    with pytest.raises(ConfigError) as info:
        load_settings(BROKEN)
    problems = info.value.problems
    expected = {
        "JOBWATCH_CONCURRENCY='0': must be between 1 and 256",
        "JOBWATCH_POLL_JITTER='0.9': must be between 0 and 0.5",
        "JOBWATCH_HTTP_MAX_ATTEMPTS='three': expected an integer",
        "JOBWATCH_VERIFY_TLS='maybe': expected true or false",
        "JOBWATCH_LOG_LEVEL='loud': expected one of debug, info, warning, error",
        "JOBWATCH_ROLE_DURATION='100': must be between 900 and 43200",
        "JOBWATCH_CONFIRMATIONS='2.5': expected an integer",
        "JOBWATCH_CI_ENDPOINT='ftp://example': expected an http:// or https:// URL with a host",
        "JOBWATCH_CONCURENCY: unknown variable (did you mean JOBWATCH_CONCURRENCY?)",
        "JOBWATCH_POLL_MIN_SECONDS=1000 is above JOBWATCH_POLL_MAX_SECONDS=900",
        "JOBWATCH_SECRET_ID: missing (required when JOBWATCH_SECRET_KEY is set)",
        "JOBWATCH_STORE_URL='mysql://watch:***@db.internal/': "
        "expected mysql://user:password@host:port/database (no database)",
    }
    assert expected <= set(problems), sorted(set(problems) - expected)
    by_var = {p.split("=")[0].split(":")[0] for p in problems}
    assert {"JOBWATCH_LEASE_SECONDS", "JOBWATCH_DISCOVERY", "JOBWATCH_STALL_RULES"} <= by_var
    assert any("Bad_Bucket" in p for p in problems)
    assert any("runing_seconds" in p for p in problems)
    assert not any("JOBWATCH_TEST_" in p for p in problems)
    assert not any("JOBWATCH_NOTIFY" in p for p in problems)  # free-form, parsed by the notify package
    assert len(problems) == 15
    # secrets never shown, in the list or in the exception's text
    assert CANARY not in str(info.value) and CANARY not in repr(info.value.problems)
    # config check also builds the sinks, so a bad JOBWATCH_NOTIFY spec is listed too (without its secret)
    checked = check_environment(BROKEN)
    assert checked[: len(problems)] == problems
    assert len(checked) == 16 and checked[-1].startswith("JOBWATCH_NOTIFY: sink #1")
    assert CANARY not in "\n".join(checked)


def test_secret_values_are_described_not_shown():
    with pytest.raises(ConfigError) as info:
        load_settings({"JOBWATCH_ROLE_ARN": "arn:aws:iam::1:role/x", "JOBWATCH_STORE_URL": f"postgres://u:{CANARY}@h/d"})
    text = str(info.value)
    assert CANARY not in text
    assert "JOBWATCH_STORE_URL='postgres://u:***@h/d': expected a sqlite:/// or mysql:// URL" in text
    assert "JOBWATCH_ROLE_ARN='arn:aws:iam::1:role/x': expected qcs::cam::uin/<uin>:roleName/<name>" in text


def test_toml_file_is_a_base_and_environment_wins(tmp_path):
    f = tmp_path / "jobwatch.toml"
    f.write_text('concurrency = 8\npoll_jitter = 0.2\ndiscovery = ["ap-guangzhou/media-1250000000"]\n'
                 'verify_tls = false\nlease_seconds = "3m"\n'
                 '[stall_rules."tag:nightly"]\nrunning_seconds = 86400\n')
    s = load_settings({"JOBWATCH_CONFIG_FILE": str(f), "JOBWATCH_CONCURRENCY": "4"})
    assert s.concurrency == 4  # variable wins
    assert s.poll_jitter == 0.2 and s.verify_tls is False and s.lease_seconds == 180
    assert s.discovery == (("ap-guangzhou", "media-1250000000"),)
    assert s.stall_rules == {"tag:nightly": {"running_seconds": 86400.0}}
    assert s.config_file == str(f)
    # the path can also be given directly, and a [jobwatch] table is accepted
    g = tmp_path / "other.toml"
    g.write_text("[jobwatch]\nbatch_size = 50\n")
    assert load_settings({}, toml_path=str(g)).batch_size == 50


def test_toml_problems_name_the_key_and_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('concurrency = 0\nconcurency = 3\nverify_tls = "perhaps"\n')
    problems = check_environment({"JOBWATCH_CONFIG_FILE": str(f)})
    assert f"JOBWATCH_CONCURRENCY (concurrency in {f})=0: must be between 1 and 256" in problems
    assert f"concurency: unknown key in {f} (did you mean concurrency?)" in problems
    assert f"JOBWATCH_VERIFY_TLS (verify_tls in {f})='perhaps': expected true or false" in problems
    missing = check_environment({"JOBWATCH_CONFIG_FILE": str(tmp_path / "nope.toml")})
    assert missing == [f"JOBWATCH_CONFIG_FILE={str(tmp_path / 'nope.toml')!r}: no such file"]
    (tmp_path / "broken.toml").write_text("concurrency = = 3\n")
    broken = check_environment({}, toml_path=str(tmp_path / "broken.toml"))
    assert len(broken) == 1 and "cannot read TOML" in broken[0]


def test_markdown_table_lists_every_setting_once():
    table = render_markdown_table()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [d.name for d in SETTINGS]
    assert "| `JOBWATCH_CONCURRENCY` | int 1..256 | `32` |" in table
    assert "| `JOBWATCH_LOG_FORMAT` | auto \\| json \\| console | `auto` |" in table


def test_readme_table_is_in_sync_with_settings():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = config.readme_block(readme)
    assert block is not None, "README.md lacks the config-table markers"
    assert block == render_markdown_table(), "run: jobwatch config table --write README.md"


def test_update_readme_replaces_only_the_block():
    text = f"# t\n\nbefore\n{config.README_START}\nold\n{config.README_END}\nafter\n"
    new = config.update_readme(text)
    assert new.startswith("# t\n\nbefore\n") and new.endswith(f"{config.README_END}\nafter\n")
    assert config.readme_block(new) == render_markdown_table()
    with pytest.raises(ValueError):
        config.update_readme("no markers")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobwatch")
    from jobwatch.cli import config as config_cmd

    config_cmd.register(p.add_subparsers(dest="command"))
    return p


def test_cli_check_lists_every_problem_and_exits_2(monkeypatch, capsys):
    """Exit 2, the code every command gives a configuration problem (issue 16 item 8; it was 1 here only)."""
    for k in list(os.environ):
        if k.startswith("JOBWATCH_"):
            monkeypatch.delenv(k)
    for k, v in BROKEN.items():
        monkeypatch.setenv(k, v)
    args = _parser().parse_args(["config", "check"])
    assert args.func(args) == 2
    out = capsys.readouterr().out
    assert out.startswith("16 configuration problem(s):")
    for p in check_environment(BROKEN):
        assert f"  - {p}" in out
    assert CANARY not in out


def test_cli_check_ok_and_show_masks_secrets(monkeypatch, capsys):
    for k in list(os.environ):
        if k.startswith("JOBWATCH_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("JOBWATCH_API_KEY", CANARY)
    monkeypatch.setenv("JOBWATCH_STORE_URL", f"mysql://u:{CANARY}@127.0.0.1:3306/test")
    args = _parser().parse_args(["config", "check"])
    assert args.func(args) == 0
    assert "configuration ok" in capsys.readouterr().out
    args = _parser().parse_args(["config", "show", "--json"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert shown["JOBWATCH_API_KEY"] == "***" and shown["JOBWATCH_CONCURRENCY"] == 32
    assert shown["JOBWATCH_STORE_URL"] == "mysql://u:***@127.0.0.1:3306/test"
    assert CANARY not in out


def test_cli_table_prints_the_table(capsys):
    args = _parser().parse_args(["config", "table"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == render_markdown_table()


def test_tomli_is_declared_for_python_310():
    """SCF runs 3.10, where tomllib does not exist: the fallback must be a declared runtime dependency."""
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:
        import tomli as toml
    deps = toml.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("tomli") and "python_version < '3.11'" in d for d in deps)


def test_config_check_runs_as_a_module_without_cli(tmp_path):
    """The check works in a bare process too (what `jobwatch config check` wraps)."""
    code = ("import sys; from jobwatch.app.config import check_environment; "
            "p = check_environment(); print('\\n'.join(p)); sys.exit(1 if p else 0)")
    env = {"PATH": os.environ.get("PATH", ""), "JOBWATCH_CONCURRENCY": "999", "JOBWATCH_BATCH_SIZE": "x"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "JOBWATCH_CONCURRENCY='999'" in r.stdout and "JOBWATCH_BATCH_SIZE='x'" in r.stdout


def test_check_environment_accepts_a_valid_notify_spec_and_reports_a_bad_one():
    assert check_environment({"JOBWATCH_NOTIFY": "log://"}) == []
    problems = check_environment({"JOBWATCH_NOTIFY": f"nosuchkind://x?key={CANARY}"})
    assert len(problems) == 1 and "unknown kind 'nosuchkind'" in problems[0] and CANARY not in problems[0]


def test_jobwatch_cli_has_the_config_group(monkeypatch, capsys):
    from jobwatch.cli import main

    for k in list(os.environ):
        if k.startswith("JOBWATCH_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("JOBWATCH_CONFIRMATIONS", "0")
    monkeypatch.setenv("JOBWATCH_LOG_FORMAT", "xml")
    assert main(["config", "check"]) == 2
    out = capsys.readouterr().out
    assert "JOBWATCH_CONFIRMATIONS='0'" in out and "JOBWATCH_LOG_FORMAT='xml'" in out
    monkeypatch.delenv("JOBWATCH_CONFIRMATIONS")
    monkeypatch.delenv("JOBWATCH_LOG_FORMAT")
    assert main(["config", "check"]) == 0


# --- the default store (issue 15 defect 4, issue 16 item 6) -------------------------------------------------------

def test_unset_store_url_on_scf_goes_to_tmp_with_a_warning():
    """Defect: on SCF an unset JOBWATCH_STORE_URL was the relative ``sqlite:///.jobwatch/jobwatch.db``, i.e. a
    directory under the read-only code directory /var/user, so the first write failed."""
    env = {"TENCENTCLOUD_RUNENV": "SCF", "USER_CODE_ROOT": "/var/user/", "HOME": "/home/op"}
    s = load_settings(env)
    assert s.store_url.reveal() == "sqlite:////tmp/jobwatch.db"
    warning = config.store_warning(s.store_url.reveal(), env)
    assert warning is not None and "does not survive instance recycling" in warning
    assert "JOBWATCH_STORE_URL" in warning and "mysql://" in warning
    # A MySQL store on SCF, or SQLite anywhere else, is not warned about.
    assert config.store_warning("mysql://u:pw@10.0.0.1:3306/jw", env) is None
    assert config.store_warning("sqlite:////tmp/jobwatch.db", {"HOME": "/home/op"}) is None


def test_unset_store_url_elsewhere_goes_to_the_users_state_directory():
    """Defect: the default was relative to the current directory, so each directory had its own store."""
    linux = lambda env: load_settings(env).store_url.reveal()  # noqa: E731
    assert linux({"HOME": "/home/op"}) == "sqlite:////home/op/.local/state/ci-jobwatch/jobwatch.db"
    assert linux({"HOME": "/home/op", "XDG_STATE_HOME": "/srv/state"}) == "sqlite:////srv/state/ci-jobwatch/jobwatch.db"
    # The XDG spec: a relative XDG_STATE_HOME is invalid and ignored.
    assert linux({"HOME": "/home/op", "XDG_STATE_HOME": "state"}) == \
        "sqlite:////home/op/.local/state/ci-jobwatch/jobwatch.db"
    assert config.state_dir({"HOME": "/Users/op"}, "darwin") == "/Users/op/Library/Application Support/ci-jobwatch"
    # Characters a URL would misread are quoted, and the store unquotes them back to the same path.
    url = config.default_store_url({"HOME": "/home/o p%2"}, "linux")
    assert url == "sqlite:////home/o%20p%252/.local/state/ci-jobwatch/jobwatch.db"
    # An explicit URL wins everywhere.
    assert load_settings({"TENCENTCLOUD_RUNENV": "SCF", "JOBWATCH_STORE_URL": "sqlite:///:memory:"}) \
        .store_url.reveal() == "sqlite:///:memory:"


def test_the_store_path_round_trips_through_open_store(tmp_path):
    from jobwatch.store import open_store

    url = config.default_store_url({"XDG_STATE_HOME": str(tmp_path / "s t%20")}, "linux")
    store = open_store(url)
    try:
        assert (tmp_path / "s t%20" / "ci-jobwatch" / "jobwatch.db").is_file()
    finally:
        store.close()


def test_the_app_warns_once_when_it_opens_sqlite_on_scf(tmp_path):
    from structlog.testing import capture_logs

    from jobwatch.app.orchestrator import App

    env = {"TENCENTCLOUD_RUNENV": "SCF", "JOBWATCH_STORE_URL": f"sqlite:///{tmp_path}/jw.db"}
    app = App(load_settings(env), environ=env)
    with capture_logs() as logs:
        app.store.counts()
        app.store.counts()
    app.close()
    warned = [e for e in logs if e["event"] == "store_not_durable"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"
    assert "does not survive instance recycling" in warned[0]["reason"]


# --- optional dependencies the configuration needs (issue 15 defect 1) --------------------------------------------

def _check_without(blocked: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`jobwatch config check` in a process where ``blocked`` modules are not installed. Setting
    ``sys.modules[name] = None`` is Python's documented way to make ``import name`` raise ImportError: the same
    error as a package that is absent (the test venv has every extra)."""
    code = ("import sys\n"
            f"for m in {blocked!r}: sys.modules[m] = None\n"
            "from jobwatch.cli import main\n"
            "sys.exit(main(['config', 'check']))\n")
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"), **env}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=60)


def test_config_check_fails_naming_the_extra_a_configured_sink_needs():
    """Defect: a package without the `eb` extra failed every EventBridge send with ModuleNotFoundError (counted
    retryable, then dead letters) while `config check` said the configuration was ok."""
    spec = "eventbridge://eb-1?region=ap-guangzhou;log://"
    r = _check_without(["tencentcloud.eb"], {"JOBWATCH_NOTIFY": spec})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "JOBWATCH_NOTIFY sink #1 (eventbridge) needs the module tencentcloud.eb" in r.stdout
    assert "'eb' extra" in r.stdout and "ci-jobwatch[eb]" in r.stdout
    # the same configuration where the module is installed: ok
    ok = _check_without([], {"JOBWATCH_NOTIFY": spec})
    assert ok.returncode == 0 and "configuration ok" in ok.stdout


def test_config_check_names_the_store_and_fan_out_extras():
    env = {"JOBWATCH_STORE_URL": "mysql://jw:pw-Zq81x@127.0.0.1:3306/jw", "JOBWATCH_FANOUT": "true",
           "JOBWATCH_NOTIFY": "ses://1?from=ops@example.com&to=a@example.com;tdmq-topic://t1?region=ap-guangzhou"}
    r = _check_without(["pymysql", "tencentcloud.scf", "tencentcloud.ses", "tencentcloud.tdmq"], env)
    assert r.returncode == 2
    for extra in ("mysql", "scf", "ses", "tdmq"):
        assert f"'{extra}' extra" in r.stdout, (extra, r.stdout)
    assert "JOBWATCH_STORE_URL (a MySQL store) needs the module pymysql" in r.stdout
    assert "pw-Zq81x" not in r.stdout  # the store password is never shown


def test_every_sink_kind_has_a_class_and_the_sdk_sinks_name_their_extra():
    from jobwatch.notify import spec

    assert {"webhook", "wecom", "dingtalk", "feishu", "lark", "slack", "log"} < set(spec.kinds())
    extras = {k: c.extra for k, c in spec.kinds().items() if c.extra}
    assert extras == {"eventbridge": "eb", "ses": "ses", "tdmq-queue": "tdmq", "tdmq-topic": "tdmq"}
    optional = config._toml.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for cls in spec.kinds().values():
        if cls.extra:
            assert cls.extra in optional and cls.modules
    assert spec.sink_class("webhook+https://x/y").kind == "webhook" and spec.sink_class("nope://x") is None
