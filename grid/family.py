"""The family registry (after torchtitan's model registry): a family's name -> the spec its
folder exports (model/spec.py, baselines/spec.py; the interface is model/family.py).

    spec = get_family("chameleon")            # the class: recipe, own_knobs, image_kind
    family = family_for(cfg, EmbeddedData())  # bound to the run's model config
    model = family.build()

Names, recipes and owned knobs are known without importing torch (the registry imports a spec
only when asked for the spec), so listing, resolving and hashing run configs stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from data.embedded import EmbeddedData
    from grid.config import RunConfig
    from model.family import Family
    from model.recipe import Recipe

# name -> (module, class) of its spec, and the torch-free module of its recipe and own knobs
_SPECS = {"transfusion": ("model.spec", "TransfusionFamily"), "chameleon": ("baselines.spec", "ChameleonFamily")}
_RECIPES = {"transfusion": "model.recipe", "chameleon": "baselines.recipe"}
FAMILIES = tuple(_SPECS)


def get_family(name: str) -> type["Family"]:
    """The family spec registered as `name`; ValueError (one line) listing the valid names."""
    if name not in _SPECS:
        raise ValueError(f"unknown family {name!r}; valid families: {', '.join(FAMILIES)}")
    module, attr = _SPECS[name]
    return getattr(importlib.import_module(module), attr)


def _recipe_module(name: str):
    if name not in _RECIPES:
        raise ValueError(f"unknown family {name!r}; valid families: {', '.join(FAMILIES)}")
    return importlib.import_module(_RECIPES[name])


def recipe(name: str) -> "Recipe":
    """The family's default lr, QK-norm and z-loss (model/recipe.py), without importing torch."""
    return _recipe_module(name).RECIPE


def foreign_knobs(name: str) -> tuple[str, ...]:
    """Model knobs that other families own and `name` does not read (left out of its run id)."""
    own = set(_recipe_module(name).OWN_KNOBS)
    return tuple(k for other in FAMILIES if other != name for k in _recipe_module(other).OWN_KNOBS if k not in own)


def family_for(cfg: "RunConfig", data: "EmbeddedData") -> "Family":
    """The run's family bound to its model config: the size, the resolved knobs and the data
    (tokenizer vocabulary, encoded image shape, VQ codebook)."""
    from grid.config import build_model_config

    spec = get_family(cfg.family)
    images = data.encoded(cfg.data.dataset, "val", spec.image_kind)
    codebook = lambda: data.autoencoder(cfg.data.dataset, spec.image_kind).codebook_size  # noqa: E731
    return spec(build_model_config(cfg, data.tokenizer.vocab_size, tuple(images.shape[1:]), codebook))
