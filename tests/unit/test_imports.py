"""The design's import rules (DESIGN "Layout"; STYLE 2), checked on the source: each folder
imports only the folders above it, lazy imports inside functions included, and analysis/
never pulls in torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("model", "baselines", "data", "evals", "grid", "analysis", "bench")
# What each folder may import of the suite, besides itself.
ALLOWED = {
    "model": set(),
    "baselines": {"model"},
    "data": {"model"},
    "evals": {"model", "baselines", "data"},  # metrics know no launcher
    "grid": {"model", "baselines", "data", "evals"},
    "analysis": {"grid"},  # only grid/family.py's torch-free names (checked below)
    "bench": {"model", "baselines", "data", "evals", "grid", "analysis"},  # the top: it times everything below
}


def suite_imports(path: Path) -> set[str]:
    """The suite folders a file imports, at any depth of the file (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in FOLDERS}
    return found


def test_suite_imports_sees_lazy_imports(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import os\nfrom model.batch import PAD\n\ndef f():\n    from grid.train import train\n")
    assert suite_imports(f) == {"model", "grid"}


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_folder_imports_only_the_folders_above_it(folder):
    bad = {str(p.relative_to(ROOT)): sorted(suite_imports(p) - ALLOWED[folder] - {folder})
           for p in sorted((ROOT / folder).glob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}, f"{folder}/ may import only {sorted(ALLOWED[folder])}"


def test_analysis_and_the_family_registry_import_no_torch():
    modules = [f"analysis.{p.stem}" for p in sorted((ROOT / "analysis").glob("*.py")) if p.stem != "__init__"]
    code = (f"import sys; import {', '.join(modules)}, grid.family; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'model', 'baselines', 'evals')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
