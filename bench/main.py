"""``bench/run``: every benchmark of issue 9 in one go, each figure a ratio of two things measured side by side in
this run. Writes the "## Poller benchmarks" section of BENCHMARKS.md (full mode; other sections are kept) and
exits 1, naming each one, if a target is missed.

    bench/run            full run (a few minutes), writes BENCHMARKS.md
    bench/run --quick    CI mode (under a minute): fewer jobs, looser limits, catches regressions by ratio
    bench/run --only throughput,memory --no-write
    bench/run --only refresh     bulk refresh vs the per-job path (writes its own "## Bulk refresh" section)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import coldstart
import common
import memory
import overhead
import package_size
import refresh
import scaleout
import throughput
from common import ROOT, Result, machine_line, unpin

NAMES = ("package", "coldstart", "throughput", "overhead", "memory", "scaleout", "refresh")
SECTION = "## Poller benchmarks"


def write_section(text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace (or append) our section, leaving every other section (e.g. "## Emulator speed") as it is."""
    common.write_section(text, SECTION, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI mode: fewer jobs, looser limits, nothing written")
    ap.add_argument("--only", default=",".join(NAMES), help=f"comma-separated subset of {','.join(NAMES)}")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--write", action="store_true", help="write BENCHMARKS.md even in --quick mode")
    args = ap.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(only) - set(NAMES)
    if unknown:
        ap.error(f"--only: unknown benchmark(s) {', '.join(sorted(unknown))}; expected some of {', '.join(NAMES)}")
    t0 = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="jobwatch-bench-") as tmp:
        pkg = None
        if "package" in only or "coldstart" in only:
            res, pkg = package_size.build(Path(tmp))
            if "package" in only:
                results.append(res)
        runners = {
            "coldstart": lambda: coldstart.run(args.quick, pkg),
            "throughput": lambda: throughput.run(args.quick),
            "overhead": lambda: overhead.run(args.quick),
            "memory": lambda: memory.run(args.quick),
            "scaleout": lambda: scaleout.run(args.quick),
            "refresh": lambda: refresh.run(args.quick),  # its own section, "## Bulk refresh"
        }
        for name in NAMES[1:]:
            if name in only:
                print(f"-- {name} ...", file=sys.stderr, flush=True)
                results.append(runners[name]())
                unpin()
                print(results[-1].markdown(), flush=True)
    order = {"1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6}
    results.sort(key=lambda r: order.get(r.title[:1], 9))
    total = time.perf_counter() - t0
    command = "bench/run" + (" --quick" if args.quick else "")
    header = (f"{SECTION}\n\nMeasured with `{command}` on {machine_line()}; the whole run took {total:.0f} s. "
              "Every figure is a ratio of two things measured side by side in this one run; "
              "`bench/run --quick` (CI) checks the same ratios with fewer jobs and looser limits.\n\n")
    bulk = [r for r in results if r.title.startswith("Bulk refresh")]
    text = header + "\n".join(r.markdown() for r in results if r not in bulk)
    missed = [c for r in results for c in r.checks if not c.ok]
    summary = "\n".join(f"- {c.text()}" for r in results for c in r.checks)
    text += "\n#### Targets\n\n" + "\n".join(f"- {c.text()}" for r in results if r not in bulk
                                              for c in r.checks) + "\n"
    if not args.no_write and (not args.quick or args.write):
        write_section(text)
        for r in bulk:
            refresh.write_section(r, r.seconds)
    print("\n== summary ==\n" + summary + f"\n(total {total:.0f} s)")
    if missed:
        print("\nTARGET MISSED:\n" + "\n".join(f"  {c.text()}" for c in missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
