"""Checkpoints: exact resume, atomic layout, damaged checkpoints skipped, RNG and signal handling."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import warnings

import numpy as np
import pytest
import torch

from data.order import ShardOrder
from grid.checkpoint import CheckpointManager, PreemptionFlag, rng_state, set_rng_state

DATA = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))


def _setup(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))
    return model, opt, sched, ShardOrder([DATA.shape[0]], seed=3)


def _step(model, opt, sched, sampler) -> None:
    # Every random stream feeds the update: data position (sampler), torch (dropout, noise),
    # numpy and python random (loss scales), so a missed restore shows up in the parameters.
    idx = torch.tensor([sampler.next()[1] for _ in range(4)])
    x = DATA[idx] + 0.01 * torch.randn(4, 8)
    scale = float(np.random.uniform(0.5, 1.5)) * random.uniform(0.5, 1.5)
    loss = scale * model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()


def _state(step, model, opt, sched, sampler) -> dict:
    return {"step": step, "elements_seen": 4 * step, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "data": sampler.state_dict(), "rng": rng_state()}


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _save_steps(tmp_path, steps, keep=5) -> CheckpointManager:
    mgr = CheckpointManager(tmp_path / "ckpt", keep=keep)
    for s in steps:
        mgr.save(s, {"step": s, "w": torch.full((3,), float(s))})
    return mgr


def test_resume_is_bitwise_identical(tmp_path):
    _seed_all(1)
    model, opt, sched, sampler = _setup(seed=0)
    for _ in range(5):
        _step(model, opt, sched, sampler)
    mgr = CheckpointManager(tmp_path / "ckpt")
    mgr.save(5, _state(5, model, opt, sched, sampler))
    for _ in range(3):  # the uninterrupted run goes on
        _step(model, opt, sched, sampler)
    expected = [p.detach().clone() for p in model.parameters()]

    _seed_all(99)  # a fresh process: different init, different streams until restored
    model2, opt2, sched2, sampler2 = _setup(seed=7)
    step, state = CheckpointManager(tmp_path / "ckpt").latest()
    assert step == 5 and state["step"] == 5 and state["elements_seen"] == 20
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    sampler2.load_state_dict(state["data"])
    set_rng_state(state["rng"])
    for _ in range(3):
        _step(model2, opt2, sched2, sampler2)
    assert all(torch.equal(a, b) for a, b in zip(expected, model2.parameters()))
    assert sched2.last_epoch == sched.last_epoch


def test_layout_and_keep_prunes(tmp_path):
    mgr = _save_steps(tmp_path, [10, 20, 30, 40], keep=2)
    assert mgr.steps() == [30, 40]
    names = sorted(p.name for p in mgr.directory.iterdir())
    assert names == ["step_00000030", "step_00000040"]  # no temp dirs left behind
    meta = json.loads((mgr.path(40) / "meta.json").read_text())
    assert meta["step"] == 40 and len(meta["sha256"]) == 64
    step, state = mgr.latest()
    assert step == 40 and torch.equal(state["w"], torch.full((3,), 40.0))
    mgr.save(40, {"step": 40, "w": torch.zeros(3)})  # re-saving a step replaces it
    assert mgr.steps() == [30, 40] and torch.equal(mgr.latest()[1]["w"], torch.zeros(3))
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(tmp_path, keep=0)


def _truncate(path):
    state = path / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])


def _missing_meta(path):
    (path / "meta.json").unlink()


def _wrong_checksum(path):
    meta = json.loads((path / "meta.json").read_text())
    meta["sha256"] = "0" * 64
    (path / "meta.json").write_text(json.dumps(meta))


def _garbage_state(path):
    # Checksum matches (meta rewritten to agree), yet the file is not a torch checkpoint.
    (path / "state.pt").write_bytes(b"not a checkpoint at all")
    meta = json.loads((path / "meta.json").read_text())
    meta["sha256"] = hashlib.sha256(b"not a checkpoint at all").hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))


def _garbage_meta(path):
    (path / "meta.json").write_text("{not json")


@pytest.mark.parametrize("damage", [_truncate, _missing_meta, _wrong_checksum, _garbage_state, _garbage_meta])
def test_damaged_checkpoint_is_skipped_with_warning(tmp_path, damage):
    mgr = _save_steps(tmp_path, [1, 2])
    damage(mgr.path(2))
    with pytest.warns(UserWarning, match="step_00000002"):
        step, state = mgr.latest()
    assert step == 1 and torch.equal(state["w"], torch.full((3,), 1.0))
    assert mgr.path(2).exists()  # skipped, not deleted


def test_nothing_usable_gives_none(tmp_path):
    assert CheckpointManager(tmp_path / "absent").latest() is None
    mgr = _save_steps(tmp_path, [1])
    _missing_meta(mgr.path(1))
    (mgr.directory / "step_00000009").write_text("a file, not a directory")
    (mgr.directory / "step_junk").mkdir()
    with pytest.warns(UserWarning, match="step_00000001"):
        assert mgr.latest() is None


def test_temp_dirs_ignored_and_cleaned(tmp_path):
    mgr = _save_steps(tmp_path, [1])
    host = mgr._host
    dead = mgr.directory / f".tmp-step_00000002-{host}-999999999"  # no such pid
    live = mgr.directory / f".tmp-step_00000003-{host}-{os.getppid()}"  # a live process: in progress
    other = mgr.directory / ".tmp-step_00000004-elsewhere-123"
    for d in (dead, live, other):
        d.mkdir()
        (d / "state.pt").write_bytes(b"partial")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mgr.latest()[0] == 1
    assert not dead.exists() and live.exists() and other.exists()  # readers spare other hosts
    mgr.save(5, {"step": 5})
    assert live.exists() and not other.exists()  # the writer owns the directory
    assert mgr.steps() == [1, 5]


def test_rng_state_round_trip():
    _seed_all(123)
    saved = rng_state()
    first = (random.random(), np.random.rand(3), torch.rand(3))
    _seed_all(0)
    set_rng_state(saved)
    again = (random.random(), np.random.rand(3), torch.rand(3))
    assert first[0] == again[0]
    assert np.array_equal(first[1], again[1]) and torch.equal(first[2], again[2])


def test_preemption_flag_catches_signal_and_restores_handler():
    calls = []
    before = signal.signal(signal.SIGUSR1, lambda s, f: calls.append(s))
    try:
        previous = signal.getsignal(signal.SIGUSR1)
        prev_term = signal.getsignal(signal.SIGTERM)
        with PreemptionFlag() as flag:
            assert not flag.requested
            os.kill(os.getpid(), signal.SIGUSR1)
            assert flag.requested and flag.signum == signal.SIGUSR1
            assert calls == []  # ours handled it, not the old one
        assert signal.getsignal(signal.SIGUSR1) is previous
        assert signal.getsignal(signal.SIGTERM) is prev_term
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_a_full_disk_is_one_line_that_says_so(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    mgr = _save_steps(tmp_path, [1])
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 100, 100))  # the fault: 100 B free
    with pytest.raises(OSError, match=r"disk full: the checkpoint .*step_00000002 needs") as err:
        mgr.save(2, {"w": torch.zeros(1000)})
    assert "\n" not in str(err.value)
    assert mgr.steps() == [1] and not [p for p in mgr.directory.iterdir() if p.name.startswith(".tmp")]


def test_a_failed_write_is_one_line_naming_the_checkpoint(tmp_path, monkeypatch):
    mgr = _save_steps(tmp_path, [1])

    def failing_save(obj, f):  # the fault, as torch reports a short write
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598\nframe #0 ...")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match=r"cannot write the checkpoint .*step_00000002 \(.*unexpected pos 704") as err:
        mgr.save(2, {"w": torch.zeros(3)})
    assert "\n" not in str(err.value) and mgr.steps() == [1]


def test_ctrl_c_sets_the_flag_and_a_second_one_interrupts():
    with PreemptionFlag() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.requested and flag.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_checkpoint_from_before_the_tensor_rng_form_still_resumes(tmp_path):
    # Its numpy state is numpy's own tuple (an ndarray inside): the three numpy names that
    # rebuild one are allowed, and the streams come back exactly.
    _seed_all(5)
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "cuda": None}
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    mgr = CheckpointManager(tmp_path / "ckpt")
    mgr.save(1, {"rng": old})
    _seed_all(99)
    set_rng_state(mgr.load(1)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
