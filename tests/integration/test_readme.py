"""The README's Quickstart is the front door: exactly two commands, and CI runs the second."""

import re
from pathlib import Path

from printed import differs

ROOT = Path(__file__).resolve().parents[2]


def _quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, re.S)


def test_quickstart_has_two_commands_and_ci_runs_the_test_one():
    commands = _quickstart_commands()
    assert len(commands) == 2, commands
    install_and_run, install_and_test = commands
    assert "pip install torch==2.13.0" in install_and_run and "pip install torch==2.13.0" in install_and_test
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci_lines


from analysis.findings import MARKERS

FINDINGS_START, FINDINGS_END = MARKERS


def test_the_readme_findings_table_is_what_the_committed_results_give(monkeypatch):
    """The README's findings table is exactly what analysis/findings.py computes from results/
    (regenerate it with `python analysis/findings.py results --update README.md` after committing runs)."""
    from analysis.collect import collect
    from analysis.findings import findings
    from analysis.tables import to_markdown

    readme = (ROOT / "README.md").read_text()
    assert FINDINGS_START in readme and FINDINGS_END in readme
    shown = readme.split(FINDINGS_START, 1)[1].split(FINDINGS_END, 1)[0].strip()
    monkeypatch.chdir(ROOT)
    table, skipped = collect(["results"], warn=None)  # relative, as the README's command names them
    why = differs(to_markdown(findings(table, skipped=skipped)).strip(), shown)
    assert not why, f"the README's findings table is stale ({why}): python analysis/findings.py results --update README.md"
