"""Behaviours of the tracking engine and its session state that parity tests did not pin (issue 15
mutation gate; docs/mutation-report.md, "Survivors of the video engine").

Fast: whole error messages, the session's plain data, and a few calls on a small random model.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from masklet.errors import InvalidInputError, PredictorStateError
from masklet.model import Sam2Model
from masklet.model.sam2 import NO_OBJ_SCORE
from masklet.synthetic import make_clip
from masklet.video import TrackedFrame, VideoPredictor
from masklet.video.engine import TrackingEngine, check_frame, check_max_frames
from masklet.video.session import FrameOutput, StackedOutputs, TrackedObject, VideoState
from reference.official import (
    SMALL,
)
from reference.pairs import random_model
from reference.video_compare import centre as centre_point


@pytest.fixture(scope="module")
def model() -> Sam2Model:
    return random_model("sam2.1-hiera-tiny", 7, **SMALL)


@pytest.fixture(scope="module")
def clip():
    return make_clip(5, num_frames=4, size=(48, 64), num_objects=(2, 2))


def centre(mask: np.ndarray) -> list[list[float]]:
    """One click at the middle foreground pixel, as a points list."""
    return [centre_point(mask)]


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
    with pytest.raises(KeyError) as missing:
        stacked[1]
    assert missing.value.args == (1,)  # a Mapping names the missing key
    entry = stacked[2]
    assert entry.maskmem_features[:, 0, 0, 0].tolist() == [2.0, 4.0]
    assert entry.obj_ptr[:, 0].tolist() == [2.0, 4.0]
    assert entry.maskmem_pos_enc.shape == (2, 2, 2, 2)
    assert torch.equal(entry.maskmem_pos_enc[1], pos[0])
    assert stacked[2] is entry  # built once
    assert StackedOutputs([a], None)[0].maskmem_pos_enc is None


def _one_output_state(device: str) -> VideoState:
    """Object 3 with a tracked output on frame 1 (pixels 2.0, score 0.5); object 4 with none."""
    state = VideoState(
        frames=[],
        num_frames=2,
        video_height=6,
        video_width=10,
        device=torch.device(device),
        storage_device=torch.device("cpu"),
        feature_cache_size=1,
    )
    state.objects[3] = TrackedObject(3, non_cond={1: _output(2.0, score=0.5)})
    state.objects[4] = TrackedObject(4)
    return state


def test_a_frames_masks_are_made_on_the_session_device(model):
    """The consolidated masks live on ``state.device`` (the official's inference device), not on
    the CPU where the outputs are stored; the meta device stands in for a GPU."""
    frame = TrackingEngine(model)._consolidated(_one_output_state("meta"), 1, False)
    assert frame.mask_logits.device.type == "meta"
    assert frame.mask_logits.shape == (2, 1, 6, 10)
    assert frame.object_score_logits.tolist() == [0.5, NO_OBJ_SCORE]


def test_frame_outputs_are_float32_whatever_the_default_dtype(model):
    """Masks and scores are float32 even when torch's default dtype is float64 (as tracked frames'
    masks are: the model's logits are float32)."""
    engine = TrackingEngine(model)
    state = _one_output_state("cpu")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        frame = engine._consolidated(state, 1, False)
        scores = engine._frame_scores(state, 1)
    finally:
        torch.set_default_dtype(default)
    assert frame.mask_logits.dtype == torch.float32
    assert frame.object_score_logits.dtype == torch.float32
    assert scores.dtype == torch.float32
    assert torch.allclose(frame.mask_logits[0], torch.full((1, 6, 10), 2.0))
    assert frame.mask_logits[1].unique().tolist() == [NO_OBJ_SCORE]
    assert scores.tolist() == [0.5, NO_OBJ_SCORE]


# ---------------------------------------------------------------------------------------------
# the engine on a small random model
# ---------------------------------------------------------------------------------------------


def test_absent_objects_are_no_obj_score_in_a_prompted_frame(model, clip):
    """Objects without an output on a frame (prompted later elsewhere) come back at NO_OBJ_SCORE."""
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_points_or_box(state, 0, 1, centre(clip.masks[0, 0]), [1])
    frame = predictor.add_new_points_or_box(state, 2, 2, centre(clip.masks[2, 1]), [1])
    assert frame.obj_ids == [1, 2]
    assert frame.mask_logits.shape == (2, 1, 48, 64)
    assert frame.mask_logits.dtype == torch.float32
    assert bool((frame.mask_logits[0] == NO_OBJ_SCORE).all())
    assert float(frame.object_score_logits[0]) == NO_OBJ_SCORE
    out = state.objects[2].pending[True][2]
    assert float(frame.object_score_logits[1]) == float(out.object_score_logits.reshape(-1)[0])
    assert bool((frame.mask_logits[1] != NO_OBJ_SCORE).any())


def test_tracked_frames_carry_each_objects_score_and_bfloat16_memories(model, clip):
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_points_or_box(state, 1, 1, centre(clip.masks[1, 0]), [1])
    predictor.add_new_points_or_box(state, 1, 2, centre(clip.masks[1, 1]), [1])
    frames = list(predictor.propagate_in_video(state))
    assert [f.frame_idx for f in frames] == [1, 2, 3]
    for f in frames:
        expected = []
        for obj in state.objects.values():
            out = obj.cond.get(f.frame_idx) or obj.non_cond[f.frame_idx]
            expected.append(float(out.object_score_logits.reshape(-1)[0]))
        assert f.object_score_logits.tolist() == pytest.approx(expected, abs=0)
        assert f.object_score_logits.dtype == torch.float32
    for obj in state.objects.values():
        assert set(obj.cond) == {1}
        assert set(obj.non_cond) == {2, 3}
        for out in [*obj.cond.values(), *obj.non_cond.values()]:
            assert out.maskmem_features is not None
            assert out.maskmem_features.dtype == torch.bfloat16
            assert out.maskmem_features.shape[0] == 1
            assert out.pred_masks.shape[:2] == (1, 1)
            assert out.object_score_logits.shape == (1, 1)  # one row per object of a batched call
        assert obj.tracked == {1: False, 2: False, 3: False}
        assert obj.pending == {True: {}, False: {}}
    assert state.maskmem_pos_enc is not None
    assert state.maskmem_pos_enc.shape[0] == 1


def test_feature_cache_keeps_the_most_recently_used_frames(model, clip):
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames), feature_cache_size=2)
    for frame_idx in (0, 1, 0, 2):  # 0 is used again, so 1 is the one to go
        predictor.add_new_points_or_box(state, frame_idx, 1, centre(clip.masks[frame_idx, 0]), [1])
    assert list(state.features) == [0, 2]
    one = predictor.init_state(list(clip.frames), feature_cache_size=1)
    predictor.add_new_points_or_box(one, 3, 1, centre(clip.masks[3, 0]), [1])
    predictor.add_new_points_or_box(one, 1, 1, centre(clip.masks[1, 0]), [1])
    assert list(one.features) == [1]


