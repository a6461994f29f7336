"""The run config: one resolved description of a training run, and its plumbing.

A run (DESIGN "A run") is family + named size + D + a few ablation knobs + seed + data. This
file composes them into `RunConfig`, merges defaults < YAML file < `key=value` overrides
(STYLE 1; unknown keys and bad types are one-line errors), and derives the content id
(STYLE 7):

    cfg = load_config("run.yaml", ["optim.lr=1e-4", "size=cpu-2.7M"])
    run_id(cfg)   # 'transfusion-cpu-2.7M-D2M-3f9c0a1b2d'
    build_model_config(cfg, vocab_size=2048, image_shape=(8, 32, 32))

Decisions:
- Model overrides are a small flat set of ablation knobs (`ModelKnobs`), not the nested model
  dataclasses: the size name fixes the backbone shape and the data fixes vocabulary and latent
  shape, so holding full `TransfusionConfig`s would carry fields the run cannot set (and would
  put them into the id). `build_model_config` turns size + knobs + data shape into the model's
  own config, whose `validate` is the single source of shape errors.
- `None` means "the family's default" for optim.lr (Transfusion 3e-4, Chameleon
  ChameleonConfig.lr = 1e-4), model.qk_norm and model.z_loss (Chameleon's stability recipe
  turns both on), and optim.warmup_steps (the paper's 4000 of 250k steps = 1.6% of `steps`,
  at most 4000, at least 1). `resolved(cfg)` fills them in; a stored config stays unresolved so
  that `dataclasses.replace(cfg, family=...)` in a sweep picks up the other family's defaults.
  The trainer writes `to_yaml(resolved(cfg))` as the run's config.yaml.
- D counts trained sequence elements, padding excluded (DESIGN "Element accounting").
  `steps` = ceil(D / (batch_rows * seq_len)) assumes full rows: it is the planned length that
  sizes the LR schedule, a slight underestimate since packed rows carry a little padding. The
  trainer stops on elements actually seen (>= D), so it may run a few steps past `steps`, at
  the schedule's floor.
- The id hashes the canonical JSON of the resolved config minus what does not change results:
  data.data_dir (a location; the data's content is named by data.dataset and prepared by
  data/prepare.py), eval_every and checkpoint_every (the trainer must evaluate with its own
  generators and resume exactly, STYLE 8), eval (benchmark settings: `python -m evals.run`
  re-scores a finished run with others), device, compile and parallel (the same numbers up to float
  reassociation), and, for Chameleon, the Transfusion-only knobs (image_attention, patch_*,
  unet_channels, lambda_diffusion, noise_limit, prediction). precision stays in: bf16 changes results.
  Adding a field to RunConfig changes every id; keep that in mind for committed results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from baselines.chameleon import ChameleonConfig
from data.embedded import IMAGE_DATASETS
from data.stream import StreamConfig
from evals.harness import EvalConfig
from model.backbone import BackboneConfig
from model.diffusion import DiffusionConfig
from model.patches import PatchConfig
from model.sizes import get_size
from model.transfusion import TransfusionConfig

FAMILIES = ("transfusion", "chameleon")
PRECISIONS = ("fp32", "bf16")
TRANSFUSION_LR = 3e-4  # paper sec 4.1
PAPER_WARMUP_STEPS, PAPER_STEPS = 4000, 250_000  # paper sec 4.1: warmup fraction 1.6%

_T, _P, _D = TransfusionConfig(), PatchConfig(), DiffusionConfig()
TRANSFUSION_ONLY = ("image_attention", "patch_kind", "patch_size", "unet_channels", "lambda_diffusion", "noise_limit",
                    "prediction")
NOT_IN_ID = ("data.data_dir", "eval_every", "checkpoint_every", "device", "compile", "parallel", "eval")
PARALLEL = ("auto", "ddp", "fsdp")


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay to min_lr_ratio * lr (paper sec 4.1)."""

    lr: float | None = None  # None: the family's default (Transfusion 3e-4, Chameleon 1e-4)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # None: 1.6% of steps (paper 4000/250k), capped at 4000
    min_lr_ratio: float = 0.05  # 1.5e-5 / 3e-4
    grad_clip: float = 1.0


