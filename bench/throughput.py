"""Throughput: one tick over N tracked jobs with a fixed added latency per request, beside
A, the loop a user would write on the official SDK (``cos-python-sdk-v5`` ``ci_get_inventory_trigger_jobs``,
one job after the other), and B, the ideal N x latency / concurrency.

The emulator runs in its own process on its own core; the tick runs in a fresh interpreter (``worker.py tick``)
with the production wiring (``App`` from settings, JSON logs, SQLite store: state + history + outbox rows written).
A third figure shows the emulator is not the limit: the same N requests, pre-signed, sent by as many raw
``http.client`` connections as the tick has, with nothing else done.
"""

from __future__ import annotations

import http.client
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

from common import (
    BUCKET, HOST, REGION, SECRET_ID, SECRET_KEY, Check, Emulator, Result, core_split, default_concurrency, pin,
    run_worker, settings_env, track_all,
)

LATENCY = 0.05
TARGET_VS_A, TARGET_VS_B = 25.0, 1.5


def sdk_loop(port: int, ids: Sequence[str]) -> float:
    """Seconds per job of the sequential official-SDK loop (after two warm-up calls)."""
    from qcloud_cos import CosConfig, CosS3Client

    logging.getLogger("qcloud_cos").setLevel(logging.CRITICAL)
    cfg = CosConfig(Region=REGION, SecretId=SECRET_ID, SecretKey=SECRET_KEY, Scheme="http", IP="127.0.0.1",
                    Port=port)
    client = CosS3Client(cfg)
    for j in ids[:2]:
        client.ci_get_inventory_trigger_jobs(Bucket=BUCKET, JobID=j)
    t0 = time.perf_counter()
    for j in ids:
        got = client.ci_get_inventory_trigger_jobs(Bucket=BUCKET, JobID=j)
        if got["JobsDetail"][0]["JobId"] != j:
            raise RuntimeError(f"SDK loop: wrong answer for {j}")
    return (time.perf_counter() - t0) / len(ids)


def presigned(ids: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    from jobwatch.ci import signing

    now = int(time.time())
    out = []
    for j in ids:
        path = f"/inventorytriggerjob/{j}"
        auth = signing.authorization(SECRET_ID, SECRET_KEY, "GET", path, {}, {"host": HOST}, now - 60, now + 3600)
        out.append((path, {"Host": HOST, "Authorization": auth}))
    return out


def raw_concurrent(port: int, reqs: list[tuple[str, dict[str, str]]], concurrency: int) -> float:
    """Seconds for ``concurrency`` keep-alive connections to get every answer (no parsing, no store)."""
    it = iter(reqs)
    lock = threading.Lock()
    failures: list[int] = []

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                item = next(it, None)
            if item is None:
                break
            conn.request("GET", item[0], headers=item[1])
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                failures.append(resp.status)
        conn.close()

    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"raw load: {len(failures)} non-200 answers, e.g. {failures[0]}")
    return time.perf_counter() - t0


def requests_concurrent(url: str, reqs: list[tuple[str, dict[str, str]]], concurrency: int) -> float:
    """Seconds for a bare ``requests.Session`` + ``lxml`` parse over ``concurrency`` threads to get and parse every
    answer (pre-signed; no store, no decision): what the design's HTTP stack alone costs at this concurrency."""
    from concurrent.futures import ThreadPoolExecutor

    import requests
    from lxml import etree

    with requests.Session() as s:
        s.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency))

        def one(item: tuple[str, dict[str, str]]) -> None:
            r = s.get(url + item[0], headers=item[1], timeout=30)
            if r.status_code != 200:
                raise RuntimeError(f"requests load: HTTP {r.status_code}")
            etree.fromstring(r.content)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, reqs[:concurrency]))  # open the connections first, as the tick's pool has
            t0 = time.perf_counter()
            list(pool.map(one, reqs))
            return time.perf_counter() - t0


def urllib3_concurrent(url: str, reqs: list[tuple[str, dict[str, str]]], concurrency: int) -> float:
    """The same as :func:`requests_concurrent` through urllib3 (requests' own transport) without requests on
    top: what the hot call would cost on a leaner HTTP client."""
    from concurrent.futures import ThreadPoolExecutor

    import urllib3
    from lxml import etree

    pm = urllib3.PoolManager(maxsize=concurrency)

    def one(item: tuple[str, dict[str, str]]) -> None:
        r = pm.request("GET", url + item[0], headers=item[1], timeout=30, retries=False)
        if r.status != 200:
            raise RuntimeError(f"urllib3 load: HTTP {r.status}")
        etree.fromstring(r.data)

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, reqs[:concurrency]))
            t0 = time.perf_counter()
            list(pool.map(one, reqs))
            return time.perf_counter() - t0
    finally:
        pm.clear()


def our_tick(endpoint: str, ids: Sequence[str], concurrency: int, core: int | None, tmp: Path) -> dict[str, float]:
    url = f"sqlite:///{tmp}/tp-{concurrency}.db"
    track_all(url, ids)
    res = run_worker("tick", {"env": settings_env(url, endpoint, concurrency)}, core=core)
    if res["polled"] != len(ids) or res["errors"]:
        raise RuntimeError(f"tick polled {res['polled']} of {len(ids)} with {res['errors']} errors")
    return res


