"""An official video predictor and a masklet model sharing seeded random weights (small config)."""

from __future__ import annotations

import copy
from typing import Any

import torch

from masklet.checkpoints import config_from_official
from masklet.model import Sam2Model
from reference.official import (
    SMALL,
    apply_overrides,
    build_official_model,
    image_postprocess_overrides,
    official_model_dict,
)


def pair(variant: str, seed: int = 3, score_head: tuple[float, float] | None = None, **overrides: Any):
    """(official video predictor, masklet Sam2Model) with the same random weights."""
    model_dict = official_model_dict(variant, **SMALL, **overrides)
    official = build_official_model(model_dict, seed=seed, video=True)
    if score_head is not None:
        gain, bias = score_head
        last = official.sam_mask_decoder.pred_obj_score_head.layers[-1]
        with torch.no_grad():
            last.weight.mul_(gain)
            last.bias.fill_(bias)
    ours = Sam2Model(config_from_official(apply_overrides(copy.deepcopy(model_dict), image_postprocess_overrides())))
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours.eval()
