"""The captioned-shapes world: the suite's offline stand-in for COCO and GenEval (issue 3).

A scene is 1-4 coloured shapes on a plain background, one per cell of a coarse grid (3x3 by
default), so objects never overlap and are at least 2 px apart: colour segmentation plus
connected components recovers them exactly. The scene graph (`Scene`) is the ground truth;
captions are generated from it in GenEval's categories (Ghosh et al. 2023: single object, two
objects, counting, colours, position, colour attribution) plus a full description, and each
caption carries machine-checkable clauses (`Count`, `Relation`) that `evaluate` decides on a
scene graph and data/checker.py decides on pixels.

The world that draws, renders and captions scenes per split is data/shapes_world.py.

Colours are corners of the RGB cube (pairwise distance >= 255) so they stay separable after a
lossy autoencoder; shapes are rendered with 4x4 supersampling, so an edge pixel is an exact mix
of its colour and the background (what the checker's colour model assumes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import numpy as np


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


def caption_for(rng: np.random.Generator, category: str, scene: Scene) -> Caption | None:
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
    caps = [caption_for(rng, c, scene) for c in GENEVAL_CATEGORIES]
    return [describe(scene)] + [c for c in caps if c is not None]
