"""Text -> image: the FID feature network (paper Table 3: FID on MS-COCO val, 30k captions,
InceptionV3 features), and torchmetrics' FID and KID in its feature space.

InceptionV3 features mean little on 32x32 toy scenes and its weights are a download, so each
embedded dataset gets an in-domain feature network instead: a small CNN trained once per data
directory on the dataset's training images to predict what the records say about them (shapes:
per grid cell the kind, colour and size of its object or "empty", parsed from the scene graph;
Fashion-MNIST: the 10 classes), one cross-entropy per slot. Its penultimate layer (FEATURES
wide, standardised on the training images) is the feature space. The network is written once
to <data_dir>/evaluators/<dataset>-fid-v1.pt with its held-out slot accuracy and never
overwritten (the first writer wins a race), and the sha256 of that file is reported with every
FID, so two numbers are comparable exactly when their network hashes agree. The default recipe
(500 steps of 64 images) takes about 30 s of CPU time and reached 93% held-out slot accuracy
on a 2,000-image shapes set (72% is "every cell empty"); on the 20,000-image default data, 93.5%.

The benchmark computes features once (`features`) and FID, KID and their bootstrap intervals
from them (evals/distances.py); `fid` and `kid` here are torchmetrics' own, the reference the
vectorised versions are tested against.

On a cluster, `inception_fid` gives the paper's metric with InceptionV3 weights from a local
file (torchmetrics' FID with torch-fidelity's InceptionV3, the optional GPU extra).

    python -m evals.fid [--data-dir DIR] [--dataset shapes]   # build the network ahead of a sweep
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from data.embedded import EmbeddedData
from data.shapes import KINDS, PALETTE, SIZES

VERSION = "v1"  # bump when the architecture, the targets or the recipe change
FEATURES = 64


@dataclass
class FeatureNetConfig:
    """Training recipe of the in-domain feature network (part of what VERSION names)."""

    steps: int = 500
    batch: int = 64
    lr: float = 5e-3
    seed: int = 0
    width: int = 16


class FeatureNet(nn.Module):
    """uint8 images [B, 3, H, W] -> features [B, FEATURES]; `head` maps features to the
    training targets. A 4x4 pooled map before the projection keeps where things are (the
    shapes targets are per grid cell)."""

    num_features = FEATURES  # read by torchmetrics instead of probing with a 299x299 image

    def __init__(self, n_targets: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.convs = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.GELU(),
        )
        self.proj = nn.Linear(4 * w * 16, FEATURES)
        self.head = nn.Linear(FEATURES, n_targets)
        # Features are standardised with the training images' statistics once trained, so FID
        # is in units of the real data's per-feature spread whatever scale training left.
        self.register_buffer("shift", torch.zeros(FEATURES))
        self.register_buffer("scale", torch.ones(FEATURES))

    def raw(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
        return self.proj(F.adaptive_avg_pool2d(self.convs(x), 4).flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.raw(images) - self.shift) / self.scale


def shapes_targets(scene_key: str) -> list[int]:
    """Class targets of one scene graph (data/shapes.py Scene.key(): 'grid|kind,colour,size,x,y;
    ...'): per grid cell three slots, kind, colour and size, each 0 for an empty cell."""
    grid_s, _, objs = scene_key.partition("|")
    g = int(grid_s)
    out = [0] * (3 * g * g)
    for obj in filter(None, objs.split(";")):
        kind, colour, size, x, y = obj.split(",")
        cell = 3 * (int(y) * g + int(x))
        out[cell:cell + 3] = [1 + KINDS.index(kind), 1 + list(PALETTE).index(colour), 1 + SIZES.index(size)]
    return out


def targets_of(meta: list[dict]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Training targets from an image set's records: (class ids long [N, S], classes per slot).
    Shapes: kind / colour / size of every grid cell; Fashion-MNIST: its class label."""
    if meta and "scene" in meta[0]:
        t = torch.tensor([shapes_targets(m["scene"]) for m in meta])
        return t, (1 + len(KINDS), 1 + len(PALETTE), 1 + len(SIZES)) * (t.shape[1] // 3)
    if meta and "label" in meta[0]:
        t = torch.tensor([[m["label"]] for m in meta])
        return t, (int(t.max()) + 1,)
    raise ValueError("image records carry neither a scene graph nor a class label: no in-domain "
                     "targets to train the FID network on (give inception_weights instead)")


def _loss(logits: torch.Tensor, targets: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """Mean cross-entropy over the slots; logits [B, sum(classes)], targets [B, S]."""
    parts = logits.split(list(classes), dim=1)
    return torch.stack([F.cross_entropy(p, targets[:, i]) for i, p in enumerate(parts)]).mean()


def train_feature_net(images: torch.Tensor, targets: torch.Tensor, classes: tuple[int, ...],
                      cfg: FeatureNetConfig, log=None) -> FeatureNet:
    """Fit the network to class targets [N, S] (classes[i] classes in slot i) of uint8 images
    [N, 3, H, W]; then standardise its features on those images."""
    gen = torch.Generator().manual_seed(cfg.seed)
    # One thread: a convolution's float sums depend on how many threads split them, so a network
    # trained by a 2-thread launcher differs from one trained by a 1-thread worker, and its FIDs
    # are on another scale (the committed runs' network is the 1-thread one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = _fit(images, targets, classes, cfg, gen, log).eval().requires_grad_(False)
        with torch.no_grad():
            feats = torch.cat([net.raw(x) for x in images.split(256)])
        net.shift.copy_(feats.mean(0))
        net.scale.copy_(feats.std(0).clamp(min=1e-6))
    finally:
        torch.set_num_threads(threads)
    return net


def _fit(images: torch.Tensor, targets: torch.Tensor, classes: tuple[int, ...], cfg: FeatureNetConfig,
         gen: torch.Generator, log) -> FeatureNet:
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # evaluate() runs under no_grad
        torch.manual_seed(cfg.seed)
        net = FeatureNet(sum(classes), cfg.width)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
        net.train()
        for step in range(cfg.steps):
            idx = torch.randint(0, images.shape[0], (min(cfg.batch, images.shape[0]),), generator=gen)
            loss = _loss(net.head(net.raw(images[idx])), targets[idx], classes)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if log is not None and (step + 1) % 100 == 0:
                log(f"[evals] fid network step {step + 1}/{cfg.steps} loss {float(loss.detach()):.4f}")
    return net


def slot_accuracy(net: FeatureNet, images: torch.Tensor, targets: torch.Tensor, classes: tuple[int, ...]) -> float:
    """Fraction of slots (shapes: a cell's kind, colour or size) the network's head gets right."""
    with torch.no_grad():
        parts = net.head(net.raw(images)).split(list(classes), dim=1)
    pred = torch.stack([p.argmax(1) for p in parts], 1)
    return float((pred == targets).float().mean())


def network_path(data: EmbeddedData, dataset: str) -> Path:
    return data.paths.root / "evaluators" / f"{dataset}-fid-{VERSION}.pt"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publish_once(obj, path: Path, write: Callable[[object, str], None] = torch.save) -> None:
    """write(obj, temporary file), then hard-link it to `path`: atomic, and an existing file
    (another process's network or floors) is never replaced: the first writer wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(obj, tmp)
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def feature_network(data: EmbeddedData, dataset: str, cfg: FeatureNetConfig | None = None,
                    log=None) -> tuple[FeatureNet, str]:
    """The dataset's feature network and its tag '<dataset>-fid-v1:<sha256[:16]>', trained on
    the train split and saved on first use, loaded afterwards."""
    path = network_path(data, dataset)
    images_step = data.manifest.get("steps", {}).get(f"images/{dataset}", {}).get("params")
    if not path.exists():
        cfg = cfg or FeatureNetConfig()
        train = data.image_set(dataset, "train")
        if log is not None:
            log(f"[evals] training the {dataset} FID network once ({cfg.steps} steps) -> {path}")
        start = time.time()
        targets, classes = targets_of(train["meta"])
        net = train_feature_net(train["images"], targets, classes, cfg, log)
        seconds = round(time.time() - start, 1)
        held = data.image_set(dataset, "val")
        acc = slot_accuracy(net, held["images"], targets_of(held["meta"])[0], classes)
        if log is not None:
            log(f"[evals] fid network trained in {seconds} s; held-out slot accuracy {acc:.3f}")
        publish_once({"version": VERSION, "dataset": dataset, "config": asdict(cfg), "images": images_step,
                      "n_targets": net.head.out_features, "seconds": seconds, "val_slot_accuracy": acc,
                      "state_dict": net.state_dict()}, path)
    saved = torch.load(path, weights_only=True)
    if saved.get("images") != images_step:
        raise ValueError(f"{path} was trained on other {dataset} images than this data directory holds "
                         f"(prepare settings changed): delete it and it will be retrained")
    net = FeatureNet(saved["n_targets"], saved["config"]["width"])
    net.load_state_dict(saved["state_dict"])
    return net.eval().requires_grad_(False), f"{dataset}-fid-{VERSION}:{_sha256(path)[:16]}"


@torch.no_grad()
def features(images: torch.Tensor, network: nn.Module, batch_size: int = 256) -> torch.Tensor:
    """float64 features [N, F] of uint8 images [N, 3, H, W] (on the CPU), `batch_size` at a time."""
    device = next(network.parameters()).device
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    return torch.cat([network(chunk.to(device)).double().cpu() for chunk in images.split(batch_size)]
                     or [torch.zeros(0, network.num_features, dtype=torch.float64)])


@torch.no_grad()
def kid(real: torch.Tensor, fake: torch.Tensor, network: nn.Module, batch_size: int = 256) -> float:
    """torchmetrics' unbiased KID between uint8 image sets of one size n, in `network`'s feature
    space, with one subset of all n images (so no subset sampling: the full-set estimate)."""
    device = next(network.parameters()).device
    metric = KernelInceptionDistance(feature=network, subsets=1, subset_size=real.shape[0]).to(device)
    for images, is_real in ((real, True), (fake, False)):
        for chunk in images.split(batch_size):
            metric.update(chunk.to(device), real=is_real)
    return float(metric.compute()[0])


@torch.no_grad()
def fid(real: torch.Tensor, fake: torch.Tensor, network: nn.Module, batch_size: int = 256) -> float:
    """FID between uint8 image sets real [N, 3, H, W] and fake [M, 3, H, W] in the feature
    space of `network` (a module with int `num_features` taking uint8 images)."""
    device = next(network.parameters()).device
    metric = FrechetInceptionDistance(feature=network).to(device)
    for images, is_real in ((real, True), (fake, False)):
        for chunk in images.split(batch_size):
            metric.update(chunk.to(device), real=is_real)
    return float(metric.compute())


@torch.no_grad()
def inception_fid(real: torch.Tensor, fake: torch.Tensor, weights_path: str, batch_size: int = 64) -> float:
    """The paper's FID: InceptionV3 pool features (2048) from a local weights file, on uint8
    images (resized to 299 inside). Needs torch-fidelity (the optional GPU extra)."""
    if not Path(weights_path).is_file():
        raise FileNotFoundError(f"inception_weights={weights_path}: no such file (torch-fidelity's "
                                "pt_inception-2015-12-05 weights)")
    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights_path))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metric = metric.to(device)
    for images, is_real in ((real, True), (fake, False)):
        for chunk in images.split(batch_size):
            metric.update(chunk.to(device), real=is_real)
    return float(metric.compute())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="default: $TRANSFUSION_DATA_DIR or ./data_cache")
    ap.add_argument("--dataset", default="shapes")
    args = ap.parse_args(argv)
    try:
        _, tag = feature_network(EmbeddedData(args.data_dir), args.dataset, log=lambda s: print(s, file=sys.stderr))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
