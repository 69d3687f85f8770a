"""Building the SCF deploy package: dependencies as wheels for SCF's Python, our code, precompiled, zipped.

The package is built for the runtime, not for this machine: ``pip install --target`` with ``--platform``,
``--python-version``, ``--implementation cp`` and ``--only-binary=:all:``, so native code (lxml) comes as the
manylinux wheel SCF's CentOS 7 x86_64 can load (a wrongly built lxml is the most reported SCF packaging failure).
The handler file goes to the package root, where SCF looks for ``index.main_handler``.

SCF sets ``PYTHONDONTWRITEBYTECODE``, so nothing is compiled at run time: every module is precompiled here, in the
*unchecked-hash* mode, so the ``.pyc`` files stay valid whatever modification times the unzipped files get (an
mtime-checked ``.pyc`` would be silently ignored if unzipping changed them). That needs the building interpreter
to have the target's bytecode (same minor version); otherwise the package is built without ``.pyc`` and says so.

The zip is deterministic (sorted entries, fixed timestamps), so an unchanged build has the same hash.
"""

from __future__ import annotations

import compileall
import os
import py_compile
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
DEFAULT_PLATFORM = "manylinux2014_x86_64"
DEFAULT_EXTRAS = ("mysql", "scf")
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
    extras: tuple[str, ...] = DEFAULT_EXTRAS
    compile: bool = True
    require_handler: bool = True


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


def _pip_install(opts: PackageOptions, requirements: list[str], run: Runner) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--target", str(opts.out),
           "--platform", opts.platform, "--python-version", opts.python_version, "--implementation", "cp",
           "--only-binary=:all:", "--no-compile", "--no-user", "--disable-pip-version-check", "--quiet",
           *requirements]
    proc = run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise PackageError(f"pip install failed (exit {proc.returncode}):\n{tail}")


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


def _compile(opts: PackageOptions, notes: list[str]) -> bool:
    target = tuple(int(p) for p in opts.python_version.split(".")[:2])
    if not opts.compile:
        notes.append("not precompiled (--no-compile)")
        return False
    if sys.version_info[:2] != target:
        notes.append(f"not precompiled: this Python is {sys.version_info[0]}.{sys.version_info[1]}, the target "
                     f"{opts.python_version} (bytecode differs); run the build with Python {opts.python_version}")
        return False
    ok = compileall.compile_dir(str(opts.out), quiet=1, workers=0, legacy=False, optimize=-1,
                                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    if not ok:
        raise PackageError("compileall failed on a file of the package (see above)")
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
                  log: Callable[[str], None] = lambda m: None) -> PackageResult:
    """Build ``opts.out`` (and ``opts.zip_path``) from scratch. Raises :class:`PackageError` naming the step."""
    notes: list[str] = []
    requirements = runtime_requirements(opts.root / "pyproject.toml", opts.extras, opts.python_version,
                                        opts.platform)
    log(f"[1/5] preparing {opts.out}")
    _prepare_out(opts.out)
    log(f"[2/5] pip install for CPython {opts.python_version} on {opts.platform}: {' '.join(requirements)}")
    _pip_install(opts, requirements, run)
    log("[3/5] copying jobwatch and the handler")
    _copy_own_code(opts, notes)
    removed = _strip(opts.out)
    log(f"[4/5] stripped {removed} paths; precompiling")
    compiled = _compile(opts, notes)
    files = [p for p in opts.out.rglob("*") if p.is_file() and p.name != MARKER]
    unpacked = sum(p.stat().st_size for p in files)
    zip_bytes = None
    if opts.zip_path is not None:
        log(f"[5/5] zipping to {opts.zip_path}")
        zip_bytes = _zip(opts.out, opts.zip_path)
        if zip_bytes > SIZE_BUDGET_BYTES:
            notes.append(f"zip is {zip_bytes / 1e6:.1f} MB, over the {SIZE_BUDGET_BYTES / 1e6:.1f} MB budget")
    return PackageResult(out=opts.out, zip_path=opts.zip_path, requirements=requirements, files=len(files),
                         unpacked_bytes=unpacked, zip_bytes=zip_bytes, compiled=compiled, notes=notes)


# --- CLI ----------------------------------------------------------------------------------------------------

def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest directory above ``start`` holding pyproject.toml and lib/jobwatch."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "lib" / "jobwatch").is_dir():
            return d
    raise PackageError(f"no project root (pyproject.toml with lib/jobwatch) at or above {here}")
