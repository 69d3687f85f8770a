"""The deploy package: built for SCF's CPython 3.10 on manylinux2014 x86_64, stripped, precompiled, under budget,
and importable from the package directory alone (as SCF does, with the package as the only extra path)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jobwatch.packaging import build as packaging
from jobwatch.cli import main as cli_main
from jobwatch.packaging.build import PackageError, PackageOptions, build_package, runtime_requirements

ROOT = Path(__file__).resolve().parents[2]
HANDLER = ROOT / "handler" / "index.py"
TARGET = (3, 10)
# manylinux tags a CentOS 7 (glibc 2.17) x86_64 machine can load.
NATIVE_TAG = re.compile(r"^cp310-(cp310|abi3)-(manylinux1|manylinux2010|manylinux2014|manylinux_2_(\d+))_x86_64$")
# Pure wheels run anywhere; some (tencentcloud-sdk-python-common) declare only "py2" in WHEEL yet are py3 code.
PURE_TAG = re.compile(r"^(py\d+|cp310)(\.py\d+)*-none-any$")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build through the CLI (`jobwatch package`), as an operator runs it."""
    tmp = tmp_path_factory.mktemp("pkg")
    out, zip_path = tmp / "package", tmp / "ci-jobwatch.zip"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        # serverless.yml's variables choose the extras (fan-out: scf); --extras adds the MySQL driver
        argv = ["package", "--out", str(out), "--zip", str(zip_path), "--extras", "mysql"]
        if not HANDLER.is_file():
            # TODO(lead): drop this branch once handler/index.py exists; the CLI then requires it.
            result = build_package(PackageOptions(root=ROOT, out=out, zip_path=zip_path, require_handler=False))
            assert result.notes == ["handler/index.py missing: package has no entry point"]
        else:
            assert cli_main(argv) == 0
    return out, zip_path


def _glibc_minor(m: re.Match[str]) -> int:
    legacy = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}
    return int(m.group(3)) if m.group(3) else legacy[m.group(2)]


def _files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def test_dependency_wheels_match_the_target(built):
    out, _ = built
    wheels = {}
    for wheel in out.glob("*.dist-info/WHEEL"):
        text = wheel.read_text()
        tags = re.findall(r"^Tag: (.+)$", text, re.M)
        purelib = "Root-Is-Purelib: true" in text
        wheels[wheel.parent.name.split("-")[0].lower()] = (purelib, tags)
    assert {"lxml", "requests", "structlog", "pymysql", "tomli", "tencentcloud_sdk_python_common",
            "tencentcloud_sdk_python_scf"} <= set(wheels)
    for name, (purelib, tags) in wheels.items():
        assert tags, name
        for tag in tags:
            if purelib:
                assert PURE_TAG.match(tag) or NATIVE_TAG.match(tag), f"{name}: {tag}"
            else:
                assert NATIVE_TAG.match(tag), f"{name}: native wheel tag {tag} is not CPython 3.10 manylinux x86_64"
        if not purelib:
            # A compressed tag set (2014.2_17.2_28) runs wherever any one tag does: one must fit glibc 2.17.
            glibc = [_glibc_minor(NATIVE_TAG.match(t)) for t in tags]
            assert min(glibc) <= 17, f"{name}: {tags} all need glibc newer than CentOS 7's 2.17"
    assert wheels["lxml"][0] is False  # native: the one that breaks when built for the wrong Python


def test_native_libraries_are_x86_64_elf_for_cpython_310(built):
    out, _ = built
    sos = [p for p in _files(out) if p.suffix == ".so" or ".so." in p.name]
    assert any(p.name.startswith("etree.") for p in sos)
    for so in sos:
        assert so.name.endswith((".cpython-310-x86_64-linux-gnu.so", ".abi3.so")) or ".libs" in so.parts[-2], so
        head = so.read_bytes()[:20]
        assert head[:4] == b"\x7fELF" and head[4] == 2, so  # 64-bit ELF
        assert int.from_bytes(head[18:20], "little") == 0x3E, so  # e_machine x86_64


