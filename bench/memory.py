"""Memory: peak RSS (``VmHWM``, see ``worker._rss_mb`` for why not ``ru_maxrss``) of one tick over many tracked jobs, in a fresh interpreter that does nothing
else, beside the RSS of an interpreter that has only imported what a tick needs (and of a bare one).

The store is filled by this process beforehand, so the child's peak is the tick's own, not the setup's.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import Check, Emulator, Result, core_split, default_concurrency, run_worker, settings_env, track_all

TARGET_MB = 64.0


def run(quick: bool) -> Result:
    n = 1000 if quick else 10000
    me, emu_core = core_split()
    t_start = time.perf_counter()
    base = run_worker("imports", {}, core=me)
    with Emulator(jobs=n, latency=0.0, core=emu_core) as emu, tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp)}/mem.db"
        track_all(url, emu.ids)
        res = run_worker("tick", {"env": settings_env(url, emu.url)}, core=me, timeout=600)
    if res["polled"] != n or res["errors"]:
        raise RuntimeError(f"memory tick polled {res['polled']} of {n} with {res['errors']} errors")
    body = (
        f"One `App.tick` (default concurrency {default_concurrency()}, SQLite store, JSON logs, no delivery) over "
        f"{n:,} tracked jobs "
        f"at zero added latency, in a fresh interpreter: {res['tick_s']:.1f} s, {n / res['tick_s']:,.0f} jobs/s.\n\n"
        "Peak RSS is `VmHWM` from /proc/self/status: `resource.getrusage().ru_maxrss` in a child starts at the "
        "RSS of the parent at fork (a first run reported 48.9 MB for a bare interpreter started by the grown "
        "benchmark process).\n\n"
        "| process | peak RSS |\n|---|---|\n"
        f"| bare interpreter | {base['bare_mb']:.1f} MB |\n"
        f"| after importing what a tick needs (app, client, outbox, SQLite store) | {base['imports_mb']:.1f} MB |\n"
        f"| App built, before the tick | {res['rss_ready_mb']:.1f} MB |\n"
        f"| peak over the tick of {n:,} jobs | {res['rss_peak_mb']:.1f} MB |\n\n"
        f"The tick itself adds {res['rss_peak_mb'] - res['rss_ready_mb']:.1f} MB (jobs are claimed 200 at a time "
        "and written 50 at a time); most of the peak is the imports.\n"
    )
    checks = [Check(f"peak RSS of one tick over {n:,} jobs", res["rss_peak_mb"], "<=", TARGET_MB, " MB")]
    return Result("3. Memory", "bench/run" + (" --quick" if quick else ""), body, checks,
                  time.perf_counter() - t_start)
