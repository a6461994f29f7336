"""Fashion-MNIST as a small real-image option with class captions (issue 3).

The Debian package dataset-fashion-mnist puts the four IDX files (gzip) under
/usr/share/datasets/fashion-mnist/. Images are 28x28 grayscale, white garment on black; here
they become RGB uint8 [3, H, W] (the gray channel repeated) like every other image set
(data/records.py), optionally resized for the whole split at once. Each item carries all the
caption phrasings of its class as references; choosing one is the mixed stream's job.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data.records import ImageCaption

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
SPLITS = {"train": "train", "test": "t10k"}  # split -> file prefix
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# The noun each caption uses for a class (index = label).
CAPTION_NOUNS = ("t-shirt", "pair of trousers", "pullover", "dress", "coat",
                 "sandal", "shirt", "sneaker", "bag", "ankle boot")
_TEMPLATES = ("a photo of {}", "{}", "a black and white photo of {}", "a picture of {} on a black background")

# IDX type byte -> numpy dtype (all multi-byte types are big-endian).
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def captions_for(label: int) -> list[str]:
    """All caption phrasings of a class, e.g. ["a photo of an ankle boot", "an ankle boot", ...]."""
    noun = _with_article(CAPTION_NOUNS[label])
    return [t.format(noun) for t in _TEMPLATES]


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip or plain) into an array of its declared dtype and shape.

    Format: two zero bytes, a type byte, a rank byte, rank big-endian uint32 dims, the data.
    """
    path = Path(path)
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic {raw[:4]!r})")
    dtype, rank = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * rank
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=rank, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(f"{path}: header says shape {shape} ({count * dtype.itemsize} bytes of data), "
                         f"file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as an IDX file (gzip when the name ends in .gz); the inverse of read_idx."""
    path = Path(path)
    array = np.asarray(array)
    code = next((c for c, d in _IDX_DTYPES.items()
                 if d.kind == array.dtype.kind and d.itemsize == array.dtype.itemsize), None)
    if code is None:
        raise ValueError(f"IDX cannot hold dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(_IDX_DTYPES[code], copy=False).tobytes()
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as f:
        f.write(data)


def _find(root: Path, name: str) -> Path:
    """The IDX file `name` under root, gzipped or not; a FileNotFoundError that says how to get it."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {root / name}.gz not found. Install the Debian package "
        f"(apt-get install dataset-fashion-mnist, files go to {DEFAULT_ROOT}) or pass "
        f"root=<a directory holding train-/t10k-images-idx3-ubyte[.gz] and -labels-idx1-ubyte[.gz]>.")


def load_split(root: str | Path = DEFAULT_ROOT, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Raw split: images uint8 [N, 28, 28], labels int64 [N] (train N = 60000, test 10000)."""
    if split not in SPLITS:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; valid: {sorted(SPLITS)}")
    root = Path(root)
    images = read_idx(_find(root, f"{SPLITS[split]}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{SPLITS[split]}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split} under {root}: images {images.shape} "
                         f"and labels {labels.shape} disagree")
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(CLASS_NAMES):
        raise ValueError(f"Fashion-MNIST {split} under {root}: labels outside 0..{len(CLASS_NAMES) - 1}")
    return images.astype(np.uint8, copy=False), labels


def to_rgb(gray: np.ndarray | torch.Tensor, image_size: int | None = None, chunk: int = 8192) -> torch.Tensor:
    """uint8 [N, H, W] gray -> uint8 [N, 3, S, S] RGB, resized to S = image_size when given.

    Bilinear with antialiasing (which only matters when shrinking), in chunks of whole-set
    tensor ops to bound the float memory.
    """
    gray = torch.as_tensor(gray)
    if image_size is not None and tuple(gray.shape[1:]) != (image_size, image_size):
        out = torch.empty(gray.shape[0], 1, image_size, image_size, dtype=torch.uint8)
        for start in range(0, gray.shape[0], chunk):
            block = gray[start:start + chunk, None].float()
            block = F.interpolate(block, size=(image_size, image_size), mode="bilinear",
                                  align_corners=False, antialias=True)
            out[start:start + chunk] = block.round().clamp(0, 255).to(torch.uint8)
        gray = out[:, 0]
    return gray[:, None].expand(-1, 3, -1, -1).contiguous()


class FashionMNIST:
    """One split as an image-caption source: item i -> ImageCaption(uint8 [3, S, S], the class's
    caption phrasings, meta {label, class_name, index, split}).

    image_size None keeps the native 28x28. The whole split is decoded and resized once at
    construction (60k x 3 x 32 x 32 is 184 MB of uint8).
    """

    def __init__(self, root: str | Path | None = None, split: str = "train", image_size: int | None = 32):
        self.root = Path(root) if root is not None else DEFAULT_ROOT
        self.split = split
        gray, labels = load_split(self.root, split)
        self._images = to_rgb(gray, image_size)
        self.labels = torch.from_numpy(labels)
        self.image_size = self._images.shape[-1]

    def __len__(self) -> int:
        return self._images.shape[0]

    def __getitem__(self, index: int) -> ImageCaption:
        label = int(self.labels[index])
        return ImageCaption(image=self._images[index], captions=captions_for(label),
                            meta={"label": label, "class_name": CLASS_NAMES[label],
                                  "index": int(index) % len(self), "split": self.split})

    def images(self) -> torch.Tensor:
        """All images of the split, uint8 [N, 3, S, S] (for caching latents / codes)."""
        return self._images
