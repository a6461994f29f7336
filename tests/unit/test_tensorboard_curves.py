"""grid/tensorboard_curves.py without training: off, it imports and writes nothing; on without
the tensorboard package, the trainer stops with one line naming the install before it writes
anything. (tests/integration/test_tensorboard.py reads real runs' curves back.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grid.config import load_config
from grid.merge import ConfigError
from grid.train import main, train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_tensorboard(monkeypatch):
    """As if tensorboard were not installed: importing torch.utils.tensorboard raises ImportError."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)


def test_off_imports_and_writes_nothing(tmp_path):
    code = ("import sys; from grid.tensorboard_curves import Curves\n"
            f"with Curves({str(tmp_path)!r}, 0, enabled=False) as c:\n"
            "    c.add({'step': 1, 'loss': 2.0}); c.flush()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorboard' or 'utils.tensorboard' in m))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]" and not any(tmp_path.iterdir())


def test_missing_package_is_one_line_before_the_run(no_tensorboard, tmp_path):
    cfg = load_config(None, ["tensorboard=true", f"data.data_dir={tmp_path / 'none'}"])
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[tensorboard\]'") as err:
        train(cfg, tmp_path / "r", tmp_path / "c")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()  # the run never started


def test_missing_package_cli_error(no_tensorboard, tmp_path, capsys):
    assert main(["tensorboard=true", "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tensorboard=true needs") and "pip install -e '.[tensorboard]'" in err
    assert len(err.splitlines()) == 1