@dataclass
class ModelKnobs:
    """What a run may vary on top of the named size (paper Tables 4-8, Chameleon sec 2.3)."""

    image_attention: str = _T.image_attention  # "causal": Table 5
    patch_kind: str = _P.kind  # "linear" | "unet"
    patch_size: int = _P.patch_size
    unet_channels: int = _P.unet_channels
    lambda_diffusion: float = _T.lambda_diffusion
    noise_limit: int | None = _D.noise_limit  # None disables (sec 4.3.5)
    prediction: str = _D.prediction  # "eps" (paper) | "v" | "x0": what the diffusion head predicts
    qk_norm: bool | None = None  # None: family default (Chameleon on)
    norm_reorder: bool = False
    dropout: float = 0.0
    z_loss: float | None = None  # None: family default (Chameleon 1e-5)


@dataclass
class DataConfig:
    data_dir: str = ""  # "": data.embedded.default_data_dir() ($TRANSFUSION_DATA_DIR or ./data_cache)
    dataset: str = "shapes"
    text_share: float = StreamConfig.text_share
    caption_first: float = StreamConfig.caption_first
    caption_dropout: float = StreamConfig.caption_dropout  # pairs trained as the image alone (guidance)


@dataclass
class RunConfig:
    family: str = "transfusion"
    size: str = "cpu-0.8M"
    D: int = 2_000_000  # training elements, padding excluded
    seq_len: int = StreamConfig.seq_len
    batch_rows: int = StreamConfig.batch_rows
    seed: int = 0
    model: ModelKnobs = field(default_factory=ModelKnobs)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)  # the benchmarks at the end (evals/harness.py)
    eval_every: int = 0  # steps; 0: only at the end
    checkpoint_every: int = 200  # steps
    precision: str = "fp32"  # "fp32" | "bf16" (autocast on CUDA)
    compile: bool = False
    device: str = "auto"
    parallel: str = "auto"  # with > 1 process: "ddp" | "fsdp" | "auto" (FSDP2 from FSDP_MIN_PARAMS)

    @property
    def steps(self) -> int:
        """Planned optimizer steps, assuming full rows (see the module docstring)."""
        return math.ceil(self.D / (self.batch_rows * self.seq_len))

    def validate(self) -> None:
        """ValueError (one line) for the first bad value; shapes that need the data's latent
        shape are checked again by build_model_config."""
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; valid families: {', '.join(FAMILIES)}")
        backbone = get_size(self.size)  # lists the valid sizes
        for name in ("D", "seq_len", "batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.eval_every < 0 or self.checkpoint_every < 0:
            raise ValueError("eval_every and checkpoint_every must be >= 0 (0 turns them off)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.parallel not in PARALLEL:
            raise ValueError(f"parallel={self.parallel!r}; valid: {', '.join(PARALLEL)}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device={self.device!r}; valid: auto, cpu, cuda, cuda:N")
        if self.data.dataset not in IMAGE_DATASETS:
            raise ValueError(f"unknown dataset {self.data.dataset!r}; valid: {', '.join(IMAGE_DATASETS)}")
        stream_config(self).validate()
        self.eval.validate()
        o = self.optim
        if (o.lr is not None and o.lr <= 0) or o.eps <= 0 or o.weight_decay < 0 or o.grad_clip <= 0:
            raise ValueError("optim: need lr > 0, eps > 0, weight_decay >= 0 and grad_clip > 0")
        if not all(0 <= b < 1 for b in o.betas):
            raise ValueError(f"optim.betas={o.betas}: each must be in [0, 1)")
        if not 0 <= o.min_lr_ratio <= 1 or (o.warmup_steps is not None and o.warmup_steps < 0):
            raise ValueError("optim: need 0 <= min_lr_ratio <= 1 and warmup_steps >= 0")
        m = self.model
        if m.z_loss is not None and m.z_loss < 0 or m.lambda_diffusion < 0:
            raise ValueError("model: need z_loss >= 0 and lambda_diffusion >= 0")
        _with_knobs(backbone, resolved(self).model).validate()  # dropout, dim % heads
        if self.family == "transfusion":
            _patch(m).validate()  # kind and size; divisibility again once the latent is known
            TransfusionConfig(image_attention=m.image_attention, diffusion=_diffusion(m)).validate()


def stream_config(cfg: RunConfig) -> StreamConfig:
    """The data stream's config (one seed per run: data order follows the run seed)."""
    d = cfg.data
    return StreamConfig(seq_len=cfg.seq_len, batch_rows=cfg.batch_rows, text_share=d.text_share,
                        caption_first=d.caption_first, caption_dropout=d.caption_dropout, seed=cfg.seed)


def resolved(cfg: RunConfig) -> RunConfig:
    """A copy with every family default (None) filled in; idempotent."""
    cham = cfg.family == "chameleon"
    o, m = cfg.optim, cfg.model
    lr = o.lr if o.lr is not None else (ChameleonConfig.lr if cham else TRANSFUSION_LR)
    warmup = o.warmup_steps if o.warmup_steps is not None else \
        max(1, min(PAPER_WARMUP_STEPS, math.ceil(cfg.steps * PAPER_WARMUP_STEPS / PAPER_STEPS)))
    family_qk = ChameleonConfig().backbone.qk_norm if cham else BackboneConfig.qk_norm
    qk = m.qk_norm if m.qk_norm is not None else family_qk
    z = m.z_loss if m.z_loss is not None else (ChameleonConfig.z_loss if cham else TransfusionConfig.z_loss)
    return dataclasses.replace(cfg, optim=dataclasses.replace(o, lr=lr, warmup_steps=warmup),
                               model=dataclasses.replace(m, qk_norm=qk, z_loss=z),
                               data=dataclasses.replace(cfg.data))


# ------------------------------------------------------------------ merging and types

def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """value (from YAML, a dot-list string, or Python) as type tp, or a one-line TypeError.
    Strings are parsed for numeric and bool fields: PyYAML reads `1e-4` as a string."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, key)
    bad = TypeError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):  # "[a, b]" (YAML) or "a,b"
            parsed = yaml.safe_load(value)
            value = parsed if isinstance(parsed, list) else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or (args[-1] is not Ellipsis and len(value) != len(args)):
            raise bad
        elems = args if args[-1] is not Ellipsis else (args[0],) * len(value)
        return tuple(_coerce(v, t, key) for v, t in zip(value, elems))
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):
        try:
            value = float(value) if tp is float else (int(value) if value.lstrip("+-").isdigit() else float(value))
        except ValueError:
            raise bad from None
    if tp is float and isinstance(value, (int, float)):
        return float(value)
    if tp is int and isinstance(value, (int, float)) and float(value).is_integer():
        return int(value)  # "2e6" is a fine D
    raise bad


def _merge(obj: Any, updates: dict, prefix: str = "") -> Any:
    """A copy of dataclass obj with the nested dict updates applied, every value type-checked."""
    if not isinstance(updates, dict):
        raise TypeError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    changes = {}
    for key, value in updates.items():
        if key not in names:
            where = f"at '{prefix.rstrip('.')}'" if prefix else "at the top level"
            raise KeyError(f"unknown config key '{prefix}{key}'; valid keys {where}: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, f"{prefix}{key}.")
        else:
            changes[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return dataclasses.replace(obj, **changes)


def _dotlist(overrides: list[str]) -> dict:
    """['optim.lr=1e-4', 'size=cpu-2.7M'] -> {'optim': {'lr': '1e-4'}, 'size': 'cpu-2.7M'}."""
    out: dict = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value")
        *parents, leaf = key.strip().split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r} conflicts with an earlier one")
        node[leaf] = value.strip()
    return out


class ConfigError(ValueError):
    """A config problem, with a one-line message (unknown key, wrong type, bad value)."""


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """cfg with `key=value` dot-list overrides applied; validated."""
    try:
        cfg = _merge(cfg, _dotlist(list(overrides)))
        cfg.validate()
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(e.args[0] if e.args else str(e)) from None
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Defaults < YAML file at path < `key=value` dot-list overrides; validated, unresolved."""
    cfg = RunConfig()
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
            cfg = _merge(cfg, loaded if loaded is not None else {})
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(e.args[0] if e.args else str(e)) from None
    return apply_overrides(cfg, overrides)


def to_dict(cfg: RunConfig) -> dict:
    """Plain nested dict (tuples as lists), as written to YAML and hashed."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(d: dict) -> RunConfig:
    """Inverse of to_dict (missing keys take defaults; unknown keys and bad types raise)."""
    try:
        return _merge(RunConfig(), d)
    except (KeyError, TypeError) as e:
        raise ConfigError(e.args[0]) from None


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_yaml(text: str) -> RunConfig:
    return from_dict(yaml.safe_load(text) or {})


# ------------------------------------------------------------------ identity

def _short(n: int) -> str:
    for unit, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= unit:
            return f"{n / unit:.3g}{suffix}"
    return str(n)


def id_fields(cfg: RunConfig) -> dict:
    """The resolved config as hashed: NOT_IN_ID and, for Chameleon, TRANSFUSION_ONLY removed."""
    d = to_dict(resolved(from_dict(to_dict(cfg))))  # from_dict normalises types (lr=1 -> 1.0)
    for key in NOT_IN_ID:
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node[p]
        del node[leaf]
    if cfg.family == "chameleon":
        for key in TRANSFUSION_ONLY:
            del d["model"][key]
    return d


def run_id(cfg: RunConfig) -> str:
    """'<family>-<size>-D<D>-<10 hex of sha256 of the canonical JSON of id_fields>'."""
    canonical = json.dumps(id_fields(cfg), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    return f"{cfg.family}-{cfg.size}-D{_short(cfg.D)}-{digest}"


# ------------------------------------------------------------------ the model's config

def _with_knobs(backbone: BackboneConfig, m: ModelKnobs) -> BackboneConfig:
    return dataclasses.replace(backbone, qk_norm=bool(m.qk_norm), norm_reorder=m.norm_reorder, dropout=m.dropout)


def _patch(m: ModelKnobs, channels: int = _P.latent_channels, size: int = _P.latent_size) -> PatchConfig:
    return PatchConfig(kind=m.patch_kind, patch_size=m.patch_size, latent_channels=channels,
                       latent_size=size, unet_channels=m.unet_channels)


def _diffusion(m: ModelKnobs) -> DiffusionConfig:
    return dataclasses.replace(_D, noise_limit=m.noise_limit, prediction=m.prediction)


def build_model_config(cfg: RunConfig, vocab_size: int, image_shape: tuple[int, ...],
                       codebook_size: int | None = None) -> TransfusionConfig | ChameleonConfig:
    """The family's model config from the size, the knobs and the data, validated.

    The data decides: vocab_size (the text tokenizer's), and image_shape, which is the latent
    (C, H, W) with H == W for Transfusion, or the VQ code grid (h, w) with h == w for Chameleon,
    which also needs the VQ codebook_size. Raises ValueError (one line) for impossible shapes.
    """
    r = resolved(cfg)
    m = r.model
    backbone = _with_knobs(get_size(r.size), m)
    if r.family == "transfusion":
        if len(image_shape) != 3 or image_shape[1] != image_shape[2]:
            raise ValueError(f"transfusion needs a square latent shape (C, H, W), got {tuple(image_shape)}")
        model = TransfusionConfig(
            backbone=backbone, patch=_patch(m, image_shape[0], image_shape[1]),
            diffusion=_diffusion(m), vocab_size=vocab_size,
            image_attention=m.image_attention, lambda_diffusion=m.lambda_diffusion, z_loss=m.z_loss)
    elif r.family == "chameleon":
        if len(image_shape) != 2 or image_shape[0] != image_shape[1]:
            raise ValueError(f"chameleon needs a square code grid shape (h, w), got {tuple(image_shape)}")
        if codebook_size is None:
            raise ValueError("chameleon needs the VQ codebook_size")
        model = ChameleonConfig(backbone=backbone, text_vocab_size=vocab_size, codebook_size=codebook_size,
                                code_grid=image_shape[0], z_loss=m.z_loss, lr=r.optim.lr)
    else:
        raise ValueError(f"unknown family {r.family!r}; valid families: {', '.join(FAMILIES)}")
    model.validate()
    return model


__all__ = ["ConfigError", "DataConfig", "FAMILIES", "ModelKnobs", "OptimConfig", "RunConfig",
           "build_model_config", "from_dict", "from_yaml", "id_fields", "load_config", "resolved", "run_id",
           "stream_config", "to_dict", "to_yaml"]
