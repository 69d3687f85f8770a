"""Overhead per job at zero added latency: what signing, the client, parsing, the decision, the store (state +
history + outbox rows) and the logs cost, beside the bare floor measured in the same run: a loop of
``requests.Session.get`` + ``lxml.etree.fromstring`` over the same emulator answers (requests signed beforehand,
no store). Both run one request at a time on one core; the emulator runs in its own process on the other core.

Floor and tick alternate (floor, tick, floor, tick) and the best of each is kept. A cProfile of the same tick,
run with a same-thread executor so the profiler sees the polling work too, says where the time goes.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Sequence

from common import Check, Emulator, Result, core_split, pin, run_worker, settings_env, track_all
from throughput import presigned

TARGET = 0.6

# Where a function's time is booked, by the path of its file (first match wins).
AREAS = [
    ("signing (ours)", ("jobwatch/signing.py",)),
    ("client (ours)", ("jobwatch/client.py", "jobwatch/retry.py", "jobwatch/credentials.py")),
    ("XML parse (ours + lxml)", ("jobwatch/xmlparse.py", "lxml", "src/lxml")),
    ("decision (ours)", ("jobwatch/statemachine.py", "jobwatch/models.py", "jobwatch/stall.py")),
    ("store (ours + sqlite3)", ("jobwatch/store/", "sqlite3")),
    ("engine (ours)", ("jobwatch/engine.py", "jobwatch/app.py")),
    ("logs (structlog + ours)", ("structlog", "jobwatch/logs.py", "jobwatch/redact.py", "json/")),
    ("HTTP (requests, urllib3, http.client, socket)", ("requests/", "urllib3/", "http/client.py", "socket.py",
                                                       "ssl.py", "email/", "<method 'recv", "<method 'send",
                                                       "urllib/")),
    ("threads, futures, locks", ("concurrent/futures", "threading.py", "contextvars", "<method 'acquire")),
    ("other stdlib (typing, dataclasses, datetime, ...)", ("/lib/python3.", "~")),
]


def floor_loop(url: str, reqs: Sequence[tuple[str, dict[str, str]]]) -> float:
    """Jobs per second of the bare loop."""
    import requests
    from lxml import etree

    with requests.Session() as s:
        for path, h in reqs[:20]:
            s.get(url + path, headers=h, timeout=10)
        t0 = time.perf_counter()
        for path, h in reqs:
            r = s.get(url + path, headers=h, timeout=10)
            if r.status_code != 200:
                raise RuntimeError(f"floor: {r.status_code}")
            etree.fromstring(r.content)
        return len(reqs) / (time.perf_counter() - t0)


def tick_rate(endpoint: str, ids: Sequence[str], concurrency: int, core: int | None, tmp: Path, tag: str) -> float:
    url = f"sqlite:///{tmp}/oh-{tag}.db"
    track_all(url, ids)
    res = run_worker("tick", {"env": settings_env(url, endpoint, concurrency)}, core=core)
    if res["polled"] != len(ids) or res["errors"]:
        raise RuntimeError(f"tick polled {res['polled']} of {len(ids)} with {res['errors']} errors")
    return len(ids) / res["tick_s"]


class SameThreadExecutor:
    """Runs each submitted call at once on the calling thread, so cProfile sees it."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> "Future[Any]":
        f: Future[Any] = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the engine as a failed future
            f.set_exception(exc)
        return f

    def shutdown(self, wait: bool = True) -> None:
        pass


