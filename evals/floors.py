"""Reference floors for FID and KID: what known inputs score with the same network and sample size.

FID has no absolute scale: its value depends on the feature network and, through its bias, on
the sample size. So every evals.json carries, beside t2i/fid and t2i/kid:

    t2i/{fid,kid}_floor_real   real against real: n images of the other held-out split (val
                               when the reference is test) against the n reference images, the
                               best a model can score at this n
    t2i/{fid,kid}_ref_random   the family's own autoencoder decoding noise: N(0, 1) latents in its
                               latent shape (KL, Transfusion) or uniform codes (VQ, Chameleon)
    t2i/{fid,kid}_ref_black    n all-black images

A model that does not beat _ref_random and _ref_black has learnt nothing a reader should trust;
one inside the real floor's interval is as good as this n can tell.

They depend only on (data directory contents, dataset, reference split, feature network, n,
autoencoder kind), so they are computed once and written next to the FID network,
<data_dir>/evaluators/<dataset>-floors-<kind>-<split>-n<n>-<key>.json, where <key> hashes all
of those (the network's tag is its file's hash; the autoencoder and images by the manifest's
recorded settings). The write is atomic and the first writer wins (evals/fid.py publish_once),
like the network itself. Random latents and codes come from a fixed seed (FLOOR_SEED), not the
evaluation seed, so one file serves every run.

    python -m evals.floors [--dataset shapes] [--split test] [--n 1000]

prints, per autoencoder kind, these floors and one more, `floor_recon`: the kind's own
autoencoder decoding the other split's encoded images, the best a model of that family can score
(its images pass through that decoder), each with its bootstrap interval. Comparing families'
FID needs it: a family whose codec reconstructs better starts from a lower floor.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from data.embedded import AUTOENCODER_KINDS, EmbeddedData
from evals.distances import fid_kid
from evals.fid import feature_network, features, publish_once

VERSION = "v1"  # bump when what a floor means changes
FLOOR_SEED = 0
REFERENCES = ("floor_real", "ref_random", "ref_black")


def other_split(split: str) -> str:
    """The held-out split the real floor compares against the reference split."""
    return "val" if split == "test" else "test"


def floors_path(data: EmbeddedData, dataset: str, split: str, n: int, kind: str, network_tag: str) -> Path:
    """Where the floors of this (data, dataset, split, n, kind, network) live."""
    steps = data.manifest.get("steps", {})
    content = {"version": VERSION, "network": network_tag, "dataset": dataset, "split": split,
               "other": other_split(split), "n": n, "kind": kind, "seed": FLOOR_SEED,
               "images": steps.get(f"images/{dataset}", {}).get("params"),
               "autoencoder": steps.get(f"autoencoders/{dataset}/{kind}", {}).get("params")}
    key = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return data.paths.root / "evaluators" / f"{dataset}-floors-{kind}-{split}-n{n}-{key}.json"


@torch.no_grad()
def random_images(autoencoder, n: int, batch_size: int) -> torch.Tensor:
    """uint8 [n, 3, H, W]: the autoencoder decoding N(0, 1) latents (KL) or uniform codes (VQ)."""
    gen = torch.Generator().manual_seed(FLOOR_SEED)
    if autoencoder.kind == "vq":
        z = torch.randint(0, autoencoder.codebook_size, (n, *autoencoder.latent_shape), generator=gen)
    else:
        z = torch.randn((n, *autoencoder.latent_shape), generator=gen)
    return torch.cat([autoencoder.decode(c.to(autoencoder.device)).cpu() for c in z.split(batch_size)])


def _write_json(obj: dict, path: str) -> None:
    Path(path).write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def reference_floors(data: EmbeddedData, dataset: str, split: str, real_features: torch.Tensor,
                     network: nn.Module, network_tag: str, autoencoder, batch_size: int = 256,
                     bootstrap: int = 200, log: Callable[[str], None] | None = None) -> dict[str, float]:
    """{"t2i/fid_floor_real", "t2i/kid_floor_real", ..._ref_random, ..._ref_black} for the
    reference split's first n images, whose features real_features [n, F] the caller has; read
    from the cache file or computed and published there. The file also keeps each floor's
    bootstrap interval (not copied into evals.json: a floor is a reference line, not a result)."""
    n = real_features.shape[0]
    path = floors_path(data, dataset, split, n, autoencoder.kind, network_tag)
    if not path.exists():
        start = time.time()
        other = data.image_set(dataset, other_split(split))["images"]
        if other.shape[0] < n:
            raise ValueError(f"the real floor needs {n} {other_split(split)} images but {dataset} has "
                             f"{other.shape[0]}: lower t2i_images to {other.shape[0]}")
        sources = {"floor_real": other[:n], "ref_random": random_images(autoencoder, n, batch_size),
                   "ref_black": torch.zeros((n, *other.shape[1:]), dtype=torch.uint8)}
        values: dict[str, float] = {}
        for name, images in sources.items():
            res = fid_kid(real_features, features(images, network, batch_size), bootstrap, FLOOR_SEED)
            # fid, fid_lo, ... -> t2i/fid_floor_real, t2i/fid_floor_real_lo, ...
            values.update({f"t2i/{k[:3]}_{name}{k[3:]}": v for k, v in res.items()})
        publish_once({"network": network_tag, "dataset": dataset, "split": split, "n": n, "kind": autoencoder.kind,
                      "seconds": round(time.time() - start, 2), "values": values}, path, _write_json)
        if log is not None:
            log(f"[eval] reference floors computed in {time.time() - start:.1f} s -> {path}")
    saved = json.loads(path.read_text())["values"]
    return {f"t2i/{m}_{r}": float(saved[f"t2i/{m}_{r}"]) for m in ("fid", "kid") for r in REFERENCES}


@torch.no_grad()
def reconstruction_floor(data: EmbeddedData, dataset: str, split: str, real_features: torch.Tensor,
                         network: nn.Module, autoencoder, batch_size: int = 256, bootstrap: int = 200) -> dict:
    """{"fid", "fid_lo", ...}: the other split's first n images, encoded by the autoencoder when the
    data was prepared, decoded by it and scored against the reference features [n, F]."""
    n = real_features.shape[0]
    encoded = data.encoded(dataset, other_split(split), autoencoder.kind)[:n]
    images = torch.cat([autoencoder.decode(z.to(autoencoder.device)).cpu() for z in encoded.split(batch_size)])
    return fid_kid(real_features, features(images, network, batch_size), bootstrap, FLOOR_SEED)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="default: $TRANSFUSION_DATA_DIR or ./data_cache")
    ap.add_argument("--dataset", default="shapes")
    ap.add_argument("--split", default="test", help="the reference split, as evaluation uses it")
    ap.add_argument("--n", type=int, default=1000, help="images per set (evaluation's t2i_images)")
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    try:
        data = EmbeddedData(args.data_dir)
        network, tag = feature_network(data, args.dataset, log=log)
        real = data.image_set(args.dataset, args.split)["images"]
        if real.shape[0] < args.n:
            raise ValueError(f"{args.dataset} {args.split} has {real.shape[0]} images, fewer than --n {args.n}: "
                             f"lower --n")
        real_features = features(real[:args.n], network)
        for kind in AUTOENCODER_KINDS:
            autoencoder = data.autoencoder(args.dataset, kind)
            out = {"dataset": args.dataset, "split": args.split, "n": args.n, "kind": kind, "network": tag}
            out |= reference_floors(data, args.dataset, args.split, real_features, network, tag, autoencoder,
                                    bootstrap=args.bootstrap, log=log)
            recon = reconstruction_floor(data, args.dataset, args.split, real_features, network, autoencoder,
                                         bootstrap=args.bootstrap)
            out |= {f"t2i/{k[:3]}_floor_recon{k[3:]}": v for k, v in recon.items()}
            print(json.dumps(out, sort_keys=True))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
