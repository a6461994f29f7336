"""The fingerprint of the prepared data one run reads: 12 hex digits of the sha256 of what
data.prepare recorded for it in manifest.json.

    data_fingerprint("data_cache", "shapes")   # '3b1f0c9e2a7d'

It covers the steps a run of `dataset` reads (the text, tokenizer and tokens, the dataset's
images, its autoencoders and its encoded latents and codes): their settings and their
statistics (corpus sizes in bytes and documents, token counts, autoencoder checks), without
timings. Preparation is deterministic given those settings, and the statistics tell apart
inputs the settings cannot (the Debian corpora of another release, a fallback corpus). Steps of
other datasets are left out, so preparing one more dataset changes no run's fingerprint. It
reads one small JSON file, not the data: cheap enough for every launch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from data.paths import Paths, default_data_dir
from data.worlds import autoencoder_dataset

SHARED_STEPS = ("text", "tokenizer", "tokens")


def _without_timings(node):
    if isinstance(node, dict):
        return {k: _without_timings(v) for k, v in node.items() if k != "seconds"}
    if isinstance(node, list):
        return [_without_timings(v) for v in node]
    return node


def _steps_of(dataset: str) -> tuple[str, ...]:
    ae = autoencoder_dataset(dataset)
    return (*SHARED_STEPS, f"images/{dataset}", f"autoencoders/{ae}/kl", f"autoencoders/{ae}/vq",
            f"encoded/{dataset}/kl", f"encoded/{dataset}/vq")


def data_fingerprint(root: str | Path | None, dataset: str) -> str:
    """The fingerprint of `dataset` prepared in `root` (None: the default data dir). FileNotFoundError (with the command that
    prepares it) when it is not prepared there; ValueError naming the file when the manifest
    does not parse."""
    root = Path(root) if root else default_data_dir()
    path = Paths(root).manifest
    try:
        steps = json.loads(path.read_text(encoding="utf-8"))["steps"]
    except FileNotFoundError:
        raise FileNotFoundError(f"no prepared data in {root}: run `python -m data.prepare --data-dir {root}`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is corrupt ({type(exc).__name__}: {exc}): delete it and rerun "
                         f"`python -m data.prepare --data-dir {root}`") from None
    missing = [s for s in _steps_of(dataset) if s not in steps]
    if missing:
        raise FileNotFoundError(f"{dataset} is not prepared in {root} (no {', '.join(missing)}): run "
                                f"`python -m data.prepare --data-dir {root} --datasets {dataset}`")
    recorded = {s: _without_timings(steps[s]) for s in _steps_of(dataset)}
    canonical = json.dumps(recorded, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