def profile_tick(endpoint: str, ids: Sequence[str], tmp: Path) -> tuple[list[tuple[str, float]], str, float]:
    """(time share per area, top functions by own time, profiled seconds) of one tick in this process."""
    from jobwatch.app import App
    from jobwatch.config import load_settings
    from jobwatch.logs import configure_logging

    url = f"sqlite:///{tmp}/oh-prof.db"
    track_all(url, ids)
    env = settings_env(url, endpoint, 1)
    configure_logging("info", "json", stream=open(os.devnull, "w"))
    app = App(load_settings(environ=env), environ=env)
    app.engine._pool = SameThreadExecutor()  # type: ignore[assignment]  # profiling only
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    summary = app.tick(discover=False, deliver=False)
    prof.disable()
    elapsed = time.perf_counter() - t0
    app.engine._pool = None
    app.close()
    if summary.tick.polled != len(ids):
        raise RuntimeError("profiled tick did not poll every job")
    stats = pstats.Stats(prof)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    areas: dict[str, float] = {}
    for (filename, _line, func), v in raw.items():
        where = f"{filename} {func}"
        area = next((name for name, pats in AREAS if any(p in where for p in pats)), "other")
        areas[area] = areas.get(area, 0.0) + v[2]
    shares = sorted(((k, v / total) for k, v in areas.items()), key=lambda kv: -kv[1])
    top = sorted(raw.items(), key=lambda kv: -kv[1][2])[:12]
    lines = ["| function | own time | calls |", "|---|---|---|"]
    root = str(Path(__file__).resolve().parent.parent)
    for (filename, line, func), v in top:
        short = filename.replace(root + "/", "").split("site-packages/")[-1]
        lines.append(f"| `{short}:{line} {func}` | {v[2] / total:.1%} | {v[1]:,} |")
    return shares, "\n".join(lines), elapsed


def run(quick: bool) -> Result:
    n = 1000 if quick else 3000
    me, emu_core = core_split()
    pin(me)
    t_start = time.perf_counter()
    with Emulator(jobs=n, latency=0.0, core=emu_core) as emu, tempfile.TemporaryDirectory() as tmp:
        reqs = presigned(emu.ids)
        floors, ticks = [], []
        for r in range(2):
            floors.append(floor_loop(emu.url, reqs))
            ticks.append(tick_rate(emu.url, emu.ids, 1, me, Path(tmp), f"c1-{r}"))
        default_rate = tick_rate(emu.url, emu.ids, 16, me, Path(tmp), "c16")
        shares, top, prof_s = profile_tick(emu.url, emu.ids, Path(tmp))
    floor, ours = max(floors), max(ticks)
    ratio = ours / floor
    area_rows = "\n".join(f"| {k} | {v:.0%} |" for k, v in shares)
    body = (
        f"{n:,} jobs, no added latency; the emulator in its own process on its own core. Floor = a loop of "
        "`requests.Session.get` + `lxml.etree.fromstring` over the same answers (signed beforehand, no store). "
        "Ours = one `App.tick` at concurrency 1 (sign + request + parse + decide + SQLite state/history/outbox "
        "writes + JSON logs) in a fresh interpreter. Best of two alternating runs each "
        f"(floor {', '.join(f'{x:,.0f}' for x in floors)}; ours {', '.join(f'{x:,.0f}' for x in ticks)} jobs/s).\n\n"
        "| loop | jobs/s | per job |\n|---|---|---|\n"
        f"| floor (requests + lxml) | {floor:,.0f} | {1000 / floor:.2f} ms |\n"
        f"| ours, concurrency 1 | {ours:,.0f} | {1000 / ours:.2f} ms |\n"
        f"| ours, concurrency 16 (default) | {default_rate:,.0f} | {1000 / default_rate:.2f} ms |\n\n"
        f"Where a tick's time goes (cProfile, own time by area, same tick run on one thread; {prof_s:.1f} s "
        "under the profiler):\n\n| area | share |\n|---|---|\n" + area_rows + "\n\nTop functions by own time:\n\n"
        + top + "\n"
    )
    checks = [Check("ours / floor, jobs/s at concurrency 1", ratio, ">=", 0.45 if quick else TARGET)]
    notes = []
    if not checks[0].ok:
        notes.append("Closing note: the profile above names the costs; everything outside HTTP is what we add.")
    return Result("2. Overhead per job", "bench/run" + (" --quick" if quick else ""), body, checks,
                  time.perf_counter() - t_start, notes)
