"""Image metrics from before the sampler fix (issue 11) never reach a table or report, nor FIDs
in another feature network than the rest of their sweep's."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from analysis.collect import T2I_PROTOCOL, collect


def _run(sweep: Path, name: str, evals: dict) -> None:
    run = sweep / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"family": "transfusion", "size": "cpu-0.8M", "D": 1000}))
    (run / "evals.json").write_text(json.dumps({"elements": 1000, "flops": 6e9, "text_c4/ppl": 100.0, **evals}))
    (run / "status.json").write_text(json.dumps({"state": "done"}))


def test_t2i_metrics_of_old_runs_are_withheld_and_named(tmp_path):
    sweep = tmp_path / "results" / "toy"
    _run(sweep, "old", {"t2i/fid": 81.0, "t2i/geneval_overall": 0.0})
    _run(sweep, "garbled", {"t2i/fid": 30.0, "meta/t2i_protocol": "new"})
    _run(sweep, "new", {"t2i/fid": 20.0, "t2i/kid": 0.01, "meta/t2i_protocol": str(T2I_PROTOCOL)})
    lines: list[str] = []
    table, skipped = collect([tmp_path / "results"], warn=lines.append)
    assert not skipped and len(table) == 3  # the runs stay; only their image metrics go
    by_run = table.set_index("run")
    assert by_run.loc["new", "t2i/fid"] == 20.0 and by_run.loc["new", "t2i/kid"] == 0.01
    assert by_run[["t2i/fid"]].loc[["old", "garbled"]].isna().all().all()
    assert by_run.loc["old", "text_c4/ppl"] == 100.0  # text metrics are unaffected
    assert sorted(table.attrs["withheld"]) == ["toy/garbled", "toy/old"]
    assert len(lines) == 1 and "withheld the text -> image metrics of 2 run(s)" in lines[0]


def test_fids_from_another_feature_network_are_withheld_within_their_sweep(tmp_path):
    new = {"meta/t2i_protocol": str(T2I_PROTOCOL)}
    a, b = ({**new, "meta/fid_network": f"shapes-fid-v1:{h}"} for h in ("aaa", "bbb"))
    toy, other = tmp_path / "results" / "toy", tmp_path / "results" / "other"
    _run(toy, "r1", {**a, "t2i/fid": 5.0, "t2i/fid_floor_real": 2.0, "t2i/kid": 0.1, "t2i/geneval_overall": 0.3})
    _run(toy, "r2", {**a, "t2i/fid": 6.0})
    _run(toy, "odd", {**b, "t2i/fid": 9.0, "t2i/kid": 0.2, "t2i/geneval_overall": 0.4})
    _run(other, "alone", {**b, "t2i/fid": 7.0})  # another sweep: its own majority
    lines: list[str] = []
    table, _ = collect([tmp_path / "results"], warn=lines.append)
    by_run = table.set_index("run")
    assert by_run.loc[["r1", "r2", "alone"], "t2i/fid"].tolist() == [5.0, 6.0, 7.0]
    assert by_run.loc["odd", ["t2i/fid", "t2i/kid"]].isna().all()
    assert by_run.loc["odd", "t2i/geneval_overall"] == 0.4  # not measured in the network's features
    assert table.attrs["other_network"] == ["toy/odd"]
    assert len(lines) == 1 and "1 run(s) of toy" in lines[0] and "other 2 (shapes-fid-v1:aaa)" in lines[0]


def test_every_committed_run_with_image_metrics_is_withheld_or_current():
    # results/ as committed: no t2i value from the old sampler may enter a table
    root = Path(__file__).resolve().parents[2] / "results"
    table, _ = collect([root], warn=None)
    for name in table.attrs["withheld"]:
        evals = json.loads((root / name / "evals.json").read_text())
        assert int(evals.get("meta/t2i_protocol", 0) or 0) < T2I_PROTOCOL
    for col in (c for c in table.columns if c.startswith("t2i/")):
        kept = table[table[col].notna()]
        for path in kept["path"]:
            assert json.loads((Path(path) / "evals.json").read_text())["meta/t2i_protocol"] == str(T2I_PROTOCOL)


def test_protocol_matches_the_harness():
    from evals.harness import T2I_PROTOCOL as harness_protocol

    assert int(harness_protocol) == T2I_PROTOCOL
