"""The deploy package runs on SCF whatever machine built it (issue 15).

The package is built the way an operator builds it on an ordinary machine: `jobwatch package` installed under the
machine's default Python (3.11 here, not SCF's 3.10), with EventBridge, TDMQ and SES sinks configured in
serverless.yml's variables through ``.env``. It is then run the way SCF runs it: a CPython 3.10 interpreter,
isolated (``-I -S``: no site-packages, no user site, no PYTHON* variables; ``-B``: nothing compiled at run time,
as SCF sets PYTHONDONTWRITEBYTECODE), with the package directory as the only path beyond the standard library.
It imports ``index``, answers a timer event against the emulator on 127.0.0.1 (discovering, polling, recording),
and each Tencent sink sends the resulting notices through the real SDK to a loopback stand-in of the API.

Where the interpreters come from: this machine image (and CI's, which runs on the same kind of machine) carries
pyenv's CPython builds under ``$PYENV_ROOT/versions`` (``/root/.pyenv/versions/3.10.*``, ``3.11.*``). The test
looks there, then for ``python3.10`` on PATH; ``JOBWATCH_TEST_PY310`` / ``JOBWATCH_TEST_BUILD_PYTHON`` name
others. A missing interpreter fails the test (it never skips): without it nothing shows the package works.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID
from fixtures.tencent_api import FakeTencentApi

ROOT = Path(__file__).resolve().parents[2]
PYENV = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
TARGET = "3.10"
EVENT_BUS = "eb-smoke"


def notify_spec(endpoint: str | None = None) -> str:
    """Every Tencent Cloud sink kind: EventBridge, a TDMQ CMQ queue and an SES template mail."""
    e = f"&endpoint={endpoint}" if endpoint else ""
    return (f"eventbridge://{EVENT_BUS}?region={TEST_REGION}{e};tdmq-queue://jobwatch-q?region={TEST_REGION}{e};"
            f"ses://1001?region={TEST_REGION}&from=ops@example.com&to=team@example.com{e}")
PROBE = "import sys; print('%d.%d %s %s' % (*sys.version_info[:2], sys.implementation.name, sys.executable))"


def _probe(python: str) -> tuple[str, str] | None:
    """``("3.10", real executable)`` of a CPython, or None when ``python`` does not run (e.g. a pyenv shim of a
    version that is not selected)."""
    try:
        r = subprocess.run([python, "-I", "-c", PROBE], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    parts = r.stdout.split()
    if r.returncode != 0 or len(parts) != 3 or parts[1] != "cpython":
        return None
    return parts[0], parts[2]


def _find(version: str | None, override: str) -> tuple[str, str] | None:
    named = os.environ.get(override)
    if named:
        return _probe(named)
    if version is None:  # the machine's default Python: what `python3` runs
        found = shutil.which("python3")
        return _probe(found) if found else None
    candidates = sorted(glob.glob(str(PYENV / "versions" / f"{version}.*" / "bin" / "python")), reverse=True)
    candidates += [p for p in [shutil.which(f"python{version}")] if p]
    for c in candidates:
        got = _probe(c)
        if got and got[0] == version:
            return got
    return None


@pytest.fixture(scope="module")
def py310() -> str:
    got = _find(TARGET, "JOBWATCH_TEST_PY310")
    if got is None or got[0] != TARGET:
        pytest.fail(f"no CPython {TARGET} interpreter (looked in {PYENV}/versions/{TARGET}.* and for python{TARGET} "
                    f"on PATH; set JOBWATCH_TEST_PY310): SCF's runtime cannot be stood in for", pytrace=False)
    return got[1]


@pytest.fixture(scope="module")
def build_python() -> str:
    got = _find(None, "JOBWATCH_TEST_BUILD_PYTHON")
    if got is not None and got[0] == TARGET:  # the machine's default is the target: build with a newer one
        newer = sorted(glob.glob(str(PYENV / "versions" / "3.1[1-9].*" / "bin" / "python")))
        got = _probe(newer[0]) if newer else None
    if got is None:
        pytest.fail("no Python other than the target to build with (python3, or set JOBWATCH_TEST_BUILD_PYTHON)",
                    pytrace=False)
    return got[1]


def _uv() -> str:
    import uv  # the `package` extra, which the test extra includes

    return str(uv.find_uv_bin())


def _env(**extra: str) -> dict[str, str]:
    """This environment without the test venv's influence or any jobwatch setting."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JOBWATCH_", "PYTHON", "VIRTUAL_ENV", "TENCENTCLOUD_", "SCF_"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def package(tmp_path_factory, build_python, py310) -> dict:
    """`jobwatch package` run from a venv of the machine's default Python, as an operator would."""
    tmp = tmp_path_factory.mktemp("smoke")
    venv = tmp / "venv"
    uv = _uv()
    t0 = time.monotonic()
    subprocess.run([uv, "venv", "-q", "--python", build_python, str(venv)], check=True, env=_env(), timeout=120)
    r = subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-e",
                        f"{ROOT}[package]"], capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # The deploy configuration: serverless.yml's variable refers to .env, where the sink is configured.
    deploy = tmp / "deploy"
    deploy.mkdir()
    (deploy / "serverless.yml").write_text(
        "component: scf\ninputs:\n  runtime: Python3.10\n  environment:\n    variables:\n"
        "      JOBWATCH_NOTIFY: ${env:JOBWATCH_NOTIFY}\n      JOBWATCH_LOG_FORMAT: json\n")
    (deploy / ".env").write_text(f"JOBWATCH_NOTIFY='{notify_spec()}'\n")
    out = tmp / "package"
    cmd = [str(venv / "bin" / "jobwatch"), "package", "--out", str(out), "--zip", str(tmp / "pkg.zip"),
           "--serverless", str(deploy / "serverless.yml")]
    if os.environ.get("JOBWATCH_TEST_PY310"):
        cmd += ["--compile-python", py310]  # the build finds pyenv's on its own, not one named only here
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"))
    built = {"out": out, "stdout": r.stdout, "stderr": r.stderr, "rc": r.returncode, "venv": venv,
             "seconds": time.monotonic() - t0}
    print(f"\nsmoke package built with {build_python} in {built['seconds']:.1f} s: {r.stdout.strip()}")
    return built


