"""Build the embedded default data set offline: `python -m data.prepare [--data-dir DIR]`.

Steps, each skipped when the manifest records it done with the same settings and its files
pass a cheap check (data/integrity.py: they parse, are UTF-8, are not cut short; the tokenizer
loads), so a second call does nothing, an interrupted call resumes at the step it was in, and a
damaged file is named and rebuilt:
  text        offline corpora -> train / held-out JSONL         (data/corpora.py)
  tokenizer   byte-level BPE on the training text                (data/tokenizer.py)
  tokens      all text tokenized once into shard sets (data/arrays.py)
  images      the shapes world (and optionally its variants, data/worlds.py, and Fashion-MNIST)
              rendered to uint8 tensors
  autoencoders  a KL VAE and a VQ-VAE per image dataset (a shapes variant uses shapes'), trained
              here; PSNR and, for shapes, the checker's recognition rate of reconstructed scenes
              are recorded
  encoded     latents and code grids of every image split, computed once
  shards      the same latents and codes with their captions tokenized, as shard sets: what the
              training stream reads, the one format for the embedded default and a cluster's data
Every file is written to a temporary name and renamed; the manifest is rewritten after each
step. The layout is described in data/embedded.py.

One prepare per data dir at a time: a second one waits for the first (data/lock.py, the file
.prepare.lock) and then finds its steps done. A damaged manifest.json is not rebuilt silently,
since it is the only record of which settings built the files: prepare stops and says to delete
it. Faults a user can fix (damaged or non-UTF-8 input, a missing corpus, a full disk, a
read-only or misplaced data dir) end in one line naming the file and the fix, exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from data.autoencoder_train import train_autoencoder
from data.autoencoders import AutoencoderConfig, encode_dataset, load as load_autoencoder, psnr
from data.corpora import choose_corpora, prepared_paths, roles_for, text_files, write_corpus_text
from data import pretrained
from data.arrays import ShardSet, caption_arrays, write_index, write_shard
from data.atomic import save_atomic, write_text_atomic
from data.embedded import Paths, default_data_dir
from data.integrity import damage, read_json
from data.lock import LOCK_NAME, hold_lock
from data.worlds import IMAGE_DATASETS, autoencoder_dataset, shapes_overrides
from data.text_readers import TextReader, TextSpec
from data.tokenizer import Tokenizer

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class PrepareConfig:
    vocab_size: int = 2048
    corpora: tuple[str, ...] = ()  # empty: the Debian corpora, or the fallback where missing (data/corpora.py)
    # add "fashion-mnist" for the real-image option, "shapes-2" for the simpler world (data/worlds.py)
    datasets: tuple[str, ...] = ("shapes",)
    image_size: int = 32
    train_images: int = 20000  # shapes train split (Fashion-MNIST uses its own 60k/10k)
    eval_images: int = 1000  # shapes val and test
    ae_steps: int = 1200
    ae_batch: int = 16
    seed: int = 0
    tokenizer: str = ""  # an existing tokenizer.json to use instead of training one


class Prepare:
    def __init__(self, root: Path, cfg: PrepareConfig, log: Callable[[str], None] = print) -> None:
        if not cfg.corpora:  # resolved here, so the manifest records the corpora actually used
            cfg = dataclasses.replace(cfg, corpora=choose_corpora(lambda msg: log(f"[prepare] {msg}")))
        self.paths, self.cfg, self.log = Paths(root), cfg, log
        self.root = root
        self.manifest: dict = {"steps": {}}  # read in run(), once the lock is held

    def _read_manifest(self) -> dict:
        path = self.paths.manifest
        if not path.exists():
            return {"steps": {}}
        fix = f"delete it and rerun python -m data.prepare --data-dir {self.root} (its steps are then rebuilt)"
        manifest = read_json(path, fix)
        steps = manifest.get("steps", {}) if isinstance(manifest, dict) else None
        if not isinstance(steps, dict) or not all(isinstance(s, dict) and isinstance(s.get("stats"), dict)
                                                  and "params" in s for s in steps.values()):
            raise ValueError(f"{path} is corrupt (not a prepare manifest: no steps with params and stats): {fix}")
        return {**manifest, "steps": steps}

    def _write_manifest(self) -> None:
        write_text_atomic(self.paths.manifest, json.dumps(self.manifest, indent=1, sort_keys=True))

    def step(self, name: str, params: dict, outputs: list[Path], build: Callable[[], dict],
             load: Callable[[Path], object] | None = None) -> dict:
        """Run `build` unless the manifest has this step with equal params and its outputs pass
        data/integrity.py's check (and `load`, when given); a damaged output is named."""
        params = json.loads(json.dumps(params))  # as the manifest stores it (tuples -> lists)
        done = self.manifest["steps"].get(name)
        if done and done["params"] == params:
            damaged = {p: why for p in outputs if (why := damage(p, load))}
            if not damaged:
                self.log(f"[prepare] {name}: up to date")
                return done["stats"]
            for p, why in damaged.items():
                if why != "missing":
                    self.log(f"[prepare] {name}: {p} is damaged ({why}): rebuilding it")
        self.log(f"[prepare] {name}: building ...")
        start = time.time()
        stats = build()
        stats["seconds"] = round(time.time() - start, 1)
        self.manifest["steps"][name] = {"params": params, "stats": stats}
        self._write_manifest()
        self.log(f"[prepare] {name}: done in {stats['seconds']} s {json.dumps(_brief(stats))}")
        return stats

    # ------------------------------------------------------------------ text

    def text(self) -> None:
        params = {"corpora": list(self.cfg.corpora)}
        self.step("text", params, [self.root / "text" / "manifest.json", *text_files(self.root)],
                  lambda: write_corpus_text(self.root, self.cfg.corpora, progress=self.log)["stats"])

    def tokenizer(self) -> None:
        def build() -> dict:
            if self.cfg.tokenizer:  # the user's own: checked for the special tokens, then stored
                tok = _given_tokenizer(Path(self.cfg.tokenizer))
                if tok.adopted:  # its own BOS/EOS where it has them, ours added for the rest
                    self.log(f"[prepare] {tok.adopted}")
                tok.save(self.paths.tokenizer)
                # recorded only where something was adopted or added, so data prepared before keeps its fingerprint
                return {"vocab_size": tok.vocab_size, **({"specials": tok.adopted} if tok.adopted else {})}
            else:
                docs = TextReader(TextSpec(prepared_paths(self.root, "train")))
                tok = Tokenizer.train(docs, self.cfg.vocab_size, self.paths.tokenizer)
            return {"vocab_size": tok.vocab_size}

        params = {"vocab_size": self.cfg.vocab_size, "corpora": list(self.cfg.corpora), "given": self.cfg.tokenizer}
        self.step("tokenizer", params, [self.paths.tokenizer], build, load=Tokenizer.load)

    def tokens(self) -> None:
        roles = roles_for(self.cfg.corpora)
        names = {"train": prepared_paths(self.root, "train")}
        names.update({f"heldout_{role}": prepared_paths(self.root, "heldout", [c]) for role, c in roles.items()})

        def build() -> dict:
            tok = Tokenizer.load(self.paths.tokenizer)
            stats = {}
            for name, files in names.items():
                tokens, offsets = _tokenize(tok, TextReader(TextSpec(files)), progress=f"[prepare] tokens {name}")
                out = self.paths.text_shards(name)
                write_shard(out, "00000", "text", {"tokens": tokens.numpy(), "offsets": offsets.numpy()})
                write_index(out, ["00000"], self._shard_meta())
                stats[name] = {"docs": offsets.numel() - 1, "tokens": tokens.numel()}
            return stats

        params = self.manifest["steps"]["tokenizer"]["params"]
        self.step("tokens", params, [self.paths.text_shards(n) for n in names], build, load=_open_shards)

    def _shard_meta(self) -> dict:
        return {"written_by": "data.prepare", "tokenizer_sha256": hashlib.sha256(self.paths.tokenizer.read_bytes()).hexdigest()}

    # ------------------------------------------------------------------ images

    def images(self, dataset: str) -> None:
        c = self.cfg
        params = {"image_size": c.image_size, "seed": c.seed}
        if shapes_overrides(dataset) is not None:
            params.update(train=c.train_images, eval=c.eval_images)
            if shapes_overrides(dataset):  # a variant of the shapes world (data/worlds.py)
                params["world"] = shapes_overrides(dataset)
        outputs = [self.paths.images(dataset, s) for s in SPLITS]

        def build() -> dict:
            stats = {}
            for split, data in _render(dataset, c).items():
                save_atomic(data, self.paths.images(dataset, split))
                stats[split] = int(data["images"].shape[0])
            return stats

        self.step(f"images/{dataset}", params, outputs, build)

    def autoencoders(self, dataset: str) -> None:
        c = self.cfg
        if autoencoder_dataset(dataset) != dataset:  # encoded with its base world's (data/worlds.py)
            return
        for kind in ("kl", "vq"):
            out = self.paths.autoencoder(dataset, kind)
            ae_cfg = AutoencoderConfig(kind=kind, image_size=c.image_size)
            params = {"config": dataclasses.asdict(ae_cfg), "steps": c.ae_steps, "batch": c.ae_batch,
                      "seed": c.seed, "images": self.manifest["steps"][f"images/{dataset}"]["params"]}

            step = f"autoencoders/{dataset}/{kind}"

            def build(kind=kind, out=out, ae_cfg=ae_cfg, step=step, params=params) -> dict:
                val = torch.load(self.paths.images(dataset, "val"), weights_only=True)
                # A committed copy of exactly this step (data/pretrained.py) spares the training.
                if pretrained.restore(step, json.loads(json.dumps(params)), out, self.log):
                    return {**_reconstruction_stats(load_autoencoder(out), val, dataset), "source": "committed"}
                train = torch.load(self.paths.images(dataset, "train"), weights_only=True)["images"]
                log = lambda rec: self.log(f"[prepare]   {dataset}/{kind} {json.dumps(rec)}")  # noqa: E731
                ae = train_autoencoder(ae_cfg, train, c.ae_steps, c.ae_batch, seed=c.seed, log=log, log_every=250,
                                       progress=f"[prepare] {dataset}/{kind}")
                ae.save(out)
                return {**_reconstruction_stats(ae, val, dataset), "source": "trained"}

            self.step(step, params, [out], build)

    def encoded(self, dataset: str) -> None:
        for kind in ("kl", "vq"):
            outputs = [self.paths.encoded(dataset, s, kind) for s in SPLITS]
            params = {"autoencoder": self.manifest["steps"][f"autoencoders/{autoencoder_dataset(dataset)}/{kind}"]["params"]}

            def build(kind=kind) -> dict:
                ae = load_autoencoder(self.paths.autoencoder(dataset, kind))
                shapes = {}
                for split in SPLITS:
                    images = torch.load(self.paths.images(dataset, split), weights_only=True)["images"]
                    codes = encode_dataset(ae, images, progress=f"[prepare] {dataset}/{kind} {split}")
                    save_atomic(codes, self.paths.encoded(dataset, split, kind))
                    shapes[split] = list(codes.shape)
                return {"shapes": shapes}

            self.step(f"encoded/{dataset}/{kind}", params, outputs, build)

    def shards(self, dataset: str) -> None:
        """Each split's latents (kl) or codes (vq) with its captions tokenized, as one-shard sets."""
        for kind in ("kl", "vq"):
            steps = self.manifest["steps"]
            params = {"encoded": steps[f"encoded/{dataset}/{kind}"]["params"], "images": steps[f"images/{dataset}"]["params"],
                      "tokenizer": steps["tokenizer"]["params"]}

            def build(kind=kind) -> dict:
                tok = Tokenizer.load(self.paths.tokenizer)
                stats = {}
                for split in SPLITS:
                    encoded = torch.load(self.paths.encoded(dataset, split, kind), weights_only=True)
                    captions = torch.load(self.paths.images(dataset, split), weights_only=True)["captions"]
                    flat = tok.encode_batch([c for per_image in captions for c in per_image])
                    it = iter(flat)
                    arrays = caption_arrays([[next(it) for _ in per_image] for per_image in captions])
                    out = self.paths.image_shards(dataset, split, kind)
                    name = "latents" if kind == "kl" else "codes"
                    write_shard(out, "00000", name, {name: encoded.numpy(), **arrays})
                    write_index(out, ["00000"], {**self._shard_meta(), "autoencoder": kind})
                    stats[split] = {"images": int(encoded.shape[0]), "captions": len(flat)}
                return stats

            outputs = [self.paths.image_shards(dataset, s, kind) for s in SPLITS]
            self.step(f"shards/{dataset}/{kind}", params, outputs, build, load=_open_shards)

    def run(self) -> dict:
        """Build every step that is missing, outdated or damaged, holding the data dir's lock
        throughout; returns the manifest."""
        with hold_lock(self.root / LOCK_NAME, lambda msg: self.log(f"[prepare] {msg}")):
            # Read under the lock, so a prepare that waited sees what the other one built.
            self.manifest = {**self._read_manifest(), "config": dataclasses.asdict(self.cfg)}
            self.text()
            self.tokenizer()
            self.tokens()
            # A shapes variant is encoded with the base world's autoencoders: that world comes first.
            bases = [autoencoder_dataset(d) for d in self.cfg.datasets]
            datasets = list(dict.fromkeys(bases + list(self.cfg.datasets)))
            for dataset in datasets:
                if dataset not in IMAGE_DATASETS:
                    raise ValueError(f"unknown image dataset {dataset!r}; valid: {', '.join(IMAGE_DATASETS)}")
                self.images(dataset)
                self.autoencoders(dataset)
                self.encoded(dataset)
                self.shards(dataset)
        return self.manifest


