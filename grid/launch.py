"""Launch a registered sweep: `python grid/launch.py --sweep NAME`, or `--list`.

    python grid/launch.py --sweep demo [--executor auto|slurm|local|debug] [--dry-run] [--json]
        [--results-dir DIR] [--checkpoint-dir DIR] [--max-parallel K] [--retry-failed] [--no-wait]
        [--set key=value ...] [--only GLOB ...]
        [--partition P] [--account A] [--qos Q] [--time-min M] [--nodes N] [--gpus-per-node G] [--tasks-per-node T]
        [--cpus-per-task C] [--mem-gb M] [--constraint C] [--slurm-config FILE]

Idempotent: a run whose status.json says done is skipped, an interrupted one resumes from its
checkpoint, a failed one is rerun only with --retry-failed, and a run another launch is
running right now (its lock is held by a live process) is left alone. The sweep is built once;
each run to do gets its resolved config.yaml in results/<sweep>/<run_id>/ (the run directory is
the message every worker reads, grid/train.py). `local` runs each run as its own
`python grid/train.py RUN_DIR` process, up to --max-parallel at once, longest first,
with a progress line; `debug` runs them one by one in this process; `slurm` submits them
through submitit (grid/slurm.py: per-size resources, which the SLURM flags or a YAML file of
the same keys override; one job array per resource shape; preempted or timed-out jobs requeue
and resume) and, unless --no-wait, follows them to the end. `auto` is slurm where `sbatch` is
on PATH and `sinfo` answers, else local. --set overrides apply to every run of the sweep (and so
change their ids). --only keeps the runs whose id matches one of the shell-style patterns (e.g.
`--only '*-cpu-0.8M-*'` runs the largest size first); ids, and so a later full launch, are unchanged.
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from grid.config import ConfigError, resolved
from grid.estimates import GPU_FLOPS, estimated_seconds, sweep_wall_seconds
from grid.runs import (DEFAULT_CHECKPOINTS, DEFAULT_RESULTS, last_metrics, live_state, lock_owner, read_status,
                       run_problem, run_state, write_run_config)
from grid.sweeps import SWEEPS, RunSpec, get_sweep, sweep_specs, toy_world_problem
from grid.tensorboard_curves import summary_writer
from model.sizes import CPU_SIZES

EXECUTORS = ("auto", "slurm", "local", "debug")
REFUSED = 3  # grid/train.py's exit status when another process holds the run
SLURM_FLAGS = {"partition": str, "account": str, "qos": str, "constraint": str, "time_min": int, "nodes": int,
               "gpus_per_node": int, "tasks_per_node": int, "cpus_per_task": int, "mem_gb": int}


def describe(specs: list[RunSpec]) -> list[dict]:
    """One row per run: id, family, size, seed, N (non-embedding), D, D / N, 6ND FLOPs, the peak
    learning rate (resolved), the estimated wall seconds (grid/estimates.estimated_seconds) and the
    resources."""
    from model.accounting import backbone_params
    from model.sizes import get_size

    rows = []
    for spec in specs:
        cfg = resolved(spec.cfg)
        n = backbone_params(get_size(cfg.size))
        rows.append({"run_id": spec.run_id, "family": cfg.family, "size": cfg.size, "seed": cfg.seed, "N": n,
                     "D": cfg.D, "elements_per_param": round(cfg.D / n, 2), "flops": 6 * n * cfg.D,
                     "lr": cfg.optim.lr, "estimated_s": round(estimated_seconds(cfg)),
                     "resources": asdict(spec.resources)})
    return rows


def _print_total(specs: list[RunSpec], rows: list[dict]) -> None:
    """The sweep's estimated time: on this machine's cores with the local launcher (CPU sizes),
    or GPU-hours (paper sizes)."""
    cpu = [s for s in specs if s.cfg.size in CPU_SIZES]
    if cpu:
        cores = os.cpu_count() or 1
        print(f"[dry-run] {len(specs)} runs; estimated {sweep_wall_seconds(cpu, cores) / 60:.0f} min on this "
              f"machine's {cores} core(s) with --executor local, evaluation included")
    gpu_h = sum(r["estimated_s"] * r["resources"]["nodes"] * r["resources"]["gpus_per_node"]
                for r, s in zip(rows, specs) if s.cfg.size not in CPU_SIZES) / 3600
    if gpu_h:
        print(f"[dry-run] {len(specs)} runs; estimated {gpu_h:,.0f} GPU-hours at {GPU_FLOPS:.0e} FLOP/s per GPU")


def _work_done(states: dict[str, str], work: dict[str, tuple[float, float]], results: Path) -> float | None:
    """The share of the launch's work that is done: runs weighted by their estimated seconds
    (work[rid] = (D, estimated seconds)), a running run counted by its elements so far."""
    total = sum(w for _, w in work.values())
    if not total:
        return None
    done = 0.0
    for rid, (D, w) in work.items():
        if states.get(rid) in ("done", "failed"):
            done += w
        elif states.get(rid) in ("running", "interrupted", "preempted", "new"):
            last = last_metrics(results / rid)
            done += w * min(1.0, last["elements"] / D) if last and D else 0.0
    return done / total


def _progress(states: dict[str, str], start: float, total: int, share: float | None = None,
              share0: float = 0.0) -> str:
    """One progress line. With `share` (the work done, `_work_done`; `share0` at the launch's
    start, from resumed runs) the ETA follows the work done so far in this launch, from the first
    minute; without it, the finished runs."""
    done = sum(s == "done" for s in states.values())
    failed = sum(s == "failed" for s in states.values())
    running = sum(s == "running" for s in states.values())
    elapsed = time.time() - start
    if share is not None and share > share0 and elapsed > 5:
        eta = f"{elapsed * (1 - share) / (share - share0) / 60:.0f} min"
    else:
        eta = f"{elapsed / done * (total - done - failed) / 60:.0f} min" if done else "?"
    work = f" ({share:.0%} of the work)" if share is not None else ""
    return (f"[launch] {done}/{total} done{work}, {running} running, {failed} failed, {elapsed / 60:.1f} min elapsed, "
            f"ETA {eta}")


def start_order(todo: list[str], work: dict[str, tuple[float, float]]) -> list[str]:
    """Longest estimated run first (work[rid] = (D, estimated seconds)), ties in sweep order: a
    long run started last keeps one core busy after the rest are done (grid/estimates.py's
    sweep_wall_seconds assumes this order)."""
    return sorted(todo, key=lambda rid: -work.get(rid, (0.0, 0.0))[1])


def run_local(sweep: str, todo: list[str], args, work: dict[str, tuple[float, float]] | None = None) -> dict[str, str]:
    """Each run in its own process, at most max_parallel at once. SIGTERM, SIGHUP (a closed
    terminal) or Ctrl-C stop the launch: the children get SIGTERM, checkpoint and exit (they
    resume on the next launch), and this waits for them, so none is left orphaned. A run that
    another launch holds is waited for, so the summary reports what became of it. Returns, for
    the children that died before recording a state, why (exit status and last log line)."""
    work = work or {}
    pending, running, states = start_order(todo, work), {}, {rid: "pending" for rid in todo}
    start, shown, last_print, line_at, line = time.time(), None, 0.0, 0.0, ""
    share0 = _work_done({rid: "running" for rid in work}, work, args.results_dir / sweep)  # resumed runs' part
    # Share the cores: K processes with torch's default thread count each would oversubscribe
    # the machine (measured here: 2 runs x 2 threads on 2 cores ran 3-7x slower than 1 thread each).
    threads = str(max(1, (os.cpu_count() or 1) // args.max_parallel))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    tty = sys.stdout.isatty()
    stop: list[int] = []
    stopping = False
    previous = {sig: signal.signal(sig, lambda n, _: stop.append(n))
                for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    held: list[str] = []  # refused: another launch is running them
    deaths: dict[str, str] = {}  # children that died before recording a state
    try:
        while pending or running:
            if stop and not stopping:
                stopping = True
                print(f"\n[launch] {signal.Signals(stop[0]).name}: stopping {len(running)} run(s) at their next "
                      f"checkpoint; relaunch to resume", file=sys.stderr, flush=True)
                for proc, _ in running.values():
                    proc.send_signal(signal.SIGTERM)
                pending = []
            while pending and len(running) < args.max_parallel:
                rid = pending.pop(0)
                cmd = [sys.executable, str(Path(__file__).with_name("train.py")), str(args.results_dir / sweep / rid),
                       "--checkpoint-dir", str(args.checkpoint_dir)]
                log = open(args.results_dir / sweep / f".{rid}.log", "a")  # a relaunch appends
                log.write(f"--- launch {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
                log.flush()
                running[rid] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
                states[rid] = "running"
            for rid, (proc, log) in list(running.items()):
                if proc.poll() is not None:
                    log.close()
                    del running[rid]
                    if proc.returncode == REFUSED:
                        held.append(rid)
                    states[rid] = run_state(args.results_dir / sweep / rid)
                    if proc.returncode not in (0, REFUSED) and states[rid] in ("new", "running"):
                        deaths[rid] = _death(proc.returncode, Path(log.name))  # it could not say why itself
                    _show_notes(args.results_dir / sweep / rid)
            # A live line on a terminal; in a log file, a line when something changed or each minute.
            counts = sorted(states.values())
            if time.time() - line_at > 5 or counts != shown:  # metrics files are read at most every 5 s
                share = _work_done(states, work, args.results_dir / sweep)
                line, line_at = _progress(states, start, len(todo), share, share0 or 0.0), time.time()
            if tty:
                print("\r" + line, end="", flush=True)
            elif counts != shown or time.time() - last_print > 60:
                print(line, flush=True)
                shown, last_print = counts, time.time()
            time.sleep(0.5)
        if tty:
            print()
        _wait_for_other_launches(args.results_dir / sweep, held, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return deaths


def _death(returncode: int, log: Path) -> str:
    """Why a child died without a word in status.json: its exit status and its log's last line
    (e.g. a library that failed to load)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1].strip()[:300] if lines else "(empty log)"
    how = f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exited with {returncode}"
    return f"its process {how} before recording a state; last log line: {last} ({log})"


