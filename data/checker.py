"""The shapes checker: find the objects in an image and decide a caption's clauses on them.

GenEval (Ghosh et al. 2023) scores text->image models by detecting objects in the generated
image and checking the prompt's objects, counts, colours and positions. Here the world is known
exactly, so detection needs no trained network (data/shapes.py describes the world):

1. Colour model. Every shape pixel is a mix of one palette colour P and the background B
   (anti-aliasing and blur only mix a shape with the background; shapes never touch). So each
   pixel x is projected onto every segment B -> P: the mix m = <x-B, P-B> / |P-B|^2 in [0, 1]
   and the residual |x - B - m (P-B)|. The nearest segment names the colour; m >= 0.5 makes
   the pixel foreground. Darkened blur rims stay with their own colour instead of drifting to a
   neighbour of the palette, which nearest-colour classification would do.
2. Connected components (8-connected) per colour; components smaller than `min_area` pixels
   are dropped. Each component owns the nearby pixels of its colour (within 2.5 px, nearest
   component wins) as a soft mask of m values.
3. Shape by template fit. Blur preserves a soft mask's mass and centroid, so for each kind the
   size follows from mass = area fraction x size^2 and the centre from the centroid (see
   shapes.KIND_AREA / KIND_CENTROID_DY). Each kind's template is rendered there, also blurred at
   a few widths, and the best soft IoU picks the kind; below `min_score` it is not a shape at
   all (noise, a smear). The centre of the best template is the object's position.
4. Clauses are decided by shapes.evaluate, the same code that decides them on scene graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from data.shapes import (GENEVAL_CATEGORIES, KIND_AREA, KIND_CENTROID_DY, KINDS, PALETTE, RELATION_MARGIN,
                         Caption, Clause, coverage, evaluate)


# A palette colour this close to the background cannot be told from it (ShapesConfig refuses
# backgrounds within 128 of a scene colour, so no scene colour is ever dropped).
_MIN_CONTRAST = 96.0


@dataclass
class CheckerConfig:
    background: tuple[int, int, int] | None = None  # None: per-channel median of the border pixels
    colours: tuple[str, ...] = tuple(PALETTE)  # colours looked for (those near the background are skipped)
    kinds: tuple[str, ...] = KINDS
    max_residual: float = 96.0  # RGB distance from the background->colour segment; beyond it, no palette colour
    min_area: int = 8  # pixels with m >= 0.5 in a component
    min_score: float = 0.75  # soft IoU of the best template; below it a blob is not a shape
    blur_sigmas: tuple[float, ...] = (0.0, 0.4, 0.7, 1.0, 1.3, 1.6, 2.0)  # template blurs tried (px)
    floor: float = 0.1  # soft-mask values below this are treated as noise when fitting templates
    margin: float = RELATION_MARGIN  # relation margin, a fraction of the image side


@dataclass(frozen=True)
class Detected:
    kind: str
    colour: str
    cx: float  # centre, fraction of the image width (0 = left)
    cy: float  # centre, fraction of the image height (0 = top)
    size: float  # fitted extent in px
    area: int  # foreground pixels
    score: float  # soft IoU with the fitted template


def _as_hwc(image) -> np.ndarray:
    arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"expected an RGB image [3, H, W], got shape {tuple(arr.shape)}")
    return arr.transpose(1, 2, 0).astype(np.float32)


def _background(img: np.ndarray) -> np.ndarray:
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    return np.median(border, axis=0)


def _mix(img: np.ndarray, bg: np.ndarray, colours: np.ndarray):
    """Per pixel: index of the nearest background->colour segment, its mix m and residual.
    img [H, W, 3], bg [3], colours [K, 3] -> three [H, W] arrays."""
    x = img - bg
    d = colours - bg  # [K, 3]
    m = np.clip(x @ d.T / (d * d).sum(1), 0.0, 1.0)  # [H, W, K]
    res = np.linalg.norm(x[..., None, :] - m[..., None] * d, axis=-1)
    best = res.argmin(-1)
    take = lambda a: np.take_along_axis(a, best[..., None], -1)[..., 0]  # noqa: E731
    return best, take(m), take(res)


def _fit(soft: np.ndarray, region: np.ndarray, y0: int, x0: int,
         cfg: CheckerConfig) -> tuple[str, float, float, float, float]:
    """Best template for a soft mask window [h, w] whose top-left pixel is (y0, x0); templates
    are compared only inside `region` (bool [h, w]), where the soft mask was measured.
    Returns (kind, score, cx, cy, size) with the centre in image pixels."""
    h, w = soft.shape
    mass = soft.sum()
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    cy, cx = (soft.sum(1) @ ys) / mass, (soft.sum(0) @ xs) / mass
    sizes = [float(np.sqrt(mass / KIND_AREA[k])) for k in cfg.kinds]
    centres = [cy - KIND_CENTROID_DY[k] * s for k, s in zip(cfg.kinds, sizes)]
    sharp = np.stack([coverage(k, s, cx, ty, h, w) for k, s, ty in zip(cfg.kinds, sizes, centres)])
    temps = np.stack([ndimage.gaussian_filter(sharp, (0, sg, sg), mode="constant") if sg > 0 else sharp
                      for sg in cfg.blur_sigmas]) * region  # [sigmas, kinds, h, w]
    # Faint pixels are mostly noise (clipped at m = 0 it only adds mass), so both sides are
    # compared above a floor.
    f = lambda a: np.clip((a - cfg.floor) / (1 - cfg.floor), 0, 1)  # noqa: E731
    a, t = f(soft), f(temps)
    scores = np.minimum(a, t).sum((-2, -1)) / np.maximum(np.maximum(a, t).sum((-2, -1)), 1e-9)
    k = int(scores.max(0).argmax())
    return cfg.kinds[k], float(scores[:, k].max()), x0 + cx, y0 + centres[k], sizes[k]


def detect(image, cfg: CheckerConfig | None = None) -> list[Detected]:
    """Objects in an image [3, H, W] with values in 0..255 (uint8, or floats; a model's [-1, 1]
    output goes through data.records.to_uint8 first), in no particular order."""
    cfg = cfg if cfg is not None else CheckerConfig()
    img = _as_hwc(image)
    H, W, _ = img.shape
    bg = np.asarray(cfg.background, np.float32) if cfg.background is not None else _background(img)
    names = [c for c in cfg.colours if np.linalg.norm(np.asarray(PALETTE[c]) - bg) >= _MIN_CONTRAST]
    if not names:
        return []
    best, m, res = _mix(img, bg, np.asarray([PALETTE[c] for c in names], np.float32))
    ok = res <= cfg.max_residual
    found = []
    for k, name in enumerate(names):
        mine = ok & (best == k)
        fg = mine & (m >= 0.5)
        labels, n = ndimage.label(fg, structure=np.ones((3, 3), bool))
        if n == 0:
            continue
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        # Each component owns its colour's pixels within 2.5 px, the nearest component winning.
        dist, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        owner = np.where(mine & (dist <= 2.5), labels[iy, ix], 0)
        soft_all = np.where(owner > 0, m, 0.0)
        for c, sl in enumerate(ndimage.find_objects(owner), start=1):
            if sl is None or areas[c] < cfg.min_area:
                continue
            ys = slice(max(sl[0].start - 2, 0), min(sl[0].stop + 2, H))
            xs = slice(max(sl[1].start - 2, 0), min(sl[1].stop + 2, W))
            region = owner[ys, xs] == c
            kind, score, cx, cy, size = _fit(np.where(region, soft_all[ys, xs], 0.0), region, ys.start, xs.start, cfg)
            if score >= cfg.min_score:
                found.append(Detected(kind, name, cx / W, cy / H, size, int(areas[c]), score))
    return found


def check(image, caption: Caption | Sequence[Clause], cfg: CheckerConfig | None = None) -> dict:
    """Which of a caption's clauses hold in the image.
    Returns {"category", "passed", "details": [{"clause", "passed", "found"}], "objects"}."""
    cfg = cfg if cfg is not None else CheckerConfig()
    objects = detect(image, cfg)
    clauses = caption.clauses if isinstance(caption, Caption) else tuple(caption)
    result = evaluate(objects, clauses, cfg.margin)
    return {"category": caption.category if isinstance(caption, Caption) else None, **result, "objects": objects}


def score(images: Sequence, captions: Sequence[Caption], cfg: CheckerConfig | None = None) -> dict:
    """GenEval-style score of generated images against their prompts: the pass rate per category
    and 'overall', the mean over the GenEval categories present (as GenEval averages tasks)."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images for {len(captions)} captions")
    passed: dict[str, list[bool]] = {}
    for image, cap in zip(images, captions):
        passed.setdefault(cap.category, []).append(check(image, cap, cfg)["passed"])
    out = {c: float(np.mean(v)) for c, v in passed.items()}
    tasks = [out[c] for c in GENEVAL_CATEGORIES if c in out]
    out["overall"] = float(np.mean(tasks)) if tasks else float("nan")
    return out
