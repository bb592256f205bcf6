"""Checkpoints: loading weights (:mod:`.loading`), the official ``.pt`` + yaml format
(:mod:`.official`), the Hugging Face mapping (:mod:`.hf`), and the packaged masklet-nano files
(``masklet_nano.pt``, ``.yaml``, ``.amg.json`` in this folder)."""

from .hf import hf_config_to_official_dict, hf_to_official_state_dict
from .loading import (
    HUB_CHECKPOINTS,
    PACKAGED_CHECKPOINTS,
    detect_config,
    hub_file,
    load_model,
    load_state_dict_strict,
    packaged_checkpoint,
    read_checkpoint,
    recommended_amg_options,
    resolve_checkpoint,
    save_checkpoint,
)
from .official import OfficialClass, config_from_official, config_to_official, load_official_yaml, save_official_yaml

__all__ = [
    "HUB_CHECKPOINTS",
    "PACKAGED_CHECKPOINTS",
    "OfficialClass",
    "config_from_official",
    "config_to_official",
    "detect_config",
    "hf_config_to_official_dict",
    "hf_to_official_state_dict",
    "hub_file",
    "load_model",
    "load_official_yaml",
    "load_state_dict_strict",
    "packaged_checkpoint",
    "read_checkpoint",
    "recommended_amg_options",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_official_yaml",
]