def test_clearing_and_removing_return_what_is_documented(model, clip):
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_points_or_box(state, 0, 1, centre(clip.masks[0, 0]), [1])
    predictor.add_new_points_or_box(state, 0, 2, centre(clip.masks[0, 1]), [1])
    predictor.add_new_mask(state, 2, 2, clip.masks[2, 1])
    list(predictor.propagate_in_video(state))
    obj = state.objects[2]
    prompted = obj.cond[2]
    assert predictor.clear_all_prompts_in_frame(state, 2, 2, need_output=False) is None
    assert 2 not in obj.cond
    assert obj.non_cond[2] is prompted  # its output stays, as a tracked frame's
    assert 2 not in obj.tracked
    assert 2 not in obj.mask_inputs
    ids, updated = predictor.remove_object(state, 1, need_output=False)
    assert ids == [2]
    assert updated == []
    assert list(state.objects) == [2]
    # the last object: everything is reset
    assert predictor.remove_object(state, 2) == ([], [])
    assert state.objects == {}
    assert len(state.features) > 0  # decoded features stay cached


def test_remove_returns_the_updated_prompted_frames(model, clip):
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_points_or_box(state, 0, 1, centre(clip.masks[0, 0]), [1])
    predictor.add_new_points_or_box(state, 3, 1, centre(clip.masks[3, 0]), [1])
    predictor.add_new_points_or_box(state, 1, 2, centre(clip.masks[1, 1]), [1])
    before = predictor.add_new_points_or_box(state, 0, 3, centre(clip.masks[0, 1]), [1])
    ids, updated = predictor.remove_object(state, 1)
    assert ids == [2, 3]
    assert [u.frame_idx for u in updated] == [0, 3]
    assert all(u.obj_ids == [2, 3] for u in updated)
    assert torch.equal(updated[0].mask_logits[1], before.mask_logits[2])  # object 3 keeps its mask
    assert bool((updated[0].mask_logits[0] == NO_OBJ_SCORE).all())  # object 2 has nothing on frame 0


