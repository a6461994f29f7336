"""CUDA paths: FlexAttention block masks (compiled), bf16 autocast, torch.compile.

Run on a GPU machine with `python -m pytest -m gpu`; elsewhere these skip.
"""

import pytest
import torch

from data.sequences import pack
from conftest import loss_parts

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _batch(special, text, image, elements_per_image):
    examples = [[text(9, 1), image(0)], [image(1), text(5, 2)], [text(40, 3)], [text(7, 4), image(2)]]
    return pack(examples, 64, special, elements_per_image)


def test_flex_block_mask_matches_sdpa_forward_and_backward(make_model, make_cfg, diffusion, special, text, image,
                                                            elements_per_image):
    batch = _batch(special, text, image, elements_per_image).to("cuda")
    losses, grads = [], []
    for backend in ("sdpa", "flex"):
        model = make_model(make_cfg(attention=backend)).cuda().train()
        parts = loss_parts(model, diffusion, batch, torch.Generator("cuda").manual_seed(0))
        parts.total.backward()
        losses.append(parts.total.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-5)


def test_bf16_autocast_and_compile_train_step(make_model, diffusion, special, text, image, elements_per_image):
    batch = _batch(special, text, image, elements_per_image).to("cuda")
    model = make_model().cuda().train()
    compiled = torch.compile(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        parts = loss_parts(compiled, diffusion, batch, torch.Generator("cuda").manual_seed(0))
    parts.total.backward()
    assert torch.isfinite(parts.total)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("family", ["transfusion", "chameleon"])
def test_trainer_runs_bf16_and_compiled_on_cuda(prepared, tmp_path, family):
    """The trainer's CUDA path: bf16 autocast, torch.compile, checkpoint and resume on the GPU."""
    import json

    from grid.config import load_config
    from grid.train import train

    root, _ = prepared
    cfg = load_config(None, [f"family={family}", "size=cpu-0.11M", "D=3000", "seq_len=96", "batch_rows=2",
                             "precision=bf16", "compile=true", "device=cuda", "checkpoint_every=3",
                             f"data.data_dir={root}"])
    run_dir = train(cfg, tmp_path / "r", tmp_path / "c")
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in lines)