def test_no_tests_caches_tools_or_records(built):
    out, _ = built
    rel = [p.relative_to(out) for p in _files(out)]
    for r in rel:
        assert not {"tests", "test"} & set(r.parts[:-1]), r
        assert not (r.name == "RECORD" and r.parent.name.endswith(".dist-info")), r
        assert r.suffix not in (".pyi", ".pyx", ".pxd", ".h", ".c"), r
        assert r.parts[0] != "bin", r
        if r.suffix == ".pyc":
            assert r.parent.name == "__pycache__" and ".cpython-310." in r.name, r
    assert not (out / "jobwatch" / "emulator").exists(), "the emulator is a development tool"
    assert (out / "jobwatch" / "__init__.py").is_file()
    if HANDLER.is_file():
        assert (out / "index.py").read_bytes() == HANDLER.read_bytes()


def test_every_module_is_precompiled_for_310_with_unchecked_hashes(built):
    out, _ = built
    sources = [p for p in _files(out) if p.suffix == ".py"]
    assert len(sources) > 100
    for src in sources:
        pyc = Path(importlib.util.cache_from_source(str(src)))
        assert pyc.is_file(), src
        head = pyc.read_bytes()[:8]
        assert head[:4] == importlib.util.MAGIC_NUMBER, src
        # flags: bit 0 = hash-based, bit 1 = check source; unchecked survives any mtime the unzip gives
        assert int.from_bytes(head[4:8], "little") == 0b01, src


def test_zip_is_under_budget_complete_and_deterministic(built, tmp_path):
    out, zip_path = built
    size = zip_path.stat().st_size
    assert size < packaging.SIZE_BUDGET_BYTES, f"{size / 1e6:.2f} MB"
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(zf.namelist())
        assert zf.testzip() is None
    expected = sorted(p.relative_to(out).as_posix() for p in _files(out) if p.name != packaging.MARKER)
    assert names == expected
    if HANDLER.is_file():
        assert "index.py" in names  # at the root, where SCF looks for index.main_handler
    again = tmp_path / "again.zip"
    packaging._zip(out, again)
    assert again.read_bytes() == zip_path.read_bytes()
    print(f"\npackage zip: {size / 1e6:.2f} MB, {len(names)} entries")


def test_handler_imports_from_the_package_alone(built):
    """-I -S: no user site, no site-packages, no PYTHON* variables; the package directory is the only added path,
    as /var/user is on SCF. -B: nothing may be compiled at run time (SCF sets PYTHONDONTWRITEBYTECODE)."""
    out, _ = built
    before = _files(out)
    modules = ["jobwatch.app.config", "jobwatch.app.logs", "jobwatch.ci.xmlparse", "lxml.etree", "pymysql",
               "tencentcloud.scf.v20180416.scf_client", "requests", "structlog"]
    entry = "index" if HANDLER.is_file() else "jobwatch"
    code = (
        "import importlib, json, sys\n"
        f"sys.path.insert(0, {str(out)!r})\n"
        f"m = importlib.import_module({entry!r})\n"
        f"mods = [importlib.import_module(n) for n in {modules!r}]\n"
        "print(json.dumps({'files': [x.__file__ for x in [m, *mods]],"
        " 'handler': callable(getattr(m, 'main_handler', None))}))\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(out.parent)}
    r = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], cwd=out.parent, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    for f in info["files"]:
        assert f.startswith(str(out) + os.sep), f"{f} was not loaded from the package"
    if HANDLER.is_file():
        assert info["handler"] is True
    assert _files(out) == before


