"""Video parity cases the main suite never reaches (issue 15): objects the model judges absent.
(The previous-logit clamp of refinement clicks and the session options: test_video_options.py.)

Each case runs the same prompts through the official ``SAM2VideoPredictor`` and masklet's
``VideoPredictor`` holding the same weights and asserts that the outputs agree, and that the
case really exercises what it is about (absent and present outputs both occur, the option
changes the output, the logits pass the clamp).

Planted-bug check (issue 15, each on a mutated copy of src/): no-object pointer not mixed ->
fails test_absent_objects_match_official[leaving_story-sam2-hiera-tiny]; absent masks not set to
NO_OBJ_SCORE -> fails both leaving_story cases; no-object spatial embedding not added -> fails
test_sam21_nano_objects_leave_and_come_back_like_official[mask-prompted] (only that one).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from masklet.synthetic import make_clip
from masklet.video import VideoPredictor
from reference.informative import informative_count
from reference.official import (
    patched_connected_components,
)
from reference.video_compare import assert_same, box_of, centre, record
from reference.video_pair import pair

NUM_FRAMES = 6
HW = (64, 80)
ABSENT = -1000.0  # outputs of absent objects are NO_OBJ_SCORE (-1024) everywhere

#: The random weights' object-score head gets its output layer scaled by ``gain`` and its bias
#: set so that scores straddle zero: objects are judged absent on some frames, present on others.
#: (SAM2's scores follow the frame content, so its objects leave with the blank frames and come
#: back; SAM2.1's fall frame by frame after the prompt, so its present frames are the prompted ones.)
SCORE_HEAD = {"sam2-hiera-tiny": (8.0, -1.5), "sam2.1-hiera-tiny": (8.0, 1.0)}


@functools.cache
def clip_folder(root: str, blank: tuple[int, ...] = ()) -> tuple[Path, np.ndarray]:
    """A 6-frame synthetic clip as JPEGs; ``blank`` frames are flat grey (every object has left)."""
    clip = make_clip(11, num_frames=NUM_FRAMES, size=HW, num_objects=(2, 2))
    folder = Path(root) / ("clip" + "".join(f"_{t}" for t in blank))
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(clip.frames):
        frame = np.full_like(frame, 128) if t in blank else frame
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    return folder, clip.masks


def run_both(official, ours: VideoPredictor, folder: Path, story) -> tuple[list, list]:
    with patched_connected_components(), torch.inference_mode():
        ref = story(official, official.init_state(str(folder)))
    return story(ours, ours.init_state(folder)), ref


def collect(outputs: list, label: str, out: Any) -> None:
    outputs.append((label, *record(out)))


def assert_agree(mine: list, ref: list, min_informative: int) -> None:
    """Same outputs as the official (logits within 1e-3) on enough non-degenerate masks."""
    assert_same(mine, ref) if min_informative is None else _assert_same_lenient(mine, ref, min_informative)


def _assert_same_lenient(mine: list, ref: list, min_informative: int) -> None:
    assert [o[:3] for o in mine] == [r[:3] for r in ref], "different frames or objects"
    for (label, frame_idx, _, a), (_, _, _, b) in zip(mine, ref):
        diff = float((a - b).abs().max())
        assert diff <= 1e-3, f"{label} frame {frame_idx}: logits differ by {diff:.3g}"
        differ = (a > 0) != (b > 0)
        assert (b[differ].abs() < 1e-3).all(), f"{label} frame {frame_idx}: binary masks differ"
    informative = informative_count(r[3] for r in ref)
    assert informative >= min_informative, f"only {informative} object masks cover 1-90% of the frame"


def absence(ref: list) -> tuple[int, int]:
    """(absent, present) object outputs among the official's propagated frames."""
    absent = present = 0
    for label, _, _, logits in ref:
        if label.startswith("track"):
            flags = logits.flatten(1).max(1).values <= ABSENT
            absent += int(flags.sum())
            present += int((~flags).sum())
    return absent, present


# ---------------------------------------------------------------------------------------------
# 1. objects judged absent
# ---------------------------------------------------------------------------------------------


def absent_story(masks: np.ndarray):
    """obj 1 clicked on 0, given an empty mask on 3 (it left) and clicked again on 5 (it is back);
    obj 2 starts as an empty mask on 0 and is boxed on 4. Forward, then backward."""
    empty = np.zeros(masks.shape[-2:], dtype=bool)

    def story(predictor, state):
        outputs: list = []
        collect(
            outputs,
            "click obj1",
            predictor.add_new_points_or_box(state, 0, 1, points=[centre(masks[0, 0])], labels=[1]),
        )
        collect(outputs, "empty obj2", predictor.add_new_mask(state, 0, 2, empty))
        collect(outputs, "empty obj1", predictor.add_new_mask(state, 3, 1, empty))
        collect(outputs, "box obj2", predictor.add_new_points_or_box(state, 4, 2, box=box_of(masks[4, 1])))
        collect(
            outputs,
            "click obj1 back",
            predictor.add_new_points_or_box(state, 5, 1, points=[centre(masks[5, 0])], labels=[1]),
        )
        for out in predictor.propagate_in_video(state):
            collect(outputs, "track forward", out)
        for out in predictor.propagate_in_video(state, start_frame_idx=NUM_FRAMES - 1, reverse=True):
            collect(outputs, "track backward", out)
        return outputs

    return story