def run(quick: bool) -> Result:
    n = 256 if quick else 1000
    sample = 12 if quick else 100
    target_c = default_concurrency()
    concurrencies = [target_c] if quick else sorted({16, target_c, 64})
    me, emu_core = core_split()
    pin(me)
    t_start = time.perf_counter()
    with Emulator(jobs=n, latency=LATENCY, core=emu_core) as emu, tempfile.TemporaryDirectory() as tmp:
        per_job_a = sdk_loop(emu.port, emu.ids[:sample])
        a_total = per_job_a * n
        ticks = {c: our_tick(emu.url, emu.ids, c, me, Path(tmp)) for c in concurrencies}
        raw = {c: raw_concurrent(emu.port, presigned(emu.ids), c) for c in concurrencies}
        bare = {c: requests_concurrent(emu.url, presigned(emu.ids), c) for c in concurrencies}
        lean = {c: urllib3_concurrent(emu.url, presigned(emu.ids), c) for c in concurrencies}
    rows = []
    for c in concurrencies:
        b = n * LATENCY / c
        t = ticks[c]["tick_s"]
        rows.append(f"| {c}{' (default)' if c == target_c else ''} | {t:.2f} s | {n / t:,.0f} | "
                    f"{ticks[c]['cpu_s'] / n * 1000:.2f} ms | {b:.2f} s | {raw[c]:.2f} s | {bare[c]:.2f} s "
                    f"({bare[c] / b:.2f}x B) | {lean[c]:.2f} s ({lean[c] / b:.2f}x B) | {a_total / t:.1f}x | "
                    f"{t / b:.2f}x |")
    extrapolated = sample < n
    body = (
        f"{n:,} tracked jobs, {LATENCY * 1000:.0f} ms added to every query by an emulator latency fault; the "
        f"emulator in its own process on its own core, the measured code on the other. "
        f"**A** (official SDK, sequential): {per_job_a * 1000:.1f} ms per job"
        + (f", measured over {sample} jobs and extrapolated to {n:,}: {a_total:.1f} s" if extrapolated
           else f", {a_total:.1f} s") + ". "
        "**B** = N x latency / concurrency. **raw** = the same requests, pre-signed, over as many bare "
        "`http.client` connections with nothing else done (the emulator's and loopback's own limit). "
        "**requests** = the same pre-signed requests through one `requests.Session` + `lxml` parse over as many "
        "threads, in this process on the tick's core (the design's HTTP stack alone, no signing, store or logs); "
        "**urllib3** = the same through `urllib3.PoolManager` (requests' own transport, without requests on top). "
        "**tick** = one `App.tick` (poll + decide + SQLite state/history/outbox writes + JSON logs; no delivery) "
        "in a fresh interpreter. The emulator listens with a backlog of 128: with the stdlib's default of 5, a "
        "burst of 32 or more new connections loses SYNs and waits out a 1 s retransmit (measured: raw at "
        "concurrency 64 took 1.5 s instead of 0.3 s), which would measure `socketserver`, not us.\n\n"
        "| concurrency | tick | jobs/s | tick CPU per job | B | raw | requests | urllib3 | A / tick | tick / B |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n\n"
        f"The targets are checked at the default concurrency, {target_c}. At 16 even a perfect tick would be at "
        f"most A / B = {a_total / (n * LATENCY / 16):.0f}x faster than A: the 25x target needs at least 26 "
        "requests in flight, which is why the default is 32 (it halves by itself while the service throttles).\n"
    )
    t = ticks[target_c]["tick_s"]
    b = n * LATENCY / target_c
    # Quick (CI) limits catch regressions, not a busy machine: a default back at 16 in flight (at most ~17x),
    # or a commit per answer, fails them; the 2 ms of CPU per job of a slow shared core passes.
    vs_a_limit, vs_b_limit = (15.0, 2.5) if quick else (TARGET_VS_A, TARGET_VS_B)
    checks = [Check(f"tick vs A (SDK loop), default concurrency {target_c}", a_total / t, ">=", vs_a_limit),
              Check(f"tick / B (ideal), default concurrency {target_c}", t / b, "<=", vs_b_limit)]
    notes = []
    if not all(c.ok for c in checks):
        cpu_ms = ticks[target_c]["cpu_s"] / n * 1000
        notes.append(
            f"Closing note: raw concurrent requests took {raw[target_c]:.2f} s against B = {b:.2f} s, so the "
            f"emulator and loopback keep up. A bare requests + lxml loop at the same concurrency took "
            f"{bare[target_c]:.2f} s ({bare[target_c] / b:.2f}x B) on the tick's core; the tick took {t:.2f} s, "
            f"{t / bare[target_c]:.2f}x that. The tick is CPU-bound: {cpu_ms:.2f} ms of CPU per job on its one core "
            f"({ticks[target_c]['cpu_s'] / t:.0%} busy) where B allows {b / n * 1000:.2f} ms. Most of that CPU is "
            "the HTTP stack the design fixes (requests over urllib3 and http.client), the rest is ours: signing, "
            "parsing into typed records, the decision, the store and the transition's log line (see the profile "
            "under Overhead per job). So the figure follows the machine's speed at the time of the run. What would "
            "close it: a cheaper HTTP client than requests for the one hot call, or more CPU (processes on more "
            f"cores: see Scale-out). The urllib3 column measures the first: the same loop without requests took "
            f"{lean[target_c]:.2f} s ({lean[target_c] / b:.2f}x B) against requests' {bare[target_c]:.2f} s.")
    return Result("1. Throughput", "bench/run" + (" --quick" if quick else ""), body, checks,
                  time.perf_counter() - t_start, notes)
