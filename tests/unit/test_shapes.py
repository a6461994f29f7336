"""The captioned-shapes world and its checker (issue 3, data/shapes.py, data/checker.py).

Invariants: items are pure functions of (seed, split, index); splits never share a scene graph;
every GenEval category is generated and every generated caption is true of its scene graph;
the checker agrees with the scene graph on rendered images (>= 99%), rejects captions made
false by one edit, survives mild blur and noise (>= 95%), and finds nothing in noise.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from data.checker import check, detect, score
from data.shapes import (CATEGORIES, KIND_AREA, KIND_CENTROID_DY, KINDS, PALETTE, Caption, Count, Relation, Spec,
                         coverage, describe, evaluate, placed)
from data.shapes_world import ShapesConfig, ShapesWorld

N_CHECK = 500  # val scenes rendered for the accuracy tests


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld(ShapesConfig(seed=0))


@pytest.fixture(scope="module")
def val_items(world):
    return [world.sample("val", i) for i in range(N_CHECK)]


@pytest.fixture(scope="module")
def val_detections(val_items):
    return [detect(it.image) for it in val_items]


def _degrade(image: torch.Tensor, sigma: float, noise: float, seed: int) -> torch.Tensor:
    x = ndimage.gaussian_filter(image.float().numpy(), (0, sigma, sigma))
    x = x + np.random.default_rng(seed).normal(0.0, noise, x.shape)
    return torch.from_numpy(np.clip(np.round(x), 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------- the world


def test_items_are_pure_functions_of_seed_split_index():
    a, b = ShapesWorld(ShapesConfig(seed=3)), ShapesWorld(ShapesConfig(seed=3))
    keys = [("train", 7), ("val", 2), ("test", 5), ("train", 0)]
    first = [a.sample(s, i) for s, i in keys]
    second = [b.sample(s, i) for s, i in reversed(keys)][::-1]  # other order, other instance
    for x, y in zip(first, second):
        assert torch.equal(x.image, y.image) and x.captions == y.captions
        assert x.meta["scene"] == y.meta["scene"] and x.meta["captions"] == y.meta["captions"]
    other = ShapesWorld(ShapesConfig(seed=4))
    assert sum(other.sample("train", i).meta["scene"] != a.sample("train", i).meta["scene"] for i in range(20)) >= 18


def test_render_layout(world, val_items):
    cfg = world.cfg
    for it in val_items[:50]:
        img, scene = it.image, it.meta["scene"]
        assert img.dtype == torch.uint8 and img.shape == (3, cfg.image_size, cfg.image_size)
        assert cfg.min_objects <= len(scene.objects) <= cfg.max_objects
        assert (img[:, 0] == 0).all() and (img[:, :, -1] == 0).all()  # background border
        for o in scene.objects:  # each object's centre has its exact colour
            x, y = world.centre_px(o)
            centre = img[:, int(y), int(x)]
            assert centre.tolist() == list(PALETTE[o.colour]), (o, centre)
        # objects never touch: one 8-connected component per object
        _, n = ndimage.label(img.sum(0).numpy() > 0, structure=np.ones((3, 3)))
        assert n == len(scene.objects)


def test_shape_constants_match_rasteriser():
    # The checker inverts KIND_AREA / KIND_CENTROID_DY; they must describe what is rendered.
    s, n = 60.0, 64
    for kind in KINDS:
        cov = coverage(kind, s, n / 2, n / 2, n, n)
        assert cov.sum() / s**2 == pytest.approx(KIND_AREA[kind], rel=0.02), kind
        dy = (cov.sum(1) @ (np.arange(n) + 0.5)) / cov.sum() - n / 2
        assert dy / s == pytest.approx(KIND_CENTROID_DY[kind], abs=0.01), kind


def test_splits_are_disjoint_and_fixed(world):
    val = {world.scene("val", i).key() for i in range(world.cfg.n_val)}
    test = {world.scene("test", i).key() for i in range(world.cfg.n_test)}
    train = {world.scene("train", i).key() for i in range(10_000)}
    assert not (val & test) and not (val & train) and not (test & train)
    # Membership is a property of the scene graph, so other seeds' train streams stay out too.
    other = ShapesWorld(replace(world.cfg, seed=1))
    assert not ({other.scene("train", i).key() for i in range(2000)} & (val | test))
    with pytest.raises(IndexError):
        world.sample("val", world.cfg.n_val)
    with pytest.raises(ValueError, match="unknown split"):
        world.sample("dev", 0)
    # A tiny world (60 possible scenes) is where a leak would show at once.
    tiny = ShapesWorld(ShapesConfig(image_size=16, grid=1, max_objects=1, n_val=50, n_test=50))
    held = {tiny.scene(s, i).key() for s in ("val", "test") for i in range(50)}
    assert held and not (held & {tiny.scene("train", i).key() for i in range(2000)})


def test_captions_cover_every_category_and_are_true(world, val_items):
    seen = set()
    for it in val_items[:300]:
        caps, scene = it.meta["captions"], it.meta["scene"]
        assert it.captions == [c.text for c in caps] and caps[0] == describe(scene)
        for c in caps:
            seen.add(c.category)
            assert c.text and evaluate(placed(scene), c.clauses)["passed"], (scene, c)
            assert Caption.from_dict(c.to_dict()) == c
    assert seen == set(CATEGORIES)


def test_prompts_rotate_categories_and_are_true_of_held_out_scenes(world):
    prompts = world.prompts("test", 60)
    assert [p.category for p in prompts[:6]] == list(CATEGORIES[:6])
    assert prompts == world.prompts("test", 60)
    texts = {p.text for p in prompts}
    assert len(texts) > 40, "prompts should vary"
    assert all(p.category != "position" or isinstance(p.clauses[0], Relation) for p in prompts)


@pytest.mark.parametrize("overrides, match", [
    (dict(image_size=16), "cells of at least 9 px"),
    (dict(max_objects=10), "grid"),
    (dict(min_objects=3, max_objects=2), "min <= max"),
    (dict(min_objects=0), "min <= max"),
    (dict(colours=("red", "mauve")), "colours"),
    (dict(kinds=()), "kinds"),
    (dict(colours=("red", "red")), "colours"),
    (dict(background=(250, 250, 250), colours=("white", "red")), "too close"),
    (dict(background=(0, 0, 300)), "RGB"),
    (dict(holdout=0.0), "holdout"),
    (dict(n_val=0), "n_val"),
    (dict(image_size=128, grid=8, max_objects=4), "too fine"),
])
def test_bad_configs_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        ShapesConfig(**overrides)


# ----------------------------------------------------------------------------- the checker


def _accuracy(detections, items) -> tuple[float, int]:
    results = [evaluate(d, c.clauses)["passed"] for d, it in zip(detections, items) for c in it.meta["captions"]]
    return float(np.mean(results)), len(results)


def test_checker_accepts_true_captions_on_rendered_images(val_detections, val_items):
    acc, n = _accuracy(val_detections, val_items)
    found = [sorted((d.kind, d.colour) for d in dets) for dets in val_detections]
    exact = np.mean([f == sorted((o.kind, o.colour) for o in it.meta["scene"].objects)
                     for f, it in zip(found, val_items)])
    assert acc >= 0.99, f"checker accuracy on {n} true captions of rendered scenes: {acc:.4f}"
    assert exact >= 0.99, f"scenes recovered exactly (kind, colour multiset): {exact:.4f}"


def _edits(clause, rng, kinds, colours):
    """Single-edit variants of a clause: another colour or kind, count +-1, opposite relation."""
    other = lambda seq, v: rng.choice([x for x in seq if x != v])  # noqa: E731
    if isinstance(clause, Count):
        s = clause.spec
        out = [replace(clause, n=clause.n + 1)]
        if clause.exact and clause.n:
            out.append(replace(clause, n=clause.n - 1))
        out.append(replace(clause, spec=Spec(other(kinds, s.kind), s.colour)))
        if s.colour:
            out.append(replace(clause, spec=Spec(s.kind, other(colours, s.colour))))
        return out
    flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    a = clause.a
    return [replace(clause, rel=flip[clause.rel]), replace(clause, a=clause.b, b=clause.a),
            replace(clause, a=Spec(a.kind, other(colours, a.colour) if a.colour else None))]


def test_checker_rejects_captions_made_false_by_one_edit(world, val_detections, val_items):
    rng = np.random.default_rng(0)
    false_edits = rejected = agree = total = 0
    for dets, it in zip(val_detections, val_items):
        truth_objects = placed(it.meta["scene"])
        for cap in it.meta["captions"]:
            for i, clause in enumerate(cap.clauses):
                for edit in _edits(clause, rng, world.cfg.kinds, world.cfg.colours):
                    clauses = cap.clauses[:i] + (edit,) + cap.clauses[i + 1:]
                    truth = evaluate(truth_objects, clauses)["passed"]
                    verdict = evaluate(dets, clauses)["passed"]
                    total, agree = total + 1, agree + (truth == verdict)
                    false_edits, rejected = false_edits + (not truth), rejected + (not truth and not verdict)
    assert false_edits > 1000, "too few false variants generated"
    assert rejected / false_edits >= 0.99, f"checker rejected {rejected}/{false_edits} captions made false by one edit"
    assert agree / total >= 0.99, f"checker agrees with the scene graph on {agree}/{total} edited captions"


def test_checker_survives_mild_blur_and_noise(val_items):
    items = val_items[:300]
    degraded = [detect(_degrade(it.image, 0.5, 8.0, i)) for i, it in enumerate(items)]
    acc, n = _accuracy(degraded, items)
    assert acc >= 0.95, f"checker accuracy under blur sigma 0.5 px + noise std 8: {acc:.4f} on {n} captions"


def test_noise_images_pass_nothing(val_items):
    rng = np.random.default_rng(1)
    captions = [c for it in val_items[:100] for c in it.meta["captions"]]
    passed, objects = 0, 0
    for j, cap in enumerate(captions[:400]):
        if j % 2:
            image = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
        else:  # every pixel a cube corner: the hardest noise for a palette of corners
            image = (rng.random((3, 32, 32)) < 0.5).astype(np.uint8) * 255
        result = check(torch.from_numpy(image), cap)
        passed += result["passed"]
        objects += len(result["objects"])
    assert passed / 400 <= 0.01, f"noise images passed {passed}/400 captions"
    assert objects / 400 < 0.1, f"{objects / 400:.2f} objects found per noise image"


def test_checker_other_sizes_and_backgrounds():
    for cfg in (ShapesConfig(image_size=16, grid=1, max_objects=1), ShapesConfig(image_size=64, grid=4, max_objects=6),
                ShapesConfig(image_size=48, background=(255, 255, 255)),
                ShapesConfig(image_size=32, background=(96, 96, 96), colours=tuple(PALETTE))):
        w = ShapesWorld(cfg)
        items = [w.sample("test", i) for i in range(40)]
        acc, n = _accuracy([detect(it.image) for it in items], items)
        assert acc >= 0.99, f"{cfg}: accuracy {acc:.4f} on {n} captions"


def test_check_and_score_api(val_items):
    it = val_items[0]
    full = describe(it.meta["scene"])
    result = check(it.image, full)
    assert result["passed"] and result["category"] == "full" and len(result["details"]) == len(full.clauses)
    assert check(it.image, full.clauses)["passed"]  # bare clauses work too
    images = [x.image for x in val_items[:30]]
    caps = [x.meta["captions"][-1] for x in val_items[:30]]
    good = score(images, caps)
    assert good["overall"] == 1.0
    blank = score([torch.zeros_like(i) for i in images], caps)
    assert blank["overall"] == 0.0
    with pytest.raises(ValueError, match="RGB image"):
        detect(torch.zeros(32, 32, dtype=torch.uint8))
