"""Parameter counts and FLOPs per element, by arithmetic (no modules are built).

DESIGN "Element accounting": D counts sequence elements (text tokens, BOI/EOI, image patches
or image codes); N is reported three ways and every result records all of them:

    n_nonembedding     the transformer backbone (blocks + final norm). The default N of the
                       scaling fits and of 6ND (Kaplan et al. 2020, arXiv 2001.08361, sec 2.1,
                       who showed that excluding embeddings gives cleaner power laws).
    n_with_embeddings  + token embedding and untied output head (2 * V * dim). The paper's
                       size labels are these totals (see model/sizes.py).
    n_with_patch       + Transfusion's patch encoder/decoder (linear or U-Net).

The module is torch-free at import so analysis/ can use the arithmetic; only `param_counts`
imports model.patches (and thereby torch) to count the patch layers. Configs are read by
attribute, so anything shaped like model.backbone.BackboneConfig works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.backbone import BackboneConfig


def backbone_params(cfg: BackboneConfig) -> int:
    """Non-embedding parameters of model.backbone.Transformer(cfg).

    Per block: attention wqkv 3*d^2 + wo d^2; SwiGLU w1,w3 2*d*hidden + w2 hidden*d; two
    RMSNorm weights 2*d; with QK-norm two RMSNorm weights over head_dim (shared across heads).
    Plus the final RMSNorm d. No biases anywhere (Llama).
    """
    d, hidden = cfg.dim, cfg.hidden_dim
    per_block = 4 * d * d + 3 * d * hidden + 2 * d
    if cfg.qk_norm:
        per_block += 2 * cfg.head_dim
    return cfg.n_layers * per_block + d


def count_params(backbone: BackboneConfig, vocab_size: int, patch_params: int = 0) -> dict[str, int]:
    """The three N of any model built on the shared backbone.

    Transfusion: vocab_size = text vocabulary, patch_params = its patch encoder + decoder.
    Chameleon-style baseline: vocab_size = text + image codes, patch_params = 0 (images are
    vocabulary entries), so n_with_patch == n_with_embeddings.
    Returns {n_nonembedding, n_with_embeddings, n_with_patch}.
    """
    n = backbone_params(backbone)
    n_emb = n + 2 * vocab_size * backbone.dim  # untied input embedding + output head
    return {"n_nonembedding": n, "n_with_embeddings": n_emb, "n_with_patch": n_emb + patch_params}


def param_counts(cfg: Any) -> dict[str, int]:
    """The three N of a model config with .backbone, .vocab_size and optionally .patch.

    For a TransfusionConfig the patch layers are counted by model.patches.patch_codec_params;
    a config without a .patch (the Chameleon-style baseline) has none.
    """
    patch = getattr(cfg, "patch", None)
    patch_params = 0
    if patch is not None:
        from model.patches import patch_codec_params  # imports torch; keep the module torch-free

        patch_params = patch_codec_params(patch, cfg.backbone.dim)
    return count_params(cfg.backbone, cfg.vocab_size, patch_params)


def element_flops(backbone: BackboneConfig, vocab_size: int, seq_len: int,
                  attention_context: float | None = None) -> dict[str, float]:
    """Training FLOPs (forward + backward) per sequence element, three ways.

    Convention (Kaplan et al. 2020 sec 2.1; Hoffmann et al. 2022 "Chinchilla", arXiv
    2203.15556, appendix F): a matmul with a weight of P entries costs 2P FLOPs per element
    forward and 4P backward (gradients w.r.t. inputs and weights), 6P in all. Norms, RoPE,
    activations and softmax are ignored.

        six_n          6 * n_nonembedding: the paper's 6ND and our default (DESIGN).
        six_n_total    6 * (n_nonembedding + V*d): adds the output head, which at the CPU
                       ladder's small sizes is a large share of the real work (DESIGN
                       "Calibration"). The input embedding is a lookup, no FLOPs. This is an
                       upper bound for Transfusion, whose head runs only at text positions
                       (image positions run the much smaller patch decoder instead).
        with_attention six_n_total + 12 * n_layers * d * ctx: the attention scores Q K^T and
                       the weighted sum A V cost 2*d*ctx each per layer forward, for ctx keys
                       per query; times 3 for training (PaLM, arXiv 2204.02311, appendix B).

    attention_context is the mean number of keys a query attends to. Default seq_len: what a
    dense kernel computes whatever the mask (the PaLM and nanochat convention, and what
    torch.utils.flop_counter counts for SDPA). A causal mask needs only (seq_len + 1) / 2 on
    average, which a block-sparse kernel (FlexAttention, FlashAttention's causal mode) can
    realise; pass that, or the mean measured from the actual packed masks (document packing
    lowers it, intra-image bidirectional attention raises it slightly), to count useful work.
    """
    ctx = seq_len if attention_context is None else attention_context
    n = backbone_params(backbone)
    head = vocab_size * backbone.dim
    six_n_total = 6 * (n + head)
    return {
        "six_n": 6 * n,
        "six_n_total": six_n_total,
        "with_attention": six_n_total + 12 * backbone.n_layers * backbone.dim * ctx,
    }


def flops_per_element(cfg: Any, seq_len: int, attention_context: float | None = None) -> dict[str, float]:
    """element_flops for a model config with .backbone and .vocab_size (Transfusion or the
    Chameleon-style baseline). Returns {six_n, six_n_total, with_attention}; see element_flops."""
    return element_flops(cfg.backbone, cfg.vocab_size, seq_len, attention_context)


def training_flops(n: float, d: float) -> float:
    """C = 6ND (Kaplan et al. 2020): training compute for N parameters over D elements.
    Which N is a caller's choice; the fits default to n_nonembedding (DESIGN)."""
    return 6 * n * d
