"""Build an official model and a masklet model holding the very same (seeded random) weights."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from torch import nn

from masklet.checkpoints import config_from_official
from masklet.model import Sam2Model
from reference.official import (
    apply_overrides,
    build_official_model,
    image_postprocess_overrides,
    official_model_dict,
    randomize_parameters_,
)


def make_pair(variant: str, seed: int = 0, **overrides: Any) -> tuple[nn.Module, Sam2Model]:
    """(official SAM2Base, masklet Sam2Model) for ``variant`` with dotted-path ``overrides``."""
    model_dict = official_model_dict(variant, **overrides)
    official = build_official_model(model_dict, seed=seed)
    with_post = apply_overrides(copy.deepcopy(model_dict), image_postprocess_overrides())
    ours = Sam2Model(config_from_official(with_post)).eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours


def random_model(variant: str, seed: int, **overrides: Any) -> Sam2Model:
    """A masklet model of ``variant`` (official config, image post-processing on) with seeded random weights."""
    model_dict = apply_overrides(official_model_dict(variant, **overrides), image_postprocess_overrides())
    return randomize_parameters_(Sam2Model(config_from_official(copy.deepcopy(model_dict))), seed).eval()


def test_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB uint8 image: coloured discs on a gradient (masks follow its structure)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx / width, yy / height, np.full((height, width), 0.4)], -1)
    for _ in range(8):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.05, 0.3) * min(height, width)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return (img * 255).astype(np.uint8)


test_image.__test__ = False  # not a pytest test
