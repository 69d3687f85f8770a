"""The layering of lib/jobwatch, read from the code's own imports (module level and inside functions alike).

core/ is pure: nothing in it imports a module that does I/O. The front doors (triggers/, cli/, web/) reach the
rest only through App: none of them imports the engine, the store, the outbox, the fan-out, the sinks or the CI
client (the hardened XML parser they may use).
Every other arrow points down the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "lib" / "jobwatch"

# Lower number = lower layer. A module may import its own layer or lower ones.
LAYERS = {
    "core": 0,
    "ci": 1, "store": 1, "notify": 1,
    "emulator": 2,
    "app": 3,
    "packaging": 4,
    "triggers": 5, "cli": 5, "web": 5,
}
FRONT_DOORS = ("triggers", "cli", "web")
# The hardened XML parser (ci.xmlparse) is pure parsing, shared with callbacks; the client itself is not.
BELOW_APP = ("jobwatch.app.engine", "jobwatch.app.outbox", "jobwatch.app.fanout", "jobwatch.store",
             "jobwatch.ci.client", "jobwatch.ci.credentials", "jobwatch.ci.signing", "jobwatch.notify")
IO_MODULES = ("requests", "urllib3", "lxml", "socket", "http", "sqlite3", "pymysql", "tencentcloud", "structlog",
              "logging", "subprocess", "ssl", "urllib.request", "concurrent", "jobwatch.ci", "jobwatch.store",
              "jobwatch.notify", "jobwatch.app", "jobwatch.emulator")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            # "from jobwatch.ci import client" imports jobwatch.ci.client
            out.extend((node.lineno, f"{mod}.{a.name}") for a in node.names if mod.startswith("jobwatch"))
    return out


def _files() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "jobwatch" and parts[1] in LAYERS else None


def _hits(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_every_package_of_lib_jobwatch_is_a_known_layer():
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(LAYERS), f"folders without a layer: {sorted(folders - set(LAYERS))}"
    loose = [p.name for p in PKG.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside every layer: {loose}"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PKG)))
def test_arrows_point_down(path: Path):
    own = _layer(_module_name(path))
    if own is None:
        return
    wrong = [(line, mod) for line, mod in _imports(path)
             if (other := _layer(mod)) is not None and LAYERS[other] > LAYERS[own]]
    assert not wrong, f"{path.relative_to(PKG)} ({own}) imports upward: {wrong}"


@pytest.mark.parametrize("path", [p for p in _files() if _layer(_module_name(p)) in FRONT_DOORS],
                         ids=lambda p: str(p.relative_to(PKG)))
def test_front_doors_go_through_app(path: Path):
    wrong = [(line, mod) for line, mod in _imports(path) if _hits(mod, BELOW_APP)]
    assert not wrong, f"{path.relative_to(PKG)} reaches below App: {wrong}"


@pytest.mark.parametrize("path", [p for p in _files() if _layer(_module_name(p)) == "core"],
                         ids=lambda p: str(p.relative_to(PKG)))
def test_core_does_no_io(path: Path):
    wrong = [(line, mod) for line, mod in _imports(path) if _hits(mod, IO_MODULES)]
    assert not wrong, f"{path.relative_to(PKG)} imports I/O: {wrong}"


def test_the_walk_sees_function_level_and_relative_imports(tmp_path):
    """The checks above must be able to fail: an import inside a function, or a relative one, is seen."""
    f = PKG / "cli" / "_probe_for_test_layers.py"
    f.write_text("def f():\n    from jobwatch.store import open_store\n\nfrom ..app import engine\n", encoding="utf-8")
    try:
        mods = [m for _, m in _imports(f)]
        assert "jobwatch.store" in mods and "jobwatch.app.engine" in mods
        with pytest.raises(AssertionError):
            test_front_doors_go_through_app(f)
    finally:
        f.unlink()
