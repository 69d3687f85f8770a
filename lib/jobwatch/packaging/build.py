"""Building the SCF deploy package: dependencies as wheels for SCF's Python, our code, precompiled, zipped.

The package is built for the runtime, not for this machine. Dependencies are resolved **for the target**
(CPython 3.10 on manylinux2014 x86_64), environment markers included, by ``uv pip install --target
--python-version --python-platform --only-binary :all:``: pip's ``--python-version`` picks wheels for the target
but evaluates the dependencies' markers against the interpreter running it, so a build on 3.11 silently left out
``typing-extensions; python_version < '3.11'`` (structlog needs it on 3.10) and the function crashed at import.
Without uv the build uses pip only when this interpreter *is* the target version, and otherwise refuses.
Native code (lxml) comes as the manylinux wheel SCF's CentOS 7 x86_64 can load.

Which extras go in follows the configuration the function is deployed with (serverless.yml's
``environment.variables``, their ``${env:NAME}`` read from the environment and ``.env``; without serverless.yml
this shell's variables): the MySQL driver for a ``mysql://`` store, the SCF SDK for fan-out, each configured
Tencent sink's SDK. ``--extras`` adds more. The handler file goes to the package root (``index.main_handler``).

SCF sets ``PYTHONDONTWRITEBYTECODE``, so nothing is compiled at run time: every module is precompiled here, in the
*unchecked-hash* mode, so the ``.pyc`` files stay valid whatever modification times the unzipped files get. Bytecode
is version-specific, so this runs under a CPython 3.10 interpreter (this one, ``--compile-python``, or one found
on the machine); without one the package is built without ``.pyc`` and says so.

The zip is deterministic (sorted entries, fixed timestamps), so an unchanged build has the same hash.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:
    import tomli as _toml

DEFAULT_OUT = "build/package"
DEFAULT_ZIP = "build/ci-jobwatch.zip"
DEFAULT_PYTHON = "3.10"
DEFAULT_PLATFORM = "x86_64-manylinux2014"  # uv's name; pip's manylinux2014_x86_64 is accepted too
SIZE_BUDGET_BYTES = 10 * 1024 * 1024  # zipped; SCF accepts more, but cold starts pay for every byte
MARKER = ".jobwatch-package"  # marks a directory this module made, so a rebuild may delete it

# Our own subpackages that are development tools, not needed by the function.
EXCLUDED_OWN = ("emulator",)
# Directories and files that are never needed at run time.
STRIP_DIRS = {"tests", "test", "__pycache__"}
STRIP_TOP_DIRS = {"bin"}  # console scripts pip puts next to the packages
STRIP_SUFFIXES = (".pyi", ".pyx", ".pxd", ".pxi", ".h", ".c", ".pyc", ".pyo")
STRIP_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
ZIP_DATE = (2020, 1, 1, 0, 0, 0)


class PackageError(Exception):
    """The package could not be built; the message says which step and why."""


@dataclass(frozen=True)
class PackageOptions:
    root: Path
    out: Path
    zip_path: Path | None
    python_version: str = DEFAULT_PYTHON
    platform: str = DEFAULT_PLATFORM
    extras: tuple[str, ...] = ()
    compile: bool = True
    require_handler: bool = True
    compile_python: str | None = None  # a CPython of the target version for the .pyc; None = find one


@dataclass
class PackageResult:
    out: Path
    zip_path: Path | None
    requirements: list[str]
    files: int
    unpacked_bytes: int
    zip_bytes: int | None
    compiled: bool
    notes: list[str] = field(default_factory=list)
    installer: str = "uv"
    extras: tuple[str, ...] = ()


# --- requirements -------------------------------------------------------------------------------------------

def _markers() -> Any:
    try:
        from packaging.requirements import Requirement  # the PyPA library, present wherever pip is
    except ImportError:  # pragma: no cover - pip vendors the same code
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef,assignment]
    return Requirement


def runtime_requirements(pyproject: Path, extras: Sequence[str], python_version: str = DEFAULT_PYTHON,
                         platform: str = DEFAULT_PLATFORM) -> list[str]:
    """[project.dependencies] plus the chosen extras (self-references expanded), markers evaluated for the target.

    pip evaluates markers against the interpreter running it, not against ``--python-version``; evaluating
    the top-level ones here keeps e.g. ``tomli; python_version < '3.11'`` right when building from a newer Python.
    """
    data = _toml.loads(pyproject.read_text(encoding="utf-8"))
    project = data["project"]
    name = _normalise(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    Requirement = _markers()
    env = {"python_version": python_version, "python_full_version": f"{python_version}.0",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
           "platform_machine": "x86_64" if "x86_64" in platform else "aarch64"}
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(specs: Sequence[str]) -> None:
        for spec in specs:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            if _normalise(req.name) == name:
                for extra in sorted(req.extras):
                    expand(extra)
                continue
            req.marker = None
            text = str(req)
            if text not in out:
                out.append(text)

    def expand(extra: str) -> None:
        if extra in seen_extras:
            return
        if extra not in optional:
            raise PackageError(f"extra {extra!r} is not in [project.optional-dependencies] "
                               f"(known: {', '.join(sorted(optional))})")
        seen_extras.add(extra)
        add(optional[extra])

    add(project.get("dependencies", []))
    for extra in extras:
        expand(extra)
    return out


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- steps --------------------------------------------------------------------------------------------------

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def _prepare_out(out: Path) -> None:
    if out.exists():
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise PackageError(f"{out} exists and was not made by `jobwatch package`: refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by jobwatch package; deleted and rebuilt on each run\n")


# SCF runs Linux on glibc (CentOS 7's 2.17 for the standard runtimes): manylinux targets only, x86_64 or aarch64,
# as uv names them (x86_64-manylinux2014, aarch64-manylinux_2_28) or as pip does (manylinux2014_x86_64).
_SCF_PLATFORM = re.compile(r"(x86_64|aarch64)-manylinux(2014|_2_\d+)|manylinux(2014|_2_\d+)_(x86_64|aarch64)")
SCF_PLATFORMS = "x86_64-manylinux2014 (the default), aarch64-manylinux2014, {x86_64,aarch64}-manylinux_2_<N>, " \
                "or pip's spelling (manylinux2014_x86_64)"


def check_platform(platform: str) -> str:
    """``platform`` if SCF can load wheels built for it, else :class:`PackageError` naming it and what is taken
    (uv would build for windows or macos just as readily, and the function would fail at import)."""
    if not _SCF_PLATFORM.fullmatch(platform):
        raise PackageError(f"{platform!r} is not a platform SCF runs on: SCF runs Linux (glibc) only; expected "
                           f"{SCF_PLATFORMS}")
    return platform


def uv_platform(platform: str) -> str:
    """uv's ``--python-platform`` name for a platform given either way (``manylinux2014_x86_64`` as pip says it,
    or ``x86_64-manylinux2014``)."""
    m = re.fullmatch(r"(manylinux\w*?)_(x86_64|aarch64)", platform)
    return f"{m.group(2)}-{m.group(1)}" if m else platform


def _pip_platform(platform: str) -> str:
    m = re.fullmatch(r"(x86_64|aarch64)-(manylinux\w+)", platform)
    return f"{m.group(2)}_{m.group(1)}" if m else platform


def find_uv() -> str | None:
    """The uv binary: the ``uv`` wheel's (installed with the ``package`` extra), else one on ``PATH``."""
    try:
        import uv  # type: ignore[import-not-found]

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def _install(opts: PackageOptions, requirements: list[str], run: Runner, uv: str | None,
             notes: list[str]) -> str:
    """Install the requirements into ``opts.out`` for the target; return the installer used."""
    target = _version_tuple(opts.python_version)
    if uv:
        cmd = [uv, "pip", "install", "--target", str(opts.out), "--python-version", opts.python_version,
               "--python-platform", uv_platform(opts.platform), "--only-binary", ":all:", "--quiet", *requirements]
        installer = "uv"
    elif sys.version_info[:2] == target and _host_matches(opts.platform):
        # pip evaluates markers against this interpreter and machine, which are the target's here.
        cmd = [sys.executable, "-m", "pip", "install", "--target", str(opts.out),
               "--platform", _pip_platform(opts.platform), "--python-version", opts.python_version,
               "--implementation", "cp", "--only-binary=:all:", "--no-compile", "--no-user",
               "--disable-pip-version-check", "--quiet", *requirements]
        installer = "pip"
        notes.append(f"uv not found: resolved with pip, right only because this Python is {opts.python_version}")
    else:
        import platform as _platform

        here = f"{sys.version_info[0]}.{sys.version_info[1]} on {sys.platform} {_platform.machine()}"
        raise PackageError(
            f"cannot resolve dependencies for Python {opts.python_version} on Python {here} without uv: pip "
            f"evaluates dependency markers for the Python and machine running it, so the package would lack what "
            f"{opts.python_version} needs (e.g. typing-extensions for structlog) and crash at import on SCF. "
            f"Install uv (pip install 'ci-jobwatch[package]', or pip install uv) or build with Python "
            f"{opts.python_version}")
    proc = run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        label = "uv pip install" if installer == "uv" else "pip install"
        raise PackageError(f"{label} failed (exit {proc.returncode}):\n{tail}")
    return installer


