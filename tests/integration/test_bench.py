"""The benchmarks run end to end at tiny sizes and print well-formed JSON with sane values.

No timing assertions: speed is what the benchmarks report, not what tests check.
"""

from __future__ import annotations

import json

import pytest
import torch

from bench import decode, peak, train
from bench.common import make_batch
from model.batch import IMAGE, PAD

TINY_MODEL = ["--device", "cpu", "--vocab", "64", "--latent-channels", "4", "--latent-size", "8"]


def _json_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def _positive(*xs) -> bool:
    return all(isinstance(x, (int, float)) and x > 0 for x in xs)


def test_peak_prints_a_positive_rate(capsys):
    assert peak.main(["--device", "cpu", "--size", "128", "--seconds", "0.05"]) == 0
    (out,) = _json_lines(capsys)
    assert out["device"] == "cpu" and out["dtype"] == "fp32" and _positive(out["peak_flops"])


@pytest.mark.parametrize("patch", ["linear", "unet"])
def test_train_prints_one_record_per_size_and_family(capsys, patch):
    argv = ["--sizes", "cpu-0.11M", "--seq-len", "64", "--batch", "2", "--steps", "1", "--warmup", "1",
            "--peak-seconds", "0.05", "--patch", patch, "--codebook", "32", *TINY_MODEL]
    assert train.main(argv) == 0
    tf, ch = _json_lines(capsys)
    assert (tf["family"], ch["family"]) == ("transfusion", "chameleon")
    n = tf["N"]
    assert 0 < n["n_nonembedding"] < n["n_with_embeddings"] < n["n_with_patch"] == tf["params_actual"]
    n = ch["N"]  # no patch layers; the joint vocabulary: 64 text + 32 codes
    assert n["n_with_patch"] == n["n_with_embeddings"] == ch["params_actual"]
    assert n["n_with_embeddings"] - n["n_nonembedding"] == 2 * 96 * 64
    for out in (tf, ch):
        _check_train_record(out, patch)


def _check_train_record(out: dict, patch: str) -> None:
    assert out["size"] == "cpu-0.11M" and out["patch"] == patch
    for run in (out, out["text_only"]):
        assert _positive(run["elements_per_s"], run["step_s"], run["elements_per_step"])
        assert 0 < run["mfu_six_n"] < run["mfu_with_attention"] <= 1
    assert out["images_per_step"] > 0 and out["text_only"]["images_per_step"] == 0
    assert _positive(out["speed_vs_text_only"], out["pack_s"], out["mask_s"], out["peak_flops"])


def test_mixed_batch_is_one_to_one_by_elements(make_cfg):
    from model.spec import TransfusionFamily

    family = TransfusionFamily(make_cfg())
    batch = make_batch(family, seq_len=128, rows=8, seed=0)
    batch.check()
    # Elements of documents holding an image (caption/image pairs) vs of pure text documents.
    has_image = torch.zeros_like(batch.modality, dtype=torch.bool)
    for r in range(batch.tokens.shape[0]):
        for d in batch.doc_id[r].unique().tolist():
            doc = batch.doc_id[r] == d
            if d >= 0 and (batch.modality[r][doc] == IMAGE).any():
                has_image[r] |= doc
    real = batch.modality != PAD
    n_pair, n_text = int((has_image & real).sum()), int((~has_image & real).sum())
    assert 0.5 < n_pair / n_text < 2
    text_only = make_batch(family, seq_len=128, rows=8, seed=0, images=False)
    assert not (text_only.modality == IMAGE).any() and text_only.images.shape[0] == 0
    assert tuple(text_only.tokens.shape) == (8, 128) and int((text_only.modality == PAD).sum()) == 0


