"""Run identity (STYLE 7): a run's id comes from its resolved config's content.

    run_id(cfg)   # 'transfusion-cpu-2.7M-D2M-3f9c0a1b2d'

The id hashes the canonical JSON of the resolved config minus what does not change results:
data.data_dir (a location; the data's content is named by data.dataset and data.fingerprint,
below), eval_every and checkpoint_every (the trainer must evaluate with its own
generators and resume exactly, STYLE 8), eval (benchmark settings: `python -m grid.evaluate`
re-scores a finished run with others), device, compile and parallel (the same numbers up to
float reassociation), tensorboard (curves beside metrics.jsonl, which it does not change), and
the model knobs that only another family reads (model/spec.py's `own_knobs`: for Chameleon
image_attention, patch_*, unet_channels, lambda_diffusion, noise_limit, prediction).
precision stays in: bf16 changes results.

A field added to RunConfig after runs were committed is listed in ADDED_LATER with the values
every earlier run had implicitly: at those values it stays out of the hash, so earlier runs keep
their ids and finished results stay valid; any other value is hashed like every other field.

The data's content is in the id through data.fingerprint (data/fingerprint.py), which
`bind_data` fills in from the prepared data: a run on other data (the fallback corpora, a
re-prepared directory, another data_dir) is another run, never "done" because a run of the same
settings finished on other data. Runs from before the field kept "" in their config.yaml and
were trained on the embedded shapes data as prepared with the Debian corpora, whose fingerprint
is LEGACY_DATA: both stay out of the hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from data.fingerprint import data_fingerprint
from data.paths import default_data_dir
from grid.config import RunConfig, from_dict, resolved
from grid.family import foreign_knobs
from grid.merge import to_dict

NOT_IN_ID = ("data.data_dir", "eval_every", "checkpoint_every", "device", "compile", "parallel", "eval",
             "tensorboard")
LEGACY_DATA = "d3a215dbfa5e"  # data.prepare's shapes with the Debian corpora, 2026-12-07
# key -> the values runs had implicitly before the key existed (module docstring).
ADDED_LATER = {"data.captions": ("all",), "data.fingerprint": ("", LEGACY_DATA)}


def _short(n: int) -> str:
    for unit, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= unit:
            return f"{n / unit:.3g}{suffix}"
    return str(n)


def id_fields(cfg: RunConfig) -> dict:
    """The resolved config as hashed: NOT_IN_ID and the family's foreign knobs removed."""
    d = to_dict(resolved(from_dict(to_dict(cfg))))  # from_dict normalises types (lr=1 -> 1.0)
    for key in NOT_IN_ID + tuple(k for k, old in ADDED_LATER.items() if _get(d, k) in old):
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node[p]
        del node[leaf]
    for key in foreign_knobs(cfg.family):
        del d["model"][key]
    return d


def _get(d: dict, key: str):
    for part in key.split("."):
        d = d[part]
    return d


def run_id(cfg: RunConfig) -> str:
    """'<family>-<size>-D<D>-<10 hex of sha256 of the canonical JSON of id_fields>'."""
    canonical = json.dumps(id_fields(cfg), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    return f"{cfg.family}-{cfg.size}-D{_short(cfg.D)}-{digest}"


def bind_data(cfg: RunConfig) -> RunConfig:
    """cfg with data.fingerprint set from the prepared data it names. FileNotFoundError when
    that data is not prepared; ValueError when cfg names another fingerprint (the data changed
    under the run)."""
    actual = data_fingerprint(cfg.data.data_dir, cfg.data.dataset)
    given = cfg.data.fingerprint
    if given and given != actual:
        raise ValueError(f"the {cfg.data.dataset} data in {cfg.data.data_dir or default_data_dir()} (fingerprint {actual}) is not the data this run "
                         f"was trained on ({given}): prepare that data again, or launch on this data as a new run")
    return replace(cfg, data=replace(cfg.data, fingerprint=actual))
