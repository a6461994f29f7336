"""The captioned-shapes world's generator: scenes drawn per split, rendered, and captioned
(the scene graph and the caption language are data/shapes.py).

Splits are disjoint by construction: a content hash of the scene graph puts every possible
scene in exactly one of train / val / test (a `holdout` fraction each for val and test), and
each split draws from its own seed stream, rejecting scenes of other splits. Val and test are
fixed lists of `n_val` / `n_test` indices; train is unlimited. Everything is a pure function of
(seed, split, index), so any item can be regenerated without state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from data.records import ImageCaption
from data.shapes import (CATEGORIES, GENEVAL_CATEGORIES, KINDS, PALETTE, RELATION_MARGIN, SIZES, SPLITS, Caption, Scene,
                         SceneObject, caption_for, coverage, describe, scene_captions)

@dataclass
class ShapesConfig:
    seed: int = 0
    image_size: int = 32
    grid: int = 3  # positions: grid x grid cells, at most one object per cell
    min_objects: int = 1
    max_objects: int = 4
    kinds: tuple[str, ...] = KINDS
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "cyan", "magenta")
    background: tuple[int, int, int] = (0, 0, 0)
    n_val: int = 1000
    n_test: int = 1000
    holdout: float = 0.05  # fraction of all scene graphs reserved for val, and again for test

    def __post_init__(self) -> None:
        self.kinds, self.colours = tuple(self.kinds), tuple(self.colours)
        self.background = tuple(int(c) for c in self.background)
        for name, chosen, known in (("kinds", self.kinds, KINDS), ("colours", self.colours, tuple(PALETTE))):
            bad = [c for c in chosen if c not in known]
            if bad or not chosen or len(set(chosen)) != len(chosen):
                raise ValueError(f"{name}={chosen}: need distinct values from {', '.join(known)}")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ValueError(f"background={self.background}: need an RGB triple in 0..255")
        close = [c for c in self.colours if np.linalg.norm(np.subtract(PALETTE[c], self.background)) < 128]
        if close:
            raise ValueError(f"background {self.background} is too close to colour(s) {close}: drop them or change it")
        if self.grid < 1:
            raise ValueError(f"grid={self.grid}: need at least 1")
        cell = (self.image_size - 2) // self.grid
        if _small(cell) < 5:
            raise ValueError(f"image_size={self.image_size} with grid={self.grid} gives {cell}-px cells; shapes need "
                             f"cells of at least 9 px: raise image_size to {9 * self.grid + 2} or lower grid")
        if self.grid > 1 and cell / self.image_size < 1.5 * RELATION_MARGIN:
            raise ValueError(f"grid={self.grid} is too fine for the relation margin {RELATION_MARGIN}: use grid <= 6")
        if not 1 <= self.min_objects <= self.max_objects <= self.grid ** 2:
            raise ValueError(f"objects {self.min_objects}..{self.max_objects}: need 1 <= min <= max <= grid^2 = "
                             f"{self.grid ** 2} (one object per cell; raise grid and image_size for more)")
        if not 0 < self.holdout < 0.5:
            raise ValueError(f"holdout={self.holdout}: need 0 < holdout < 0.5")
        if self.n_val < 1 or self.n_test < 1:
            raise ValueError(f"n_val={self.n_val}, n_test={self.n_test}: need at least 1 each")


def _small(cell: int) -> int:
    """Small objects span ~60% of a cell, with the cell's parity so they sit centred on it."""
    s = int(0.6 * cell)
    return s if (s - cell) % 2 == 0 else s - 1


