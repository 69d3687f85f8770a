"""Cold start: importing the handler module in a fresh interpreter, beside importing only the libraries any
poller needs (requests, lxml.etree, structlog, tencentcloud.common.credential), from the deploy package as SCF
sees it (the package directory the only extra path, no site-packages, no bytecode written).

Two layouts: the package as built (``.pyc`` shipped, unchecked-hash) and a copy without any ``.pyc`` (what a
package built without them costs, since SCF's ``PYTHONDONTWRITEBYTECODE`` means nothing is ever cached). Runs
alternate between the variants and medians are kept. ``python -X importtime`` then names what the handler pays.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import PY, Check, Result, median

TARGET = 1.3
BASELINE = "requests, lxml.etree, structlog, tencentcloud.common.credential"
# What a timer tick goes on to import on its first invocation (the handler defers these on purpose).
FIRST_TICK = "jobwatch.app.orchestrator, jobwatch.ci.client, jobwatch.ci.credentials, jobwatch.app.outbox, jobwatch.notify, jobwatch.store.mysql"
VARIANTS = {
    "baseline": BASELINE,
    "handler": "index",
    "handler + first timer tick's imports": "index, " + FIRST_TICK,
}


def _time_import(pkg: Path, modules: str) -> float:
    code = (f"import sys, time; sys.path.insert(0, {str(pkg)!r}); t = time.perf_counter(); import {modules}; "
            "print(time.perf_counter() - t)")
    p = subprocess.run([PY, "-S", "-B", "-c", code], capture_output=True, text=True, cwd=pkg, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"import {modules} from {pkg} failed: {p.stderr[-1500:]}")
    return float(p.stdout.strip().splitlines()[-1])


def importtime_top(pkg: Path, modules: str, k: int = 8) -> list[tuple[str, float, float]]:
    """Top-level imports by cumulative time: (module, cumulative ms, self ms)."""
    code = f"import sys; sys.path.insert(0, {str(pkg)!r}); import {modules}"
    p = subprocess.run([PY, "-S", "-B", "-X", "importtime", "-c", code], capture_output=True, text=True, cwd=pkg,
                       timeout=60)
    rows = []
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        depth = (len(name) - len(name.lstrip(" "))) // 2
        if depth == 0:
            rows.append((name.strip(), int(cum_us) / 1000, int(self_us) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:k]


def run(quick: bool, pkg: Path | None) -> Result:
    t_start = time.perf_counter()
    if pkg is None:
        return Result("4. Cold start", "bench/run", "Not measured: no deploy package (see Package).\n",
                      [Check("cold start measured", 0.0, ">=", 1.0, "")])
    rounds = 2 if quick else 9
    with tempfile.TemporaryDirectory() as tmp:
        nopyc = Path(tmp) / "package"
        shutil.copytree(pkg, nopyc, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        layouts = {".pyc shipped": pkg, "no .pyc": nopyc}
        times: dict[tuple[str, str], list[float]] = {(lay, v): [] for lay in layouts for v in VARIANTS}
        for _ in range(rounds):
            for lay, path in layouts.items():
                for v, mods in VARIANTS.items():
                    times[(lay, v)].append(_time_import(path, mods))
        top = importtime_top(pkg, "index, " + FIRST_TICK)
        top_handler = importtime_top(pkg, "index", 5)
    med = {k: median(v) * 1000 for k, v in times.items()}
    rows = []
    for lay in layouts:
        b = med[(lay, "baseline")]
        for v in VARIANTS:
            ratio = "" if v == "baseline" else f"{med[(lay, v)] / b:.2f}x"
            rows.append(f"| {lay} | {v} | {med[(lay, v)]:.0f} ms | {ratio} |")
    body = (
        f"Import time inside a fresh `python -S -B` whose only extra path is the deploy package, median of "
        f"{rounds} alternating runs. Baseline: `import {BASELINE}`. The handler module (`handler/index.py`, "
        "`index` in the package) defers the SDK, requests and lxml to first use, so the third row adds what a "
        f"timer tick then imports (`{FIRST_TICK}`): that is the cost a first invocation really pays.\n\n"
        "| layout | imports | median | vs baseline |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Where the handler's import time goes (`python -X importtime -c 'import index'`, .pyc shipped, top level, "
        "cumulative): " + ", ".join(f"`{n}` {c:.0f} ms" for n, c, _ in top_handler) + ".\n\n"
        "With the first tick's imports: " + ", ".join(f"`{n}` {c:.0f} ms" for n, c, _ in top) + ".\n"
    )
    limit = 1.5 if quick else TARGET
    checks = [
        Check(f"handler import / baseline ({lay})", med[(lay, "handler")] / med[(lay, "baseline")], "<=", limit)
        for lay in layouts
    ]
    notes = []
    ready = {lay: med[(lay, "handler + first timer tick's imports")] / med[(lay, "baseline")] for lay in layouts}
    if any(r > TARGET for r in ready.values()):
        notes.append(
            "Note: with a first timer tick's imports included the ratio is "
            + ", ".join(f"{r:.2f}x ({lay})" for lay, r in ready.items())
            + "; the extra over the baseline is our own modules and the MariaDB driver, listed above.")
    if not all(c.ok for c in checks):
        notes.append("Closing note: the import list above names the modules that cost; make them lazy.")
    return Result("4. Cold start", "bench/run" + (" --quick" if quick else ""), body, checks,
                  time.perf_counter() - t_start, notes)
