"""The embedded default data set, as `python -m data.prepare` leaves it on disk, and its loader.

Layout under the data directory (default: $TRANSFUSION_DATA_DIR, else data_cache/ in the
repository):

    manifest.json                 what was built, with which settings, and its statistics
    text/<corpus>/{train,heldout}.jsonl
    tokenizer.json
    tokens/train.pt               all training text, tokenized: {tokens int32, offsets int64}
    tokens/heldout_<role>.pt      held-out text per evaluation role (c4, wiki), same format
    images/<dataset>_<split>.pt   {images uint8 [N,3,H,W], captions [[str]], meta [...]}
    autoencoders/<dataset>/{kl,vq}/
    encoded/<dataset>_<split>_{kl,vq}.pt   latents float [N,C,h,w] / codes int16 [N,h,w]

Everything downstream (the trainer, evaluation) opens the data through `EmbeddedData`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from data.autoencoders import ImageAutoencoder, load as load_autoencoder
from data.stream import ImagePairs, TokenDocuments
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

    def text_documents(self, name: str = "train", seed: int = 0) -> TokenDocuments:
        """Token documents: "train" or "heldout_<role>" (role c4 or wiki)."""
        d = load_file(self.paths.tokens(name))
        return TokenDocuments(d["tokens"], d["offsets"], seed)

    def image_set(self, dataset: str, split: str) -> dict:
        """{images uint8 [N,3,H,W], captions [[str]], meta [...]}."""
        _check(dataset, IMAGE_DATASETS, "image dataset")
        return load_file(self.paths.images(dataset, split), dataset)

    def encoded(self, dataset: str, split: str, kind: str) -> torch.Tensor:
        """KL latents float [N,C,h,w] or VQ codes long [N,h,w] of an image split."""
        _check(kind, AUTOENCODER_KINDS, "autoencoder kind")
        x = load_file(self.paths.encoded(dataset, split, kind), dataset)
        return x.long() if kind == "vq" else x.float()

    def pairs(self, dataset: str, split: str, kind: str, seed: int = 0) -> ImagePairs:
        """An image-caption source of encoded images for the training stream."""
        return ImagePairs(self.encoded(dataset, split, kind), self.image_set(dataset, split)["captions"], seed)

    def autoencoder(self, dataset: str, kind: str) -> ImageAutoencoder:
        _check(kind, AUTOENCODER_KINDS, "autoencoder kind")
        path = self.paths.autoencoder(dataset, kind)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `python -m data.prepare --data-dir {self.paths.root}`")
        return load_autoencoder(path)


def _check(value: str, valid: tuple[str, ...], what: str) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
