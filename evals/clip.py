"""Text -> image alignment by CLIP score (paper Table 3: MS-COCO val, zero-shot), for a cluster
with a local CLIP checkpoint: torchmetrics' CLIPScore, 100 * max(cos(image, text), 0) averaged
over pairs. Needs `transformers` (not in the default install) and a local Hugging Face CLIP
directory (config, weights, processor files); nothing is downloaded. The embedded shapes world
scores alignment exactly instead (evals/compositional.py).
"""

from __future__ import annotations

from pathlib import Path

import torch


def _local_clip(checkpoint: str):
    """A loader torchmetrics calls for (model, processor), reading only the local directory."""
    try:
        from transformers import CLIPModel, CLIPProcessor
    except ImportError as exc:
        raise ImportError("clip_checkpoint needs the transformers package (pip install transformers, "
                          "with the torch pin): it is not part of the default install") from exc

    def load():
        return (CLIPModel.from_pretrained(checkpoint, local_files_only=True),
                CLIPProcessor.from_pretrained(checkpoint, local_files_only=True))

    return load


@torch.no_grad()
def clip_score(images: torch.Tensor, texts: list[str], checkpoint: str, batch_size: int = 64) -> float:
    """Mean CLIP score of uint8 images [N, 3, H, W] against their prompts."""
    if not Path(checkpoint).is_dir():
        raise FileNotFoundError(f"clip_checkpoint={checkpoint}: not a directory (a local Hugging Face CLIP "
                                "checkpoint, e.g. a saved openai/clip-vit-large-patch14)")
    from torchmetrics.multimodal.clip_score import CLIPScore

    device = "cuda" if torch.cuda.is_available() else "cpu"
    metric = CLIPScore(model_name_or_path=_local_clip(checkpoint)).to(device)
    for s in range(0, images.shape[0], batch_size):
        metric.update(images[s:s + batch_size].to(device), texts[s:s + batch_size])
    return float(metric.compute())
