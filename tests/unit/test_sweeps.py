"""Sweeps: every registered sweep builds valid, uniquely identified runs; ablations vary only
their knobs; the demo fits its time budget; unknown names list the valid ones."""

from __future__ import annotations

import dataclasses
import json

import pytest

from grid.ablations import FOLLOWS
from grid.config import resolved, to_dict
from grid.estimates import CALIBRATION_PEAK, PEAK_EXPONENT, Resources, estimated_seconds, sweep_wall_seconds
from grid.sweeps import ABLATION_KNOBS, ISOFLOP_BUDGETS, ISOFLOP_UPPER_BUDGETS, SWEEPS, RunSpec, get_sweep, register, run_ids
from grid.toy_lr import toy_lr
from model.accounting import backbone_params
from model.sizes import CPU_SIZES, PAPER_SIZES, get_size


@pytest.mark.parametrize("name", list(SWEEPS))
def test_every_sweep_builds_valid_unique_runs(name):
    specs = get_sweep(name)
    assert specs and all(isinstance(s, RunSpec) and isinstance(s.resources, Resources) for s in specs)
    ids = run_ids(specs)
    assert len(set(ids)) == len(specs)
    for s in specs:
        resolved(s.cfg).validate()
        assert s.resources.time_min > 0 and s.resources.nodes >= 1


def test_duplicate_ids_are_an_error():
    spec = get_sweep("demo")[0]
    with pytest.raises(ValueError, match="same run id"):
        run_ids([spec, RunSpec(dataclasses.replace(spec.cfg, device="cuda"))])  # device is not in the id


def test_unknown_sweep_lists_valid_names():
    with pytest.raises(ValueError) as e:
        get_sweep("nope")
    msg = str(e.value)
    assert "nope" in msg and all(name in msg for name in SWEEPS) and "\n" not in msg


def test_register_twice_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        register("demo")(lambda: [])


def _grid_axes(specs):
    return ({s.cfg.size for s in specs}, {s.cfg.D for s in specs}, {s.cfg.family for s in specs})


def _per_param(spec) -> float:
    return spec.cfg.D / backbone_params(get_size(spec.cfg.size))


TOY_SWEEPS = ("demo", "toy-paper")
# Issue 14's budgets on 2 cores. The demo's 15 minutes gave way to the regime: three sizes at 5-50
# elements per parameter, two seeds and 1,000-image FIDs need ~14-16 (grid/sweeps.py's docstring).
# An ablation's 30 minutes gave way to U-Net patches (issue 16's measured run times): the
# patch-size ablation has four U-Net runs, the encoder-size one three.
# toy-paper and isoflop grew (3 seeds at toy-paper's largest setting; IsoFLOP
# budgets up to 1.6e13 that bracket the optimum): several sessions' worth, launched idempotently.
TIME_BUDGET_MIN = {"demo": 20, "toy-paper": 330, "isoflop": 170, "world-calibration": 60,
                   **{a: 30 for a in ABLATION_KNOBS}, "ablation-patch": 45, "ablation-encoder-size": 45}


@pytest.mark.parametrize("name", TOY_SWEEPS)
def test_toy_sweeps_span_5_to_50_elements_per_parameter_at_every_size(name):
    """Issue 14: both families at every size, budgets from <= 5 to >= 50 elements per
    non-embedding parameter, the toy learning rates, 2 seeds at the smallest size."""
    specs = get_sweep(name)
    sizes, _, families = _grid_axes(specs)
    assert len(sizes) >= 3 and families == {"transfusion", "chameleon"} and sizes <= set(CPU_SIZES)
    for size in sizes:
        for f in families:
            ratios = [_per_param(s) for s in specs if s.cfg.size == size and s.cfg.family == f]
            assert min(ratios) <= 5 and max(ratios) >= 50 and len(ratios) >= 3, (size, f, ratios)
    for s in specs:
        assert s.cfg.optim.lr == toy_lr(s.cfg.family, s.cfg.size)
    smallest = min(sizes, key=lambda x: backbone_params(get_size(x)))
    assert {s.cfg.seed for s in specs if s.cfg.size == smallest} == {0, 1}
    assert all(s.cfg.seq_len >= 68 for s in specs)  # a Chameleon image (64 codes + BOI/EOI) fits
    assert all(s.resources.gpus_per_node == 0 for s in specs)


