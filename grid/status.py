"""Per-run state of a sweep:
`python grid/status.py --sweep NAME [--results-dir DIR] [--checkpoint-dir DIR] [--set key=value ...] [--json]`.

Reads the run directories (status.json, metrics.jsonl): state ("interrupted" for a running
run whose process is dead, "corrupt" for a status.json that does not parse), host, last step
and elements seen, and for a run that is not a finished result why, with the command that
fixes it (grid/runs.run_problem; the launch command it prints carries this command's
--results-dir, --checkpoint-dir and --set, so that it names the same runs), a lock that looks
abandoned included, with the rm that clears it; and for runs submitted to SLURM
(results/<sweep>/.slurm/jobs.json), the job id and SLURM's state of it (sacct/squeue; PENDING,
RUNNING, REQUEUED ...).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from grid.runs import DEFAULT_RESULTS, last_metrics, live_state, lock_owner, read_status, run_problem
from grid.slurm import job_states, recorded_jobs
from grid.sweeps import sweep_specs


def sweep_status(sweep: str, results_dir: Path, overrides: list[str] = (), launch: str | None = None) -> list[dict]:
    """One row per run of the sweep; `launch`, the launch command a problem's fix prints."""
    rows = []
    jobs = recorded_jobs(results_dir, sweep)
    slurm_states = job_states(sorted(set(jobs.values()))) if jobs else {}
    for spec in sweep_specs(sweep, list(overrides)):
        rid = spec.run_id
        run_dir = results_dir / sweep / rid
        row = {"run_id": rid, "state": live_state(run_dir)}
        if row["state"] not in ("new", "corrupt"):
            status = read_status(run_dir)
            row.update({k: status.get(k) for k in ("host", "slurm_job_id")})
        quiet = row["state"] in ("new", "running") and "abandoned" not in (lock_owner(run_dir) or {})
        row["problem"] = None if quiet else run_problem(run_dir, sweep, launch)
        if rid in jobs:
            row["slurm_job_id"] = jobs[rid]
            row["slurm_state"] = slurm_states.get(jobs[rid], "unknown")
        last = last_metrics(run_dir)
        if last:
            row.update(step=last["step"], elements=last["elements"])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", required=True)
    ap.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--checkpoint-dir", type=Path, default=None, help="as given to grid/launch.py (for the "
                    "launch commands it prints)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="as given to grid/launch.py")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sweep_dir = args.results_dir / args.sweep
    found = next((p for p in (sweep_dir, *sweep_dir.parents) if p.exists()), None)  # nearest that exists
    if found is not None and not found.is_dir():
        print(f"error: {found} is a file, not a directory: pass --results-dir the directory the launch wrote to",
              file=sys.stderr)
        return 2
    launch = ["python", "grid/launch.py", "--sweep", args.sweep]  # names the same runs in the same dirs
    if args.results_dir != DEFAULT_RESULTS:
        launch += ["--results-dir", str(args.results_dir)]
    if args.checkpoint_dir:
        launch += ["--checkpoint-dir", str(args.checkpoint_dir)]
    launch += ["--set", *args.set] if args.set else []
    try:
        rows = sweep_status(args.sweep, args.results_dir, args.set, shlex.join(launch))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        extra = f" step {r['step']} ({r['elements']:,} elements)" if "step" in r else ""
        job = f" slurm {r['slurm_job_id']} {r.get('slurm_state', '')}".rstrip() if r.get("slurm_job_id") else ""
        err = f"  {r['problem']}" if r.get("problem") else ""
        print(f"{r['run_id']:52s} {r['state']:10s}{extra}{job}{err}")
    counts = {s: sum(r["state"] == s for r in rows)
              for s in ("done", "running", "interrupted", "preempted", "failed", "corrupt", "new")}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
