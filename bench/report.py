"""The report's wall time: what it shows by default against fitting everything (`--all`).

    python -m bench.report results/demo [more results dirs] [--skip-all]

Builds the report twice in this process into temporary directories, the default (Figure 5's
benchmarks, the C4 loss's saturating laws) and `--all` (every metric with every form: what the
report did before issue 16), and prints one JSON object {"runs", "default_s", "all_s",
"speedup"}. Both read the same files on the same machine at the same load, so the ratio is the
measurement; the seconds depend on what else the cores are doing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from analysis.collect import collect
from analysis.report import build


def _timed(results: list[Path], every: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        build(results, Path(tmp), every=every)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--skip-all", action="store_true", help="time the default report only")
    args = ap.parse_args(argv)
    table, _ = collect(args.results, warn=None)
    out = {"results": [str(p) for p in args.results], "runs": len(table), "default_s": round(_timed(args.results, False), 1)}
    if not args.skip_all:
        out["all_s"] = round(_timed(args.results, True), 1)
        out["speedup"] = round(out["all_s"] / out["default_s"], 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
