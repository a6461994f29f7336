"""Every committed report under results/ is what analysis/report.py writes from the committed
runs today: its tables and text regenerate, each number to the precision it is printed at (the
figures are drawn from the same numbers; their bytes depend on the matplotlib build, so they
are not compared).

A number may differ by one unit in its last printed digit: an optimiser's last digits depend on
the CPU's floating-point library (a fresh clone on an AMD EPYC printed A=5.226 where this Intel
Xeon printed 5.225), and the report prints a parameter that ran to its bound as such, not its
digits. The words between the numbers must match exactly."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from analysis.report import build

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


NUMBER = re.compile(r"[-+]?\d+(?:\.(\d+))?(?:e([-+]\d+))?")


def differs(new: str, old: str) -> str:
    """'' when new and old have the same words and numbers that agree to one unit in their last
    printed digit; else the first difference."""
    nums_new, nums_old = list(NUMBER.finditer(new)), list(NUMBER.finditer(old))
    words_new, words_old = NUMBER.sub("#", new), NUMBER.sub("#", old)
    if words_new != words_old or len(nums_new) != len(nums_old):
        line = next((a for a, b in zip(words_new.splitlines(), words_old.splitlines()) if a != b), "")
        return f"text differs near {line[:120]!r}"
    for a, b in zip(nums_new, nums_old):
        digits = max(len(a.group(1) or ""), len(b.group(1) or ""))
        exp = int(b.group(2) or 0)
        if abs(float(a.group(0)) - float(b.group(0))) > 1.0001 * 10.0 ** (exp - digits):
            return f"{a.group(0)} against {b.group(0)}"
    return ""


def test_numbers_may_differ_in_their_last_digit_only():
    assert not differs("A=5.226, B=19.53", "A=5.225, B=19.53")
    assert not differs("E=3.274e-07", "E=3.275e-07")
    assert differs("A=5.236", "A=5.225") == "5.236 against 5.225"
    assert differs("A=5.225 at", "A=5.225 in").startswith("text differs")