@pytest.mark.parametrize("name", list(TIME_BUDGET_MIN))
def test_cpu_sweeps_fit_their_time_budget_on_2_cores(name):
    """The estimate, evaluation included, on 2 cores of the calibration machine."""
    assert sweep_wall_seconds(get_sweep(name), 2, CALIBRATION_PEAK) <= TIME_BUDGET_MIN[name] * 60


def test_isoflop_sweep_has_7_budgets_of_4_sizes_for_both_families():
    specs = get_sweep("isoflop")
    by_budget: dict = {}
    for s in specs:
        c = 6 * backbone_params(get_size(s.cfg.size)) * s.cfg.D
        key = min(ISOFLOP_BUDGETS + ISOFLOP_UPPER_BUDGETS, key=lambda b: abs(b - c))
        assert c == pytest.approx(key, rel=1e-4)
        by_budget.setdefault((key, s.cfg.family), set()).add(s.cfg.size)
    assert len({b for b, _ in by_budget}) >= 7 and all(len(v) >= 4 for v in by_budget.values())
    assert {f for _, f in by_budget} == {"transfusion", "chameleon"}


def test_cpu_estimates_follow_the_machine_peak():
    """A machine of twice the peak runs a toy run 2**PEAK_EXPONENT times faster (measured on two
    machines); a larger model is slower per element, and sizes past the measured table
    extrapolate at the largest one's MFU; U-Net patches cost more, the more so the larger."""
    cfg = get_sweep("demo")[0].cfg
    slow, fast = estimated_seconds(cfg, CALIBRATION_PEAK), estimated_seconds(cfg, 2 * CALIBRATION_PEAK)
    assert fast == pytest.approx(slow / 2**PEAK_EXPONENT) and 0 < PEAK_EXPONENT <= 1
    unet = [estimated_seconds(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, patch_kind="unet", patch_size=p)),
                              CALIBRATION_PEAK) for p in (1, 2, 4)]
    assert slow < unet[0] < unet[1] < unet[2]
    per_element = [estimated_seconds(dataclasses.replace(cfg, size=s, D=10**6), CALIBRATION_PEAK)
                   for s in ("cpu-0.11M", "cpu-0.8M", "cpu-6.4M", "cpu-20M")]
    assert per_element == sorted(per_element) and len(set(per_element)) == 4


def test_paper_sweep_uses_the_paper_sizes_and_recipe():
    specs = get_sweep("paper")
    sizes, budgets, families = _grid_axes(specs)
    assert sizes == set(PAPER_SIZES) and len(families) == 2 and len(budgets) >= 3
    assert max(budgets) >= 5e11
    for s in specs:
        c = resolved(s.cfg)
        assert (c.seq_len, c.batch_rows, c.precision, c.device) == (4096, 512, "bf16", "cuda")
        assert c.optim.lr == (3e-4 if c.family == "transfusion" else 1e-4)
        assert s.resources.gpus_per_node > 0
    # Chameleon's three stability changes at paper scale; the U-Net, where asked for, ~0.27B.
    assert all(s.cfg.model.norm_reorder == (s.cfg.family == "chameleon") for s in specs)
    from model.patches import PatchConfig
    from model.unet import unet_codec_params

    unet = PatchConfig(kind="unet", patch_size=2, latent_channels=8, latent_size=32,
                       unet_channels=specs[0].cfg.model.unet_channels)
    for size in PAPER_SIZES:
        assert 0.25e9 <= unet_codec_params(unet, get_size(size).dim) <= 0.30e9
    top = [s for s in specs if s.cfg.D == max(budgets)][0]
    assert top.cfg.steps == 250_000 and resolved(top.cfg).optim.warmup_steps == 4000
    by_size = {s.cfg.size: s.resources for s in specs}
    assert by_size["7B"].nodes * by_size["7B"].gpus_per_node > by_size["0.16B"].nodes * by_size["0.16B"].gpus_per_node