class ShapesWorld:
    """Scenes, images and captions as pure functions of (cfg.seed, split, index)."""

    def __init__(self, cfg: ShapesConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else ShapesConfig()
        n = self.cfg.image_size
        self.cell = (n - 2) // self.cfg.grid
        self.offset = (n - self.cfg.grid * self.cell) // 2
        gap = max(1, self.cell // 10)  # >= 2 px between objects in neighbouring cells
        self.size_px = {"small": _small(self.cell), "large": self.cell - 2 * gap}

    def split_size(self, split: str) -> int | None:
        """Number of items in a split (None: train is unlimited)."""
        _check_split(split)
        return {"train": None, "val": self.cfg.n_val, "test": self.cfg.n_test}[split]

    def split_of(self, scene: Scene) -> str:
        """The one split a scene graph belongs to (content hash; independent of the seed)."""
        h = int.from_bytes(hashlib.blake2b(scene.key().encode(), digest_size=8).digest(), "little")
        u = (h % 1_000_003) / 1_000_003
        return "val" if u < self.cfg.holdout else "test" if u < 2 * self.cfg.holdout else "train"

    def _rng(self, split: str, index: int, stream: int) -> np.random.Generator:
        size = self.split_size(split)
        if index < 0 or (size is not None and index >= size):
            raise IndexError(f"{split} index {index} out of range (size {size})")
        return np.random.default_rng([self.cfg.seed, SPLITS.index(split), index, stream])

    def _draw(self, rng: np.random.Generator) -> Scene:
        cfg = self.cfg
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        cells = sorted(rng.choice(cfg.grid ** 2, size=n, replace=False).tolist())
        pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
        objects = tuple(SceneObject(pick(cfg.kinds), pick(cfg.colours), pick(SIZES), c % cfg.grid, c // cfg.grid)
                        for c in cells)
        return Scene(objects, cfg.grid)

    def scene(self, split: str, index: int) -> Scene:
        """The scene graph of item `index` of `split` (rejection-sampled into the split)."""
        rng = self._rng(split, index, 0)
        for _ in range(100_000):  # expected 1 / holdout draws for val and test
            scene = self._draw(rng)
            if self.split_of(scene) == split:
                return scene
        raise ValueError(f"no {split} scene found: this world has too few distinct scenes for holdout="
                         f"{self.cfg.holdout}; raise max_objects, grid or holdout")

    def render(self, scene: Scene) -> torch.Tensor:
        """uint8 [3, H, W]: the background plus each object's coverage times its colour offset."""
        n = self.cfg.image_size
        bg = np.asarray(self.cfg.background, np.float32)
        img = np.broadcast_to(bg, (n, n, 3)).copy()
        for o in scene.objects:
            s = self.size_px[o.size]
            x0, y0 = self.offset + o.x * self.cell, self.offset + o.y * self.cell
            cov = coverage(o.kind, s, self.cell / 2, self.cell / 2, self.cell, self.cell)
            img[y0:y0 + self.cell, x0:x0 + self.cell] += cov[..., None] * (np.asarray(PALETTE[o.colour]) - bg)
        return torch.from_numpy(np.round(img).clip(0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous()

    def centre_px(self, obj: SceneObject) -> tuple[float, float]:
        """Pixel coordinates (x, y) of an object's centre."""
        return self.offset + (obj.x + 0.5) * self.cell, self.offset + (obj.y + 0.5) * self.cell

    def sample(self, split: str, index: int) -> ImageCaption:
        """Item `index` of `split`: image, caption texts (full description first) and meta with
        the Scene ('scene'), the Caption objects with category and clauses ('captions'), split
        and index."""
        scene = self.scene(split, index)
        caps = scene_captions(scene, self._rng(split, index, 1))
        return ImageCaption(self.render(scene), [c.text for c in caps],
                            {"scene": scene, "captions": caps, "split": split, "index": index})

    def prompts(self, split: str, n: int, categories: Sequence[str] = GENEVAL_CATEGORIES) -> list[Caption]:
        """n text->image evaluation prompts, categories in turn (GenEval-style), each true of a
        scene of `split` (so val/test prompts describe held-out scene graphs)."""
        bad = [c for c in categories if c not in CATEGORIES]
        if bad or not categories:
            raise ValueError(f"categories {bad or '()'}: valid are {', '.join(CATEGORIES)}")
        size = self.split_size(split)
        out, index = [], 0
        for j in range(n):
            category, rng = categories[j % len(categories)], self._rng(split, j % size if size else j, 2)
            for _ in range(10_000):  # scenes that cannot hold the category (e.g. one object: position) are skipped
                index = (index + 1) % size if size else index + 1
                scene = self.scene(split, index)
                cap = describe(scene) if category == "full" else caption_for(rng, category, scene)
                if cap is not None:
                    out.append(cap)
                    break
            else:
                raise ValueError(f"no {split} scene allows a {category!r} caption (max_objects={self.cfg.max_objects})")
        return out


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
