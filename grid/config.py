"""The run config: one resolved description of a training run.

A run (DESIGN "A run") is family + named size + D + a few ablation knobs + seed + data. This
file composes them into `RunConfig` and reads it through the one config mechanism
(grid/merge.py: defaults < YAML file < `key=value` overrides; unknown keys and bad types are
one-line errors). Its id is grid/identity.py's.

    cfg = load_config("run.yaml", ["optim.lr=1e-4", "size=cpu-2.7M"])
    build_model_config(cfg, vocab_size=2048, image_shape=(8, 32, 32))

Decisions:
- Model overrides are a small flat set of ablation knobs (`ModelKnobs`), not the nested model
  dataclasses: the size name fixes the backbone shape and the data fixes vocabulary and latent
  shape, so holding full model configs would carry fields the run cannot set (and would put
  them into the id). The family's `model_config` (model/spec.py, baselines/spec.py) turns size
  + knobs + data shape into the model's own config, whose `validate` is the single source of
  shape errors.
- `None` means "the family's default" (its `recipe`: Transfusion 3e-4, Chameleon 1e-4 with
  QK-norm and z-loss 1e-5) for optim.lr, model.qk_norm and model.z_loss, and for
  optim.warmup_steps the paper's 4000 of 250k steps = 1.6% of `steps`, at most 4000, at least
  1. `resolved(cfg)` fills them in; a stored config stays unresolved so that
  `dataclasses.replace(cfg, family=...)` in a sweep picks up the other family's defaults. The
  launcher writes `to_yaml(resolved(cfg))` as the run's config.yaml, which the worker reads.
- D counts trained sequence elements, padding excluded (DESIGN "Element accounting").
  `steps` = ceil(D / (batch_rows * seq_len)) assumes full rows: it is the planned length that
  sizes the LR schedule, a slight underestimate since packed rows carry a little padding. The
  trainer stops on elements actually seen (>= D), so it may run a few steps past `steps`, at
  the schedule's floor.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from data.stream_config import StreamConfig
from data.worlds import IMAGE_DATASETS
from evals.config import EvalConfig
from grid.family import FAMILIES, get_family
from grid.family import recipe as family_recipe
from grid.merge import ConfigError, apply_dotlist, merge, read_yaml, to_dict
from model.sizes import BackboneConfig, get_size

PRECISIONS = ("fp32", "bf16")
PAPER_WARMUP_STEPS, PAPER_STEPS = 4000, 250_000  # paper sec 4.1: warmup fraction 1.6%
PARALLEL = ("auto", "ddp", "fsdp")


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay to min_lr_ratio * lr (paper sec 4.1)."""

    lr: float | None = None  # None: the family's recipe (Transfusion 3e-4, Chameleon 1e-4)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # None: 1.6% of steps (paper 4000/250k), capped at 4000
    min_lr_ratio: float = 0.05  # 1.5e-5 / 3e-4
    grad_clip: float = 1.0


@dataclass
class ModelKnobs:
    """What a run may vary on top of the named size (paper Tables 4-8, Chameleon sec 2.3)."""

    # The model configs' own defaults, written out so that a run config imports no torch
    # (tests/unit/test_config.py keeps them equal to TransfusionConfig / PatchConfig / DiffusionConfig).
    image_attention: str = "bidirectional"  # "causal": Table 5
    patch_kind: str = "linear"  # "linear" | "unet"
    patch_size: int = 2
    unet_channels: int = 64
    lambda_diffusion: float = 5.0  # paper sec 4.1
    noise_limit: int | None = 500  # None disables (sec 4.3.5)
    prediction: str = "eps"  # "eps" (paper) | "v" | "x0": what the diffusion head predicts
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
    captions: str = StreamConfig.captions  # "all" | "first": which of an image's captions a pair trains on
    # What the data is, as data/fingerprint.py reads it from the prepared manifest: set by the
    # launcher and the trainer ("" until then), so a run on other data is another run.
    fingerprint: str = ""


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
    tensorboard: bool = False  # also write RUN_DIR/tensorboard/ (grid/tensorboard_curves.py); needs .[tensorboard]

    @property
    def steps(self) -> int:
        """Planned optimizer steps, assuming full rows (see the module docstring)."""
        return math.ceil(self.D / (self.batch_rows * self.seq_len))

    def validate(self) -> None:
        """ValueError (one line) for the first bad value; shapes that need the data's latent
        shape are checked again by build_model_config."""
        spec = get_family(self.family)  # lists the valid families
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
        if self.data.fingerprint and not re.fullmatch(r"[0-9a-f]{12}", self.data.fingerprint):
            raise ValueError(f"data.fingerprint {self.data.fingerprint!r} is not 12 hex digits: leave it out, "
                             "the launcher sets it from the prepared data")
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
        spec.validate_knobs(dataclasses.asdict(m))  # again with the data's shapes in build_model_config


