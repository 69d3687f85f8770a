"""The CLI follows the function's region rule (``jobwatch.core.regions``), through ``jobwatch.cli:main`` against
the emulator and SQLite: a malformed region is refused before any request, naming the option and the value (exit
2); a well-formed one this version does not know is used, with a warning on stderr ("did you mean" for a near
miss), exactly as a queue message or an API request naming it is taken with a ``region_unknown`` warning.
``config check`` lists unknown configured regions as warnings (exit 0) and malformed ones as problems (exit 2)."""

from __future__ import annotations

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION
from test_cli_operator import _store, env  # noqa: F401  (fixture)

from jobwatch.cli import main
from jobwatch.core.models import JobKey

TOO_LONG = "ap-" + "x" * 20 + "-" + "y" * 10  # the old pattern's shape, longer than the store's 32 characters


@pytest.mark.parametrize("argv, field, value", [
    (["job", "show", "j1", "--bucket", TEST_BUCKET, "--region", TOO_LONG], "--region", TOO_LONG),
    (["track", "j1", "--bucket", TEST_BUCKET, "--region", TOO_LONG], "--region", TOO_LONG),
    (["track", f"{TOO_LONG}/{TEST_BUCKET}/j1"], "job key", TOO_LONG),
    (["discover", "--bucket", TEST_BUCKET, "--region", "ap.guangzhou"], "--region", "ap.guangzhou"),
])
def test_a_malformed_region_is_refused_before_any_request(env, emulator, capsys, argv, field, value):
    before = len(emulator.request_log)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"invalid {field} {value!r}" in err and "Traceback" not in err, err
    assert len(emulator.request_log) == before


def test_an_unknown_region_is_used_with_a_warning(env, emulator, capsys):
    job = emulator.create_job(TEST_BUCKET)
    assert main(["track", job, "--bucket", TEST_BUCKET, "--region", "ap-guangzou"]) == 0
    err = capsys.readouterr().err
    assert "warning: --region: 'ap-guangzou' is not among the" in err and "did you mean ap-guangzhou?" in err
    store = _store(env)
    try:
        assert [tj.key for tj in store.list_jobs()] == [JobKey("ap-guangzou", TEST_BUCKET, job)]
    finally:
        store.close()
    assert main(["history", f"ap-guangzou/{TEST_BUCKET}/{job}"]) == 0
    assert "warning: JOB_ID: 'ap-guangzou'" in capsys.readouterr().err
    assert main(["history", job]) == 0  # placed by the store: nothing typed, nothing to warn about
    assert "warning" not in capsys.readouterr().err


def test_config_check_warns_about_unknown_regions_and_refuses_malformed_ones(env, capsys, monkeypatch):
    monkeypatch.setenv("JOBWATCH_DEFAULT_REGION", "ap-newcity")
    monkeypatch.setenv("JOBWATCH_DISCOVERY", f"{TEST_REGION}/{TEST_BUCKET}, ap-guangzou/{TEST_BUCKET}")
    assert main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert "configuration ok" in out
    assert "warning: JOBWATCH_DEFAULT_REGION: 'ap-newcity' is not among the" in out
    assert "warning: JOBWATCH_DISCOVERY: 'ap-guangzou'" in out and "did you mean ap-guangzhou?" in out
    assert f"'{TEST_REGION}'" not in out
    monkeypatch.setenv("JOBWATCH_DEFAULT_REGION", TOO_LONG)
    monkeypatch.setenv("JOBWATCH_DISCOVERY", f"ap_guangzhou/{TEST_BUCKET}")
    assert main(["config", "check"]) == 2
    out = capsys.readouterr().out
    assert "2 configuration problem(s)" in out and "JOBWATCH_DEFAULT_REGION" in out and "ap_guangzhou" in out
