"""The captioned-shapes world: the suite's offline stand-in for COCO and GenEval (issue 3).

A scene is 1-4 coloured shapes on a plain background, one per cell of a coarse grid (3x3 by
default), so objects never overlap and are at least 2 px apart: colour segmentation plus
connected components recovers them exactly. The scene graph (`Scene`) is the ground truth;
captions are generated from it in GenEval's categories (Ghosh et al. 2023: single object, two
objects, counting, colours, position, colour attribution) plus a full description, and each
caption carries machine-checkable clauses (`Count`, `Relation`) that `evaluate` decides on a
scene graph and data/checker.py decides on pixels.

Splits are disjoint by construction: a content hash of the scene graph puts every possible
scene in exactly one of train / val / test (a `holdout` fraction each for val and test), and
each split draws from its own seed stream, rejecting scenes of other splits. Val and test are
fixed lists of `n_val` / `n_test` indices; train is unlimited. Everything is a pure function of
(seed, split, index), so any item can be regenerated without state.

Colours are corners of the RGB cube (pairwise distance >= 255) so they stay separable after a
lossy autoencoder; shapes are rendered with 4x4 supersampling, so an edge pixel is an exact mix
of its colour and the background (what the checker's colour model assumes).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from data.records import ImageCaption

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
    "cyan": (0, 255, 255), "magenta": (255, 0, 255), "white": (255, 255, 255),
}


# A shape is a predicate on coordinates normalised to its bounding box, u, v in [-1, 1]
# (v grows downwards, so the triangle points up).
def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return (au <= 1) & (av <= 1) & ((au <= 1 / 3) | (av <= 1 / 3))


_INSIDE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v <= 1,
    "square": lambda u, v: (np.abs(u) <= 1) & (np.abs(v) <= 1),
    "triangle": lambda u, v: (v <= 1) & (np.abs(u) <= (v + 1) / 2),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1,
    "cross": _cross,
}
KINDS: tuple[str, ...] = tuple(_INSIDE)
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds",
           "cross": "crosses"}
# Area as a fraction of the s x s bounding box, and the centroid's offset below the box centre in
# units of s (the triangle's centroid sits a third of the way up from its base). The checker
# inverts these to guess a shape's size and centre from the mass and centroid of its pixels.
KIND_AREA = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5, "cross": 5 / 9}
KIND_CENTROID_DY = {"circle": 0.0, "square": 0.0, "triangle": 1 / 6, "diamond": 0.0, "cross": 0.0}

SIZES = ("small", "large")
SPLITS = ("train", "val", "test")
GENEVAL_CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
CATEGORIES = GENEVAL_CATEGORIES + ("full",)
# Relations compare object centres in units of the image side; one grid cell must exceed the
# margin comfortably (checked in ShapesConfig) so that grid relations survive pixel error.
RELATIONS = ("left of", "right of", "above", "below")
RELATION_MARGIN = 0.1
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def coverage(kind: str, size: float, cx: float, cy: float, h: int, w: int, supersample: int = 4) -> np.ndarray:
    """Fraction of each pixel of an h x w canvas covered by a shape: float32 [h, w].

    The shape spans `size` px and is centred at (cx, cy) in pixel coordinates (pixel (i, j)
    covers [j, j+1) x [i, i+1)); coverage is estimated on a supersample x supersample grid.
    """
    sub = (np.arange(supersample) + 0.5) / supersample
    v = ((np.arange(h)[:, None] + sub).reshape(-1, 1) - cy) / (size / 2)
    u = ((np.arange(w)[:, None] + sub).reshape(1, -1) - cx) / (size / 2)
    inside = _INSIDE[kind](u, v).astype(np.float32)
    return inside.reshape(h, supersample, w, supersample).mean(axis=(1, 3))


# ----------------------------------------------------------------------------- scene graph


@dataclass(frozen=True)
class SceneObject:
    kind: str
    colour: str
    size: str  # "small" | "large"
    x: int  # grid column, 0 = left
    y: int  # grid row, 0 = top


@dataclass(frozen=True)
class Scene:
    """The scene graph: objects in reading order (row, then column) on a grid x grid lattice."""

    objects: tuple[SceneObject, ...]
    grid: int

    def key(self) -> str:
        """Canonical text of the graph (what the split hash and equality are about)."""
        return f"{self.grid}|" + ";".join(f"{o.kind},{o.colour},{o.size},{o.x},{o.y}" for o in self.objects)


@dataclass(frozen=True)
class Placed:
    """What clauses are evaluated on: an object's kind, colour and centre in units of the image
    side (0..1, y downwards). Scene objects and checker detections both provide these fields."""

    kind: str
    colour: str
    cx: float
    cy: float


def placed(scene: Scene) -> list[Placed]:
    """Scene objects at their cell centres, normalised by the grid (the symbolic ground truth)."""
    g = scene.grid
    return [Placed(o.kind, o.colour, (o.x + 0.5) / g, (o.y + 0.5) / g) for o in scene.objects]


# ----------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _number(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)


@dataclass(frozen=True)
class Spec:
    """Which objects a clause talks about; None matches anything."""

    kind: str | None = None
    colour: str | None = None

    def matches(self, obj) -> bool:
        return (self.kind is None or obj.kind == self.kind) and (self.colour is None or obj.colour == self.colour)

    def phrase(self, n: int = 1, article: bool = True) -> str:
        """'a red circle', 'two green triangles', 'three objects'."""
        noun = self.kind or "object"
        noun = noun if n == 1 else PLURALS.get(noun, noun + "s")
        words = f"{self.colour} {noun}" if self.colour else noun
        if n == 1 and article:
            return f"{_article(words)} {words}"
        return f"{_number(n)} {words}"


@dataclass(frozen=True)
class Count:
    """Exactly n (exact) or at least n (not exact) objects match spec."""

    spec: Spec
    n: int
    exact: bool

    def holds(self, objects: Sequence, margin: float = RELATION_MARGIN) -> tuple[bool, int]:
        found = sum(self.spec.matches(o) for o in objects)
        return (found == self.n if self.exact else found >= self.n), found


@dataclass(frozen=True)
class Relation:
    """Some object matching a stands in `rel` to a different object matching b: centres differ
    by more than `margin` (a fraction of the image side) along the relation's axis."""

    a: Spec
    rel: str
    b: Spec

    def __post_init__(self) -> None:
        if self.rel not in RELATIONS:
            raise ValueError(f"unknown relation {self.rel!r}; valid: {', '.join(RELATIONS)}")

    def holds(self, objects: Sequence, margin: float = RELATION_MARGIN) -> tuple[bool, int]:
        pairs = 0
        for i, p in enumerate(objects):
            for j, q in enumerate(objects):
                if i != j and self.a.matches(p) and self.b.matches(q) and _related(p, q, self.rel, margin):
                    pairs += 1
        return pairs > 0, pairs


