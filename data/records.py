"""Records shared by the data sources: what an image-caption set yields.

Images travel as uint8 RGB [3, H, W] (how they are stored and checked) and become floats in
[-1, 1] only at the autoencoder's door (`to_unit_range`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageCaption:
    """One image with its reference captions (one or more) and optional metadata (e.g. the
    shapes world's scene graph, a dataset's class label or file name)."""

    image: torch.Tensor  # uint8 [3, H, W]
    captions: list[str]
    meta: dict = field(default_factory=dict)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] [..., 3, H, W] -> uint8 (clamped, rounded)."""
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
