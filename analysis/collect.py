"""Every run under one or more results dirs -> one tidy pandas table, one row per run.

    table, skipped = collect(["results/"])        # also accepts a sweep dir or a run dir
    curve = read_curve(Path("results/demo/<run_id>"))   # metrics.jsonl as a DataFrame

A run lives at `<results>/<sweep>/<run_id>/` (DESIGN "Contracts") with config.yaml,
metrics.jsonl, evals.json and status.json. Only runs whose status is "done" and whose
evals.json and config.yaml read cleanly enter the table; every other run is returned in
`skipped` with its reason, and one warning line naming it is written (stderr by default).

Columns: run, sweep, path, family, size, seed, D (elements actually trained on, from
evals.json; the config budget if absent), D_budget, the four N (n_nonembedding,
n_with_embeddings, n_with_patch, and n_with_head: the backbone and the output head), flops (what
the run recorded, 6 * n_nonembedding * D) and flops_* for the other N definitions, step, every numeric key of evals.json (the metrics:
listed by `metric_columns`), the ablation knobs flattened as "model.<key>", "data.<key>",
optim.lr / optim.warmup_steps, and what wrote the run (code_commit, code_dirty, machine_host,
machine_cpu, machine_cores, machine_torch, machine_gpu: `provenance`). Directories holding a
report.html (a report written beside the runs) are not runs.

Text -> image metrics ("t2i/...") enter the table only from runs scored under text -> image
protocol T2I_PROTOCOL or later (evals.json "meta/t2i_protocol", written by evals/harness.py).
Earlier runs sampled eps from t = 999 without a safe grid, which multiplied the model's eps
error ~1,300x (issue 11), and scored FID on 64 images, inside its own noise floor: their
t2i values are withheld, one warning line says how many, and `python -m grid.evaluate RUN_DIR`
re-scores such a run from its checkpoint. The table's attrs["withheld"] lists those runs.

FID and KID are distances in the features of a network trained on the data where the run was
evaluated (evals/fid.py; its hash is evals.json's "meta/fid_network", the column fid_network).
Two machines train two networks (results/ holds runs scored with three), and a FID in one
network's features is not on another's scale. So within a sweep only the network most of its runs used counts; the
FID and KID of runs scored with another are withheld, with one warning line, and listed in
attrs["other_network"].

Older results lack the n_* keys: their n_nonembedding is recovered as flops / (6 * D), which
is exact for the 6ND accounting the trainer records (model/accounting.py), and marked in the
column n_source ("recorded" or "from_flops").
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import yaml

RUN_FILES = ("status.json", "config.yaml", "evals.json", "metrics.jsonl")
N_DEFS = ("n_nonembedding", "n_with_embeddings", "n_with_patch")
# evals.json keys that describe the run rather than measure it.
def _is_metric(key: str) -> bool:
    """Benchmark values, not bookkeeping: meta/ strings and timings, and "<set>/tokens" (how
    many tokens a perplexity was measured on) are records, not results."""
    return key not in BOOKKEEPING and not key.startswith("meta/") and not key.endswith("/tokens")


BOOKKEEPING = {"step", "elements", "flops", *N_DEFS, *(f"flops_{n[2:]}" for n in N_DEFS), "n_with_head", "flops_with_head"}
# The text -> image protocol whose numbers can be trusted; equals evals.harness.T2I_PROTOCOL
# (a test keeps them equal: analysis/ does not import torch code).
T2I_PROTOCOL = 2
T2I_PREFIX = "t2i/"


def t2i_trusted(evals: dict) -> bool:
    """Whether a run's text -> image metrics come from the fixed sampler and powered metrics."""
    try:
        return int(evals.get("meta/t2i_protocol", 0)) >= T2I_PROTOCOL
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Skipped:
    """A run left out of the table: its sweep/run name, directory and why."""

    run: str
    path: str
    reason: str


class RunUnreadable(Exception):
    """One run cannot enter the table; the message is the reason."""


def _is_run_dir(p: Path) -> bool:
    return any((p / f).exists() for f in RUN_FILES)


