"""Readers for real image-caption sets at cluster scale (DESIGN.md, "Scales"; issue 3).

Every reader yields data.records.ImageCaption with an RGB uint8 [3, S, S] image: the central
square is cropped and resized to S = image_size (the paper center-crops to 256 x 256). With
resize=False an image must already be S x S (an error names the file otherwise); with
image_size=None images come back as stored.

- WebDataset tar shards (`WebDatasetReader`): streamed with the stdlib tarfile module, one
  member at a time; members are grouped into samples by key (directory + basename up to the
  first dot), as WebDataset writes them. Deterministic order (shards as data/shards.py lists
  them; members in tar order), optionally shuffled per epoch from a seed; the position (epoch,
  shard, sample) is saved and restored with state_dict / load_state_dict.
- COCO captions JSON + image folder (`CocoCaptions`) and Karpathy's split file
  dataset_coco.json (`KarpathyCaptions`, e.g. the 5k test split for captioning evaluation):
  indexable; all captions of an image are its references.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from data.records import ImageCaption
from data.shards import expand_shards

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
KARPATHY_SPLITS = ("train", "val", "test", "restval")


# ----------------------------------------------------------------------------- images


def _center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """Central square, then one resample to size x size (skipped when it is already that size)."""
    w, h = img.size
    side = min(w, h)
    if (w, h) != (side, side):
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.BICUBIC)  # PIL's resize filters (antialiases) when shrinking
    return img


def decode_image(data: bytes | Path, name: str, image_size: int | None = 256, resize: bool = True) -> torch.Tensor:
    """Image bytes (or a file) -> RGB uint8 [3, S, S]. `name` is used in error messages.

    Raises ValueError for an undecodable image or, with resize=False, a size other than S x S.
    """
    try:
        with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as img:
            img.load()  # decode now, so that truncated files fail here
            img = img.convert("RGB")
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"corrupt or unreadable image {name}: {err}") from err
    if image_size is not None:
        if resize:
            img = _center_crop_resize(img, image_size)
        elif img.size != (image_size, image_size):
            raise ValueError(f"image {name} is {img.size[0]}x{img.size[1]}, expected "
                             f"{image_size}x{image_size} (resizing is off; set resize=True to center-crop and resize)")
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------- WebDataset shards


def _split_name(name: str) -> tuple[str, str] | None:
    """Tar member name -> (key, extension), WebDataset's rule: the key is the directory plus the
    basename up to its first dot; the extension is the rest, lowercased."""
    directory, base = os.path.split(name)
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


def _tar_samples(path: str, skip: int) -> Iterator[tuple[int, str, dict[str, bytes]]]:
    """Stream one shard as (sample index, key, {extension: bytes}). Consecutive members sharing a
    key form a sample. The first `skip` samples are passed over without reading their data."""
    index, key, files = -1, None, {}
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            parts = _split_name(member.name) if member.isfile() else None
            if parts is None:
                continue
            if parts[0] != key:
                if key is not None and index >= skip:
                    yield index, key, files
                index, key, files = index + 1, parts[0], {}
            if index >= skip:
                files[parts[1]] = tar.extractfile(member).read()
    if key is not None and index >= skip:
        yield index, key, files


def _as_captions(value) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [c.strip() for c in value if isinstance(c, str) and c.strip()]


class WebDatasetReader:
    """Image-caption samples streamed from WebDataset tar shards.

    A sample's image is its first member ending in .jpg/.jpeg/.png/.webp; its captions come
    from a .txt member (one caption) or else from `caption_field` of a .json member (a string or
    a list of strings). Samples without either are skipped; each shard with skips warns once
    with the counts, and `skipped` keeps the totals by reason. A corrupt image is an error naming
    the shard and member (or a counted skip with skip_corrupt=True).

    The reader is one stream: iterating continues from the current position, and state_dict()
    taken after receiving a sample resumes right after it. With loop=True the shards repeat
    forever (epoch counts up); shuffle_shards permutes the shard order per epoch from `seed`.
    With world_size > 1, rank r reads shards r, r + world_size, ... of each epoch's order.
    """

    def __init__(self, shards: str | Path | Sequence[str | Path], image_size: int | None = 256, resize: bool = True,
                 caption_field: str = "caption", loop: bool = False, shuffle_shards: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1, skip_corrupt: bool = False):
        self.shards = expand_shards(shards, what="shard")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        if len(self.shards) < world_size:
            raise ValueError(f"{len(self.shards)} shards cannot be split over {world_size} ranks")
        self.image_size, self.resize, self.caption_field = image_size, resize, caption_field
        self.loop, self.shuffle_shards, self.seed = loop, shuffle_shards, seed
        self.rank, self.world_size, self.skip_corrupt = rank, world_size, skip_corrupt
        self.skipped: Counter = Counter()
        self._epoch, self._shard, self._sample = 0, 0, 0

    def shard_order(self, epoch: int) -> list[str]:
        """The shards this rank reads in `epoch`, in order."""
        order = self.shards
        if self.shuffle_shards:
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(order))
            order = [order[i] for i in perm]
        return order[self.rank::self.world_size]

    def state_dict(self) -> dict:
        """Position of the next sample: epoch, shard index (in that epoch's order), sample index
        within the shard (counting skipped samples)."""
        return {"epoch": self._epoch, "shard": self._shard, "sample": self._sample}

    def load_state_dict(self, state: dict) -> None:
        self._epoch, self._shard, self._sample = int(state["epoch"]), int(state["shard"]), int(state["sample"])

    def _record(self, path: str, key: str, files: dict[str, bytes]) -> ImageCaption | str:
        """A sample -> ImageCaption, or the reason it is skipped."""
        image_ext = next((e for e in files if e.rsplit(".", 1)[-1] in IMAGE_EXTS), None)
        if image_ext is None:
            return "no image"
        meta: dict = {"key": key, "shard": str(path)}
        text_ext = next((e for e in files if e.rsplit(".", 1)[-1] == "txt"), None)
        json_ext = next((e for e in files if e.rsplit(".", 1)[-1] == "json"), None)
        captions: list[str] = []
        if json_ext is not None:
            try:
                meta["json"] = json.loads(files[json_ext])
            except ValueError as err:
                raise ValueError(f"{path}: {key}.{json_ext} is not valid JSON: {err}") from err
        if text_ext is not None:
            captions = _as_captions(files[text_ext].decode("utf-8", errors="replace"))
        elif isinstance(meta.get("json"), dict):
            captions = _as_captions(meta["json"].get(self.caption_field))
        if not captions:
            return "no caption"
        try:
            image = decode_image(files[image_ext], f"{path}: {key}.{image_ext}", self.image_size, self.resize)
        except ValueError:
            if not self.skip_corrupt:
                raise
            return "corrupt image"
        return ImageCaption(image=image, captions=captions, meta=meta)

    def __iter__(self) -> Iterator[ImageCaption]:
        while True:
            # Only an epoch read from its start proves that the shards hold no usable sample.
            whole_epoch, yielded_this_epoch = self._shard == 0 and self._sample == 0, False
            order = self.shard_order(self._epoch)
            while self._shard < len(order):
                path, skips, seen, first_skip = order[self._shard], Counter(), 0, None
                for index, key, files in _tar_samples(path, self._sample):
                    seen += 1
                    record = self._record(path, key, files)
                    self._sample = index + 1  # set before yielding: a state taken now resumes after it
                    if isinstance(record, str):
                        skips[record] += 1
                        self.skipped[record] += 1
                        first_skip = first_skip or key
                        continue
                    yielded_this_epoch = True
                    yield record
                if skips:
                    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(skips.items()))
                    warnings.warn(f"{path}: skipped {sum(skips.values())} of {seen} samples "
                                  f"({detail}; first: {first_skip})")
                self._shard, self._sample = self._shard + 1, 0
            if not self.loop:
                return
            if whole_epoch and not yielded_this_epoch:
                raise ValueError(f"no usable image-caption samples in {len(order)} shards (rank {self.rank})")
            self._epoch, self._shard, self._sample = self._epoch + 1, 0, 0


# ----------------------------------------------------------------------------- COCO-style folders


class _CaptionedImages:
    """Indexable (image path, reference captions, meta) entries; images load on access."""

    def __init__(self, entries: list[tuple[Path, list[str], dict]], image_size: int | None, resize: bool):
        self.entries, self.image_size, self.resize = entries, image_size, resize

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> ImageCaption:
        path, captions, meta = self.entries[index]
        if not path.is_file():
            raise FileNotFoundError(f"image {path} not found")
        return ImageCaption(image=decode_image(path, str(path), self.image_size, self.resize),
                            captions=list(captions), meta=dict(meta))

    def __iter__(self) -> Iterator[ImageCaption]:
        return (self[i] for i in range(len(self)))


def _load_json(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} not found (or not a directory)")
    return path


class CocoCaptions(_CaptionedImages):
    """COCO captions JSON (`images` [{id, file_name}], `annotations` [{image_id, caption}]) plus
    the image folder. Item i: the i-th image of the file that has captions, all its captions as
    references, meta {image_id, file_name}. Images without captions are skipped (one warning)."""

    def __init__(self, captions_json: str | Path, image_dir: str | Path, image_size: int | None = 256,
                 resize: bool = True):
        data = _load_json(captions_json, "COCO captions file")
        image_dir = _require_dir(image_dir, "COCO image folder")
        if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
            raise ValueError(f"{captions_json} lacks 'images' and 'annotations': not a COCO captions file")
        captions: dict = defaultdict(list)
        for ann in data["annotations"]:
            captions[ann["image_id"]].append(ann["caption"].strip())
        entries = [(image_dir / img["file_name"], captions[img["id"]],
                    {"image_id": img["id"], "file_name": img["file_name"]})
                   for img in data["images"] if captions.get(img["id"])]
        uncaptioned = len(data["images"]) - len(entries)
        orphans = len(set(captions) - {img["id"] for img in data["images"]})
        if uncaptioned or orphans:
            warnings.warn(f"{captions_json}: skipped {uncaptioned} images without captions; "
                          f"{orphans} annotated image ids have no image entry")
        super().__init__(entries, image_size, resize)


def _parse_splits(split: str | Sequence[str]) -> set[str]:
    names = set(split.split("+")) if isinstance(split, str) else set(split)
    unknown = names - set(KARPATHY_SPLITS)
    if unknown or not names:
        raise ValueError(f"unknown Karpathy split(s) {sorted(unknown)}; valid: {list(KARPATHY_SPLITS)} "
                         f"(combine with '+', e.g. 'train+restval')")
    return names


class KarpathyCaptions(_CaptionedImages):
    """Karpathy's split file (dataset_coco.json: `images` with `split`, `filepath`, `filename`,
    `sentences` [{raw}]) plus the image root (image = root / filepath / filename). `split` is
    one name, a '+'-joined set ("train+restval") or a list. meta {image_id (cocoid), filename,
    split}. The COCO test split has 5000 images with about 5 references each."""

    def __init__(self, dataset_json: str | Path, image_root: str | Path, split: str | Sequence[str] = "test",
                 image_size: int | None = 256, resize: bool = True):
        data = _load_json(dataset_json, "Karpathy split file")
        image_root = _require_dir(image_root, "image root")
        if not isinstance(data, dict) or "images" not in data:
            raise ValueError(f"{dataset_json} lacks 'images': not a Karpathy split file")
        wanted = _parse_splits(split)
        entries = []
        for img in data["images"]:
            if img["split"] not in wanted:
                continue
            refs = [s["raw"].strip() for s in img.get("sentences", []) if s.get("raw", "").strip()]
            if refs:
                entries.append((image_root / img.get("filepath", "") / img["filename"], refs,
                                {"image_id": img.get("cocoid", img.get("imgid")), "filename": img["filename"],
                                 "split": img["split"]}))
        super().__init__(entries, image_size, resize)


# ----------------------------------------------------------------------------- config


@dataclass
class ImageTextConfig:
    """Which real image-caption set to read. `path`: shards (glob or {a..b} range) for
    webdataset, the captions JSON for coco, dataset_coco.json for karpathy; `image_dir`: the
    image folder (coco) or root (karpathy)."""

    format: str = "webdataset"  # webdataset | coco | karpathy
    path: str = ""
    image_dir: str = ""
    split: str = "test"  # karpathy only
    image_size: int | None = 256  # paper: center-crop 256 x 256
    resize: bool = True
    caption_field: str = "caption"  # webdataset .json only


def open_image_text(cfg: ImageTextConfig, **reader_kwargs) -> WebDatasetReader | CocoCaptions | KarpathyCaptions:
    """The reader `cfg` describes; extra keyword arguments go to it (e.g. rank, world_size, loop)."""
    common = {"image_size": cfg.image_size, "resize": cfg.resize}
    if cfg.format == "webdataset":
        return WebDatasetReader(cfg.path, caption_field=cfg.caption_field, **common, **reader_kwargs)
    if cfg.format == "coco":
        return CocoCaptions(cfg.path, cfg.image_dir, **common, **reader_kwargs)
    if cfg.format == "karpathy":
        return KarpathyCaptions(cfg.path, cfg.image_dir, split=cfg.split, **common, **reader_kwargs)
    raise ValueError(f"unknown image-text format {cfg.format!r}; valid: webdataset, coco, karpathy")