def _host_matches(platform: str) -> bool:
    """This machine is Linux on the target's architecture (pip evaluates platform markers against it)."""
    import platform as _platform

    arch = "aarch64" if "aarch64" in platform else "x86_64"
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(_platform.machine().lower(), _platform.machine().lower())
    return sys.platform.startswith("linux") and machine == arch


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        raise PackageError(f"python version {version!r}: expected major.minor, e.g. 3.10") from None


def _copy_own_code(opts: PackageOptions, notes: list[str]) -> None:
    src = opts.root / "lib" / "jobwatch"
    if not (src / "__init__.py").is_file():
        raise PackageError(f"{src} is not the jobwatch package")

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in STRIP_DIRS or n.endswith((".pyc", ".pyo")) or n.endswith(".egg-info")}
        if Path(directory) == src:
            skip |= {n for n in names if n in EXCLUDED_OWN}
        return skip

    shutil.copytree(src, opts.out / "jobwatch", ignore=ignore)
    handler = opts.root / "handler" / "index.py"
    if handler.is_file():
        shutil.copy2(handler, opts.out / "index.py")
    elif opts.require_handler:
        raise PackageError(f"{handler} is missing: SCF needs index.main_handler at the package root")
    else:
        notes.append("handler/index.py missing: package has no entry point")


