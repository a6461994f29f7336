"""No file the suite reads can run code: every torch.load in the source is weights_only=True,
and a checkpoint or data file rewritten by someone hostile (checksum updated to match) is
refused without running what it carries."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest
import torch

from grid.checkpoint import CheckpointManager, CorruptCheckpoint

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("analysis", "baselines", "bench", "data", "evals", "grid", "model")


class _Payload:
    """Unpickling this runs `Path(marker).touch()`: the shape of a real exploit, made harmless."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _poison(path: Path, marker: Path) -> None:
    torch.save({"model": _Payload(marker)}, path)  # torch.save pickles any object: the real file format


def _calls(name: str):
    """(file, call node) for every call of `name` (an attribute's last part) in the source."""
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call):
                    f = node.func
                    if (isinstance(f, ast.Attribute) and f.attr == name) or (isinstance(f, ast.Name) and f.id == name):
                        yield path.relative_to(ROOT), node


def test_every_torch_load_in_the_source_is_weights_only():
    loads = list(_calls("load"))
    torch_loads = [(p, n) for p, n in loads if isinstance(n.func, ast.Attribute)
                   and isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"]
    assert torch_loads, "the scan found no torch.load at all: it is not looking where the code is"
    unsafe = [f"{p}:{n.lineno}" for p, n in torch_loads
              if not any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in n.keywords)]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"
    pickles = [f"{p}:{n.lineno}" for p, n in loads if isinstance(n.func, ast.Attribute)
               and isinstance(n.func.value, ast.Name) and n.func.value.id in ("pickle", "dill", "joblib")]
    assert not pickles, f"pickle loads of files: {pickles}"


def test_the_scan_catches_an_unsafe_load(tmp_path, monkeypatch):
    bad = tmp_path / "grid"
    bad.mkdir()
    (bad / "x.py").write_text("import torch\nstate = torch.load('f', weights_only=False)\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__), "SOURCE_DIRS", ("grid",))
    with pytest.raises(AssertionError, match="x.py:2"):
        test_every_torch_load_in_the_source_is_weights_only()


def test_a_poisoned_checkpoint_with_a_matching_checksum_runs_no_code(tmp_path):
    mgr = CheckpointManager(tmp_path / "ckpt")
    mgr.save(1, {"step": 1, "w": torch.ones(2)})
    state = mgr.path(1) / "state.pt"
    marker = tmp_path / "pwned"
    _poison(state, marker)
    meta = json.loads((mgr.path(1) / "meta.json").read_text())
    meta["sha256"] = hashlib.sha256(state.read_bytes()).hexdigest()  # the attacker rewrites the sum too
    (mgr.path(1) / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptCheckpoint, match="does not load"):
        mgr.load(1)
    assert not marker.exists()


def _data_copy(prepared, tmp_path: Path):
    """A copy of the prepared data to tamper with, opened as the suite opens it."""
    import shutil

    from data.embedded import EmbeddedData

    copy = tmp_path / "data"
    shutil.copytree(prepared[0], copy)
    return copy, lambda: EmbeddedData(copy)


def test_a_poisoned_data_file_runs_no_code(prepared, tmp_path):
    copy, data = _data_copy(prepared, tmp_path)
    marker = tmp_path / "pwned"
    _poison(copy / "encoded" / "shapes_val_kl.pt", marker)
    with pytest.raises(ValueError, match="shapes_val_kl.pt is unreadable"):
        data().encoded("shapes", "val", "kl")
    assert not marker.exists()


def test_a_shard_holding_pickled_objects_runs_no_code(prepared, tmp_path):
    # numpy stores an object array as a pickle; shard sets are read with allow_pickle=False
    import numpy as np

    copy, data = _data_copy(prepared, tmp_path)
    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    np.save(copy / "shards" / "text_train" / "00000.tokens.npy", payload, allow_pickle=True)
    with pytest.raises(ValueError, match="00000.tokens.npy is unreadable"):
        data().text_documents("train").next()
    assert not marker.exists()


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    # Without weights_only the same file runs its code: the tests above would catch a regression.
    marker = tmp_path / "pwned"
    _poison(tmp_path / "f.pt", marker)
    torch.load(tmp_path / "f.pt", weights_only=False)
    assert marker.exists()