def _show_notes(run_dir: Path) -> None:
    """A finished child's notes (grid/train.py: resumes, checkpoint fallbacks, skipped data)."""
    try:
        notes = (read_status(run_dir) or {}).get("notes", [])
    except ValueError:
        return
    for note in notes:
        print(f"[launch] {run_dir.name}: {note}", flush=True)


def _wait_for_other_launches(sweep_dir: Path, held: list[str], stop: list[int]) -> None:
    """Wait until no live process holds the runs another launch was running. A run whose lock
    looks abandoned (lock_owner's "abandoned": a reused pid, a silent host) is not waited for:
    the summary names the rm that clears it."""
    def running(rid: str) -> bool:
        owner = lock_owner(sweep_dir / rid)
        return owner is not None and "abandoned" not in owner

    waiting = [rid for rid in held if running(rid)]
    if waiting:
        print(f"[launch] waiting for {len(waiting)} run(s) that another launch is running: {', '.join(waiting)}",
              flush=True)
    while waiting and not stop:
        time.sleep(1)
        waiting = [rid for rid in waiting if running(rid)]


def _check_data(specs: list[RunSpec]) -> None:
    """Every data dir the runs read is prepared: otherwise each run would fail at its start and
    need --retry-failed after the fix. FileNotFoundError names the dir and the command."""
    from data.embedded import EmbeddedData

    for data_dir in sorted({resolved(s.cfg).data.data_dir for s in specs}):
        EmbeddedData(data_dir or None)


