"""data/pretrained.py: a committed autoencoder is restored only for the very same prepare step
and only when every checksum holds; anything else falls back to training."""

from __future__ import annotations

import json

from data import pretrained


def _commit(tmp_path, monkeypatch, params):
    data = tmp_path / "data"
    ae = data / "autoencoders" / "shapes" / "kl"
    ae.mkdir(parents=True)
    (ae / "weights.bin").write_bytes(b"\x00\x01weights")
    (ae / "config.json").write_text("{}")
    (data / "manifest.json").write_text(json.dumps(
        {"steps": {"autoencoders/shapes/kl": {"params": params, "stats": {"seconds": 1.0}}}}))
    monkeypatch.setattr(pretrained, "ROOT", tmp_path / "committed")
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "committed" / "manifest.json")
    assert pretrained.publish(data) == ["autoencoders/shapes/kl"]


def test_restores_only_the_same_step_with_intact_files(tmp_path, monkeypatch):
    params = {"steps": 1200, "seed": 0}
    _commit(tmp_path, monkeypatch, params)
    out, lines = tmp_path / "fresh" / "kl", []
    assert not pretrained.restore("autoencoders/shapes/kl", {"steps": 600, "seed": 0}, out, lines.append)
    assert not pretrained.restore("autoencoders/shapes/vq", params, out, lines.append)
    assert not out.exists() and not lines
    assert pretrained.restore("autoencoders/shapes/kl", params, out, lines.append)
    assert (out / "weights.bin").read_bytes() == b"\x00\x01weights" and "sha256 verified" in lines[-1]

    (tmp_path / "committed" / "shapes-kl" / "weights.bin").write_bytes(b"\x00\x01tampered")
    again = tmp_path / "fresh2" / "kl"
    assert not pretrained.restore("autoencoders/shapes/kl", params, again, lines.append)
    assert not again.exists() and "fails its checksum (weights.bin)" in lines[-1]
