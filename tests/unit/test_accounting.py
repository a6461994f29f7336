"""The named sizes and the analytic accounting (model/sizes.py, model/accounting.py) against
the real modules: parameter counts by p.numel() (meta device, so 7B costs nothing) and
forward FLOPs measured by torch's FlopCounterMode (STYLE principle 4)."""

import dataclasses
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from model.accounting import (backbone_params, count_params, element_flops, flops_per_element, param_counts,
                              training_flops)
from model.backbone import Transformer
from model.patches import PatchConfig
from model.rope import rope_angles
from model.sizes import CPU_SIZES, PAPER_SIZES, SIZES, get_size
from model.transfusion import Transfusion, TransfusionConfig

PAPER_LABELS = {"0.16B": 0.16e9, "0.37B": 0.37e9, "0.76B": 0.76e9, "1.4B": 1.4e9, "7B": 7e9}


def numel(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def build_meta(cfg: TransfusionConfig) -> Transfusion:
    with torch.device("meta"):
        return Transfusion(cfg)


# ----------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("kind", ["linear", "unet"])
@pytest.mark.parametrize("vocab_size", [32000, 2048])
@pytest.mark.parametrize("name", list(SIZES))
def test_param_counts_match_modules(name, vocab_size, kind):
    cfg = TransfusionConfig(backbone=get_size(name), vocab_size=vocab_size, patch=PatchConfig(kind=kind))
    model = build_meta(cfg)
    counts = param_counts(cfg)
    assert counts["n_nonembedding"] == numel(model.backbone)
    assert counts["n_with_embeddings"] - counts["n_nonembedding"] == numel(model.tok_emb, model.head)
    assert counts["n_with_patch"] - counts["n_with_embeddings"] == numel(model.patch_enc, model.patch_dec)
    assert counts["n_with_patch"] == numel(model)  # nothing outside the three groups


@pytest.mark.parametrize("name", ["cpu-0.8M", "0.16B"])
def test_qk_norm_adds_two_head_dim_vectors_per_block(name):
    plain = get_size(name)
    qk = dataclasses.replace(plain, qk_norm=True)
    with torch.device("meta"):
        measured = numel(Transformer(qk)) - numel(Transformer(plain))
    assert measured == 2 * plain.head_dim * plain.n_layers
    assert backbone_params(qk) - backbone_params(plain) == measured


def test_count_params_without_patch_layers_is_chameleon_shaped():
    # A config with no .patch (the Chameleon-style baseline) counts no patch layers.
    @dataclasses.dataclass
    class Discrete:
        backbone: object
        vocab_size: int

    b = get_size("cpu-0.8M")
    counts = param_counts(Discrete(b, 2048 + 1024))
    assert counts == count_params(b, 2048 + 1024)
    assert counts["n_with_patch"] == counts["n_with_embeddings"] == backbone_params(b) + 2 * 3072 * b.dim


# ----------------------------------------------------------------------- the sizes


@pytest.mark.parametrize("name", list(PAPER_SIZES))
def test_paper_labels_are_totals_with_untied_32k_embeddings(name):
    n = param_counts(TransfusionConfig(backbone=get_size(name), vocab_size=32000))["n_with_embeddings"]
    assert abs(n / PAPER_LABELS[name] - 1) < 0.10, (name, n)


def test_paper_shapes():
    shapes = {k: (c.n_layers, c.dim, c.n_heads, c.hidden_dim) for k, c in PAPER_SIZES.items()}
    assert shapes == {"0.16B": (16, 768, 12, 2048), "0.37B": (24, 1024, 16, 2816), "0.76B": (24, 1536, 24, 4096),
                      "1.4B": (24, 2048, 16, 5632), "7B": (32, 4096, 32, 11008)}


def test_cpu_ladder_spans_the_cpu_range_and_is_named_after_n():
    ns = [backbone_params(c) for c in CPU_SIZES.values()]
    assert len(ns) >= 6 and ns == sorted(ns)
    assert ns[0] <= 0.15e6 and ns[-1] >= 15e6
    for name, n in zip(CPU_SIZES, ns):
        assert name == f"cpu-{n / 1e6:.2g}M"


def test_names_unique_and_valid():
    assert len(set(CPU_SIZES) | set(PAPER_SIZES)) == len(CPU_SIZES) + len(PAPER_SIZES) == len(SIZES)
    for cfg in SIZES.values():
        cfg.validate()


def test_get_size_returns_a_copy():
    get_size("cpu-0.8M").qk_norm = True
    assert SIZES["cpu-0.8M"].qk_norm is False


def test_unknown_size_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_size("3B")
    for name in SIZES:
        assert name in str(err.value)


# ----------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("name", list(SIZES))
def test_six_n_is_six_times_nonembedding_n(name):
    cfg = TransfusionConfig(backbone=get_size(name), vocab_size=32000)
    n = param_counts(cfg)["n_nonembedding"]
    f = flops_per_element(cfg, seq_len=4096)
    assert f["six_n"] == 6 * n
    assert f["six_n_total"] == 6 * (n + 32000 * cfg.backbone.dim)
    assert f["with_attention"] == f["six_n_total"] + 12 * cfg.backbone.n_layers * cfg.backbone.dim * 4096
    causal = flops_per_element(cfg, seq_len=4096, attention_context=4096 / 2)
    assert causal["with_attention"] - f["six_n_total"] == (f["with_attention"] - f["six_n_total"]) / 2
    assert training_flops(n, 1000) == 1000 * f["six_n"]


@pytest.mark.parametrize("qk_norm", [False, True])
def test_measured_forward_flops_match_the_formula(qk_norm):
    """Forward FLOPs of backbone + head per element == with_attention / 3, exactly, up to the
    norm weights (elementwise, not matmuls, so neither the counter nor the convention's 2 FLOPs
    per parameter applies to them; they are ~0.3% of N here).

    FlopCounterMode counts matmul-family ops only. The attention term is separated exactly:
    whatever the CPU SDPA kernel reports under the counter (torch 2.13 registers no formula
    for the CPU flash kernel, so 0) is measured on one standalone SDPA call of the same
    shapes and subtracted; torch's own dense SDPA formula (sdpa_flop_count, which ignores
    the mask, like the ctx = seq_len convention) must then equal the 4*L*d*ctx term."""
    torch.manual_seed(0)
    backbone = dataclasses.replace(get_size("cpu-0.11M"), qk_norm=qk_norm)
    vocab, B, L = 96, 2, 24
    model, head = Transformer(backbone), nn.Linear(backbone.dim, vocab, bias=False)
    x = torch.randn(B, L, backbone.dim)
    cos, sin = rope_angles(torch.arange(L).expand(B, L), backbone.head_dim)
    mask = torch.ones(L, L, dtype=torch.bool).tril().expand(B, 1, L, L)  # dense boolean, as on CPU
    with torch.no_grad(), FlopCounterMode(display=False) as total:
        head(model(x, cos, sin, mask))
    q = torch.randn(B, backbone.n_heads, L, backbone.head_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as one_sdpa:
        F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    attention_counted = backbone.n_layers * one_sdpa.get_total_flops()
    norm_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.RMSNorm))

    T = B * L
    f = element_flops(backbone, vocab, seq_len=L)
    assert total.get_total_flops() - attention_counted == T * (f["six_n_total"] // 3 - 2 * norm_params)
    assert backbone.n_layers * sdpa_flop_count(q.shape, q.shape, q.shape) == T * (f["with_attention"] - f["six_n_total"]) // 3
    # The paper's 2N per element (non-embedding N) is the backbone's matmul work up to the norms.
    with torch.no_grad(), FlopCounterMode(display=False) as body:
        model(x, cos, sin, mask)
    assert body.get_total_flops() - attention_counted == T * (2 * backbone_params(backbone) - 2 * norm_params)


def test_accounting_imports_without_torch():
    # analysis/ may use the arithmetic without importing torch (DESIGN layout).
    code = "import sys, model.accounting; assert 'torch' not in sys.modules, 'accounting imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