def _strip(out: Path) -> int:
    """Remove what the function never loads; return the number of paths removed."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(out, topdown=True):
        here = Path(dirpath)
        for d in list(dirnames):
            if d in STRIP_DIRS or (here == out and d in STRIP_TOP_DIRS):
                shutil.rmtree(here / d)
                dirnames.remove(d)
                removed += 1
        in_dist_info = here.name.endswith(".dist-info")
        for f in filenames:
            if f.endswith(STRIP_SUFFIXES) or (in_dist_info and f in STRIP_DIST_INFO):
                (here / f).unlink()
                removed += 1
    return removed


_PROBE = "import sys; print('%d.%d %s' % (sys.version_info[0], sys.version_info[1], sys.implementation.name))"
_COMPILE = ("import compileall, py_compile, sys\n"
            "ok = compileall.compile_dir(sys.argv[1], quiet=1, workers=0, legacy=False, optimize=-1,\n"
            "    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)\n"
            "sys.exit(0 if ok else 1)\n")


def _is_cpython(python: str, version: str, run: Runner) -> bool:
    try:
        proc = run([python, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and proc.stdout.strip() == f"{version} cpython"


def find_python(version: str, run: Runner = subprocess.run, uv: str | None = None,
                environ: dict[str, str] | None = None) -> str | None:
    """A CPython ``version`` interpreter on this machine, each candidate checked by running it: this one, then
    ``python<version>`` on PATH, then what ``uv python find`` finds (never downloading), then pyenv's versions."""
    env = os.environ if environ is None else environ
    candidates: list[str] = [sys.executable]
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    if uv:
        try:
            proc = run([uv, "python", "find", "--no-python-downloads", version], capture_output=True, text=True,
                       timeout=60)
            if proc.returncode == 0 and proc.stdout.strip():
                candidates.append(proc.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError):
            pass
    pyenv = env.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates.extend(sorted(glob.glob(os.path.join(pyenv, "versions", f"{version}.*", "bin", "python")),
                             reverse=True))
    for c in dict.fromkeys(candidates):
        if _is_cpython(c, version, run):
            return c
    return None


