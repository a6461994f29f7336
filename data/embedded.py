"""The embedded default data set, as `python -m data.prepare` leaves it on disk, and its loader.

Layout under the data directory (default: $TRANSFUSION_DATA_DIR, else data_cache/ in the
repository):

    manifest.json                 what was built, with which settings, and its statistics
    text/<corpus>/{train,heldout}.jsonl
    tokenizer.json
    shards/text_train/            all training text, tokenized: a shard set (data/arrays.py)
    shards/text_heldout_<role>/   held-out text per evaluation role (c4, wiki), the same
    images/<dataset>_<split>.pt   {images uint8 [N,3,H,W], captions [[str]], meta [...]}
    autoencoders/<dataset>/{kl,vq}/
    encoded/<dataset>_<split>_{kl,vq}.pt   latents float [N,C,h,w] / codes int16 [N,h,w]
    shards/<dataset>_<split>_{kl,vq}/      the same latents / codes with tokenized captions:
                                  a shard set, what the training stream reads

The training stream reads shard sets only, memory-mapped: the one format for the embedded
default and a cluster's own data, so the embedded default exercises the cluster's data path.
The .pt files are what evaluation reads whole (a few thousand scored images with their scene
graphs).
Everything downstream (the trainer, evaluation) opens the data through `EmbeddedData`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from data.autoencoders import ImageAutoencoder, load as load_autoencoder
from data.arrays import ShardError, ShardSet
from data.stream import ShardDocuments, ShardPairs
from data.tokenizer import Tokenizer
from data.paths import ENV_VAR, REPO_ROOT, Paths, default_data_dir  # noqa: F401 (re-exported)
from data.worlds import IMAGE_DATASETS, autoencoder_dataset

AUTOENCODER_KINDS = ("kl", "vq")


def load_file(path: Path, dataset: str = "shapes"):
    """torch.load with an error that says how to get the file (for an image dataset that the
    default preparation leaves out, with the --datasets that adds it)."""
    if not path.exists():
        extra = "" if dataset == "shapes" else f" --datasets shapes,{dataset}"
        raise FileNotFoundError(f"{path} is missing: run `python -m data.prepare --data-dir {path.parents[1]}{extra}` "
                                f"(or set {ENV_VAR})")
    try:
        return torch.load(path, weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"{path} is unreadable ({exc.__class__.__name__}: {exc}): delete it and rerun "
                         f"python -m data.prepare") from exc


class EmbeddedData:
    """Read access to a prepared data directory."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.paths = Paths(root if root is not None else default_data_dir())
        if not self.paths.manifest.exists():
            raise FileNotFoundError(f"no prepared data in {self.paths.root}: run "
                                    f"`python -m data.prepare --data-dir {self.paths.root}`")
        self.manifest = json.loads(self.paths.manifest.read_text())
        self._tokenizer: Tokenizer | None = None

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer.load(self.paths.tokenizer)
        return self._tokenizer

    def has_text(self, name: str) -> bool:
        """Whether the data dir holds text `name` (the tiny test data has no heldout_c4)."""
        return (self.paths.text_shards(name) / "index.json").exists()

    def text_shards(self, name: str) -> ShardSet:
        """The shard set of text `name`, for reading its documents in file order."""
        return self._shards(self.paths.text_shards(name), "shapes")

    def text_documents(self, name: str = "train", seed: int = 0, stream: int = 0, streams: int = 1) -> ShardDocuments:
        """Token documents: "train" or "heldout_<role>" (role c4 or wiki), in stream `stream`'s order."""
        return ShardDocuments(self.text_shards(name), seed, stream, streams)

    def image_set(self, dataset: str, split: str) -> dict:
        """{images uint8 [N,3,H,W], captions [[str]], meta [...]}."""
        _check(dataset, IMAGE_DATASETS, "image dataset")
        return load_file(self.paths.images(dataset, split), dataset)

    def encoded(self, dataset: str, split: str, kind: str) -> torch.Tensor:
        """KL latents float [N,C,h,w] or VQ codes long [N,h,w] of an image split."""
        _check(kind, AUTOENCODER_KINDS, "autoencoder kind")
        x = load_file(self.paths.encoded(dataset, split, kind), dataset)
        return x.long() if kind == "vq" else x.float()

    def pairs(self, dataset: str, split: str, kind: str, seed: int = 0, stream: int = 0, streams: int = 1) -> ShardPairs:
        """An image-caption source of encoded images with tokenized captions, in stream `stream`'s order."""
        _check(dataset, IMAGE_DATASETS, "image dataset")
        _check(kind, AUTOENCODER_KINDS, "autoencoder kind")
        return ShardPairs(self._shards(self.paths.image_shards(dataset, split, kind), dataset), seed, stream, streams)

    def _shards(self, directory: Path, dataset: str) -> ShardSet:
        if not (directory / "index.json").exists():
            extra = "" if dataset == "shapes" else f" --datasets shapes,{dataset}"
            raise FileNotFoundError(f"{directory} is missing: run `python -m data.prepare --data-dir "
                                    f"{self.paths.root}{extra}` (or set {ENV_VAR})")
        try:
            return ShardSet(directory)
        except ShardError as exc:
            raise ValueError(f"{exc}; python -m data.prepare --data-dir {self.paths.root} rebuilds it") from None

    def autoencoder(self, dataset: str, kind: str) -> ImageAutoencoder:
        _check(kind, AUTOENCODER_KINDS, "autoencoder kind")
        path = self.paths.autoencoder(dataset, kind)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `python -m data.prepare --data-dir {self.paths.root}`")
        return load_autoencoder(path)


def _check(value: str, valid: tuple[str, ...], what: str) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
