"""Shared pieces of the benchmarks: the emulator in its own process, settings for the real App, subprocess
workers, and the result type each benchmark returns (its figures, its checks, its BENCHMARKS.md text).

Every figure is a ratio of two things measured in the same run, because these machines are shared and noisy.
The emulator runs in a separate process (pinned to its own core where there are two), so it never shares a GIL
with the code being measured.
"""

from __future__ import annotations

import json
import os
import re
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
# Fake values that guard nothing: the emulator accepts exactly this pair.
SECRET_ID, SECRET_KEY = "AKIDBENCHONLY000000000000000000000000", "bench-only-key-not-real"
BUCKET, REGION = "examplebucket-1250000000", "ap-guangzhou"
HOST = f"{BUCKET}.ci.{REGION}.myqcloud.com"


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def core_split() -> tuple[int | None, int | None]:
    """(core for the measured process, core for the emulator), or Nones on a one-core machine."""
    cs = cores()
    return (cs[0], cs[1]) if len(cs) >= 2 else (None, None)


def pin(core: int | None) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


def unpin() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def env_for_children() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(ROOT / "lib"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


class Emulator:
    """The emulator in a child process (``worker.py emulator``): preloaded jobs, an optional fixed latency on
    every query. Stops when its stdin closes, so it never outlives the benchmark."""

    def __init__(self, jobs: int, latency: float = 0.0, core: int | None = None, seed: int = 1,
                 **extra: Any) -> None:
        cfg = {"jobs": jobs, "latency": latency, "core": core, "seed": seed, **extra}
        self.proc = subprocess.Popen([PY, str(BENCH / "worker.py"), "emulator", json.dumps(cfg)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env_for_children())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"emulator process exited with {self.proc.wait()}")
        info = json.loads(line)
        self.url: str = info["url"]
        self.port: int = int(info["port"])
        self.ids: list[str] = info["ids"]
        self.keys: list[tuple[str, str]] = [(b, j) for b, j in info.get("keys", [])]  # with active_only

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Emulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_concurrency() -> int:
    """JOBWATCH_CONCURRENCY's default, read from the code so the benchmarks follow it."""
    from jobwatch.app.config import load_settings

    return load_settings(environ={}).concurrency


def settings_env(store_url: str, endpoint: str, concurrency: int | None = None, **extra: str) -> dict[str, str]:
    """The environment a deployed function would have, pointed at the emulator. Polls are spaced an hour apart
    so that no job comes due twice within one benchmark."""
    env = {
        "JOBWATCH_STORE_URL": store_url, "JOBWATCH_CI_ENDPOINT": endpoint,
        "JOBWATCH_SECRET_ID": SECRET_ID, "JOBWATCH_SECRET_KEY": SECRET_KEY,
        "JOBWATCH_CONCURRENCY": str(concurrency or default_concurrency()), "JOBWATCH_NOTIFY": "log://",
        "JOBWATCH_LOG_LEVEL": "info", "JOBWATCH_LOG_FORMAT": "json",
        "JOBWATCH_POLL_MIN_SECONDS": "3600", "JOBWATCH_POLL_MAX_SECONDS": "3600", "JOBWATCH_HTTP_MAX_ATTEMPTS": "1",
    }
    env.update(extra)
    return env


def track_all(store_url: str, ids: Sequence[str]) -> None:
    """Track every job, due now, in a fresh store."""
    from jobwatch.core.clock import utcnow
    from jobwatch.core.models import JobKey
    from jobwatch.store import open_store

    store = open_store(store_url)
    try:
        keys = [JobKey(REGION, BUCKET, j) for j in ids]
        for i in range(0, len(keys), 1000):
            store.track(keys[i:i + 1000], utcnow())
    finally:
        store.close()


def run_worker(mode: str, cfg: dict[str, Any], *, timeout: float = 300, core: int | None = None) -> dict[str, Any]:
    """Run ``worker.py <mode>`` to completion and return the JSON object on its last stdout line."""
    cfg = {**cfg, "core": core}
    p = subprocess.run([PY, str(BENCH / "worker.py"), mode, json.dumps(cfg)], capture_output=True, text=True,
                       timeout=timeout, env=env_for_children())
    if p.returncode != 0:
        raise RuntimeError(f"worker {mode} failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


@dataclass
class Check:
    """One target: ``value`` compared with ``limit`` (``op`` is ``>=`` or ``<=``)."""

    name: str
    value: float
    op: str
    limit: float
    unit: str = "x"

    @property
    def ok(self) -> bool:
        return self.value >= self.limit if self.op == ">=" else self.value <= self.limit

    def text(self) -> str:
        mark = "met" if self.ok else "MISSED"
        return f"{self.name}: {self.value:.2f}{self.unit} (target {self.op} {self.limit:g}{self.unit}) {mark}"


@dataclass
class Result:
    title: str
    command: str
    body: str  # markdown, without the heading
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # closing notes for missed targets

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", f"Command: `{self.command}`", "", self.body.rstrip(), ""]
        if self.checks:
            lines += ["| target | measured | limit | |", "|---|---|---|---|"]
            for c in self.checks:
                lines.append(f"| {c.name} | {c.value:,.2f}{c.unit} | {c.op} {c.limit:g}{c.unit} | "
                             f"{'met' if c.ok else '**MISSED**'} |")
            lines.append("")
        for n in self.notes:
            lines += [n, ""]
        return "\n".join(lines)


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) that process ``pid`` has used so far, or None where /proc cannot tell."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def local_db_pid() -> int | None:
    """The local MariaDB/MySQL server's process ID (the benchmarks' store runs on this machine), or None."""
    try:
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/comm", encoding="ascii", errors="replace") as f:
                        if f.read().strip() in ("mariadbd", "mysqld"):
                            return int(d)
                except OSError:
                    continue
    except OSError:
        pass
    return None


def machine_line() -> str:
    return (f"Python {platform.python_version()}, {os.cpu_count()} cores ({len(cores())} usable), "
            f"{platform.machine()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def write_section(text: str, section: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace (or append) one "## ..." section of BENCHMARKS.md, leaving every other section as it is."""
    body = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^" + re.escape(section) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(body):
        body = pattern.sub(lambda _: text, body)
    else:
        body = body.rstrip("\n") + "\n\n" + text
    path.write_text(body, encoding="utf-8")