def stream_config(cfg: RunConfig) -> StreamConfig:
    """The data stream's config (one seed per run: data order follows the run seed)."""
    d = cfg.data
    return StreamConfig(seq_len=cfg.seq_len, batch_rows=cfg.batch_rows, text_share=d.text_share,
                        caption_first=d.caption_first, caption_dropout=d.caption_dropout, captions=d.captions,
                        seed=cfg.seed)


def resolved(cfg: RunConfig) -> RunConfig:
    """A copy with every family default (None) filled in from the family's recipe; idempotent."""
    recipe = family_recipe(cfg.family)
    o, m = cfg.optim, cfg.model
    warmup = o.warmup_steps if o.warmup_steps is not None else \
        max(1, min(PAPER_WARMUP_STEPS, math.ceil(cfg.steps * PAPER_WARMUP_STEPS / PAPER_STEPS)))
    pick = lambda value, default: default if value is None else value  # noqa: E731
    return dataclasses.replace(cfg, optim=dataclasses.replace(o, lr=pick(o.lr, recipe.lr), warmup_steps=warmup),
                               model=dataclasses.replace(m, qk_norm=pick(m.qk_norm, recipe.qk_norm),
                                                         z_loss=pick(m.z_loss, recipe.z_loss)),
                               data=dataclasses.replace(cfg.data))


# ------------------------------------------------------------------ reading and writing

def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """cfg with `key=value` dot-list overrides applied; validated."""
    return apply_dotlist(cfg, overrides)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Defaults < YAML file at path < `key=value` dot-list overrides; validated, unresolved."""
    cfg = RunConfig()
    if path is not None:
        try:
            cfg = merge(cfg, read_yaml(path))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{path}: {e.args[0]}") from None
    return apply_overrides(cfg, overrides)


def from_dict(d: dict) -> RunConfig:
    """Inverse of to_dict (missing keys take defaults; unknown keys and bad types raise)."""
    try:
        return merge(RunConfig(), d)
    except (KeyError, TypeError) as e:
        raise ConfigError(e.args[0]) from None


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_yaml(text: str) -> RunConfig:
    return from_dict(yaml.safe_load(text) or {})


# ------------------------------------------------------------------ the model's config

def _with_knobs(backbone: BackboneConfig, m: ModelKnobs) -> BackboneConfig:
    return dataclasses.replace(backbone, qk_norm=bool(m.qk_norm), norm_reorder=m.norm_reorder, dropout=m.dropout)


def build_model_config(cfg: RunConfig, vocab_size: int, image_shape: tuple[int, ...],
                       codebook_size: Callable[[], int | None] = lambda: None):
    """The family's model config from the size, the knobs and the data, validated.

    The data decides: vocab_size (the text tokenizer's), image_shape (the encoded image: a
    latent (C, H, W) or a code grid (h, w)) and, asked only by a family with discrete codes,
    codebook_size(). Raises ValueError (one line) for impossible shapes.
    """
    r = resolved(cfg)
    backbone = _with_knobs(get_size(r.size), r.model)
    return get_family(r.family).model_config(backbone, vocab_size, tuple(image_shape), codebook_size,
                                             dataclasses.asdict(r.model))


__all__ = ["ConfigError", "DataConfig", "FAMILIES", "ModelKnobs", "OptimConfig", "RunConfig", "build_model_config",
           "from_dict", "from_yaml", "load_config", "resolved", "stream_config", "to_dict", "to_yaml"]