def _get(d: dict, key: str):
    for part in key.split("."):
        d = d[part]
    return d


def _without(cfg, keys) -> dict:
    d = to_dict(cfg)
    for key in keys:
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node[p]
        del node[leaf]
    return d


@pytest.mark.parametrize("name", list(ABLATION_KNOBS))
def test_ablations_differ_only_in_their_knobs(name):
    specs = get_sweep(name)
    knobs = ABLATION_KNOBS[name]
    rest = [_without(s.cfg, knobs + FOLLOWS.get(name, ())) for s in specs]
    assert all(r == rest[0] for r in rest), f"{name} varies more than {knobs}"
    values = {tuple(repr(_get(to_dict(s.cfg), k)) for k in knobs) for s in specs}
    assert len(values) == len(specs)  # every combination once
    for k in knobs:  # and each knob really varies
        assert len({repr(_get(to_dict(s.cfg), k)) for s in specs}) > 1
    assert all(s.cfg.size in CPU_SIZES for s in specs)


def test_ablations_cover_tables_4_to_8():
    assert {"ablation-attention", "ablation-patch", "ablation-encoder-size", "ablation-noise-limit",
            "ablation-lambda", "ablation-text-only"} <= set(ABLATION_KNOBS)
    assert {s.cfg.model.patch_size for s in get_sweep("ablation-patch")} == {1, 2, 4, 8}
    assert {s.cfg.model.noise_limit for s in get_sweep("ablation-noise-limit")} == {None, 500}
    text = {(s.cfg.family, s.cfg.data.text_share) for s in get_sweep("ablation-text-only")}
    assert text == {("transfusion", 1.0), ("transfusion", 0.5), ("chameleon", 1.0), ("chameleon", 0.5)}


def test_the_machine_peak_is_measured_once_and_read_back(tmp_path, monkeypatch):
    """grid/machine.py keeps the measured peak per machine; a corrupt cache is measured again."""
    from grid import machine

    monkeypatch.setenv("TRANSFUSION_CACHE", str(tmp_path))
    machine.cpu_peak.cache_clear()
    first = machine.cpu_peak()
    stored = json.loads((tmp_path / "cpu_peak.json").read_text())
    assert stored == {machine._machine_key(): first} and first > 1e8
    machine.cpu_peak.cache_clear()
    (tmp_path / "cpu_peak.json").write_text(json.dumps({machine._machine_key(): 123.0}))
    assert machine.cpu_peak() == 123.0  # read back, not measured
    machine.cpu_peak.cache_clear()
    (tmp_path / "cpu_peak.json").write_text("{not json")
    assert machine.cpu_peak() > 1e8  # corrupt: measured again and rewritten
    assert json.loads((tmp_path / "cpu_peak.json").read_text())[machine._machine_key()] > 1e8
    machine.cpu_peak.cache_clear()


def test_lr_sweep_tries_the_same_learning_rates_for_both_families():
    """Issue 14: per family, 2+ sizes x 4+ peak learning rates, one grid for both families,
    each run at the same elements per non-embedding parameter."""
    from model.accounting import backbone_params
    from model.sizes import get_size

    specs = get_sweep("lr-sweep")
    grid = {(s.cfg.family, s.cfg.size): set() for s in specs}
    for s in specs:
        grid[(s.cfg.family, s.cfg.size)].add(resolved(s.cfg).optim.lr)
        assert s.cfg.D == 20 * backbone_params(get_size(s.cfg.size))
    lrs = next(iter(grid.values()))
    assert len({size for _, size in grid}) >= 2 and len(lrs) >= 4
    assert all(v == lrs for v in grid.values())  # the same grid everywhere
    assert {1e-4, 3e-4} <= lrs  # the paper's two recipes are among them
