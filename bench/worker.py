"""Child processes of the benchmarks, so that what is measured owns its interpreter (its GIL, its RSS).

    worker.py emulator '<json>'   serve preloaded jobs until stdin closes; first stdout line: {"url","port","ids"}
    worker.py tick '<json>'       one App tick (no discovery, no delivery) in a fresh interpreter; peak RSS
    worker.py poller '<json>'     build the App, print "ready", wait for a line on stdin, tick, print the result
    worker.py imports '<json>'    RSS of the interpreter after importing what a tick needs

Each prints one JSON object as its last stdout line. Logs (the production JSON lines) go to /dev/null: their
cost is measured, their text is not wanted.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any


def _pin(core: int | None) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


def _rss_mb() -> float:
    """Peak RSS of this interpreter in MB.

    Linux's ``ru_maxrss`` starts a child at the RSS its parent had when it forked (``exec`` books the forked
    copy's high-water mark), so a child of a grown benchmark process reports the parent's size. ``VmHWM`` in
    /proc/self/status is the high-water mark of this process's own memory since ``exec``; ``ru_maxrss`` is the
    fallback where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def emulator(cfg: dict[str, Any]) -> int:
    _pin(cfg.get("core"))
    from datetime import datetime, timezone

    from common import BUCKET, SECRET_ID, SECRET_KEY

    from jobwatch.emulator import EmulatorServer, FaultRule, Lifecycle, ManualClock


    faults = []
    if cfg.get("latency"):
        # list_latency: the list API (GET /inventorytriggerjob) waits as long as a query does
        path = "/inventorytriggerjob*" if cfg.get("list_latency") else "/inventorytriggerjob/*"
        faults.append(FaultRule(kind="latency", path=path, latency=float(cfg["latency"])))
    # A clock that does not move: every job keeps its state, so every run sees the same answers.
    srv = EmulatorServer(credentials={SECRET_ID: SECRET_KEY}, clock=ManualClock(datetime.now(timezone.utc)),
                         seed=int(cfg.get("seed", 1)), lifecycle=Lifecycle(), faults=faults)
    srv.start()
    try:
        keys: list[list[str]] = []
        if cfg.get("active_only"):
            keys = _active_jobs(srv, int(cfg["jobs"]), int(cfg.get("buckets", 1)))
            ids = [j for b, j in keys if b == BUCKET]
        else:
            ids = srv.preload(BUCKET, int(cfg["jobs"]))
        srv.request_log = _NoLog()  # type: ignore[assignment]  # a long run must not grow the emulator
        print(json.dumps({"url": srv.url, "port": srv.port, "ids": ids, "keys": keys}), flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    finally:
        srv.stop()
    return 0


def _active_jobs(srv: Any, n: int, buckets: int) -> list[list[str]]:
    """``n`` jobs that stay under way (Submitted, Running, Pause; both types), a second apart, dealt round-robin
    over ``buckets`` buckets (the first is the benchmarks' BUCKET): [bucket, job ID] pairs."""
    import random
    from datetime import timedelta

    from common import BUCKET

    names = [BUCKET] + [f"bench{i:03d}-1250000000" for i in range(1, buckets)]
    rng = random.Random(f"active:{n}:{buckets}")
    now = srv.clock.now()
    out = []
    for i in range(n):
        bucket = names[i % buckets]
        typ = "Job" if rng.random() < 0.4 else "Workflow"
        jid = srv.create_job(bucket, name=f"active-{i}", type=typ, state=("Submitted", "Running", "Pause")[i % 3],
                             created_at=now - timedelta(seconds=n - i))
        out.append([bucket, jid])
    return out


class _NoLog(list):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        pass


def _app(cfg: dict[str, Any]) -> Any:
    from jobwatch.app.orchestrator import App
    from jobwatch.app.config import load_settings
    from jobwatch.app.logs import configure_logging

    configure_logging("info", "json", stream=open(os.devnull, "w"))
    return App(load_settings(environ=cfg["env"]), environ=cfg["env"], owner=cfg.get("owner"))


def tick(cfg: dict[str, Any]) -> int:
    _pin(cfg.get("core"))
    t0 = time.perf_counter()
    app = _app(cfg)
    app.engine  # build every collaborator before the measured part  # noqa: B018
    rss_ready = _rss_mb()
    t1, c1 = time.perf_counter(), time.process_time()
    budget = cfg.get("budget_s")  # an invocation's time budget (None: until no job is due)
    kw: dict[str, Any] = {}
    if budget:
        from jobwatch.app.orchestrator import Budget

        kw["budget"] = Budget.seconds(time.monotonic(), float(budget))
    summary = app.tick(discover=False, deliver=bool(cfg.get("deliver", False)), **kw)
    t2, c2 = time.perf_counter(), time.process_time()
    t = summary.tick
    out = {"polled": t.polled, "errors": t.errors, "transitions": t.transitions,
           "setup_s": t1 - t0, "tick_s": t2 - t1, "cpu_s": c2 - c1, "rss_ready_mb": rss_ready,
           "rss_peak_mb": _rss_mb(), "requests": t.requests, "listed": t.listed, "left": t.left,
           "lease_lost": t.lease_lost, "paths": sorted({b["path"] for b in t.buckets.values()})}
    app.close()
    print(json.dumps(out))
    return 0


def poller(cfg: dict[str, Any]) -> int:
    _pin(cfg.get("core"))
    app = _app(cfg)
    app.engine  # noqa: B018
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    summary = app.tick(discover=False, deliver=False)
    t1 = time.time()
    app.close()
    print(json.dumps({"polled": summary.tick.polled, "errors": summary.tick.errors,
                      "lease_lost": summary.tick.lease_lost, "start": t0, "end": t1}), flush=True)
    return 0


def imports(cfg: dict[str, Any]) -> int:
    _pin(cfg.get("core"))
    bare = _rss_mb()
    import jobwatch.app.orchestrator  # noqa: F401
    import jobwatch.ci.client  # noqa: F401
    import jobwatch.app.outbox  # noqa: F401
    import jobwatch.store.sqlite  # noqa: F401

    print(json.dumps({"bare_mb": bare, "imports_mb": _rss_mb()}))
    return 0


def main(argv: list[str]) -> int:
    modes = {"emulator": emulator, "tick": tick, "poller": poller, "imports": imports}
    if len(argv) != 3 or argv[1] not in modes:
        print(__doc__, file=sys.stderr)
        return 2
    return modes[argv[1]](json.loads(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