def _related(p, q, rel: str, margin: float) -> bool:
    return {"left of": p.cx < q.cx - margin, "right of": p.cx > q.cx + margin,
            "above": p.cy < q.cy - margin, "below": p.cy > q.cy + margin}[rel]


Clause = Count | Relation


@dataclass(frozen=True)
class Caption:
    text: str
    category: str  # one of CATEGORIES
    clauses: tuple[Clause, ...]

    def to_dict(self) -> dict:
        """JSON-ready form (for prompt files); `from_dict` inverts it."""
        return {"text": self.text, "category": self.category,
                "clauses": [{"type": type(c).__name__.lower(), **asdict(c)} for c in self.clauses]}

    @staticmethod
    def from_dict(d: dict) -> Caption:
        def clause(c: dict) -> Clause:
            if c["type"] == "count":
                return Count(Spec(**c["spec"]), c["n"], c["exact"])
            if c["type"] == "relation":
                return Relation(Spec(**c["a"]), c["rel"], Spec(**c["b"]))
            raise ValueError(f"unknown clause type {c['type']!r} (count, relation)")

        return Caption(d["text"], d["category"], tuple(clause(c) for c in d["clauses"]))


def evaluate(objects: Sequence, clauses: Iterable[Clause], margin: float = RELATION_MARGIN) -> dict:
    """Decide clauses on objects with kind, colour, cx, cy (`placed(scene)` or detections).
    Returns {"passed": all clauses hold, "details": [{"clause", "passed", "found"}]}, where found
    is the matching count (Count) or the number of related pairs (Relation)."""
    details = []
    for c in clauses:
        ok, found = c.holds(objects, margin)
        details.append({"clause": c, "passed": bool(ok), "found": found})
    return {"passed": all(d["passed"] for d in details), "details": details}