def _is_report_dir(p: Path) -> bool:
    """A report analysis/report.py wrote (results/<sweep>/report/ is committed beside the runs)."""
    return (p / "report.html").exists()


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories under a results root, a sweep dir, or a run dir itself.

    A results root holds sweep dirs holding run dirs; a directory under a sweep is a run even
    when empty (a launch that never wrote anything is reported, not silently dropped).
    """
    root = Path(root)
    if _is_run_dir(root):
        return [root]
    runs: list[Path] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and not _is_report_dir(p)):
        subdirs = [p for p in child.iterdir() if p.is_dir() and not p.name.startswith(".") and not _is_report_dir(p)]
        if _is_run_dir(child) or not subdirs:
            runs.append(child)  # root was a sweep dir
        else:
            runs.extend(sorted(subdirs))
    return runs


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise RunUnreadable(f"no {path.name}")
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunUnreadable(f"{path.name} is unreadable ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise RunUnreadable(f"{path.name} is not a JSON object")
    return obj


def _read_config(path: Path) -> dict:
    if not path.exists():
        raise RunUnreadable("no config.yaml")
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RunUnreadable(f"config.yaml is unreadable ({exc.__class__.__name__})") from None
    if not isinstance(cfg, dict) or "family" not in cfg:
        raise RunUnreadable("config.yaml has no family")
    return cfg


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def load_run(run_dir: Path) -> dict:
    """One table row for a finished run; raises RunUnreadable with the reason otherwise."""
    run_dir = Path(run_dir)
    status = _read_json(run_dir / "status.json")
    state = status.get("state")
    if state != "done":
        err = f": {status['error']}" if status.get("error") else ""
        raise RunUnreadable(f"state is {state!r}{err}")
    cfg = _read_config(run_dir / "config.yaml")
    evals = _read_json(run_dir / "evals.json")
    row: dict = {"run": run_dir.name, "sweep": run_dir.parent.name, "path": str(run_dir),
                 "family": cfg["family"], "size": cfg.get("size"), "seed": cfg.get("seed")}
    D = _number(evals.get("elements")) or _number(cfg.get("D"))
    if not D:
        raise RunUnreadable("neither evals.json elements nor config D")
    row.update(D=D, D_budget=_number(cfg.get("D")), step=_number(evals.get("step")))
    flops = _number(evals.get("flops"))
    n = {k: _number(evals.get(k)) for k in N_DEFS}
    row["n_source"] = "recorded" if n["n_nonembedding"] else "from_flops"
    if not n["n_nonembedding"] and flops:
        n["n_nonembedding"] = flops / (6.0 * D)
    row.update(n)
    row["flops"] = flops if flops else (6.0 * n["n_nonembedding"] * D if n["n_nonembedding"] else math.nan)
    for k in N_DEFS[1:]:
        fk = "flops_" + k[2:]
        rec = _number(evals.get(fk))
        row[fk] = rec if rec else (6.0 * n[k] * D if n[k] else math.nan)
    # N with the output head only: model/accounting.py counts the untied head and the input
    # embedding as V * dim each, so the head is half of what n_with_embeddings adds.
    if n["n_nonembedding"] and n["n_with_embeddings"]:
        row["n_with_head"] = (n["n_nonembedding"] + n["n_with_embeddings"]) / 2
        row["flops_with_head"] = row["flops"] * row["n_with_head"] / n["n_nonembedding"]
    else:
        row["n_with_head"] = row["flops_with_head"] = math.nan
    metrics = {k: float(v) for k, v in evals.items() if _is_metric(k) and _number(v) is not None}
    row["_withheld"] = not t2i_trusted(evals) and any(k.startswith(T2I_PREFIX) for k in metrics)
    if row["_withheld"]:
        metrics = {k: v for k, v in metrics.items() if not k.startswith(T2I_PREFIX)}
    if not metrics:
        raise RunUnreadable("evals.json holds no metric")
    row.update(metrics)
    row["_metrics"] = list(metrics)
    row["fid_network"] = evals.get("meta/fid_network")
    for section in ("model", "data"):
        for k, v in (cfg.get(section) or {}).items():
            row[f"{section}.{k}"] = v
    for k in ("seq_len", "batch_rows", "precision"):
        row[k] = cfg.get(k)
    for k in ("lr", "warmup_steps"):  # the recipe's scalars (the lr-sweep varies lr)
        row[f"optim.{k}"] = (cfg.get("optim") or {}).get(k)
    row["eval.cfg_scale"] = (cfg.get("eval") or {}).get("cfg_scale")  # the guidance its t2i/* were sampled at
    row.update(provenance(status))
    return row


def provenance(status: dict) -> dict:
    """Which code and machine wrote a run (status.json, grid/provenance.py); None where the run
    predates the record (before issue 16)."""
    code, machine = status.get("code") or {}, status.get("machine") or {}
    commit = code.get("commit")
    return {"code_commit": commit[:10] if commit else None, "code_dirty": code.get("dirty"),
            "machine_host": machine.get("host") or status.get("host"), "machine_cpu": machine.get("cpu"),
            "machine_cores": machine.get("cores"), "machine_torch": machine.get("torch"),
            "machine_gpu": machine.get("gpu")}


def _warn_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def collect(results_dirs: Iterable[Path | str], warn: Callable[[str], None] | None = _warn_stderr
            ) -> tuple[pd.DataFrame, list[Skipped]]:
    """(table, skipped) over every run under `results_dirs` (see the module docstring).

    `warn` receives one line per skipped run ("skipped <sweep>/<run>: <reason>") and one for
    withheld image metrics; pass None to stay quiet. The table's attrs["metrics"] lists its
    metric columns in first-seen order, attrs["withheld"] the runs whose t2i/ values were dropped.
    """
    rows, skipped, metrics, withheld = [], [], [], []
    for root in results_dirs:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"results dir {root} does not exist")
        for run_dir in find_run_dirs(root):
            name = f"{run_dir.parent.name}/{run_dir.name}"
            try:
                row = load_run(run_dir)
            except RunUnreadable as exc:
                skipped.append(Skipped(name, str(run_dir), str(exc)))
                if warn:
                    warn(f"skipped {name}: {exc}")
                continue
            metrics += [m for m in row.pop("_metrics") if m not in metrics]
            if row.pop("_withheld"):
                withheld.append(name)
            rows.append(row)
    if withheld and warn:
        warn(f"withheld the text -> image metrics of {len(withheld)} run(s) scored before protocol "
             f"{T2I_PROTOCOL} (faulty sampler, unpowered FID; issue 11): re-score with python -m grid.evaluate RUN_DIR")
    table = pd.DataFrame(rows)
    other = _withhold_other_networks(table, warn)
    table.attrs["metrics"] = metrics
    table.attrs["withheld"] = withheld
    table.attrs["other_network"] = other
    return table, skipped


NETWORK_METRICS = ("t2i/fid", "t2i/kid")  # prefixes of the values measured in the network's features


def _withhold_other_networks(table: pd.DataFrame, warn: Callable[[str], None] | None) -> list[str]:
    """Within each sweep, blank the FID and KID of runs scored with another feature network than
    most of its runs (module docstring); returns their sweep/run names."""
    if table.empty or "t2i/fid" not in table.columns:
        return []
    columns = [c for c in table.columns if c.startswith(NETWORK_METRICS)]
    other = []
    for sweep, rows in table[table["t2i/fid"].notna()].groupby("sweep"):
        networks = rows["fid_network"].fillna("not recorded")
        counts = networks.value_counts()
        if len(counts) < 2:
            continue
        majority = sorted(counts.index, key=lambda n: (-counts[n], n))[0]
        odd = rows.index[networks != majority]
        table.loc[odd, columns] = math.nan
        names = [f"{sweep}/{r}" for r in table.loc[odd, "run"]]
        other += names
        if warn:
            warn(f"withheld the FID and KID of {len(names)} run(s) of {sweep} scored with another FID network than "
                 f"its other {counts[majority]} ({majority}): not comparable; rerun them on the others' machine "
                 f"or re-score with python -m grid.evaluate RUN_DIR there ({', '.join(sorted(names))})")
    return other


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a collected table (attrs if present, else the keys with a '/')."""
    found = table.attrs.get("metrics")
    if found:
        return [m for m in found if m in table.columns]
    return [c for c in table.columns if "/" in c and pd.api.types.is_numeric_dtype(table[c])]


def read_curve(run_dir: Path) -> pd.DataFrame:
    """metrics.jsonl of one run as a DataFrame (training and eval lines together, by step).

    A half-written or corrupt line (a run killed mid-write) is dropped, not fatal.
    """
    path = Path(run_dir) / "metrics.jsonl"
    records = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return pd.DataFrame(records)
