"""masklet-nano beside its official twin (the same weights in the official sam2 classes)."""

from __future__ import annotations

import copy
import functools

import torch
import yaml

from masklet import load_model
from masklet.checkpoints import packaged_checkpoint
from reference.official import build_official_model

HELD_OUT = 10**6


@functools.cache
def nano_pair(video: bool = False):
    """(official model or video predictor, masklet model) from the packaged files."""
    checkpoint = packaged_checkpoint("masklet-nano")
    model_dict = yaml.safe_load(checkpoint.with_suffix(".yaml").read_text())["model"]
    official = build_official_model(copy.deepcopy(model_dict), seed=None, video=video)
    official.load_state_dict(torch.load(checkpoint, weights_only=True)["model"], strict=True)
    return official, load_model("masklet-nano")
