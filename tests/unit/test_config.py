"""The run config: precedence, strictness, exact round trip and content-derived run ids."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from baselines.chameleon import ChameleonConfig
from grid.config import (ConfigError, RunConfig, build_model_config, from_dict, from_yaml, load_config, resolved,
                         to_dict, to_yaml)
from grid.identity import run_id
from model import sizes
from model.accounting import count_params
from model.sizes import get_size
from model.transfusion import TransfusionConfig

REPO = Path(__file__).resolve().parents[2]


def test_precedence_defaults_yaml_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("size: cpu-2.7M\nseed: 3\noptim:\n  lr: 1e-4\n  warmup_steps: 7\nmodel:\n  patch_size: 4\n")
    cfg = load_config(str(f), ["optim.lr=2e-4", "model.noise_limit=null", "D=3e6"])
    assert cfg.size == "cpu-2.7M" and cfg.seed == 3 and cfg.optim.warmup_steps == 7  # from the file
    assert cfg.optim.lr == 2e-4 and cfg.model.noise_limit is None and cfg.D == 3_000_000  # overrides win
    assert cfg.model.patch_size == 4 and cfg.batch_rows == RunConfig().batch_rows  # file; default
    assert load_config(None, []) == RunConfig()


@pytest.mark.parametrize("overrides, names", [
    (["optim.lrr=1e-4"], ["optim.lrr", "weight_decay"]),  # the key, and the valid ones at its level
    (["famly=chameleon"], ["famly", "family", "optim"]),
    (["data.dataset.x=1"], ["data.dataset"]),
])
def test_unknown_key_names_it(overrides, names):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in names), msg


@pytest.mark.parametrize("override, key, expected", [
    ("optim.lr=fast", "optim.lr", "float"),
    ("D=lots", "D", "int"),
    ("D=2.5", "D", "int"),
    ("compile=maybe", "compile", "bool"),
    ("optim.betas=[0.9]", "optim.betas", "tuple"),
])
def test_bad_type_names_key_and_type(override, key, expected):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{key}:") and expected in msg, msg


def test_yaml_mapping_where_value_expected(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("optim: 3\n")
    with pytest.raises(ConfigError, match="optim: expected a mapping"):
        load_config(str(f), [])


@pytest.mark.parametrize("overrides, needle", [
    (["family=dalle"], "transfusion, chameleon"),
    (["size=huge"], "cpu-0.8M"),
    (["model.patch_size=3"], "patch_size=3"),
    (["model.patch_kind=vit"], "linear"),
    (["model.image_attention=sideways"], "causal"),
    (["precision=fp8"], "bf16"),
    (["data.dataset=imagenet"], "shapes"),
    (["data.text_share=1.5"], "text_share"),
    (["data.caption_dropout=-0.1"], "caption_dropout"),
    (["model.prediction=score"], "prediction must be one of ('eps', 'v', 'x0')"),
    (["batch_rows=0"], "batch_rows"),
])
def test_invalid_values_one_line(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert "\n" not in str(e.value) and needle in str(e.value)


def _varied() -> RunConfig:
    return load_config(None, ["family=chameleon", "size=cpu-0.33M", "optim.betas=[0.8,0.9]", "model.dropout=0.1",
                              "model.qk_norm=false", "data.data_dir=/tmp/x", "precision=bf16"])


@pytest.mark.parametrize("cfg", [RunConfig(), _varied(), resolved(_varied())])
def test_round_trip(cfg):
    back = from_yaml(to_yaml(cfg))
    assert back == cfg and run_id(back) == run_id(cfg)
    assert from_dict(to_dict(cfg)) == cfg


def test_run_id_stable_across_processes():
    cfgs = {"default": [], "varied": ["family=chameleon", "optim.lr=2e-4", "D=5e5"]}
    code = ("import json, sys; from grid.config import load_config; from grid.identity import run_id; "
            "print(json.dumps({k: run_id(load_config(None, v)) for k, v in json.loads(sys.argv[1]).items()}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str-hash seed than this process
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cfgs)], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {k: run_id(load_config(None, v)) for k, v in cfgs.items()}


def test_run_id_slug_and_what_it_depends_on():
    base = RunConfig()
    rid = run_id(base)
    assert rid.startswith("transfusion-cpu-0.8M-D2M-") and len(rid.rsplit("-", 1)[1]) == 10
    relevant = ["seed=1", "D=3000000", "seq_len=128", "batch_rows=4", "optim.lr=1e-3", "optim.betas=[0.9,0.99]",
                "optim.warmup_steps=100", "model.patch_size=4", "model.image_attention=causal",
                "model.noise_limit=null", "model.qk_norm=true", "model.z_loss=1e-4", "data.text_share=0.6",
                "data.caption_first=0.5", "data.caption_dropout=0.2", "data.captions=first", "model.prediction=v", "precision=bf16",
                "family=chameleon", "size=cpu-0.33M"]
    ids = {o: run_id(load_config(None, [o])) for o in relevant}
    assert rid not in ids.values() and len(set(ids.values())) == len(relevant)
    for o in ["data.data_dir=/elsewhere", "eval_every=50", "checkpoint_every=7", "compile=true", "device=cpu",
              "tensorboard=true"]:
        assert run_id(load_config(None, [o])) == rid, o
    # Defaults written out explicitly are the same run; so are lr=1 and lr=1.0.
    assert run_id(resolved(base)) == rid
    assert run_id(load_config(None, ["optim.lr=3e-4", "model.z_loss=0", "model.qk_norm=false"])) == rid
    assert run_id(dataclasses.replace(base, optim=dataclasses.replace(base.optim, lr=1))) == \
        run_id(load_config(None, ["optim.lr=1.0"]))
    # Transfusion-only knobs do not change a Chameleon run.
    cham = load_config(None, ["family=chameleon"])
    assert run_id(load_config(None, ["family=chameleon", "model.patch_size=8", "model.noise_limit=null",
                                     "model.prediction=x0"])) == run_id(cham)


def test_committed_runs_keep_their_ids():
    """Fields added after runs were committed (grid/identity.py ADDED_LATER) leave those runs'
    ids alone at their earlier behaviour: every committed lr-sweep run dir is its config's id."""
    dirs = sorted((REPO / "results" / "lr-sweep").glob("*/config.yaml"))
    assert dirs, "results/lr-sweep holds committed runs"
    for path in dirs:
        cfg = from_yaml(path.read_text())
        assert cfg.data.captions == "all" and run_id(cfg) == path.parent.name, path