def describe(scene: Scene) -> Caption:
    """The full description: every (colour, kind) group with its exact count, in reading order,
    e.g. 'a red circle, two blue squares and a green cross' (category 'full')."""
    groups: dict[Spec, int] = {}
    for o in scene.objects:
        groups[Spec(o.kind, o.colour)] = groups.get(Spec(o.kind, o.colour), 0) + 1
    parts = [s.phrase(n) for s, n in groups.items()]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    clauses = tuple(Count(s, n, True) for s, n in groups.items()) + (Count(Spec(), len(scene.objects), True),)
    return Caption(text, "full", clauses)


_PREFIXES = ("", "a picture of ", "an image of ")
_REL_WORDS = {"left of": ("left of", "to the left of"), "right of": ("right of", "to the right of"),
              "above": ("above",), "below": ("below",)}


def _caption(rng: np.random.Generator, category: str, scene: Scene) -> Caption | None:
    """One caption of `category` that is true of the scene, or None if the scene has none."""
    objs = scene.objects
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    prefix = pick(_PREFIXES)
    if category in ("single_object", "colors"):
        o = pick(objs)
        spec = Spec(o.kind, o.colour if category == "colors" else None)
        return Caption(prefix + spec.phrase(), category, (Count(spec, 1, False),))
    if category == "counting":
        # GenEval counts 2-4: prefer a group of at least two when the scene has one.
        specs = list(dict.fromkeys(s for o in objs for s in (Spec(), Spec(o.kind), Spec(o.kind, o.colour))))
        counts = {s: sum(s.matches(o) for o in objs) for s in specs}
        spec = pick([s for s in specs if counts[s] >= 2] or specs)
        n = counts[spec]
        return Caption(prefix + spec.phrase(n, article=False), category, (Count(spec, n, True),))
    if category in ("two_object", "color_attr"):
        # Two disjoint specs (different kinds), so 'at least one of each' needs two objects.
        pairs = [(p, q) for p in objs for q in objs if p.kind != q.kind]
        if not pairs:
            return None
        p, q = pick(pairs)
        with_colour = category == "color_attr"
        a, b = (Spec(o.kind, o.colour if with_colour else None) for o in (p, q))
        return Caption(f"{prefix}{a.phrase()} and {b.phrase()}", category, (Count(a, 1, False), Count(b, 1, False)))
    if category == "position":
        pairs = [(p, q) for p in objs for q in objs if p is not q]
        if not pairs:
            return None
        distinct = [(p, q) for p, q in pairs if (p.kind, p.colour) != (q.kind, q.colour)]
        p, q = pick(distinct or pairs)
        rels = [r for r, ok in (("left of", p.x < q.x), ("right of", p.x > q.x),
                                ("above", p.y < q.y), ("below", p.y > q.y)) if ok]
        rel = pick(rels)
        coloured = bool(rng.integers(2)) or (p.kind == q.kind)
        a, b = (Spec(o.kind, o.colour if coloured else None) for o in (p, q))
        return Caption(f"{prefix}{a.phrase()} {pick(_REL_WORDS[rel])} {b.phrase()}", category, (Relation(a, rel, b),))
    raise ValueError(f"unknown category {category!r}; valid: {', '.join(GENEVAL_CATEGORIES)}")


def scene_captions(scene: Scene, rng: np.random.Generator) -> list[Caption]:
    """The full description first, then one caption per GenEval category the scene allows."""
    caps = [_caption(rng, c, scene) for c in GENEVAL_CATEGORIES]
    return [describe(scene)] + [c for c in caps if c is not None]


# ----------------------------------------------------------------------------- the world


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
                cap = describe(scene) if category == "full" else _caption(rng, category, scene)
                if cap is not None:
                    out.append(cap)
                    break
            else:
                raise ValueError(f"no {split} scene allows a {category!r} caption (max_objects={self.cfg.max_objects})")
        return out


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
