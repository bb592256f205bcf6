"""VideoPredictor against the official SAM2VideoPredictor: same weights, frames, prompts and calls."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from masklet.checkpoints import config_from_official
from masklet.model import Sam2Model
from masklet.synthetic import make_clip
from masklet.video import VideoPredictor
from reference.official import (
    SMALL,
    apply_overrides,
    build_official_model,
    image_postprocess_overrides,
    official_model_dict,
    patched_connected_components,
)
from reference.video_compare import NUM_FRAMES, assert_same, later_objects, scenario

HEIGHT, WIDTH = 96, 128


def video_pair(variant: str, seed: int) -> tuple[Any, VideoPredictor]:
    """(official SAM2VideoPredictor, masklet VideoPredictor) holding the same random weights."""
    model_dict = official_model_dict(variant, **SMALL)
    official = build_official_model(model_dict, seed=seed, video=True)
    ours = Sam2Model(config_from_official(apply_overrides(copy.deepcopy(model_dict), image_postprocess_overrides())))
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, VideoPredictor(ours.eval(), fill_hole_area=official.fill_hole_area)


def write_clip(folder: Path, seed: int) -> np.ndarray:
    """A synthetic clip as official-style JPEG frames (00000.jpg ...); returns its masks (T, N, H, W)."""
    clip = make_clip(seed, num_frames=NUM_FRAMES, size=(HEIGHT, WIDTH), num_objects=(3, 3))
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    return clip.masks


# SAM2.1 is not here: with these random weights its reference masks were degenerate (93 masks of
# the scenario story, 77 under 1% of the frame, median 0.8%; issue 15 item 6). The same stories
# run on masklet-nano, a SAM2.1 model, in test_nano.test_video_tracking_matches_official_on_nano
# under the fraction rule (most masks cover 1-90% of the frame). SAM2 meets that rule here: of the
# official masks, 90 of 93 (scenario) and 38 of 45 (later_objects) cover 1-90% of the frame.
@pytest.mark.parametrize("variant", ["sam2-hiera-tiny"])
@pytest.mark.parametrize("story", [scenario, later_objects])
def test_video_predictor_matches_official(tmp_path, variant, story):
    official, ours = video_pair(variant, seed=3)
    masks = write_clip(tmp_path / "clip", seed=11)
    with patched_connected_components(), torch.inference_mode():
        ref_state = official.init_state(str(tmp_path / "clip"))
        ref = story(official, ref_state, masks)
    mine = story(ours, ours.init_state(tmp_path / "clip"), masks)
    assert_same(mine, ref, min_fraction=0.5)