def test_a_mask_then_clicks_on_the_same_frame_replace_it(model, clip):
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_mask(state, 1, 1, clip.masks[1, 0])
    assert 1 in state.objects[1].mask_inputs
    # a mask already at the model's resolution is used as given
    size = model.image_size
    square = np.zeros((size, size), bool)
    square[10:40, 20:60] = True
    predictor.add_new_mask(state, 2, 1, square)
    assert torch.equal(state.objects[1].mask_inputs[2][0, 0], torch.from_numpy(square).float())
    predictor.add_new_points_or_box(state, 1, 1, centre(clip.masks[1, 0]), [1])
    obj = state.objects[1]
    assert 1 not in obj.mask_inputs
    assert set(obj.points) == {1}
    predictor.add_new_mask(state, 1, 1, clip.masks[1, 0])
    assert 1 not in obj.points


def test_clear_memory_around_a_frame_spans_stride_times_num_maskmem(model):
    engine = TrackingEngine(model)
    c = model.config
    reach = c.memory_temporal_stride_for_eval * c.num_maskmem
    obj = TrackedObject(1)
    centre_frame = reach + 5
    for t in range(2 * reach + 11):
        obj.non_cond[t] = _output(t)
    engine._clear_memory_around(obj, centre_frame)
    gone = set(range(2 * reach + 11)) - set(obj.non_cond)
    assert gone == set(range(centre_frame - reach, centre_frame + reach + 1))


def test_memory_window_covers_the_memories_and_the_pointers(model):
    c = model.config
    engine = TrackingEngine(model)
    assert engine.memory_window() == max(
        c.num_maskmem * c.memory_temporal_stride_for_eval + 2, c.max_obj_ptrs_in_encoder
    )
    strided = copy.copy(model)
    strided.config = dataclasses.replace(c, memory_temporal_stride_for_eval=5, max_obj_ptrs_in_encoder=3)
    assert TrackingEngine(strided).memory_window() == c.num_maskmem * 5 + 2
    pointers = copy.copy(model)
    pointers.config = dataclasses.replace(c, memory_temporal_stride_for_eval=1, max_obj_ptrs_in_encoder=40)
    assert TrackingEngine(pointers).memory_window() == 40


def test_health_monitor_sees_each_frames_areas_logits_and_prompts(model, clip):
    from masklet.video import HealthMonitor

    seen = []

    class Spy(HealthMonitor):
        def update(self, frame_idx, obj_ids, presence, areas=None, *, logits=None, prompted=None):
            seen.append((frame_idx, list(obj_ids), presence, areas, logits, prompted))
            return super().update(frame_idx, obj_ids, presence, areas, logits=logits, prompted=prompted)

    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_points_or_box(state, 0, 1, centre(clip.masks[0, 0]), [1])
    predictor.add_new_points_or_box(state, 2, 2, centre(clip.masks[2, 1]), [1])
    frames = list(predictor.propagate_in_video(state, health=Spy()))
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    for (frame_idx, ids, presence, areas, logits, prompted), frame in zip(seen, frames):
        assert ids == [1, 2]
        assert areas == [float(a) for a in frame.masks.flatten(1).sum(1)]
        assert logits == pytest.approx(frame.object_score_logits.tolist(), abs=0)
        assert presence == pytest.approx(torch.sigmoid(frame.object_score_logits).tolist(), abs=1e-7)
        assert prompted == [frame_idx == 0, frame_idx == 2]


def test_a_model_without_memory_is_refused_whole(model):
    no_memory = copy.copy(model)
    no_memory.config = dataclasses.replace(model.config, num_maskmem=0)
    with pytest.raises(InvalidInputError) as info:
        TrackingEngine(no_memory)
    assert str(info.value) == "model: this config has no memory (num_maskmem=0) and cannot track video"


def test_prompted_frames_are_non_overlapping_when_asked(model, clip):
    predictor = VideoPredictor(model, non_overlap_masks=True, fill_hole_area=0)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_points_or_box(state, 0, 1, box=[0, 0, 63, 47])
    frame = predictor.add_new_points_or_box(state, 0, 2, box=[0, 0, 63, 47])  # the same box
    assert frame.mask_logits.shape == (2, 1, 48, 64)
    assert int((frame.mask_logits > 0).sum(0).max()) <= 1
    plain = VideoPredictor(model, fill_hole_area=0)
    state = plain.init_state(list(clip.frames))
    plain.add_new_points_or_box(state, 0, 1, box=[0, 0, 63, 47])
    both = plain.add_new_points_or_box(state, 0, 2, box=[0, 0, 63, 47])
    assert int((both.mask_logits > 0).sum(0).max()) == 2  # they do overlap without the option


