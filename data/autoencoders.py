"""Image autoencoders: a KL VAE for Transfusion and a VQ-VAE for the Chameleon-style baseline.

The paper (Sec. 3, "Data Representation"; Sec. 4.1 for the baseline) encodes images with a
CNN VAE (8x downsampling, 8 latent channels) for Transfusion, and with a VQ-VAE of the same
encoder architecture (16,384 codes, commitment beta 0.25) for Chameleon. Both are built here
from one `AutoencoderConfig` with diffusers' `AutoencoderKL` / `VQModel`, so the encoder and
decoder stacks are identical and only the bottleneck differs.

`ImageAutoencoder` is the one interface the rest of the suite sees:
- KL: encode(uint8 [n, 3, H, W]) -> float latents [n, C, h, w], the posterior mean (deterministic),
  shifted and scaled to about unit variance (`(mean - shift) * scale`, as in latent diffusion);
- VQ: encode(...) -> long codes [n, h, w] in [0, codebook_size);
- decode(latents or codes) -> uint8 images [n, 3, H, W].
A directory written by `save` and a plain diffusers checkpoint (config.json + weights, or a
pipeline folder with a vae/ subfolder) both open with `load`.

Training lives in data/autoencoder_train.py; the command line is

    python -m data.autoencoders train --kind kl|vq --images FILE.pt [FILE.pt ...] --out DIR --steps N
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from data.atomic import write_dir_atomic
from data.records import to_uint8, to_unit_range

KINDS = ("kl", "vq")
META_FILE = "autoencoder.json"  # ours, beside diffusers' config.json and weights
_CLASSES = {"AutoencoderKL": "kl", "VQModel": "vq"}


@dataclass
class AutoencoderConfig:
    """Architecture and loss weights of an in-suite autoencoder (both kinds share the net).

    The downsampling factor is 2 ** (len(block_out_channels) - 1): diffusers downsamples after
    every encoder block but the last. The toy default maps 32x32x3 -> 8x8x8, the paper's 24x
    compression (256x256x3 -> 32x32x8); Transfusion's default 2x2 patches then give 16 elements
    per image and the VQ grid 64 codes (the paper's 4x element ratio between the families).
    Paper scale: image_size 256, downsample 8, 8 channels, 16,384 codes.

    Measured on 2 CPU cores (1200 steps of 16 flat-colour shape images, lr 2e-3, about 3 min
    each): held-out PSNR 29.3 dB (KL), 26.6 dB (VQ, 510 of 512 codes in use).
    """

    kind: str = "kl"  # "kl" | "vq"
    image_size: int = 32
    latent_channels: int = 8
    downsample: int = 4
    block_out_channels: tuple[int, ...] = (32, 32, 64)
    layers_per_block: int = 1
    norm_groups: int = 8
    mid_attention: bool = True  # self-attention at the latent resolution, as in LDM's VAE
    codebook_size: int = 512  # VQ only
    commitment_beta: float = 0.25  # VQ only (van den Oord et al.; the paper's value)
    kl_weight: float = 1e-6  # KL only; per pixel, as LDM's kl-f8 VAE (module docstring of autoencoder_train)
    rec_loss: str = "l2"  # "l1" | "l2" (L2 learned much faster than L1 on toy shapes)

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: expected one of {KINDS}")
        if self.rec_loss not in ("l1", "l2"):
            raise ValueError(f"rec_loss={self.rec_loss!r}: expected 'l1' or 'l2'")
        blocks = round(math.log2(self.downsample)) + 1 if self.downsample >= 1 else 0
        if self.downsample < 1 or 2 ** (blocks - 1) != self.downsample or len(self.block_out_channels) != blocks:
            raise ValueError(f"downsample={self.downsample} needs a power of two and log2(downsample) + 1 = "
                             f"{blocks} entries in block_out_channels, got {self.block_out_channels}")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size={self.image_size} is not divisible by downsample={self.downsample}")
        if any(c % self.norm_groups for c in self.block_out_channels):
            raise ValueError(f"norm_groups={self.norm_groups} must divide every entry of {self.block_out_channels}")

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample


def build_diffusers_model(cfg: AutoencoderConfig) -> torch.nn.Module:
    """A randomly initialised AutoencoderKL or VQModel for `cfg` (uses the global torch RNG)."""
    from diffusers import AutoencoderKL, VQModel

    n = len(cfg.block_out_channels)
    common = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                  up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=cfg.block_out_channels,
                  layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
                  norm_num_groups=cfg.norm_groups, sample_size=cfg.image_size,
                  mid_block_add_attention=cfg.mid_attention)
    if cfg.kind == "kl":
        return AutoencoderKL(**common, scaling_factor=1.0)
    return VQModel(**common, num_vq_embeddings=cfg.codebook_size, scaling_factor=1.0)


def nearest_codes(h: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Nearest codebook entry per latent position, as diffusers' VectorQuantizer picks it
    (argmin of torch.cdist): h [n, D, h, w], codebook [K, D] -> long [n, h, w]."""
    n, D, hh, ww = h.shape
    z = h.permute(0, 2, 3, 1).reshape(-1, D)
    return torch.cdist(z, codebook).argmin(1).reshape(n, hh, ww)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of per-image PSNR in dB, for uint8 images [n, 3, H, W] (or [3, H, W]).
    Identical images give inf."""
    if a.dtype != torch.uint8 or b.dtype != torch.uint8:
        raise TypeError(f"psnr expects uint8 images, got {a.dtype} and {b.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.reshape(-1, *a.shape[-3:]).double(), b.reshape(-1, *b.shape[-3:]).double().to(a.device)
    mse = (a - b).pow(2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(255.0 ** 2 / mse)).mean())


def _chunks(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """x split along dim 0 into pieces of at most `size`; none for an empty x."""
    return list(x.split(size)) if x.shape[0] else []


class ImageAutoencoder:
    """A trained (or pretrained) diffusers autoencoder behind one encode/decode interface.

    Attributes: kind ("kl" | "vq"), image_size, latent_shape ((C, h, w) for KL, (h, w) for VQ),
    codebook_size (None for KL), scale and shift (KL latent normalisation), config (the
    AutoencoderConfig it was built from; None for a foreign diffusers checkpoint).
    """

    def __init__(self, model: torch.nn.Module, kind: str, image_size: int, scale: float = 1.0,
                 shift: float = 0.0, config: AutoencoderConfig | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
        self.model, self.kind, self.image_size = model.eval(), kind, image_size
        self.scale, self.shift, self.config = float(scale), float(shift), config
        mc = model.config
        self.downsample = 2 ** (len(mc.block_out_channels) - 1)
        h = image_size // self.downsample
        if kind == "kl":
            self.latent_shape: tuple[int, ...] = (mc.latent_channels, h, h)
            self.codebook_size: int | None = None
        else:
            self.latent_shape, self.codebook_size = (h, h), mc.num_vq_embeddings

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "ImageAutoencoder":
        """Move (and optionally cast, e.g. a pretrained VAE to bf16 on GPU) the model; returns self."""
        # Only pass what changes: diffusers warns about any dtype argument, even None.
        if dtype is None:
            self.model.to(device)
        else:
            self.model.to(device=device, dtype=dtype)
        return self

    def check_images(self, images: torch.Tensor) -> None:
        """Raise TypeError / ValueError unless images is uint8 [n, 3, image_size, image_size]."""
        if images.dtype != torch.uint8:
            raise TypeError(f"encode expects uint8 images [n, 3, H, W], got dtype {images.dtype}")
        want = (3, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"encode expects images [n, {', '.join(map(str, want))}], got {tuple(images.shape)}"
                             f" (this autoencoder was built for {self.image_size}x{self.image_size})")

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unscaled bottleneck for float images in [-1, 1] on the model's device: the KL
        posterior mean [n, C, h, w] or the VQ pre-quantisation vectors [n, D, h, w]. Keeps the
        autograd graph (training uses it)."""
        if self.kind == "kl":
            return self.model.encode(x).latent_dist.mean
        return self.model.encode(x).latents

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """uint8 [n, 3, H, W] -> KL latents float32 [n, C, h, w] (scaled posterior mean) or
        VQ codes long [n, h, w]. Returned on the model's device."""
        self.check_images(images)
        out = []
        for chunk in _chunks(images, batch_size):
            h = self.encode_raw(to_unit_range(chunk.to(self.device)).to(self.dtype)).float()
            if self.kind == "kl":
                out.append((h - self.shift) * self.scale)
            else:
                out.append(nearest_codes(h, self.model.quantize.embedding.weight.float()))
        return torch.cat(out) if out else torch.empty(0, *self.latent_shape, device=self.device,
                                                      dtype=torch.float32 if self.kind == "kl" else torch.long)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (KL) or quantised vectors [n, D, h, w] (VQ) -> float images in [-1, 1]."""
        if self.kind == "kl":
            return self.model.decode(z).sample
        # VQModel.decode(z, force_not_quantize=True) minus its lookup_from_codebook branch.
        m = self.model
        return m.decoder(m.post_quant_conv(z), z if m.config.norm_type == "spatial" else None)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """KL latents float [n, C, h, w] (as encode returns them) or VQ codes long [n, h, w]
        -> uint8 images [n, 3, H, W] on the model's device."""
        if tuple(latents.shape[1:]) != self.latent_shape or latents.dim() != len(self.latent_shape) + 1:
            raise ValueError(f"decode expects [n, {', '.join(map(str, self.latent_shape))}], got {tuple(latents.shape)}")
        if self.kind == "vq":
            if latents.dtype != torch.long:
                raise TypeError(f"VQ decode expects long codes, got {latents.dtype}")
            if latents.numel() and (int(latents.min()) < 0 or int(latents.max()) >= self.codebook_size):
                raise ValueError(f"codes outside [0, {self.codebook_size})")
        elif not latents.is_floating_point():
            raise TypeError(f"KL decode expects float latents, got {latents.dtype}")
        out = []
        for chunk in _chunks(latents, batch_size):
            chunk = chunk.to(self.device)
            if self.kind == "kl":
                z = chunk.float() / self.scale + self.shift
            else:
                z = self.model.quantize.embedding(chunk).permute(0, 3, 1, 2)
            out.append(to_uint8(self.decode_raw(z.to(self.dtype)).float()))
        if not out:
            return torch.empty(0, 3, self.image_size, self.image_size, dtype=torch.uint8, device=self.device)
        return torch.cat(out)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write diffusers' config.json + safetensors weights and our autoencoder.json to
        `directory`, atomically (a sibling temp dir renamed into place)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        def write(tmp: Path) -> None:
            if self.kind == "kl":  # so the folder is also a correct plain diffusers checkpoint
                self.model.register_to_config(scaling_factor=self.scale,
                                              shift_factor=self.shift if self.shift else None)
            self.model.save_pretrained(tmp, safe_serialization=True)
            meta = {"kind": self.kind, "image_size": self.image_size, "scale": self.scale, "shift": self.shift,
                    "config": asdict(self.config) if self.config is not None else None}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

        write_dir_atomic(directory, write)
        return directory


def _checkpoint_dir(directory: Path) -> Path:
    if not directory.is_dir():
        raise FileNotFoundError(f"autoencoder directory {directory} does not exist (train one with "
                                f"`python -m data.autoencoders train`, or give a local diffusers checkpoint)")
    for d in (directory, directory / "vae"):  # a whole diffusers pipeline keeps its VAE in vae/
        if (d / "config.json").is_file():
            return d
    raise FileNotFoundError(f"{directory} has no config.json (nor vae/config.json): not a diffusers "
                            f"AutoencoderKL/VQModel checkpoint or an ImageAutoencoder.save directory")


def load(directory: str | os.PathLike, image_size: int | None = None,
         device: str | torch.device = "cpu") -> ImageAutoencoder:
    """Open a directory written by `ImageAutoencoder.save`, or a local pretrained diffusers
    AutoencoderKL / VQModel checkpoint (the class is read from config.json; KL latents use the
    checkpoint's scaling_factor and shift_factor). image_size defaults to the saved one, else
    to the checkpoint's sample_size. Never touches the network."""
    from diffusers import AutoencoderKL, VQModel

    d = _checkpoint_dir(Path(directory))
    class_name = json.loads((d / "config.json").read_text()).get("_class_name")
    if class_name not in _CLASSES:
        raise ValueError(f"{d}/config.json describes {class_name!r}; supported: {sorted(_CLASSES)}")
    kind = _CLASSES[class_name]
    model = (AutoencoderKL if kind == "kl" else VQModel).from_pretrained(d, local_files_only=True,
                                                                       low_cpu_mem_usage=False)
    meta_path = d / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        cfg = AutoencoderConfig(**meta["config"]) if meta.get("config") else None
        scale, shift, size = meta["scale"], meta["shift"], meta["image_size"]
    else:
        mc = model.config
        cfg, size = None, mc.sample_size if isinstance(mc.sample_size, int) else mc.sample_size[0]
        scale = mc.scaling_factor if kind == "kl" else 1.0
        shift = (mc.get("shift_factor") or 0.0) if kind == "kl" else 0.0
    ae = ImageAutoencoder(model, kind, image_size or size, scale, shift, cfg)
    return ae.to(device)


def encode_dataset(ae: ImageAutoencoder, images: torch.Tensor, batch_size: int = 256,
                   progress: str | None = None) -> torch.Tensor:
    """Encode a whole uint8 image set [N, 3, H, W] once, for caching: KL latents float32
    [N, C, h, w] or VQ codes [N, h, w] (int16 when the codebook fits, else int64), on CPU.
    progress: a label for a progress bar with an ETA on stderr (None: none)."""
    from tqdm import tqdm

    chunks = tqdm(_chunks(images, batch_size), total=-(-images.shape[0] // batch_size), desc=progress,
                  file=sys.stderr, mininterval=5, disable=progress is None, unit="batch")
    out = [ae.encode(chunk, batch_size).cpu() for chunk in chunks]
    codes = torch.cat(out) if out else ae.encode(images[:0]).cpu()
    if ae.kind == "vq" and ae.codebook_size <= 2 ** 15:
        codes = codes.to(torch.int16)
    return codes


def load_images(paths: list[str]) -> torch.Tensor:
    """Concatenate uint8 [N, 3, H, W] tensors saved with torch.save (a tensor, or a dict holding
    one under "images")."""
    parts = []
    for p in paths:
        obj = torch.load(p, map_location="cpu", weights_only=True)
        t = obj["images"] if isinstance(obj, dict) else obj
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 4:
            raise ValueError(f"{p}: expected a uint8 tensor [N, 3, H, W] (or a dict with 'images')")
        parts.append(t)
    return torch.cat(parts)


def main(argv: list[str] | None = None) -> int:
    from data.autoencoder_train import train_autoencoder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train an autoencoder on uint8 image tensors and save it")
    tr.add_argument("--kind", choices=KINDS, required=True)
    tr.add_argument("--images", nargs="+", required=True, help=".pt files of uint8 [N, 3, H, W]")
    tr.add_argument("--val", nargs="*", default=[], help="held-out .pt files for the final PSNR")
    tr.add_argument("--out", required=True)
    tr.add_argument("--steps", type=int, default=1200)
    tr.add_argument("--batch", type=int, default=16)
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--seed", type=int, default=0)
    for f in fields(AutoencoderConfig):
        if f.name in ("kind", "image_size"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "block_out_channels":
            tr.add_argument(flag, type=int, nargs="+")
        elif f.type == "bool":
            tr.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"))
        else:
            tr.add_argument(flag, type=type(f.default))
    args = ap.parse_args(argv)

    images = load_images(args.images)
    over = {f.name: getattr(args, f.name) for f in fields(AutoencoderConfig)
            if f.name not in ("kind", "image_size") and getattr(args, f.name) is not None}
    cfg = AutoencoderConfig(kind=args.kind, image_size=images.shape[-1], **over)
    records: list[dict] = []

    def log(rec: dict) -> None:
        print(json.dumps(rec), flush=True)
        records.append(rec)

    ae = train_autoencoder(cfg, images, args.steps, args.batch, args.lr, args.seed, log)
    out = ae.save(args.out)
    (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"out": args.out, "kind": cfg.kind, "latent_shape": list(ae.latent_shape), "scale": ae.scale}
    if args.val:
        val = load_images(args.val)
        summary["val_psnr"] = round(psnr(ae.decode(ae.encode(val)).cpu(), val), 2)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
