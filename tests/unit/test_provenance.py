"""grid/provenance.py: the code version a run records changes when the code does."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import grid.provenance as prov


def test_source_hash_follows_the_code(tmp_path, monkeypatch):
    for pkg in prov.PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(prov, "ROOT", tmp_path)
    before = prov.source_sha256()
    assert before == prov.source_sha256()
    (tmp_path / "grid" / "a.py").write_text("x = 2\n")
    assert prov.source_sha256() != before
    (tmp_path / "results.txt").write_text("not code")  # files outside the packages do not count
    assert len({before, prov.source_sha256()}) == 2


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_commit_and_dirty_flag_come_from_git(tmp_path, monkeypatch):
    for pkg in prov.PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(prov, "ROOT", tmp_path)
    prov.code_version.cache_clear()
    assert prov.code_version()["commit"] is None  # not a checkout: only the source hash names the code
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    prov.code_version.cache_clear()
    assert prov.code_version()["commit"] == head and prov.code_version()["dirty"] is False
    (tmp_path / "untracked.txt").write_text("results")  # untracked files (results/) leave it clean
    prov.code_version.cache_clear()
    assert prov.code_version()["dirty"] is False
    (tmp_path / "model" / "a.py").write_text("x = 3\n")
    prov.code_version.cache_clear()
    assert prov.code_version()["dirty"] is True
    prov.code_version.cache_clear()