def _compile(opts: PackageOptions, notes: list[str], run: Runner, uv: str | None) -> bool:
    """Precompile every module with a CPython of the target version (bytecode is version-specific)."""
    if not opts.compile:
        notes.append("not precompiled (--no-compile)")
        return False
    if opts.compile_python:
        python: str | None = opts.compile_python
        if not _is_cpython(python, opts.python_version, run):
            raise PackageError(f"--compile-python {python}: not a CPython {opts.python_version} interpreter")
    else:
        python = find_python(opts.python_version, run, uv)
    if python is None:
        notes.append(f"not precompiled: no CPython {opts.python_version} interpreter found (this one, "
                     f"python{opts.python_version} on PATH, uv python find, pyenv); the package works, but SCF "
                     f"then compiles every module at each cold start. Pass --compile-python PATH to fix")
        return False
    proc = run([python, "-I", "-c", _COMPILE, str(opts.out)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise PackageError(f"compileall with {python} failed on a file of the package:\n{tail}")
    return True


def _zip(out: Path, zip_path: Path) -> int:
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(zip_path.suffix + ".tmp")
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != MARKER)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for p in files:
            info = zipfile.ZipInfo(p.relative_to(out).as_posix(), date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if os.access(p, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, p.read_bytes(), compresslevel=9)
    os.replace(tmp, zip_path)
    return zip_path.stat().st_size


def build_package(opts: PackageOptions, *, run: Runner = subprocess.run,
                  log: Callable[[str], None] = lambda m: None, uv: Callable[[], str | None] = find_uv) -> PackageResult:
    """Build ``opts.out`` (and ``opts.zip_path``) from scratch. Raises :class:`PackageError` naming the step.
    ``uv`` locates the uv binary (None: not installed)."""
    notes: list[str] = []
    check_platform(opts.platform)
    requirements = runtime_requirements(opts.root / "pyproject.toml", opts.extras, opts.python_version,
                                        opts.platform)
    uv_bin = uv()
    log(f"[1/5] preparing {opts.out}")
    _prepare_out(opts.out)
    log(f"[2/5] installing for CPython {opts.python_version} on {uv_platform(opts.platform)} "
        f"(extras: {', '.join(opts.extras) or 'none'}): {' '.join(requirements)}")
    installer = _install(opts, requirements, run, uv_bin, notes)
    log("[3/5] copying jobwatch and the handler")
    _copy_own_code(opts, notes)
    removed = _strip(opts.out)
    log(f"[4/5] stripped {removed} paths; precompiling for {opts.python_version}")
    compiled = _compile(opts, notes, run, uv_bin)
    files = [p for p in opts.out.rglob("*") if p.is_file() and p.name != MARKER]
    unpacked = sum(p.stat().st_size for p in files)
    zip_bytes = None
    if opts.zip_path is not None:
        log(f"[5/5] zipping to {opts.zip_path}")
        zip_bytes = _zip(opts.out, opts.zip_path)
        if zip_bytes > SIZE_BUDGET_BYTES:
            notes.append(f"zip is {zip_bytes / 1e6:.1f} MB, over the {SIZE_BUDGET_BYTES / 1e6:.1f} MB budget")
    return PackageResult(out=opts.out, zip_path=opts.zip_path, requirements=requirements, files=len(files),
                         unpacked_bytes=unpacked, zip_bytes=zip_bytes, compiled=compiled, notes=notes,
                         installer=installer, extras=tuple(opts.extras))


# --- what the deployed function is configured with --------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def read_dotenv(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of a ``.env`` file (what the deploy CLI reads for ``${env:NAME}``); ``#`` comments,
    blank lines, an ``export`` prefix and one pair of surrounding quotes are handled."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.strip()] = value
    return out


@dataclass(frozen=True)
class DeployConfig:
    """The variables the deployed function gets, where they came from, and the ``${env:NAME}`` references that
    neither the environment nor ``.env`` sets (the deploy would pass them empty)."""

    variables: dict[str, str]
    source: str
    unresolved: tuple[str, ...] = ()


def deploy_variables(serverless: Path | None, environ: dict[str, str] | None = None) -> DeployConfig:
    """serverless.yml's ``inputs.environment.variables`` with ``${env:NAME}`` taken from the environment, else
    from the ``.env`` beside it (the deploy CLI reads both); without a serverless.yml, this environment's
    ``JOBWATCH_*``."""
    env = dict(os.environ if environ is None else environ)
    if serverless is None or not serverless.is_file():
        return DeployConfig({k: v for k, v in env.items() if k.startswith("JOBWATCH_")},
                            "this shell's JOBWATCH_* variables")
    try:
        import yaml
    except ImportError:
        raise PackageError(f"reading {serverless} needs PyYAML (pip install 'ci-jobwatch[package]'); or pass "
                           "--serverless '' to take the extras from this shell's variables") from None
    try:
        doc = yaml.safe_load(serverless.read_text(encoding="utf-8")) or {}
        variables = (((doc.get("inputs") or {}).get("environment") or {}).get("variables") or {})
    except (yaml.YAMLError, AttributeError) as exc:
        raise PackageError(f"{serverless}: not a serverless.yml with inputs.environment.variables ({exc})") from None
    dotenv = read_dotenv(serverless.parent / ".env")
    unresolved: list[str] = []

    def lookup(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in env:
            return env[name]
        if name in dotenv:
            return dotenv[name]
        unresolved.append(name)
        return ""

    resolved = {str(name): _ENV_REF.sub(lookup, "" if value is None else str(value))
                for name, value in variables.items()}
    return DeployConfig(resolved, f"{serverless.name} (${{env:...}} from the environment and .env)",
                        tuple(dict.fromkeys(unresolved)))


def configured_extras(variables: dict[str, str]) -> list[tuple[str, str]]:
    """``(extra, why)`` for every optional part the variables configure (the store, fan-out, each sink)."""
    from jobwatch.app.config import needed_extras

    return [(n.extra, n.reason) for n in needed_extras(variables)]


# --- CLI ----------------------------------------------------------------------------------------------------

def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest directory above ``start`` holding pyproject.toml and lib/jobwatch."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "lib" / "jobwatch").is_dir():
            return d
    raise PackageError(f"no project root (pyproject.toml with lib/jobwatch) at or above {here}")
