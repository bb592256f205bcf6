"""Behaviours of the tracking engine and its session state that parity tests did not pin (issue 15
mutation gate; docs/mutation-report.md, "Survivors of the video engine").

Fast: whole error messages, the session's plain data, and a few calls on a small random model.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from masklet.checkpoints import config_from_official
from masklet.errors import InvalidInputError, PredictorStateError
from masklet.model import Sam2Model
from masklet.model.sam2 import NO_OBJ_SCORE
from masklet.synthetic import make_clip
from masklet.video import TrackedFrame, VideoPredictor
from masklet.video.engine import TrackingEngine, check_frame, check_max_frames
from masklet.video.session import FrameOutput, StackedOutputs, TrackedObject, VideoState
from reference.official import (
    SMALL,
    apply_overrides,
    image_postprocess_overrides,
    official_model_dict,
    randomize_parameters_,
)


@pytest.fixture(scope="module")
def model() -> Sam2Model:
    model_dict = apply_overrides(official_model_dict("sam2.1-hiera-tiny", **SMALL), image_postprocess_overrides())
    return randomize_parameters_(Sam2Model(config_from_official(copy.deepcopy(model_dict))), 7).eval()


@pytest.fixture(scope="module")
def clip():
    return make_clip(5, num_frames=4, size=(48, 64), num_objects=(2, 2))


def centre(mask: np.ndarray) -> list[list[float]]:
    ys, xs = np.nonzero(mask)
    return [[float(xs[len(xs) // 2]), float(ys[len(ys) // 2])]]


def _output(value: float, score: float = 1.0, features: bool = True) -> FrameOutput:
    return FrameOutput(
        pred_masks=torch.full((1, 1, 4, 4), value),
        obj_ptr=torch.full((1, 3), value),
        object_score_logits=torch.full((1, 1), score),
        maskmem_features=torch.full((1, 2, 2, 2), value) if features else None,
    )


# ---------------------------------------------------------------------------------------------
# whole messages
# ---------------------------------------------------------------------------------------------


def test_frame_and_max_frames_checks_give_their_whole_message():
    state = type("S", (), {"num_frames": 4})()
    for bad in (4, -1, 1.5, "2", None):
        with pytest.raises(InvalidInputError) as info:
            check_frame(state, bad)
        assert str(info.value) == f"frame_idx: expected an int in [0, 3], got {bad!r}"
    with pytest.raises(InvalidInputError) as info:
        check_frame(state, 9, "start_frame_idx")
    assert str(info.value) == "start_frame_idx: expected an int in [0, 3], got 9"
    for good in (0, 3, np.int64(2)):
        check_frame(state, good)
    check_frame(type("Stream", (), {"num_frames": None})(), 10**6)  # streams check their own frames
    for bad in (-1, 2.0, np.int64(3), "1", True):
        with pytest.raises(InvalidInputError) as info:
            check_max_frames(bad)
        assert str(info.value) == f"max_frame_num_to_track: expected an int >= 0, got {bad!r}"
    check_max_frames(None)
    check_max_frames(0)


def test_engine_options_and_model_get_their_whole_message(model):
    for bad in (-1, "8", None, float("nan")):
        with pytest.raises(InvalidInputError) as info:
            TrackingEngine(model, fill_hole_area=bad)
        assert str(info.value) == (
            f"fill_hole_area: expected a number >= 0 (pixels at 1/4 model resolution), got {bad!r}"
        )
    engine = TrackingEngine(
        model,
        fill_hole_area=0,
        non_overlap_masks=1,
        clear_non_cond_mem_around_input=1,
        add_all_frames_to_correct_as_cond=1,
        binarize_mask_from_pts=0,
        progress=1,
    )
    assert engine.fill_hole_area == 0
    flags = (
        engine.non_overlap_masks,
        engine.clear_non_cond_mem_around_input,
        engine.add_all_frames_to_correct_as_cond,
        engine.binarize_mask_from_pts,
        engine.progress,
    )
    assert flags == (True, True, True, False, True)
    assert all(type(f) is bool for f in flags)
    defaults = TrackingEngine(model)
    assert defaults.fill_hole_area == 8
    assert (
        defaults.non_overlap_masks,
        defaults.clear_non_cond_mem_around_input,
        defaults.add_all_frames_to_correct_as_cond,
        defaults.binarize_mask_from_pts,
        defaults.progress,
    ) == (False, False, False, True, False)
    assert defaults.image_size == model.image_size
    with pytest.raises(InvalidInputError) as info:
        TrackingEngine(object())
    assert str(info.value) == "model: expected a masklet Sam2Model (see masklet.load_model), got object"


@pytest.mark.parametrize(
    "mask, described",
    [
        (np.zeros((2, 3, 4)), "float64 of shape (2, 3, 4)"),
        (np.zeros((0, 4)), "float64 of shape (0, 4)"),
        (torch.zeros(4, 4, dtype=torch.complex64), "torch.complex64 of shape (4, 4)"),
        (torch.zeros(5), "torch.float32 of shape (5,)"),
    ],
)
def test_bad_masks_get_their_whole_message(model, clip, mask, described):
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    with pytest.raises(InvalidInputError) as info:
        predictor.add_new_mask(state, 0, 1, mask)
    shown = described if isinstance(mask, torch.Tensor) else f"torch.{described}"
    assert str(info.value) == f"mask: expected a 2-D (H, W) binary mask (bool or 0/1 numbers), got {shown}"
    assert state.obj_ids == []


def test_state_errors_give_their_whole_message(model, clip):
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    with pytest.raises(PredictorStateError) as info:
        predictor.propagate_in_video(state)
    assert str(info.value) == "no objects to track: add points, a box or a mask first"
    predictor.add_new_points_or_box(state, 0, 4, centre(clip.masks[0, 0]), [1])
    with pytest.raises(InvalidInputError) as info:
        predictor.remove_object(state, 9)
    assert str(info.value) == "obj_id: unknown object 9; known objects: [4]"
    predictor.add_new_points_or_box(state, 2, 7, centre(clip.masks[2, 1]), [1])
    predictor.add_new_points_or_box(state, 3, 8, centre(clip.masks[3, 1]), [1])
    predictor.clear_all_prompts_in_frame(state, 2, 7)
    predictor.clear_all_prompts_in_frame(state, 3, 8)
    with pytest.raises(PredictorStateError) as info:
        predictor.propagate_in_video(state)
    assert str(info.value) == (
        "objects [7, 8] have no prompted frame left; add points, a box or a mask for them, or remove them"
    )


# ---------------------------------------------------------------------------------------------
# session data
# ---------------------------------------------------------------------------------------------


def test_tracked_frame_fields_masks_and_presence():
    logits = torch.tensor([[[[0.0, 1.0], [-1.0, 2.0]]], [[[3.0, -0.5], [0.0, 0.0]]]])
    frame = TrackedFrame(3, [1, 2], logits, torch.tensor([0.0, 2.0]), events=("a",))
    idx, ids, got = frame
    assert (idx, ids) == (3, [1, 2])
    assert got is logits
    assert frame.masks.tolist() == [[[False, True], [False, True]], [[True, False], [False, False]]]
    assert frame.events == ["a"]
    assert isinstance(frame.events, list)
    assert torch.allclose(frame.presence, torch.sigmoid(torch.tensor([0.0, 2.0])))
    assert frame.presence.dtype == torch.float32
    bare = TrackedFrame(0, [], torch.zeros(0, 1, 2, 2))
    assert bare.object_score_logits is None
    assert bare.presence is None
    assert bare.events == []
    half = TrackedFrame(0, [1], logits[:1], torch.tensor([1.0], dtype=torch.float16))
    assert half.presence.dtype == torch.float32


def test_output_at_prefers_pending_then_prompted_then_tracked():
    obj = TrackedObject(5)
    pend_cond, pend_track, cond, tracked = _output(1), _output(2), _output(3), _output(4)
    obj.non_cond[0] = tracked
    assert obj.output_at(0, True) is tracked
    obj.cond[0] = cond
    assert obj.output_at(0, True) is cond
    assert obj.output_at(0, False) is cond
    obj.pending[False][0] = pend_track
    assert obj.output_at(0, False) is pend_track
    assert obj.output_at(0, True) is cond
    obj.pending[True][0] = pend_cond
    assert obj.output_at(0, True) is pend_cond
    assert obj.output_at(1, True) is None
    fresh = TrackedObject(6)
    assert fresh.pending == {True: {}, False: {}}
    assert fresh.pending[True] is not obj.pending[True]  # each object has its own stores


def test_session_order_prompted_frames_and_first_prompted_frame(clip):
    state = VideoState(
        frames=list(clip.frames),
        num_frames=4,
        video_height=48,
        video_width=64,
        device=torch.device("cpu"),
        storage_device=torch.device("cpu"),
        feature_cache_size=2,
    )
    for obj_id, frames in ((9, (3, 2)), (1, (1,)), (4, ())):
        obj = state.objects.setdefault(obj_id, TrackedObject(obj_id))
        for t in frames:
            obj.cond[t] = _output(t)
    assert state.obj_ids == [9, 1, 4]
    assert state.prompted(2) == [True, False, False]
    assert state.prompted(1) == [False, True, False]
    assert state.first_prompted_frame() == 1
    assert state.maskmem_pos_enc is None
    assert len(state.features) == 0


def test_stacked_outputs_stack_objects_on_the_batch_axis():
    a = {0: _output(1.0), 2: _output(2.0)}
    b = {0: _output(3.0), 2: _output(4.0)}
    pos = torch.arange(8.0).view(1, 2, 2, 2)
    stacked = StackedOutputs([a, b], pos)
    assert list(stacked) == [0, 2]
    assert len(stacked) == 2
    assert 2 in stacked
    assert 1 not in stacked
    with pytest.raises(KeyError):
        stacked[1]
    entry = stacked[2]
    assert entry.maskmem_features[:, 0, 0, 0].tolist() == [2.0, 4.0]
    assert entry.obj_ptr[:, 0].tolist() == [2.0, 4.0]
    assert entry.maskmem_pos_enc.shape == (2, 2, 2, 2)
    assert torch.equal(entry.maskmem_pos_enc[1], pos[0])
    assert stacked[2] is entry  # built once
    assert StackedOutputs([a], None)[0].maskmem_pos_enc is None
