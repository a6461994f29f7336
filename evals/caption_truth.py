"""Captions scored by what they say: parse a caption into the shapes world's clauses and decide
them on the image's ground-truth scene (data/shapes.py), beside CIDEr.

n-gram metrics reward the common phrasing of the references: one constant caption repeated for
every image scores CIDEr ~0.8 on the shapes test set. Here a caption is read with the grammar
the shapes captions are generated from (data/shapes.py `_caption`, `describe`):

    [a picture of | an image of] PHRASE                     one object (>= 1), or "N things" (exactly N)
    [prefix] PHRASE and PHRASE                              both present (>= 1 each)
    [prefix] PHRASE (left of|right of|above|below) PHRASE   a Relation (also "to the left of")
    PHRASE, PHRASE, ... and PHRASE                          the full description: exact counts
    PHRASE = a|an [colour] kind | NUMBER [colour] kinds     kind: circle ... cross, or "object"

A list of two singular phrases of different kinds is read as "both present", the weaker of its
two readings (the generator writes it for two_object / color_attr, and as a full description).
The parsed clauses (Count, Relation) are decided by shapes.evaluate on the scene's objects at
their cell centres (`placed`), exactly as the GenEval checker decides them on detections.

Per caption, four verdicts (`judge`):
    objects    every kind it names is present in those numbers (colours ignored, so a count of
               "two red circles" asks for at least two circles); relation arguments must exist.
               A caption that does not parse names nothing correctly: False.
    colours    every coloured object it names exists in that colour (None: names no colour)
    positions  every relation it states holds (None: states no relation)
    correct    every clause holds (the caption is true of the scene)
A benchmark averages objects and correct over all captions, colours and positions over the
captions that name a colour / a relation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from data.shapes import KINDS, PALETTE, PLURALS, RELATION_MARGIN, Count, Placed, Relation, Spec, evaluate
from evals.intervals import rate_with_interval

_NUMBERS = {w: i for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                        "nine", "ten"))}
_NOUNS = {**{k: k for k in KINDS}, **{p: k for k, p in PLURALS.items()}, "object": None, "objects": None}
_COLOURS = "|".join(PALETTE)
_PHRASE = re.compile(rf"(?:(a|an)|(\d+|{'|'.join(_NUMBERS)})) (?:({_COLOURS}) )?({'|'.join(_NOUNS)})")
_REL = {"to the left of": "left of", "left of": "left of", "to the right of": "right of", "right of": "right of",
        "above": "above", "below": "below"}
_RELATION = re.compile(rf"^(.+?) ({'|'.join(_REL)}) (.+)$")
_PREFIX = re.compile(r"^(?:a picture of|an image of) ")


@dataclass(frozen=True)
class Parsed:
    """What a caption claims: counts and relations (data/shapes.py clauses)."""

    counts: tuple[Count, ...]
    relations: tuple[Relation, ...]


def _phrase(text: str) -> tuple[Spec, int, bool] | None:
    """'a red circle' -> (Spec(circle, red), 1, singular); 'three objects' -> (Spec(), 3, numbered)."""
    m = _PHRASE.fullmatch(text)
    if m is None:
        return None
    article, number, colour, noun = m.groups()
    n = 1 if article else (int(number) if number.isdigit() else _NUMBERS[number])
    return Spec(_NOUNS[noun], colour), n, article is None


def parse(text: str) -> Parsed | None:
    """The clauses a caption states, or None when the caption grammar does not cover it."""
    s = " ".join(text.lower().replace(".", " ").split())
    s = _PREFIX.sub("", s)
    if not s:
        return None
    rel = _RELATION.match(s)
    if rel is not None:
        a, b = _phrase(rel.group(1)), _phrase(rel.group(3))
        if a is None or b is None or a[2] or b[2]:  # relations are between single objects
            return None
        return Parsed((), (Relation(a[0], _REL[rel.group(2)], b[0]),))
    head, _, last = s.rpartition(" and ")
    parts = ([p for p in head.split(", ")] + [last]) if head else [s]
    phrases = [_phrase(p) for p in parts]
    if any(p is None for p in phrases):
        return None
    if len(phrases) == 1:  # "a red circle": at least one; "two red circles": exactly two
        spec, n, numbered = phrases[0]
        return Parsed((Count(spec, n, numbered),), ())
    if len(phrases) == 2 and not any(p[2] for p in phrases) and phrases[0][0].kind != phrases[1][0].kind:
        return Parsed(tuple(Count(p[0], 1, False) for p in phrases), ())
    # The full description: every group with its exact count, and nothing else in the scene.
    counts = tuple(Count(spec, n, True) for spec, n, _ in phrases)
    return Parsed(counts + (Count(Spec(), sum(n for _, n, _ in phrases), True),), ())


def scene_objects(scene_key: str) -> list[Placed]:
    """The objects of a scene record (data/shapes.py Scene.key(): 'grid|kind,colour,size,x,y;...')
    at their cell centres in units of the image side, as shapes.placed gives them."""
    grid_s, _, objs = scene_key.partition("|")
    g = int(grid_s)
    out = []
    for obj in filter(None, objs.split(";")):
        kind, colour, _, x, y = obj.split(",")
        out.append(Placed(kind, colour, (int(x) + 0.5) / g, (int(y) + 0.5) / g))
    return out


def _holds(clauses, objects) -> bool:
    return evaluate(objects, clauses, RELATION_MARGIN)["passed"]


def judge(text: str, objects: list[Placed]) -> dict[str, bool | None]:
    """{objects, colours, positions, correct} of one caption on one scene's objects (module
    docstring); colours / positions are None when the caption names no colour / relation."""
    p = parse(text)
    if p is None:
        return {"objects": False, "colours": None, "positions": None, "correct": False}
    kinds = [Count(Spec(c.spec.kind), c.n, c.exact and c.spec.colour is None) for c in p.counts]
    for r in p.relations:
        a, b = Spec(r.a.kind), Spec(r.b.kind)
        kinds += [Count(a, 2, False)] if a == b else [Count(a, 1, False), Count(b, 1, False)]
    coloured = [Count(s, 1, False) for s in [c.spec for c in p.counts] + [x for r in p.relations for x in (r.a, r.b)]
                if s.colour is not None]
    return {"objects": _holds(kinds, objects),
            "colours": _holds(coloured, objects) if coloured else None,
            "positions": _holds(p.relations, objects) if p.relations else None,
            "correct": _holds(p.counts + p.relations, objects)}


ATTRIBUTES = ("objects", "colours", "positions", "correct")


def truth_rates(texts: list[str], scenes: list[str]) -> dict[str, float]:
    """{attribute: rate, attribute_lo, attribute_hi} of captions texts[i] on scene records
    scenes[i] (Wilson intervals), plus "parsed": the fraction the grammar reads. An attribute no
    caption names (colours, positions) is left out rather than reported as 0 of 0."""
    if len(texts) != len(scenes) or not texts:
        raise ValueError(f"need one scene per caption, got {len(texts)} captions and {len(scenes)} scenes")
    cache: dict[str, list[Placed]] = {}
    verdicts = [judge(t, cache.setdefault(s, scene_objects(s))) for t, s in zip(texts, scenes)]
    out = {"parsed": sum(parse(t) is not None for t in texts) / len(texts)}
    for a in ATTRIBUTES:
        named = [v[a] for v in verdicts if v[a] is not None]
        if named:
            out.update(rate_with_interval(a, torch.tensor(named)))
    return out