def _open_shards(directory: Path) -> None:
    """Every shard of a set maps (its files exist and hold what the index says)."""
    shards = ShardSet(directory)
    for i in range(len(shards)):
        shards.shard(i)


def _given_tokenizer(path: Path) -> Tokenizer:
    """The user's --tokenizer file, or one line saying why it cannot be used."""
    try:
        return Tokenizer.load(path)
    except (OSError, ValueError) as exc:
        why = "does not exist" if isinstance(exc, FileNotFoundError) else str(exc.__cause__ or exc)
        raise ValueError(f"--tokenizer {path} cannot be used ({why}): pass a tokenizer.json that loads with the HF "
                         f"tokenizers library, or leave --tokenizer out to train one") from None


def _bar(iterable, desc: str | None, total: int | None = None, unit: str = "it"):
    """A progress bar with an ETA on stderr for a step that takes more than a few seconds."""
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, mininterval=5, disable=desc is None, unit=unit)


def _tokenize(tok: Tokenizer, docs, chunk: int = 2048, progress: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Documents -> flat int32 tokens and int64 offsets [n_docs + 1], batched through the
    tokenizer's parallel encoder."""
    pieces, lengths, batch = [], [], []
    docs = _bar(docs, progress, unit="docs")

    def flush() -> None:
        for ids in tok.encode_batch(batch):
            pieces.append(torch.tensor(ids, dtype=torch.int32))
            lengths.append(len(ids))
        batch.clear()

    for doc in docs:
        batch.append(doc)
        if len(batch) == chunk:
            flush()
    flush()
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(lengths, dtype=torch.long).cumsum(0)
    return (torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int32)), offsets