def test_steps_derivation():
    cfg = load_config(None, ["D=1000", "seq_len=100", "batch_rows=3"])
    assert cfg.steps == 4  # ceil(1000 / 300)
    assert load_config(None, ["D=600", "seq_len=100", "batch_rows=3"]).steps == 2
    assert resolved(cfg).optim.warmup_steps == 1  # 1.6% of 4 steps, at least 1
    big = load_config(None, ["D=1e12", "seq_len=4096", "batch_rows=512"])
    assert resolved(big).optim.warmup_steps == 4000  # the paper's warmup, capped


def test_lr_default_per_family():
    assert resolved(RunConfig()).optim.lr == 3e-4
    cham = load_config(None, ["family=chameleon"])
    assert cham.optim.lr is None and resolved(cham).optim.lr == 1e-4
    assert resolved(load_config(None, ["family=chameleon", "optim.lr=5e-4"])).optim.lr == 5e-4
    # A sweep that switches family on a stored config picks up the other family's default.
    assert resolved(dataclasses.replace(RunConfig(), family="chameleon")).optim.lr == 1e-4


def test_build_model_config_transfusion_matches_size():
    cfg = load_config(None, ["size=cpu-0.8M", "model.patch_kind=unet", "model.patch_size=4",
                             "model.image_attention=causal", "model.lambda_diffusion=2", "model.noise_limit=null"])
    m = build_model_config(cfg, vocab_size=4096, image_shape=(8, 32, 32))
    assert isinstance(m, TransfusionConfig)
    size = get_size("cpu-0.8M")
    assert (m.backbone.dim, m.backbone.n_layers, m.backbone.n_heads, m.backbone.hidden_dim) == \
        (size.dim, size.n_layers, size.n_heads, size.hidden_dim)
    assert count_params(m.backbone, 4096, 0)["n_nonembedding"] == 803_968  # the size's name
    assert not m.backbone.qk_norm and m.z_loss == 0.0 and m.vocab_size == 4096
    assert (m.patch.kind, m.patch.patch_size, m.patch.latent_channels, m.patch.latent_size) == ("unet", 4, 8, 32)
    assert m.image_attention == "causal" and m.lambda_diffusion == 2.0 and m.diffusion.noise_limit is None
    assert m.diffusion.prediction == "eps"
    v = build_model_config(load_config(None, ["model.prediction=v"]), vocab_size=4096, image_shape=(8, 32, 32))
    assert v.diffusion.prediction == "v"


