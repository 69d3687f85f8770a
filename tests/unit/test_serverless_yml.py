"""serverless.yml stays deployable: the handler resolves, every variable is a known setting, secrets are only
referenced, and every trigger it declares has a sample event in events/ (which the handler tests run)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobwatch.app import config

ROOT = Path(__file__).resolve().parents[2]
ENV_REF = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")
# Trigger type -> the file-name prefixes of the samples in events/ that must exist for it.
TRIGGER_SAMPLES: dict[str, tuple[str, ...]] = {
    "timer": ("timer",),
    "ckafka": ("ckafka",),
    "cmq": ("cmq_topic",),
    "apigw": ("apigw_",),
}
# An API Gateway endpoint whose path is here also needs this sample (CI's callbacks through API Gateway).
ENDPOINT_SAMPLES = {"/callback": "callback_"}


@pytest.fixture(scope="module")
def sls() -> dict:
    with open(ROOT / "serverless.yml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def test_component_and_function_basics(sls):
    assert sls["component"] == "scf"
    inputs = sls["inputs"]
    assert inputs["runtime"] == "Python3.10"
    assert inputs["memorySize"] == 128
    assert inputs["timeout"] == 300
    assert inputs["role"], "an execution role, so credentials come from the role"
    assert inputs["src"]["src"] == "./build/package"


def test_src_is_where_the_package_command_writes():
    from jobwatch.packaging import build as packaging

    assert Path(ROOT / "build/package") == Path(ROOT / packaging.DEFAULT_OUT)


def test_handler_resolves_to_main_handler(sls, tmp_path):
    """index.main_handler -> handler/index.py (copied to the package root) must define main_handler(event, context).

    Imported in a separate process with its working directory in tmp_path, so whatever the module does at import
    (building the app from defaults) lands there and not in the repository.
    """
    module, _, func = sls["inputs"]["handler"].partition(".")
    path = ROOT / "handler" / f"{module}.py"
    assert path.is_file(), f"{path} is missing"
    code = (
        "import importlib.util, inspect, json, sys\n"
        f"spec = importlib.util.spec_from_file_location({module!r}, {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"f = getattr(m, {func!r}, None)\n"
        "print(json.dumps({'callable': callable(f),"
        " 'params': len(inspect.signature(f).parameters) if callable(f) else -1}))\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT / "lib"), "HOME": str(tmp_path),
           "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"callable": True, "params": 2}


def test_every_variable_is_a_known_setting_and_secrets_are_only_referenced(sls):
    variables = sls["inputs"]["environment"]["variables"]
    assert variables, "the function needs at least its store"
    unknown = sorted(set(variables) - set(config.BY_NAME))
    assert not unknown, f"not settings of jobwatch.config: {unknown}"
    for name, value in variables.items():
        assert isinstance(value, str), f"{name}: quote it, SCF variables are strings"
        if config.BY_NAME[name].secret:
            m = ENV_REF.match(value)
            assert m and m.group(1) == name, f"{name} is secret: write ${{env:{name}}}, not a value"
    size = sum(len(k) + len(v) for k, v in variables.items())
    assert size < 4096, "SCF allows 4 KB of user variables"


def test_resolved_variables_make_a_valid_configuration(sls, env_example):
    """With .env.example's values substituted, the function's environment passes the config check."""
    resolved = {}
    for name, value in sls["inputs"]["environment"]["variables"].items():
        m = ENV_REF.match(value)
        if m:
            assert m.group(1) in env_example, f"{m.group(1)} is referenced but not in .env.example"
            value = env_example[m.group(1)]
        resolved[name] = value
    assert config.check_environment(resolved) == []
    settings = config.load_settings(resolved)
    assert settings.log_format == "json"
    assert settings.safety_margin_seconds < sls["inputs"]["timeout"]


def test_every_env_reference_is_in_env_example(sls, env_example):
    refs = set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", json.dumps(sls)))
    assert refs and not sorted(refs - set(env_example))
    known_or_deploy = {n for n in env_example if n.startswith("JOBWATCH_")}
    assert known_or_deploy <= set(config.BY_NAME)


def _triggers(sls) -> list[tuple[str, dict]]:
    out = []
    for item in sls["inputs"]["events"]:
        assert isinstance(item, dict) and len(item) == 1, item
        (kind, body), = item.items()
        out.append((kind, body["parameters"]))
    return out


def test_triggers_are_enabled_and_well_formed(sls):
    triggers = _triggers(sls)
    kinds = [k for k, _ in triggers]
    assert {"timer", "ckafka", "apigw"} <= set(kinds)
    for kind, params in triggers:
        if kind != "apigw":
            assert params.get("enable") is True, f"{kind}: write enable: true (a missing value means closed)"
        if kind == "timer":
            assert len(params["cronExpression"].split()) == 7, "SCF cron has 7 fields"
            assert json.loads(params["argument"]) == {}
        if kind == "ckafka":
            assert 1 <= params["maxMsgNum"] <= 10000 and params["timeout"] <= 60
    apigw = dict(triggers)["apigw"]
    routes = {(e["method"], e["path"]) for e in apigw["endpoints"]}
    assert routes == {("POST", "/jobs"), ("GET", "/jobs/{jobId}"), ("GET", "/jobs/{jobId}/children"),
                      ("POST", "/callback"),
                      # the status page (lib/jobwatch/web/routes.py): every route it serves
                      ("GET", "/ui"), ("POST", "/ui/login"), ("POST", "/ui/logout"), ("GET", "/ui/jobs/{jobId}"),
                      ("POST", "/ui/jobs/{jobId}/untrack"), ("POST", "/ui/outbox/{noticeId}/retry"),
                      ("GET", "/ui/static/{file}")}
    for e in apigw["endpoints"]:  # every path parameter is declared, so API Gateway passes it on
        for name in re.findall(r"\{(\w+)\}", e["path"]):
            assert any(p["name"] == name and p["position"] == "PATH" for p in e.get("param", ())), e["path"]


def test_every_declared_trigger_has_a_sample_event(sls):
    events_dir = ROOT / "events"
    samples = sorted(p.name for p in events_dir.glob("*.json")) if events_dir.is_dir() else []
    missing = []
    for kind, params in _triggers(sls):
        assert kind in TRIGGER_SAMPLES, f"no sample mapping for trigger type {kind!r}: add one"
        needed = list(TRIGGER_SAMPLES[kind])
        if kind == "apigw":
            needed += [ENDPOINT_SAMPLES[e["path"]] for e in params["endpoints"] if e["path"] in ENDPOINT_SAMPLES]
        for prefix in needed:
            found = [s for s in samples if s.startswith(prefix)]
            if not found:
                missing.append(f"{kind}: events/{prefix}*.json")
            for name in found:
                json.loads((events_dir / name).read_text(encoding="utf-8"))
    assert not missing, f"samples missing: {missing}"