def _render(dataset: str, cfg: PrepareConfig) -> dict:
    """split -> {images uint8 [N,3,H,W], captions [[str]], meta [dict]}."""
    if shapes_overrides(dataset) is not None:
        from data.shapes_world import ShapesConfig, ShapesWorld

        world = ShapesWorld(ShapesConfig(seed=cfg.seed, image_size=cfg.image_size, n_val=cfg.eval_images,
                                         n_test=cfg.eval_images, **shapes_overrides(dataset)))
        sizes = {"train": cfg.train_images, "val": cfg.eval_images, "test": cfg.eval_images}
        out = {}
        for split, n in sizes.items():
            samples = [world.sample(split, i) for i in _bar(range(n), f"[prepare] images/{dataset} {split}", n, "images")]
            out[split] = {"images": torch.stack([s.image for s in samples]),
                          "captions": [s.captions for s in samples],
                          "meta": [{"scene": s.meta["scene"].key(),
                                    "captions": [c.to_dict() for c in s.meta["captions"]]} for s in samples]}
        return out
    if dataset == "fashion-mnist":
        from data.fashion_mnist import FashionMNIST

        train = FashionMNIST(split="train", image_size=cfg.image_size)
        test = FashionMNIST(split="test", image_size=cfg.image_size)
        # Fashion-MNIST has no validation split: its test set is cut in half, deterministically.
        half = len(test) // 2
        parts = {"train": (train, range(len(train))), "val": (test, range(half)), "test": (test, range(half, len(test)))}
        return {split: {"images": src.images()[list(idx)],
                        "captions": [src[i].captions for i in idx],
                        "meta": [{"label": int(src.labels[i])} for i in idx]} for split, (src, idx) in parts.items()}
    raise ValueError(f"unknown image dataset {dataset!r}; valid: {', '.join(IMAGE_DATASETS)}")