def test_run_config_records_caption_dropout_and_prediction():
    # The resolved config.yaml a run writes names both, so a reader knows the recipe.
    text = to_yaml(resolved(RunConfig()))
    cfg = yaml.safe_load(text)
    assert cfg["data"]["caption_dropout"] == 0.1 and cfg["model"]["prediction"] == "eps"


def test_build_model_config_chameleon_matches_size():
    cfg = load_config(None, ["family=chameleon", "size=cpu-0.11M"])
    m = build_model_config(cfg, vocab_size=2048, image_shape=(8, 8), codebook_size=lambda: 512)
    assert isinstance(m, ChameleonConfig)
    assert dataclasses.replace(m.backbone, qk_norm=False) == get_size("cpu-0.11M")
    assert m.backbone.qk_norm and m.z_loss == 1e-5 and resolved(cfg).optim.lr == 1e-4  # Chameleon's stability recipe
    assert (m.vocab_size, m.code_grid, m.elements_per_image) == (2560, 8, 64)
    off = build_model_config(load_config(None, ["family=chameleon", "model.qk_norm=false", "model.z_loss=0"]),
                             2048, (8, 8), lambda: 512)
    assert not off.backbone.qk_norm and off.z_loss == 0.0


@pytest.mark.parametrize("overrides, shape, codebook, needle", [
    (["model.patch_size=8"], (8, 12, 12), None, "patch_size divides latent_size"),
    ([], (8, 32, 16), None, "square latent"),
    (["family=chameleon"], (8, 8), None, "codebook_size"),
    (["family=chameleon"], (8, 32, 32), 512, "code grid"),
])
def test_impossible_shapes_one_line(overrides, shape, codebook, needle):
    with pytest.raises(ValueError) as e:
        build_model_config(load_config(None, overrides), 2048, shape, lambda: codebook)
    assert "\n" not in str(e.value) and needle in str(e.value)


def test_dim_not_divisible_by_heads_one_line(monkeypatch):
    # The named sizes are all valid; a bad table entry must still fail at load, one line.
    monkeypatch.setitem(sizes.SIZES, "bad", dataclasses.replace(get_size("cpu-0.8M"), n_heads=3))
    with pytest.raises(ConfigError, match="not divisible by n_heads=3") as e:
        load_config(None, ["size=bad"])
    assert "\n" not in str(e.value)


def test_knob_defaults_and_recipes_are_the_model_configs_own():
    """grid/config.py and the recipe modules write these values out so that a run config
    imports no torch; they must stay what the model configs say."""
    from baselines.spec import ChameleonFamily
    from grid.config import ModelKnobs
    from model.backbone import BackboneConfig as TorchSideBackbone
    from model.diffusion import DiffusionConfig
    from model.patches import PatchConfig
    from model.recipe import Recipe
    from model.spec import TransfusionFamily
    from model.transfusion import TransfusionConfig

    k, t, p, d = ModelKnobs(), TransfusionConfig(), PatchConfig(), DiffusionConfig()
    assert (k.image_attention, k.lambda_diffusion) == (t.image_attention, t.lambda_diffusion)
    assert (k.patch_kind, k.patch_size, k.unet_channels) == (p.kind, p.patch_size, p.unet_channels)
    assert (k.noise_limit, k.prediction) == (d.noise_limit, d.prediction)
    assert TransfusionFamily.recipe == Recipe(lr=3e-4, qk_norm=TorchSideBackbone().qk_norm, z_loss=t.z_loss)
    c = ChameleonConfig()
    assert ChameleonFamily.recipe == Recipe(lr=1e-4, qk_norm=c.backbone.qk_norm, z_loss=c.z_loss)


def test_listing_and_dry_running_a_sweep_import_no_torch(tmp_path):
    """--list and --dry-run need names, ids, N, D and resources: no torch once this machine's
    peak is known (grid/machine.py keeps it; here it is given)."""
    from grid.machine import _machine_key

    (tmp_path / "cpu_peak.json").write_text(json.dumps({_machine_key(): 1.0e11}))
    code = ("import sys; from grid.launch import main; "
            "assert main(['--list']) == 0 and main(['--sweep', 'toy-paper', '--dry-run']) == 0; "
            "sys.exit(3 if 'torch' in sys.modules else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "TRANSFUSION_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "toy-paper" in out.stdout and "CPU/task" in out.stdout
