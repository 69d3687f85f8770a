"""The deploy commands written in README.md and serverless.yml exist in the CLIs that run them.

Defect (issue 15 #3): the README said `scf invoke --function ci-jobwatch-dev --event events/direct_poll.json`;
the CLI has no `--event` (it takes `--path`/`--data`), and `--function` names a function of a multi-function app
(`component: multi-scf`), not of ours. serverless.yml's header said `scf invoke --inputs ...` (`--inputs` is a
`deploy` option).

The options below are those of Tencent's serverless-cloud-framework CLI (`scf`), from its own command docs
(docs/commands/{deploy,invoke,logs}.md and `scf <command> --help` in Serverlesstencent/serverless-cloud-framework;
the older `sls` of serverless/serverless-tencent has the same). `jobwatch` commands are checked against our own
parser.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from jobwatch.cli.commands import build_parser

ROOT = Path(__file__).resolve().parents[2]

# command -> {option: takes a value}
SCF_OPTIONS: dict[str, dict[str, bool]] = {
    "deploy": {"--stage": True, "-s": True, "--target": True, "--inputs": True, "--profile": True, "--login": False,
               "--force": False, "--noCache": False, "--noValidation": False, "--debug": False},
    "invoke": {"--function": True, "-f": True, "--target": True, "--stage": True, "-s": True, "--region": True,
               "-r": True, "--data": True, "-d": True, "--path": True, "-p": True, "--namespace": True, "-n": True,
               "--qualifier": True, "-q": True},
    "logs": {"--function": True, "-f": True, "--target": True, "--stage": True, "-s": True, "--startTime": True,
             "--tail": False, "-t": False, "--interval": True, "-i": True, "--region": True, "-r": True,
             "--namespace": True, "-n": True, "--qualifier": True, "-q": True},
    "remove": {"--stage": True, "-s": True, "--target": True, "--profile": True, "--debug": False},
    "info": {"--stage": True, "-s": True, "--profile": True},
}
MULTI_FUNCTION_ONLY = {"--function", "-f"}  # "单函数组件无需指定": only multi-scf apps name a function


def _snippets() -> list[tuple[str, str]]:
    """(where, command line) of every `scf ...`, `sls ...` and `jobwatch ...` command in the README's code spans
    and blocks and in serverless.yml's comments."""
    out: list[tuple[str, str]] = []
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    spans = re.findall(r"`([^`\n]+)`", readme)
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S):
        spans.extend(block.splitlines())
    for span in spans:
        out.extend(("README.md", c) for c in _commands(span))
    for line in (ROOT / "serverless.yml").read_text(encoding="utf-8").splitlines():
        comment = line.partition("#")[2] if line.lstrip().startswith("#") else ""
        out.extend(("serverless.yml", c) for c in _commands(comment.split(" # ")[0]))
    return out


def _commands(text: str) -> list[str]:
    found = []
    for m in re.finditer(r"(?:^|[\s(;&|])((?:\.venv/bin/)?(?:scf|sls|jobwatch) [a-z][^;&|(]*)", text):
        found.append(re.split(r"\s{2,}", m.group(1).strip())[0].rstrip(".,)"))  # a comment follows 2 spaces
    return found


def test_the_docs_have_deploy_commands_to_check():
    tools = {cmd.split()[0].rsplit("/", 1)[-1] for _, cmd in _snippets()}
    assert {"scf", "jobwatch"} <= tools


@pytest.mark.parametrize("where,cmd", [s for s in _snippets() if s[1].split()[0] in ("scf", "sls")])
def test_scf_commands_use_only_documented_options(where, cmd):
    words = shlex.split(cmd)
    sub = words[1]
    assert sub in SCF_OPTIONS, f"{where}: `{cmd}`: `{words[0]} {sub}` is not a command of the CLI"
    if len(words) > 2 and words[2] == "local":
        pytest.fail(f"{where}: `{cmd}`: `invoke local` pastes the event into Python source; use our own tests")
    options = SCF_OPTIONS[sub]
    component = yaml.safe_load((ROOT / "serverless.yml").read_text(encoding="utf-8"))["component"]
    i = 2
    while i < len(words):
        opt = words[i]
        assert opt in options, f"{where}: `{cmd}`: {opt} is not an option of `scf {sub}` ({sorted(options)})"
        assert not (component == "scf" and opt in MULTI_FUNCTION_ONLY), \
            f"{where}: `{cmd}`: {opt} names a function of a multi-function app; ours is component: scf"
        if options[opt]:
            assert i + 1 < len(words), f"{where}: `{cmd}`: {opt} needs a value"
            value = words[i + 1]
            if opt in ("--path", "-p"):
                assert (ROOT / value).is_file(), f"{where}: `{cmd}`: no file {value}"
                json.loads((ROOT / value).read_text(encoding="utf-8"))
            if opt in ("--data", "-d"):
                json.loads(value)  # the CLI refuses data that is not serialised JSON
            i += 2
        else:
            i += 1


@pytest.mark.parametrize("where,cmd", [s for s in _snippets() if s[1].split()[0].endswith("jobwatch")
                                       and s[1].split()[1] == "package"])
def test_package_commands_parse(where, cmd):
    words = [w for w in shlex.split(cmd)[1:] if w != "..."]
    try:
        build_parser().parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"{where}: `{cmd}` does not parse (exit {exc.code})")


def test_runtime_comment_names_a_flag_the_deploy_command_has():
    """serverless.yml says what to do if the schema refuses Python3.10: that flag must be a `scf deploy` option."""
    text = (ROOT / "serverless.yml").read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("runtime:"))
    assert "Python3.10" in line and "scf deploy --noValidation" in line
    assert "--noValidation" in SCF_OPTIONS["deploy"]
