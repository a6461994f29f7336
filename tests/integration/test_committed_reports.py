"""Every committed report under results/ is what analysis/report.py writes from the committed
runs today: its tables and text regenerate, each number to the precision it is printed at (the
figures are drawn from the same numbers; their bytes depend on the matplotlib build, so they
are not compared).

A number may differ by one unit in its last printed digit (tests/integration/printed.py), and the
report prints a parameter that ran to its bound as such, not its digits."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from analysis.report import build
from printed import differs

ROOT = Path(__file__).resolve().parents[2]
REPORTS = sorted(p.parent for p in (ROOT / "results").glob("**/report/report.md"))


@pytest.mark.parametrize("report", REPORTS, ids=[str(p.relative_to(ROOT)) for p in REPORTS])
def test_a_committed_report_regenerates(report, tmp_path, monkeypatch):
    md = (report / "report.md").read_text()
    inputs = re.search(r"^Runs from (.*?): \d+ used", md, re.M)
    assert inputs, "report.md does not say which results it was built from"
    monkeypatch.chdir(ROOT)  # the report names its inputs as they were given, relative to the root
    with contextlib.redirect_stdout(io.StringIO()):
        build([Path(p) for p in inputs.group(1).split(", ")], tmp_path)
    texts = sorted(p.name for p in report.glob("*.md"))
    assert texts == sorted(p.name for p in tmp_path.glob("*.md"))
    for name in texts:
        why = differs((tmp_path / name).read_text(), (report / name).read_text())
        assert not why, f"{report.name}/{name} is stale ({why}): rerun " \
            f"python analysis/report.py {inputs.group(1).replace(', ', ' ')} --out {report.relative_to(ROOT)}"


def test_numbers_may_differ_in_their_last_digit_only():
    assert not differs("A=5.226, B=19.53", "A=5.225, B=19.53")
    assert not differs("E=3.274e-07", "E=3.275e-07")
    assert differs("A=5.236", "A=5.225") == "5.236 against 5.225"
    assert differs("A=5.225 at", "A=5.225 in").startswith("text differs")