def test_the_status_pages_script_and_stylesheet_ship_and_are_served_from_the_package(built):
    """lib/jobwatch/web/static holds the only non-Python files of our own code: the page is unstyled and inert
    on SCF if the package leaves them out."""
    out, zip_path = built
    names = set(zipfile.ZipFile(zip_path).namelist())
    assert {"jobwatch/web/static/app.css", "jobwatch/web/static/app.js"} <= names
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(out)!r})\n"
        "from jobwatch.web import routes\n"
        "r = routes._static('app.js')\n"
        "print(r.status, routes.__file__.startswith(sys.path[0]), 'X-Jobwatch-Partial' in r.body)\n"
    )
    r = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], cwd=out.parent, capture_output=True,
                       text=True, timeout=60, env={"PATH": os.environ.get("PATH", ""), "HOME": str(out.parent)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["200", "True", "True"]


def test_requirements_come_from_pyproject_with_markers_for_the_target(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "ci-jobwatch"\nversion = "0"\n'
        'dependencies = ["requests>=2", "tomli>=1.1; python_version < \'3.11\'"]\n'
        '[project.optional-dependencies]\nmysql = ["PyMySQL>=1.1"]\nscf = ["tencentcloud-sdk-python-scf"]\n'
        'all = ["ci-jobwatch[mysql,scf]"]\n')
    assert runtime_requirements(pyproject, ["mysql"], "3.10") == ["requests>=2", "tomli>=1.1", "PyMySQL>=1.1"]
    assert runtime_requirements(pyproject, ["all"], "3.12") == ["requests>=2", "PyMySQL>=1.1",
                                                                "tencentcloud-sdk-python-scf"]
    with pytest.raises(PackageError, match="extra 'nosuch' is not in"):
        runtime_requirements(pyproject, ["nosuch"])
    # the real project: the defaults are what SCF needs
    real = runtime_requirements(ROOT / "pyproject.toml", ("mysql", "scf"), "3.10")
    assert any(r.startswith("lxml") for r in real) and any(r.startswith("PyMySQL") for r in real)
    assert not any(r.startswith(("pytest", "cos-python-sdk", "pyyaml", "hypothesis")) for r in real)


def test_refuses_to_delete_a_directory_it_did_not_make(tmp_path):
    victim = tmp_path / "mine"
    victim.mkdir()
    (victim / "important.txt").write_text("keep")
    with pytest.raises(PackageError, match="not made by `jobwatch package`"):
        build_package(PackageOptions(root=ROOT, out=victim, zip_path=None))
    assert (victim / "important.txt").read_text() == "keep"


def test_uv_resolves_for_the_target_and_its_failure_is_reported(tmp_path):
    seen = []

    def failing_uv(cmd, **kw):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "No solution found when resolving dependencies: lxml")

    with pytest.raises(PackageError, match=r"(?s)uv pip install failed \(exit 1\):.*No solution found"):
        build_package(PackageOptions(root=ROOT, out=tmp_path / "p", zip_path=None), run=failing_uv,
                      uv=lambda: "/opt/uv/bin/uv")
    cmd = seen[0]
    assert cmd[:4] == ["/opt/uv/bin/uv", "pip", "install", "--target"]
    assert cmd[cmd.index("--python-version") + 1] == "3.10"
    assert cmd[cmd.index("--python-platform") + 1] == "x86_64-manylinux2014"
    assert cmd[cmd.index("--only-binary") + 1] == ":all:"
    assert packaging.uv_platform("manylinux2014_x86_64") == "x86_64-manylinux2014"  # pip's spelling accepted


def test_without_uv_it_refuses_to_resolve_for_another_python(tmp_path):
    """Defect: pip on 3.11 resolved markers for 3.11 and the build exited 0 with a package that crashed on 3.10.
    Without uv the build now refuses unless this interpreter is the target version."""
    other = "3.9" if sys.version_info[:2] != (3, 9) else "3.10"
    ran = []
    with pytest.raises(PackageError, match=r"without uv: pip evaluates dependency markers for the Python and "
                                           r"machine running it"):
        build_package(PackageOptions(root=ROOT, out=tmp_path / "p", zip_path=None, python_version=other),
                      run=lambda cmd, **kw: ran.append(cmd), uv=lambda: None)
    assert ran == []
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    # The right version on the wrong machine: platform markers would be this machine's.
    with pytest.raises(PackageError, match="without uv"):
        build_package(PackageOptions(root=ROOT, out=tmp_path / "r", zip_path=None, python_version=here,
                                     platform="aarch64-manylinux2014"), run=lambda cmd, **kw: ran.append(cmd),
                      uv=lambda: None)
    assert ran == []
    # On the target version and machine itself pip is right about markers, and is used (stopped by its failure).

    def failing_pip(cmd, **kw):
        ran.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for lxml")

    with pytest.raises(PackageError, match=r"(?s)^pip install failed \(exit 1\):.*No matching distribution"):
        build_package(PackageOptions(root=ROOT, out=tmp_path / "q", zip_path=None, python_version=here),
                      run=failing_pip, uv=lambda: None)
    assert ran[0][:3] == [sys.executable, "-m", "pip"] and "manylinux2014_x86_64" in ran[0]