def _reconstruction_stats(ae, val: dict, dataset: str, n: int = 500) -> dict:
    """PSNR of reconstructed held-out images; for shapes also how often the checker still finds
    every object of the scene's full description in the reconstruction."""
    images = val["images"][:n]
    recon = ae.decode(ae.encode(images))
    stats = {"val_psnr": round(psnr(recon, images), 2), "val_images": int(images.shape[0])}
    if dataset == "shapes":
        from data.checker import check
        from data.shapes import Caption

        full = [Caption.from_dict(m["captions"][0]) for m in val["meta"][:n]]
        stats["checker_on_reconstructions"] = round(
            sum(check(img, cap)["passed"] for img, cap in zip(recon, full)) / len(full), 4)
        stats["checker_on_originals"] = round(
            sum(check(img, cap)["passed"] for img, cap in zip(images, full)) / len(full), 4)
    return stats


def _brief(stats: dict, prefix: str = "") -> dict:
    """Stats flattened to one line (nested keys dotted), without timings."""
    out = {}
    for k, v in stats.items():
        if isinstance(v, dict):
            out.update(_brief(v, f"{prefix}{k}."))
        elif k != "seconds":
            out[prefix + k] = v
    return out


def _error_line(exc: OSError | ValueError, root: Path) -> str:
    """The error for a user: ours carry their fix; the system's are given one by errno."""
    if not isinstance(exc, OSError) or exc.errno is None:  # raised here with its fix (CorpusMissing, ...)
        return str(exc)
    path = exc.filename or root
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing {path}: free space on that disk, or prepare into another --data-dir"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write {path} ({exc.strerror}): make {root} writable, or prepare into another "
                f"--data-dir")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return (f"cannot create {path} ({exc.strerror}): a file stands where a directory on that path belongs; "
                f"move that file away, or choose another --data-dir")
    return f"{path}: {exc.strerror}: check it, or prepare into another --data-dir"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None, help="default: $TRANSFUSION_DATA_DIR or ./data_cache")
    defaults = PrepareConfig()
    for f in dataclasses.fields(PrepareConfig):
        value = getattr(defaults, f.name)
        if isinstance(value, tuple):
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=lambda s: tuple(s.split(",")), default=value,
                            help=f"comma-separated (default: {','.join(value) or 'chosen automatically'})")
        else:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value,
                            help=f"(default: {value})")
    args = ap.parse_args(argv)
    root = args.data_dir or default_data_dir()
    if root.exists() and not root.is_dir():
        print(f"error: --data-dir {root} is a file, not a directory", file=sys.stderr)
        return 2
    cfg = PrepareConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PrepareConfig)})
    try:
        manifest = Prepare(root, cfg).run()
    except (OSError, ValueError) as exc:
        print(f"error: {_error_line(exc, root)}", file=sys.stderr)
        return 2
    print(f"[prepare] embedded data ready in {root}")
    for name, step in manifest["steps"].items():
        print(f"  {name:28s} {json.dumps(_brief(step['stats']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
