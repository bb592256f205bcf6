"""Checkpoint loading: official .pt files, variant detection, config formats, clear errors."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch

import masklet
from masklet import CheckpointError, ConfigError, ImagePredictor, ModelNotFoundError, load_model
from masklet.checkpoints import (
    config_from_official,
    config_to_official,
    detect_config,
    load_official_yaml,
    save_official_yaml,
)
from masklet.model import VARIANTS, Sam2Model, variant_config
from reference.official import (
    SMALL,
    apply_overrides,
    build_official_model,
    image_postprocess_overrides,
    official_image_predictor,
    official_model_dict,
    save_official_checkpoint,
)
from reference.official import (
    VARIANTS as OFFICIAL_FILES,
)
from reference.pairs import test_image


@pytest.mark.parametrize("variant", sorted(OFFICIAL_FILES))
def test_every_official_variant_has_the_official_state_dict(variant, monkeypatch):
    """Same keys and shapes as the official model built from its shipped yaml: strict loading."""
    from hydra.utils import instantiate

    model_dict = official_model_dict(variant)
    linspace = torch.linspace  # the official Hiera calls .item() on it: keep it off the meta device
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    with torch.device("meta"):
        official = instantiate(model_dict, _recursive_=True)
        ours = Sam2Model(variant_config(variant))
    ref = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == ref
    # the shipped yaml parses to our named variant, and the variant is detected from the weights
    parsed = config_from_official(apply_overrides(copy.deepcopy(model_dict), image_postprocess_overrides()))
    assert parsed == VARIANTS[variant]
    assert detect_config(ours.state_dict()) == VARIANTS[variant]


def test_official_checkpoint_round_trip(tmp_path):
    """A reference state dict saved in the official format loads strictly and reproduces it."""
    official = build_official_model(official_model_dict("sam2.1-hiera-tiny", **SMALL), seed=2)
    ckpt = tmp_path / "small.pt"
    save_official_checkpoint(official, ckpt)
    config = config_from_official(
        apply_overrides(official_model_dict("sam2.1-hiera-tiny", **SMALL), image_postprocess_overrides())
    )
    yaml_path = tmp_path / "small.yaml"
    save_official_yaml(config, yaml_path)
    assert load_official_yaml(yaml_path) == config

    model = load_model(ckpt)  # the yaml beside the checkpoint gives the config
    assert model.config == config
    image = test_image(150, 210, seed=3)
    ref, mine = official_image_predictor(official), ImagePredictor(model)
    ref.set_image(image)
    mine.set_image(image)
    prompts = dict(point_coords=[[50.0, 60.0]], point_labels=[1], return_logits=True)
    for a, b in zip(mine.predict(**prompts), ref.predict(**prompts)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)

    # masklet's own saver writes the same format, which the official builder loads strictly
    again = tmp_path / "again.pt"
    masklet.save_checkpoint(model, again)
    reloaded = build_official_model(official_model_dict("sam2.1-hiera-tiny", **SMALL), seed=None)
    reloaded.load_state_dict(torch.load(again, weights_only=True)["model"], strict=True)


def test_our_yaml_builds_the_official_model(tmp_path):
    """config_to_official gives a config the official Hydra builder instantiates, weights load strictly."""
    from hydra.utils import instantiate

    config = variant_config("sam2-hiera-small", image_size=512)
    official = instantiate(config_to_official(config), _recursive_=True)
    ours = Sam2Model(config)
    official.load_state_dict(ours.state_dict(), strict=True)
    assert official.image_size == 512


def test_explicit_config_for_a_non_standard_checkpoint(tmp_path):
    official = build_official_model(official_model_dict("sam2-hiera-tiny", **SMALL), seed=4)
    ckpt = tmp_path / "custom.pt"  # no yaml beside it
    save_official_checkpoint(official, ckpt)
    with pytest.raises(ConfigError, match="no official size"):
        load_model(ckpt)
    config = config_from_official(official_model_dict("sam2-hiera-tiny", **SMALL))
    model = load_model(ckpt, config=config, dtype=torch.bfloat16)
    assert model.encoder_dtype == torch.bfloat16 and model.dtype == torch.float32 and not model.training
    assert model.memory_attention.norm.weight.dtype == torch.bfloat16
    mixed = load_model(ckpt, config=config, memory_dtype=torch.bfloat16)
    assert mixed.encoder_dtype == torch.float32 and mixed.memory_attention.norm.weight.dtype == torch.bfloat16
    assert mixed.memory_encoder.out_proj.weight.dtype == torch.bfloat16 and mixed.dtype == torch.float32


def test_truncated_and_foreign_files(tmp_path):
    official = build_official_model(official_model_dict("sam2-hiera-tiny", **SMALL), seed=4)
    ckpt = tmp_path / "ok.pt"
    save_official_checkpoint(official, ckpt)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("definitely not a checkpoint")
    with pytest.raises(CheckpointError):
        load_model(text)
    foreign = tmp_path / "resnet.pt"
    torch.save({"model": {"conv1.weight": torch.zeros(3, 3)}}, foreign)
    with pytest.raises(CheckpointError, match="not a SAM2 checkpoint"):
        load_model(foreign)
    # right architecture, wrong config: a strict-load error naming the keys
    config = config_from_official(official_model_dict("sam2.1-hiera-tiny", **SMALL))
    with pytest.raises(CheckpointError, match="missing"):
        load_model(ckpt, config=config)


def test_unknown_name_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="known names"):
        load_model("sam3-hiera-giant")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as err:
        load_model("sam2.1-hiera-tiny")
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "sam2.1_hiera_tiny.pt" in message and "facebook/sam2.1-hiera-tiny" in message
    assert "load_model('/path/to/" in message


def test_hub_unreachable_fails_fast(tmp_path, monkeypatch):
    """No network and no cache: an immediate, helpful error instead of the client's retries."""
    import socket

    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def no_route(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_route)
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="cannot reach .*Network is unreachable"):
        load_model("sam2-hiera-small")
    assert time.perf_counter() - start < 2


def test_hub_name_uses_the_cache(tmp_path, monkeypatch):
    """A hub name resolves through huggingface_hub's cache without network."""
    official = build_official_model(official_model_dict("sam2.1-hiera-tiny"), seed=None)
    cache = tmp_path / "hub"
    snapshot = cache / "models--facebook--sam2.1-hiera-tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_official_checkpoint(official, snapshot / "sam2.1_hiera_tiny.pt")
    refs = cache / "models--facebook--sam2.1-hiera-tiny" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = load_model("facebook/sam2.1-hiera-tiny")
    assert model.config == VARIANTS["sam2.1-hiera-tiny"]
    assert torch.equal(model.no_mem_embed, official.no_mem_embed)


def test_bad_dtype_and_inconsistent_config():
    with pytest.raises(ConfigError, match="dtype"):
        load_model("sam2.1-hiera-tiny", dtype=torch.int8)
    with pytest.raises(ConfigError, match="memory_dtype"):
        load_model("sam2.1-hiera-tiny", memory_dtype=torch.float64)
    with pytest.raises(ConfigError, match="unknown variant"):
        variant_config("sam2.1-hiera-huge")
    with pytest.raises(ConfigError, match="window_spec"):
        variant_config("sam2.1-hiera-tiny", image_size=1000)
    with pytest.raises(ConfigError, match="not an official SAM2 model config"):
        config_from_official({"foo": 1})