def test_the_build_ran_on_another_python_than_the_target(package, build_python):
    assert package["rc"] == 0, package["stdout"] + package["stderr"][-3000:]
    version = subprocess.run([str(package["venv"] / "bin" / "python"), "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True).stdout
    assert not version.startswith(TARGET), f"the build must run on another Python than {TARGET}: {version}"
    assert "extras: eb, tdmq, ses;" in package["stdout"] and "resolved by uv for CPython 3.10" in package["stdout"]
    assert "extra eb: JOBWATCH_NOTIFY sink #1 (eventbridge)" in package["stderr"]
    assert "extra ses: JOBWATCH_NOTIFY sink #3 (ses)" in package["stderr"]
    assert "not precompiled" not in package["stdout"], package["stdout"]


def test_markers_are_evaluated_for_the_target(package):
    """Defect: pip on 3.11 evaluated ``typing-extensions; python_version < '3.11'`` (structlog's) for 3.11 and left
    it out; the package crashed at import on SCF's 3.10. tomli (ours, same marker) too."""
    out = package["out"]
    assert (out / "typing_extensions.py").is_file()
    assert (out / "tomli" / "__init__.py").is_file()
    for product in ("eb", "tdmq", "ses"):
        assert (out / "tencentcloud" / product).is_dir(), f"the configured {product} sink's SDK"
    assert not (out / "tencentcloud" / "scf").exists(), "fan-out is not configured: no SCF SDK"
    assert not (out / "pymysql").exists(), "no MySQL store configured: no driver shipped"


def test_pyc_files_are_compiled_by_310(package, py310):
    """Bytecode is version-specific: the build (on another Python) compiled with a 3.10 interpreter."""
    magic = subprocess.run([py310, "-I", "-c", "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"],
                           capture_output=True, text=True).stdout.strip()
    pycs = list((package["out"] / "jobwatch").rglob("*.pyc"))
    sources = list((package["out"] / "jobwatch").rglob("*.py"))
    assert len(pycs) == len(sources) > 50
    for pyc in pycs:
        head = pyc.read_bytes()[:8]
        assert ".cpython-310." in pyc.name and head[:4].hex() == magic, pyc
        assert int.from_bytes(head[4:8], "little") == 0b01, pyc  # unchecked hash: valid whatever the mtimes


@pytest.fixture
def role_keys(emulator):
    """Temporary keys, as SCF passes an execution role's (the emulator issues and accepts them)."""
    return emulator.issue_token(TEST_SECRET_ID)


@pytest.fixture
def tencent(role_keys):
    """The loopback stand-in of the Tencent Cloud API, answering each action as the service does."""
    tmp_id, tmp_key, _ = role_keys
    api = FakeTencentApi({tmp_id: tmp_key})
    api.answer = lambda call: {"SendCmqMsg": {"Result": True, "MsgId": "msg-1"},
                               "SendEmail": {"MessageId": "qcloudses-smoke"}}.get(call["action"], {})
    yield api
    api.close()


SCF_RUN = r"""
import json, sys, sysconfig
sys.path.insert(0, sys.argv[1])          # /var/user on SCF
import index
event = {"Type": "Timer", "TriggerName": "tick", "Time": "2026-01-01T00:01:00Z", "Message": "{}"}
context = {"request_id": "smoke-1", "function_name": "ci-jobwatch-smoke", "namespace": "default",
           "function_version": "$LATEST", "time_limit_in_ms": 60000, "memory_limit_in_mb": 128,
           "tencentcloud_region": "ap-guangzhou", "environ": "", "environment": "{}"}
answer = index.main_handler(event, context)
json.dumps(answer)                       # SCF serialises the return value itself
sinks = [type(s).__name__ for s in index._app.sinks]
files = sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())} - {""})
print("SMOKE " + json.dumps({"answer": answer, "sinks": sinks, "files": files, "version": sys.version,
                             "path": sys.path, "stdlib": sysconfig.get_paths()["stdlib"]}))
"""


def test_the_package_answers_a_timer_event_under_python_310_as_scf_runs_it(package, py310, emulator, role_keys,
                                                                          tencent, tmp_path):
    assert package["rc"] == 0, package["stderr"][-3000:]
    out = package["out"]
    job_ids = [emulator.create_job(TEST_BUCKET) for _ in range(3)]
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    env = {  # what SCF gives the function, plus the deployed variables pointed at the loopback stand-ins
        "PATH": "/usr/bin:/bin", "TZ": "UTC", "HOME": str(tmp_path), "TENCENTCLOUD_RUNENV": "SCF",
        "USER_CODE_ROOT": str(out), "TRIGGER_SRC": "timer", "TENCENTCLOUD_REGION": TEST_REGION,
        "TENCENTCLOUD_SECRETID": role_keys[0], "TENCENTCLOUD_SECRETKEY": role_keys[1],
        "TENCENTCLOUD_SESSIONTOKEN": role_keys[2],
        "JOBWATCH_STORE_URL": f"sqlite:///{tmp_path / 'jobwatch.db'}",
        "JOBWATCH_CI_ENDPOINT": emulator.url, "JOBWATCH_DISCOVERY": f"{TEST_REGION}/{TEST_BUCKET}",
        "JOBWATCH_NOTIFY": notify_spec(tencent.endpoint),
        "JOBWATCH_LOG_FORMAT": "json", "JOBWATCH_HTTP_MAX_ATTEMPTS": "1",
    }
    r = subprocess.run([py310, "-I", "-S", "-B", "-c", SCF_RUN, str(out)], cwd=out, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("SMOKE "))
    info = json.loads(line[len("SMOKE "):])
    assert info["version"].startswith(TARGET)
    # Isolation: every module came from the package or the interpreter's standard library.
    stdlib = info["stdlib"]
    for f in info["files"]:
        assert f.startswith((str(out) + os.sep, stdlib + os.sep)), f"{f}: not from the package or the stdlib"
    assert [p for p in info["path"] if not p.startswith(os.path.dirname(stdlib))] == [str(out)]
    logs = "\n".join(ln for ln in r.stdout.splitlines() if not ln.startswith("SMOKE "))[-4000:]
    for product in ("eb", "tdmq", "ses"):
        assert any(f.startswith(str(out / "tencentcloud" / product)) for f in info["files"]), (product, logs)
    # The timer tick: discovered the emulator's jobs, polled them, recorded and delivered their notices.
    answer = info["answer"]
    assert answer["ok"] is True and answer["action"] == "timer", logs
    assert answer["discovered"] == 3 and answer["polled"] == 3 and answer["errors"] == 0, logs
    assert answer["notices_queued"] == 3 and answer["notices_failed"] == answer["notices_dead"] == 0, logs
    assert answer["notices_delivered"] == 3, logs  # every notice taken by every sink ...
    assert answer["deliveries"] == 3 * 3, logs  # ... each notice to each of the three sinks
    assert info["sinks"] == ["EventBridgeSink", "TdmqQueueSink", "SesSink"]
    # ... each through the real SDK, signed with SCF's temporary keys, once per job and sink.
    assert tencent.rejected == []
    assert all(c["token"] == role_keys[2] and c["region"] == TEST_REGION for c in tencent.calls)
    by_action = {a: [c for c in tencent.calls if c["action"] == a] for a in ("PutEvents", "SendCmqMsg", "SendEmail")}
    assert {a: len(cs) for a, cs in by_action.items()} == {"PutEvents": 3, "SendCmqMsg": 3, "SendEmail": 3}, logs
    assert {c["params"]["EventBusId"] for c in by_action["PutEvents"]} == {EVENT_BUS}
    sent = {json.loads(c["params"]["EventList"][0]["Data"])["job"]["job_id"] for c in by_action["PutEvents"]}
    assert sent == set(job_ids)
    assert {json.loads(c["params"]["MsgContent"])["job"]["job_id"] for c in by_action["SendCmqMsg"]} == set(job_ids)
    # Nothing written into the package (SCF's code directory is read-only).
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
