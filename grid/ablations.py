"""The ablation sweeps' design, as data: which config keys each varies (everything else is held
fixed; tests/unit/test_sweeps.py checks the registered sweeps against it) and the paper table it
reproduces. Torch-free, so analysis/ reads it without importing the launcher's stack."""

ABLATION_KNOBS: dict[str, tuple[str, ...]] = {
    "ablation-attention": ("model.image_attention", "model.patch_kind"),
    "ablation-patch": ("model.patch_size", "model.patch_kind"),
    "ablation-encoder-size": ("size", "model.patch_kind"),
    "ablation-noise-limit": ("model.noise_limit",),
    "ablation-lambda": ("model.lambda_diffusion",),
    "ablation-text-only": ("family", "data.text_share", "D"),
}
# Keys that follow a varied knob rather than vary on their own: across sizes a run keeps its
# elements per parameter and takes its size's toy learning rate.
FOLLOWS: dict[str, tuple[str, ...]] = {"ablation-encoder-size": ("D", "optim.lr")}
PAPER_TABLE = {"ablation-text-only": 4, "ablation-attention": 5, "ablation-patch": 6,
               "ablation-encoder-size": 7, "ablation-noise-limit": 8}