def test_compiling_needs_a_cpython_of_the_target_version(tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    (out / "m.py").write_text("X = 1\n")
    notes: list[str] = []
    opts = PackageOptions(root=ROOT, out=out, zip_path=None, python_version="2.9")
    assert packaging._compile(opts, notes, subprocess.run, None) is False
    assert "not precompiled: no CPython 2.9 interpreter found" in notes[0] and "--compile-python" in notes[0]
    with pytest.raises(PackageError, match=r"--compile-python .*: not a CPython 2.9 interpreter"):
        packaging._compile(PackageOptions(root=ROOT, out=out, zip_path=None, python_version="2.9",
                                          compile_python=sys.executable), [], subprocess.run, None)
    assert not list(out.rglob("*.pyc"))


def test_extras_follow_serverless_yml_and_its_env_references(tmp_path, monkeypatch):
    sls = tmp_path / "serverless.yml"
    sls.write_text("component: scf\ninputs:\n  environment:\n    variables:\n"
                   "      JOBWATCH_STORE_URL: ${env:JOBWATCH_STORE_URL}\n"
                   "      JOBWATCH_NOTIFY: ${env:NOTIFY_SPECS}\n      JOBWATCH_FANOUT: 'false'\n")
    (tmp_path / ".env").write_text("# deploy values\nexport JOBWATCH_STORE_URL='mysql://jw:pw@10.0.0.1:3306/jw'\n"
                                   "NOTIFY_SPECS=ses://1?from=a@example.com&to=b@example.com;log://\n")
    deploy = packaging.deploy_variables(sls, {"NOTIFY_SPECS": "tdmq-queue://q1?region=ap-guangzhou"})
    variables = deploy.variables
    assert deploy.source.startswith("serverless.yml") and deploy.unresolved == ()
    assert variables["JOBWATCH_STORE_URL"] == "mysql://jw:pw@10.0.0.1:3306/jw"  # from .env
    assert variables["JOBWATCH_NOTIFY"] == "tdmq-queue://q1?region=ap-guangzhou"  # the environment wins
    assert [e for e, _ in packaging.configured_extras(variables)] == ["mysql", "tdmq"]
    # Without serverless.yml: this shell's JOBWATCH_* variables.
    shell = packaging.deploy_variables(None, {"JOBWATCH_NOTIFY": "eventbridge://eb-1?region=ap-guangzhou",
                                              "HOME": "/root"}).variables
    assert shell == {"JOBWATCH_NOTIFY": "eventbridge://eb-1?region=ap-guangzhou"}
    assert packaging.configured_extras(shell) == [("eb", "JOBWATCH_NOTIFY sink #1 (eventbridge)")]
    # A reference set nowhere is reported (the deploy would pass it empty).
    (tmp_path / ".env").unlink()
    assert packaging.deploy_variables(sls, {}).unresolved == ("JOBWATCH_STORE_URL", "NOTIFY_SPECS")


def test_package_command_is_discoverable(capsys):
    assert cli_main(["package", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--out", "--zip", "--python-version", "--platform", "--extras", "--serverless", "--compile-python"):
        assert opt in out


@pytest.mark.parametrize("platform", ["windows", "macos", "x86_64-pc-windows-msvc", "aarch64-apple-darwin",
                                      "win_amd64", "x86_64-unknown-linux-musl", "manylinux2014_i686"])
def test_package_refuses_a_platform_scf_does_not_run(platform, tmp_path, capsys):
    """QA 2: `--platform windows` was handed to uv, which built a package SCF (Linux, glibc) cannot load."""
    out = tmp_path / "package"
    assert cli_main(["package", "--platform", platform, "--out", str(out), "--no-zip", "--serverless", ""]) == 2
    err = capsys.readouterr().err
    assert f"--platform: {platform!r}" in err and "x86_64-manylinux2014" in err and "Traceback" not in err, err
    assert not out.exists()
    with pytest.raises(PackageError, match=platform):  # the library refuses it too
        build_package(PackageOptions(root=ROOT, out=out, zip_path=None, platform=platform))


@pytest.mark.parametrize("platform", ["x86_64-manylinux2014", "aarch64-manylinux_2_28", "manylinux2014_x86_64",
                                      "manylinux_2_17_aarch64"])
def test_package_takes_manylinux_platforms_in_either_spelling(platform):
    assert packaging.check_platform(platform) == platform
