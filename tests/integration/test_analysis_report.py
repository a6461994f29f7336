"""analysis/collect.py, tables.py and report.py on a results dir with broken runs in it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.collect import collect, metric_columns, read_curve
from analysis.metrics import direction
from analysis.report import build
from analysis.tables import ABLATION_KNOBS, ablation_table, to_latex

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"cpu-0.11M": 106_816, "cpu-0.33M": 332_448, "cpu-0.8M": 803_968}


def _write_run(sweep_dir: Path, family: str, size: str, D: int, old_format: bool = False, **model) -> Path:
    """A finished run in the trainer's format, its losses from a known power law in 6ND."""
    n = SIZES[size]
    run = sweep_dir / f"{family}-{size}-D{D // 1000}k-{len(model)}{''.join(map(str, model.values()))}"
    run.mkdir(parents=True)
    C = 6 * n * D
    gain = 0.9 if family == "transfusion" else 1.0
    lm = gain * math.exp(3.5 - 0.06 * math.log(C))
    cfg = {"family": family, "size": size, "D": D, "seed": 0,
           "model": {"image_attention": "bidirectional", "patch_kind": "linear", "patch_size": 2, **model},
           "data": {"dataset": "shapes", "text_share": 0.5}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    evals = {"step": D // 2000, "elements": D, "flops": C, "text_c4/lm": lm, "caption/cider": 0.1 * math.log(C) / gain}
    if not old_format:
        evals.update(n_nonembedding=n, n_with_embeddings=n + 2 * 4096 * 64, n_with_patch=n + 2 * 4096 * 64 + 1000)
    (run / "evals.json").write_text(json.dumps(evals))
    lines = [json.dumps({"step": s, "elements": s * 2000, "loss": 8.0 / s ** 0.2}) for s in range(1, 20)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 20, "elem')  # killed mid-line
    (run / "status.json").write_text(json.dumps({"state": "done", "run_id": run.name}))
    return run


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    toy = root / "toy"
    for fam in ("transfusion", "chameleon"):
        for size in SIZES:
            for D in (200_000, 400_000, 800_000):
                _write_run(toy, fam, size, D, old_format=(size == "cpu-0.11M" and D == 200_000))
    for p in (1, 2, 4):
        _write_run(root / "ablation-patch", "transfusion", "cpu-0.8M", 400_000, patch_size=p, patch_kind="linear")
    # broken runs: half-written evals, corrupt status, failed, still running, empty directory
    bad = _write_run(toy, "transfusion", "cpu-0.8M", 1_600_000)
    (bad / "evals.json").write_text('{"step": 3, "text_c4')
    bad = _write_run(toy, "chameleon", "cpu-0.8M", 1_600_000)
    (bad / "status.json").write_text('{"state": "do')
    bad = _write_run(toy, "chameleon", "cpu-0.33M", 1_600_000)
    (bad / "status.json").write_text(json.dumps({"state": "failed", "error": "RuntimeError: loss is nan"}))
    bad = _write_run(toy, "transfusion", "cpu-0.33M", 1_600_000)
    (bad / "status.json").write_text(json.dumps({"state": "running"}))
    (toy / "never-started").mkdir()
    return root


def test_collect_table_and_skips(results, capsys):
    table, skipped = collect([results])
    assert len(table) == 18 + 3
    reasons = {s.run.split("/")[1]: s.reason for s in skipped}
    assert len(reasons) == 5 and "never-started" in reasons
    assert any("evals.json is unreadable" in r for r in reasons.values())
    assert any("status.json is unreadable" in r for r in reasons.values())
    assert any("'failed': RuntimeError: loss is nan" in r for r in reasons.values())
    assert any("'running'" in r for r in reasons.values())
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("skipped toy/") for line in err)
    assert metric_columns(table) == ["text_c4/lm", "caption/cider"]
    old = table[table.n_source == "from_flops"]
    assert len(old) == 2 and old.n_nonembedding.tolist() == pytest.approx([SIZES["cpu-0.11M"]] * 2)
    assert math.isnan(old.n_with_embeddings.iloc[0])
    assert {"model.patch_size", "data.text_share", "sweep", "D", "flops_with_patch"} <= set(table.columns)


def test_read_curve_drops_half_written_line(results):
    run = next((results / "toy").glob("transfusion-cpu-0.8M-D800k*"))
    curve = read_curve(run)
    assert len(curve) == 19 and curve.step.max() == 19


def test_metric_directions():
    assert direction("text_c4/ppl") == (False, True) and direction("t2i/fid") == (False, True)
    assert direction("caption/cider") == (True, True) and direction("t2i/geneval_overall") == (True, True)
    assert direction("weird/thing") == (False, False)


def test_ablation_knobs_match_the_sweep_registry():
    sweeps = pytest.importorskip("grid.sweeps")
    assert set(ABLATION_KNOBS) == {name for name in sweeps.SWEEPS if name.startswith("ablation-")}


def test_ablation_table_and_latex(results):
    table, _ = collect([results], warn=None)
    t = ablation_table(table, "ablation-patch", metric_columns(table))
    assert list(t["patch_size"]) == ["1", "2", "4"] and "text_c4/lm ↓" in t.columns
    tex = to_latex(t, "patch size", "tab:patch")
    assert r"text\_c4/lm $\downarrow$" in tex and r"\toprule" in tex


def test_report_end_to_end_names_skipped_runs(results, tmp_path, capsys):
    out = tmp_path / "report"
    build([results], out, bootstrap_k=20, every=True)
    stdout = capsys.readouterr().out
    assert stdout.count("[report") >= 6  # a progress line per step
    assert "fit/s]" in stdout or "s/fit]" in stdout  # the fits' progress bar, with its rate and ETA
    for name in ("report.html", "report.md", "findings.md", "fits.json", "parity.csv", "table.csv", "figure5_toy.png", "figure5_toy.pdf",
                 "curves_toy.png", "table3_toy.md", "table3_toy.tex", "ablation-patch.md", "ablation-patch.tex"):
        assert (out / name).exists(), name
    md = (out / "report.md").read_text()
    assert "never-started" in md and "loss is nan" in md
    assert '<img src="data:image/png;base64,' in (out / "report.html").read_text()
    par = pd.read_csv(out / "parity.csv").set_index("metric")
    # transfusion's loss is 0.9x chameleon's along the same slope: ratio 0.9^(1/0.06) ~ 0.17
    assert par.loc["text_c4/lm", "ratio"] == pytest.approx(0.9 ** (1 / 0.06), rel=0.05)
    assert bool(par.loc["caption/cider", "higher_is_better"]) and par.loc["caption/cider", "ratio"] < 1
    fits = json.loads((out / "fits.json").read_text())
    assert fits["toy"]["trendline"]["text_c4/lm"]["chameleon"]["slope"] == pytest.approx(-0.06, abs=1e-6)
    assert "alpha" in fits["toy"]["chinchilla"]["text_c4/lm"]["transfusion"]


def test_report_fits_what_it_shows_by_default(results, tmp_path):
    """Without --all: trendlines and parity for the paper's benchmarks that were recorded
    (here caption/cider alone), the saturating laws for the C4 loss only, no power law."""
    out = tmp_path / "report"
    build([results], out, bootstrap_k=20)
    fits = json.loads((out / "fits.json").read_text())["toy"]
    assert set(fits["trendline"]) == {"caption/cider", "text_c4/lm"}
    assert set(fits["chinchilla"]["text_c4/lm"]) == {"transfusion", "chameleon"} and not fits["chinchilla"]["caption/cider"]
    assert all(not per_fam for per_fam in fits["power"].values())
    assert "delta_sensitivity" not in fits["chinchilla"]["text_c4/lm"]["transfusion"]
    assert pd.read_csv(out / "parity.csv")["metric"].tolist() == ["caption/cider"]
    assert "text_c4/lm" not in (out / "ablation-patch.md").read_text()  # ablation tables show the figure's benchmarks
    md = (out / "report.md").read_text()
    assert "## Findings" in md and "what wrote the runs" in md


def test_report_cli_rejects_missing_dir(tmp_path):
    r = subprocess.run([sys.executable, "analysis/report.py", str(tmp_path / "nope")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "not a directory" in r.stderr and "Traceback" not in r.stderr


def test_analysis_never_imports_torch():
    code = ("import sys, analysis.collect, analysis.fit, analysis.parity, analysis.plots, analysis.tables, "
            "analysis.report; assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