def test_a_correction_on_a_tracked_frame_can_be_cleared_before_tracking(model, clip):
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_points_or_box(state, 0, 1, centre(clip.masks[0, 0]), [1])
    list(predictor.propagate_in_video(state))
    obj = state.objects[1]
    for out in [*obj.cond.values(), *obj.non_cond.values()]:
        assert out.object_score_logits.shape == (1, 1)
    predictor.add_new_points_or_box(state, 2, 1, centre(clip.masks[2, 0]), [1])
    assert 2 in obj.pending[False]  # a tracked frame: the correction is not a conditioning frame
    predictor.clear_all_prompts_in_frame(state, 2, 1)
    assert obj.pending == {True: {}, False: {}}
    assert 2 not in obj.points


def test_a_correction_on_a_tracked_frame_is_encoded_and_committed(model, clip):
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_points_or_box(state, 0, 1, centre(clip.masks[0, 0]), [1])
    list(predictor.propagate_in_video(state))
    obj = state.objects[1]
    predictor.add_new_points_or_box(state, 2, 1, centre(clip.masks[2, 0]), [1])
    refined = obj.pending[False][2]
    assert refined.maskmem_features is None  # encoded when tracking resumes
    frames = predictor.propagate_in_video(state, start_frame_idx=3)  # commits eagerly
    assert obj.non_cond[2] is refined
    assert refined.maskmem_features is not None
    assert obj.pending == {True: {}, False: {}}
    assert [f.frame_idx for f in frames] == [3]


def test_clear_non_cond_memory_around_input_on_commit_and_on_tracking(model, clip):
    predictor = VideoPredictor(model, clear_non_cond_mem_around_input=True)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_points_or_box(state, 0, 1, centre(clip.masks[0, 0]), [1])
    list(predictor.propagate_in_video(state))
    obj = state.objects[1]
    assert set(obj.non_cond) == {1, 2, 3}
    predictor.add_new_points_or_box(state, 2, 1, centre(clip.masks[2, 0]), [1])
    predictor.propagate_in_video(state, start_frame_idx=3)  # the commit clears around frame 2
    assert set(obj.non_cond) == set()  # frames 1-3 are within stride * num_maskmem of frame 2
    # tracking a prompted frame clears around it too
    plain = VideoPredictor(model)
    state = plain.init_state(list(clip.frames))
    plain.add_new_points_or_box(state, 0, 1, centre(clip.masks[0, 0]), [1])
    list(plain.propagate_in_video(state))
    obj = state.objects[1]
    frames = plain.propagate_in_video(state)
    plain.clear_non_cond_mem_around_input = True  # after the commit, before frame 0 is tracked
    assert next(frames).frame_idx == 0
    assert set(obj.non_cond) == set()


def test_model_calls_get_the_documented_flags_and_clamped_previous_logits(model, clip, monkeypatch):
    """What the engine hands ``Sam2Model.track_step``: init / reverse flags from the frame's history,
    no memory encoding for prompts, previous logits clamped to +-32, the engine's memory options."""
    calls = []
    original = model.track_step

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "track_step", spy)
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_points_or_box(state, 3, 1, centre(clip.masks[3, 0]), [1])
    ((args, kwargs),) = calls
    assert args[0] == 3
    assert args[1] is True  # a first prompt: an initial conditioning frame
    assert args[9] is False  # not reverse
    assert args[10] is False  # memory is encoded at commit
    assert args[11] is None  # no previous logits for a first prompt
    assert kwargs == {"binarize_mask_from_pts": True, "non_overlap_memory": False}
    list(predictor.propagate_in_video(state, reverse=True))
    tracking = calls[1:]
    assert [a[0] for a, _ in tracking] == [2, 1, 0]
    assert all(a[1] is False and a[9] is True and a[10] is True for a, _ in tracking)
    # a correction on a reverse-tracked frame, its previous logits pushed past the clamp
    out = state.objects[1].non_cond[1]
    pushed = out.pred_masks.clone()
    pushed[..., :2] = 100.0
    pushed[..., 2:4] = -100.0
    out.pred_masks = pushed
    calls.clear()
    predictor.add_new_points_or_box(state, 1, 1, centre(clip.masks[1, 0]), [1], clear_old_points=False)
    ((args, _),) = calls
    assert args[1] is False
    assert args[9] is True  # reverse, as the frame was tracked
    assert float(args[11].max()) == 32.0
    assert float(args[11].min()) == -32.0


def test_watch_without_a_monitor_or_scores_returns_the_frame_unchanged():
    from masklet.video import HealthMonitor
    from masklet.video.engine import watch

    frame = TrackedFrame(0, [1], torch.zeros(1, 1, 2, 2), torch.tensor([3.0]))
    assert watch(None, frame) is frame
    assert frame.events == []
    bare = TrackedFrame(0, [1], torch.zeros(1, 1, 2, 2))
    assert watch(HealthMonitor(), bare) is bare
    assert bare.events == []