def leaving_story(masks: np.ndarray):
    """Both objects clicked on frame 0 of a clip whose frames 2-3 are blank; tracked forward."""

    def story(predictor, state):
        outputs: list = []
        collect(
            outputs,
            "click obj1",
            predictor.add_new_points_or_box(state, 0, 1, points=[centre(masks[0, 0])], labels=[1]),
        )
        collect(
            outputs,
            "click obj2",
            predictor.add_new_points_or_box(state, 0, 2, points=[centre(masks[0, 1])], labels=[1]),
        )
        for out in predictor.propagate_in_video(state):
            collect(outputs, "track forward", out)
        return outputs

    return story


@pytest.mark.parametrize("variant", ["sam2-hiera-tiny", "sam2.1-hiera-tiny"])
@pytest.mark.parametrize("make_story", [absent_story, leaving_story])
def test_absent_objects_match_official(tmp_path_factory, variant, make_story):
    official, model = pair(variant, score_head=SCORE_HEAD[variant])
    blank = (2, 3) if make_story is leaving_story else ()
    folder, masks = clip_folder(str(tmp_path_factory.getbasetemp()), blank)
    mine, ref = run_both(official, VideoPredictor(model), folder, make_story(masks))
    absent, present = absence(ref)
    if make_story is absent_story:  # absent by prompt: empty masks on frames 0 and 3
        absent += 2
    assert absent >= 2 and present >= 2, f"{absent} absent, {present} present outputs: the case proves little"
    # SAM2.1's random weights give empty thresholded masks on this clip (issue 15 item 6, not
    # solved here); the comparison is of the logits, which the absent-object paths move by ~0.1-1.
    _assert_same_lenient(mine, ref, min_informative=2 if variant == "sam2-hiera-tiny" else 0)


def test_sam2_objects_leave_with_the_blank_frames_and_come_back(tmp_path_factory):
    official, _ = pair("sam2-hiera-tiny", score_head=SCORE_HEAD["sam2-hiera-tiny"])
    folder, masks = clip_folder(str(tmp_path_factory.getbasetemp()), (2, 3))
    with patched_connected_components(), torch.inference_mode():
        ref = leaving_story(masks)(official, official.init_state(str(folder)))
    present = {
        f: bool((m.flatten(1).max(1).values > ABSENT).all()) for label, f, _, m in ref if label.startswith("track")
    }
    assert present[0] and not present[2] and not present[3] and present[5], present


# ---------------------------------------------------------------------------------------------
# 1b. SAM2.1 objects leaving and coming back, on masklet-nano (non-degenerate masks)
# ---------------------------------------------------------------------------------------------

#: masklet-nano scores its objects 6-13 on the clip and 0.3-0.4 on the blank frames; this shift of
#: the score head's bias makes the blank frames absent while the shapes stay present.
NANO_SCORE_SHIFT = -3.0
NANO_HW = (96, 128)
NANO_NO_OBJ_GAIN = 10.0


@functools.cache
def nano_clip_folder(root: str) -> tuple[Path, np.ndarray]:
    """A 6-frame held-out synthetic clip for masklet-nano whose frames 2-3 are flat grey."""
    clip = make_clip(10**6 + 7, num_frames=NUM_FRAMES, size=NANO_HW, num_objects=(2, 2))
    folder = Path(root) / "nano_clip_2_3"
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(clip.frames):
        frame = np.full_like(frame, 128) if t in (2, 3) else frame
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    return folder, clip.masks


#: (story, score-head bias shift, no-object embedding gain). The mask-prompted story runs the
#: packaged weights as they are: its empty conditioning masks carry the spatial embedding that the
#: nano's memory attention reads (removing it moves later logits by 7e-3). The leaving story shifts
#: the score head so the blank frames are judged absent.
NANO_CASES = [(absent_story, 0.0, 1.0), (leaving_story, NANO_SCORE_SHIFT, NANO_NO_OBJ_GAIN)]


@pytest.mark.parametrize(("make_story", "shift", "gain"), NANO_CASES, ids=["mask-prompted", "leaving"])
def test_sam21_nano_objects_leave_and_come_back_like_official(tmp_path_factory, make_story, shift, gain):
    """SAM2.1 (no-object spatial embedding, fixed no-object pointer) on masklet-nano: both objects
    are judged absent on the blank frames and tracked again after them, as the official does."""
    from reference.nano import nano_pair

    official, packaged = nano_pair(video=True)
    official, model = copy.deepcopy(official), copy.deepcopy(packaged)
    for net in (official, model):
        with torch.no_grad():
            net.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(shift)
            # the nano's learnt no-object embeddings are small (norms 0.16, 0.22) and its memory
            # attention favours conditioning frames: scaled up, their effect clears the tolerance
            net.no_obj_embed_spatial.mul_(gain)
            net.no_obj_ptr.mul_(gain)
    folder, masks = nano_clip_folder(str(tmp_path_factory.getbasetemp()))
    ours = VideoPredictor(model, fill_hole_area=official.fill_hole_area)
    mine, ref = run_both(official, ours, folder, make_story(masks))
    absent = sum(int((m.flatten(1).max(1).values <= ABSENT).sum()) for *_, m in ref)
    present = sum(int((m.flatten(1).max(1).values > ABSENT).sum()) for *_, m in ref)
    assert absent >= 3 and present >= 4, f"{absent} absent, {present} present outputs: the case proves little"
    _assert_same_lenient(mine, ref, min_informative=8)