def _prepare_evaluators(specs: list[RunSpec]) -> None:
    """Train each dataset's FID network once here, before runs start: otherwise the first
    parallel runs would each train the same network (the first to finish wins; the others
    wasted their time)."""
    from data.embedded import EmbeddedData
    from evals.fid import feature_network

    cfgs = [resolved(s.cfg) for s in specs]
    for data_dir, dataset in sorted({(c.data.data_dir, c.data.dataset) for c in cfgs if "fid" in c.eval.benchmarks}):
        feature_network(EmbeddedData(data_dir or None), dataset, log=lambda line: print(line, flush=True))


def run_slurm(sweep: str, todo: list[RunSpec], args, opts) -> None:
    """Submit the runs; unless --no-wait, follow them until every job has ended."""
    from grid.slurm import submit

    if not todo:
        return
    jobs = submit(sweep, todo, args.results_dir, args.checkpoint_dir, opts)
    todo = [s.run_id for s in todo]
    arrays = sorted({j.job_id.split("_")[0] for j in jobs.values()})
    print(f"[launch] submitted {len(jobs)} run(s) as SLURM job(s) {', '.join(arrays)}; "
          f"python grid/status.py --sweep {sweep} follows them", flush=True)
    if args.no_wait:
        return
    start, shown = time.time(), None
    while True:
        finished = {rid: job.done() for rid, job in jobs.items()}
        states = {rid: run_state(args.results_dir / sweep / rid) if finished[rid] else
                  ("running" if jobs[rid].state == "RUNNING" else "pending") for rid in todo}
        line = _progress(states, start, len(todo))
        if states != shown:
            print(line, flush=True)
            shown = states
        if all(finished.values()):
            return
        time.sleep(5)


