"""Where the prepared data lives: the default directory and the file names inside one (one
place, shared by data.prepare, the loader and the fingerprint; no torch, so a launcher that
only names files does not load it). The layout is data/embedded.py's docstring."""

from __future__ import annotations

import os
from pathlib import Path

from data.worlds import autoencoder_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "TRANSFUSION_DATA_DIR"


def default_data_dir() -> Path:
    return Path(os.environ.get(ENV_VAR, REPO_ROOT / "data_cache"))


class Paths:
    """File names inside one data directory (one place, shared by prepare and the loader)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    def text_shards(self, name: str) -> Path:
        """A shard set of tokenized text (data/arrays.py): "train" or "heldout_<role>"."""
        return self.root / "shards" / f"text_{name}"

    def image_shards(self, dataset: str, split: str, kind: str) -> Path:
        """A shard set of one split's latents (kind "kl") or codes ("vq") with tokenized captions."""
        return self.root / "shards" / f"{dataset}_{split}_{kind}"

    def images(self, dataset: str, split: str) -> Path:
        return self.root / "images" / f"{dataset}_{split}.pt"

    def autoencoder(self, dataset: str, kind: str) -> Path:
        return self.root / "autoencoders" / autoencoder_dataset(dataset) / kind

    def encoded(self, dataset: str, split: str, kind: str) -> Path:
        return self.root / "encoded" / f"{dataset}_{split}_{kind}.pt"
