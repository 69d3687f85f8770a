"""Package: the SCF deploy package as ``jobwatch package`` builds it (``jobwatch.packaging.build.build_package``: wheels
for CPython 3.10 manylinux2014, stripped, precompiled, zipped), its zipped size and what takes the room.

The built directory is handed on to the cold-start benchmark, which imports from it as SCF does.
"""

from __future__ import annotations

import time
from pathlib import Path

from common import ROOT, Check, Result

TARGET_MB = 10.0
EXTRAS = ("mysql", "scf")


def build(out_dir: Path) -> tuple[Result, Path | None]:
    t_start = time.perf_counter()
    try:
        from jobwatch.packaging.build import PackageError, PackageOptions, build_package
    except ImportError as exc:  # the builder is someone else's module; say so rather than crash
        return Result("6. Package", "jobwatch package", f"Not measured: `jobwatch.packaging` unusable ({exc}).\n",
                      [Check("package built", 0.0, ">=", 1.0, "")]), None
    out, zip_path = out_dir / "package", out_dir / "ci-jobwatch.zip"
    # The extras follow the deploy's configuration; measure serverless.yml's production shape: a MySQL store and
    # fan-out (all three Tencent sinks' SDKs together add 0.55 MB zipped: 7.52 MB for mysql,scf,eb,ses,tdmq).
    opts = PackageOptions(root=ROOT, out=out, zip_path=zip_path, extras=EXTRAS)
    try:
        res = build_package(opts)
    except PackageError as exc:
        return Result("6. Package", "jobwatch package", f"Not measured: the build failed: {exc}\n",
                      [Check("package built", 0.0, ">=", 1.0, "")]), None
    sizes: dict[str, int] = {}
    for p in out.rglob("*"):
        if p.is_file():
            top = p.relative_to(out).parts[0]
            top = top.split("-")[0] if top.endswith(".dist-info") else top
            sizes[top] = sizes.get(top, 0) + p.stat().st_size
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:8]
    zip_mb = (res.zip_bytes or 0) / 1e6
    body = (
        f"`jobwatch package` (extras {', '.join(opts.extras)}): "
        f"{res.files} files, {res.unpacked_bytes / 1e6:.1f} MB unpacked, **{zip_mb:.2f} MB zipped**, "
        f"precompiled: {'yes' if res.compiled else 'no'}. Largest parts, unpacked:\n\n"
        "| part | MB |\n|---|---|\n" + "\n".join(f"| `{k}` | {v / 1e6:.1f} |" for k, v in biggest) + "\n"
        + "".join(f"\nNote from the builder: {n}\n" for n in res.notes)
    )
    checks = [Check("deploy zip", zip_mb, "<=", TARGET_MB, " MB")]
    return Result("6. Package", "jobwatch package (bench/run builds it into a temporary directory)", body, checks,
                  time.perf_counter() - t_start), out