def _auto_executor() -> str:
    """slurm where sbatch exists and a controller answers, else local. A machine can carry the
    SLURM client with no controller running (a stopped test cluster): submitting there fails."""
    if not shutil.which("sbatch"):
        return "local"
    try:
        ok = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        print("[launch] sbatch is installed but no SLURM controller answers (sinfo failed): running here; "
              "--executor slurm to insist", file=sys.stderr)
    return "slurm" if ok else "local"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep")
    ap.add_argument("--list", action="store_true", help="list the registered sweeps")
    ap.add_argument("--executor", choices=EXECUTORS, default="auto")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINTS)
    # One single-threaded process per core: small models gain little from a second thread.
    ap.add_argument("--max-parallel", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--retry-failed", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--only", nargs="+", default=None, metavar="GLOB", help="only the runs whose id matches")
    ap.add_argument("--toy-data", action="store_true",
                    help="let paper-size models train on the embedded toy world (a smoke test, not a result)")
    ap.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    slurm = ap.add_argument_group("SLURM (override the per-size defaults)")
    for name, kind in SLURM_FLAGS.items():
        slurm.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None)
    slurm.add_argument("--slurm-config", default=None, help="YAML file of the same keys (flags win)")
    args = ap.parse_args(argv)
    if args.list:
        for name in SWEEPS:
            print(f"{name:28s} {len(get_sweep(name))} runs")
        return 0
    if not args.sweep:
        ap.error("--sweep NAME is required (or --list)")
    if args.max_parallel < 1:
        ap.error(f"--max-parallel must be at least 1 (got {args.max_parallel})")
    if args.results_dir.exists() and not args.results_dir.is_dir():
        print(f"error: --results-dir {args.results_dir} is a file, not a directory", file=sys.stderr)
        return 2
    try:
        specs = {s.run_id: s for s in sweep_specs(args.sweep, args.set)}  # the sweep, built once
        if args.only:
            specs = {rid: s for rid, s in specs.items() if any(fnmatch.fnmatchcase(rid, g) for g in args.only)}
            if not specs:
                raise ValueError(f"--only {' '.join(args.only)} matches no run of sweep {args.sweep}; "
                                 f"--dry-run lists its run ids")
        rows = describe(list(specs.values()))
        states = {rid: run_state(args.results_dir / args.sweep / rid) for rid in specs}
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a results dir that is a symlink loop
        print(f"error: cannot read the results dir {exc.filename or args.results_dir} ({exc.strerror}): "
              f"pass a readable --results-dir", file=sys.stderr)
        return 2
    toy = toy_world_problem(list(specs.values()), args.sweep)
    if toy and not args.toy_data:
        if not args.dry_run:
            print(f"error: {toy}", file=sys.stderr)
            return 2
        print(f"[launch] note: {toy}", file=sys.stderr)
    if args.dry_run:
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            for r in rows:
                res = r["resources"]
                print(f"{r['run_id']:52s} N={r['N']:>12,d} D={r['D']:>16,d} D/N={r['elements_per_param']:<7g} "
                      f"C={r['flops']:.3g} lr={r['lr']:.2g}  {res['nodes']}x{res['gpus_per_node']} GPU, "
                      f"{res['cpus_per_task']} CPU/task, {res['time_min']} min")
            _print_total(list(specs.values()), rows)
        return 0
    executor = args.executor
    if executor == "auto":
        executor = _auto_executor()
    opts = None
    if executor == "slurm":  # its options first: a bad file fails before anything is written
        from grid.slurm import SlurmOptions

        try:
            opts = SlurmOptions.load(args.slurm_config, {k: getattr(args, k) for k in SLURM_FLAGS})
        except (ValueError, TypeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    sweep_dir = args.results_dir / args.sweep
    todo = [rid for rid, s in states.items() if s in ("new", "running", "preempted")
            or (s == "failed" and args.retry_failed)]
    # Only a launch with work writes: a finished sweep on a read-only disk is a no-op, not an error.
    writes = (("--results-dir", sweep_dir), ("--checkpoint-dir", args.checkpoint_dir)) if todo else ()
    for flag, folder in writes:
        if (problem := _unwritable(folder)):
            print(f"error: cannot write the {flag[2:].replace('-', ' ')} {problem}: pass a writable {flag}",
                  file=sys.stderr)
            return 2
    skipped = [s for rid, s in states.items() if rid not in todo]
    print(f"[launch] {args.sweep}: {len(rows)} runs, {len(todo)} to run, {skipped.count('done')} done, "
          f"{skipped.count('failed')} failed (rerun with --retry-failed)"
          + (f", {skipped.count('corrupt')} with a corrupt status.json (left alone)" if "corrupt" in skipped else ""))
    try:
        _check_data([specs[rid] for rid in todo])
        if any(specs[rid].cfg.tensorboard for rid in todo):
            summary_writer()  # as for the data: a missing package fails here once, not in every run
        _prepare_evaluators([specs[rid] for rid in todo])
    except (FileNotFoundError, ValueError) as exc:  # e.g. the data is not prepared yet
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for rid in todo:  # the message every worker reads
        write_run_config(sweep_dir / rid, specs[rid].cfg)
    deaths: dict[str, str] = {}
    if executor == "slurm":
        run_slurm(args.sweep, [specs[rid] for rid in todo], args, opts)
        if args.no_wait:
            return 0
    elif executor == "debug":
        from grid.train import run_from_dir  # the trainer's stack, only where it runs here

        for rid in todo:
            try:
                run_from_dir(sweep_dir / rid, args.checkpoint_dir)
            except Exception as exc:  # recorded in status.json by train; the sweep goes on
                print(f"[launch] {rid} failed: {exc}", file=sys.stderr)
    else:
        deaths = run_local(args.sweep, todo, args, {rid: (specs[rid].cfg.D, estimated_seconds(specs[rid].cfg)) for rid in todo})
    return _summary(args.sweep, sweep_dir, list(specs), deaths, sys.argv[1:] if argv is None else argv)


def _unwritable(folder: Path) -> str | None:
    """Why `folder` cannot take new files (created if missing), naming the path; None if it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        why = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
        return f"{exc.filename or folder} ({why})"
    return None


def _summary(sweep: str, sweep_dir: Path, run_ids: list[str], deaths: dict[str, str], argv: list[str]) -> int:
    """One line per run of the sweep that is not a finished result (state, reason, the command
    that fixes it: this launch's own command, `argv` being its arguments, so that it names the
    same runs in the same directories); 1 when there is any, else 0."""
    launch = shlex.join(["python", "grid/launch.py", *argv])
    problems = {rid: p for rid in run_ids if (p := run_problem(sweep_dir / rid, sweep, launch))}
    problems.update({rid: f"{why}: relaunch to retry" for rid, why in deaths.items() if rid in problems})
    for rid, problem in problems.items():
        print(f"[launch] {rid} {live_state(sweep_dir / rid)}: {problem}", file=sys.stderr)
    done = len(run_ids) - len(problems)
    print(f"[launch] {sweep}: {done}/{len(run_ids)} runs done" + (f", {len(problems)} not" if problems else ""),
          flush=True)
    return 1 if problems else 0

if __name__ == "__main__":
    sys.exit(main())