def test_decode_compares_cached_and_uncached(capsys):
    argv = ["--size", "cpu-0.11M", "--batch", "2", "--prompt-len", "8", "--new-tokens", "5", "--image-steps", "2",
            "--repeats", "1", *TINY_MODEL]
    assert decode.main(argv) == 0
    (out,) = _json_lines(capsys)
    for mode in ("cached", "uncached"):
        text, image = out["text"][mode], out["text_to_image"][mode]
        assert text["tokens_per_row"] == 5  # EOS barred: every row decodes the full budget
        assert _positive(text["seconds"], text["tokens_per_s"])
        assert _positive(image["seconds"], image["denoising_steps_per_s"], image["images_per_s"])
    assert _positive(out["text"]["kv_speedup"], out["text_to_image"]["kv_speedup"])
    assert out["text_to_image"]["passes_per_step"] == 2
    codes = out["chameleon_text_to_image"]  # the same-sized image from the baseline: 4 x 4 codes = 16 patches
    assert codes["codes_per_image"] == out["elements_per_image"] == 16
    assert _positive(codes["cached"]["images_per_s"], codes["uncached"]["images_per_s"], codes["kv_speedup"])


def test_reference_splits_the_step_and_reports_mfu(capsys):
    from bench import reference

    threads = torch.get_num_threads()
    assert reference.main(["--threads", "1", "--steps", "1", "--warmup", "0"]) == 0
    assert torch.get_num_threads() == threads  # the caller's thread count is back
    (out,) = _json_lines(capsys)
    assert out["impl"] == "suite" and out["threads"] == 1 and out["elements_per_step"] == 800
    parts = ("data_s", "pack_s", "mask_s", "forward_s", "backward_s", "optimizer_s")
    assert _positive(out["elements_per_s"], out["peak_flops"], *(out[p] for p in parts))
    assert sum(out[p] for p in parts) == pytest.approx(out["step_s"], rel=0.05)
    assert 0 < out["mfu"] < out["mfu_with_attention"] <= 1 and 0 < out["overhead_fraction"] < 1


def test_ddp_check_passes_with_gloo(capsys):
    from bench import ddp_check

    import os

    before = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
    assert ddp_check.main(["--device", "cpu"]) == 0
    (out,) = _json_lines(capsys)
    assert out["backend"] == "gloo" and out["ok"] and out["loss"] == out["loss_ddp"]
    assert {k: os.environ.get(k) for k in before} == before  # nothing leaks into later jobs


def test_gpu_check_skips_cleanly_without_a_gpu():
    import subprocess

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: bench/gpu_check.sh runs for real")
    out = subprocess.run(["bash", "bench/gpu_check.sh"], capture_output=True, text=True,
                         cwd=__import__("pathlib").Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and "skipped" in out.stdout


def test_report_bench_prints_both_timings(capsys, tmp_path):
    """bench.report on a small results dir of two toy runs (tests/unit/test_analysis_findings's shape)."""
    import yaml

    from bench import report

    for i, fam in enumerate(("transfusion", "chameleon")):
        run = tmp_path / "toy" / f"{fam}-run"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"family": fam, "size": "cpu-0.11M", "D": 1000, "seed": 0}))
        (run / "status.json").write_text(json.dumps({"state": "done"}))
        (run / "evals.json").write_text(json.dumps({"elements": 1000, "flops": 6e8, "n_nonembedding": 1e5,
                                                    "text_c4/ppl": 50.0 + i}))
    assert report.main([str(tmp_path)]) == 0
    (out,) = _json_lines(capsys)
    assert out["runs"] == 2 and _positive(out["default_s"], out["all_s"], out["speedup"])


def test_loader_times_both_families_against_the_in_memory_baseline(capsys):
    from bench.loader import main as loader_main

    assert loader_main(["--batches", "2", "--seq-len", "2048", "--batch-rows", "2", "--docs", "40", "--images", "40",
                        "--shards", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    for family in ("transfusion", "chameleon"):
        for side in ("shards", "in_memory"):
            assert out[family][side]["elements_per_s"] > 0
        # the same stream either way: the same elements per batch
        assert out[family]["shards"]["elements_per_batch"] == out[family]["in_memory"]["elements_per_batch"]
