"""The embedded image datasets by name, and what each is made from (torch-free).

    IMAGE_DATASETS          # the names a run's data.dataset may take
    shapes_overrides(name)  # ShapesConfig fields a captioned-shapes world changes, or None
    autoencoder_dataset(name)  # whose autoencoders encode it

"shapes" is the captioned-shapes world of data/shapes.py (1-4 objects on a 3x3 grid). Its
variants draw scenes from the same generator with a few ShapesConfig fields changed; they keep
its image size, palette, shapes and object sizes, so its autoencoders (trained on scenes of 1-4
objects) encode them as well, and data.prepare trains none of their own:

    shapes-2   at most 2 objects per scene (scene complexity, issue 14's world calibration)

"fashion-mnist" is the real-image option (data/fashion_mnist.py).
"""

from __future__ import annotations

SHAPES_WORLDS: dict[str, dict] = {"shapes": {}, "shapes-2": {"max_objects": 2}}
IMAGE_DATASETS = (*SHAPES_WORLDS, "fashion-mnist")
# Every embedded set is a toy: a launcher refuses to train paper-size models on one unless told to.
TOY_DATASETS = IMAGE_DATASETS


def shapes_overrides(name: str) -> dict | None:
    """The ShapesConfig fields the world `name` sets, or None if it is not a shapes world."""
    return SHAPES_WORLDS.get(name)


def autoencoder_dataset(name: str) -> str:
    """The dataset whose autoencoders encode `name`: the base world for a shapes variant."""
    return "shapes" if name in SHAPES_WORLDS else name
