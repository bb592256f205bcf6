"""VideoPredictor behaviour beyond parity: batching, options, bounded caches, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masklet.errors import InvalidInputError, PredictorStateError, VideoDecodeError
from masklet.io import write_video
from masklet.model import Sam2Model
from masklet.synthetic import make_clip
from masklet.video import TrackedFrame, VideoPredictor
from reference.official import (
    SMALL,
)
from reference.pairs import random_model


@pytest.fixture(scope="module")
def model() -> Sam2Model:
    return random_model("sam2.1-hiera-tiny", 7, **SMALL)


@pytest.fixture(scope="module")
def clip():
    return make_clip(5, num_frames=6, size=(64, 96), num_objects=(4, 4))


def centre(mask: np.ndarray) -> list[list[float]]:
    ys, xs = np.nonzero(mask)
    return [[float(xs[len(xs) // 2]), float(ys[len(ys) // 2])]]


def test_objects_of_a_frame_share_one_model_call(model, clip, monkeypatch):
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    for k in range(4):
        predictor.add_new_points_or_box(state, 0, k + 1, centre(clip.masks[0, k]), [1])
    calls = []
    original = model.track_step

    def counting(*args, **kwargs):
        calls.append(args[2][-1].shape[1])  # batch size of the lowest-resolution features
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "track_step", counting)
    results = list(predictor.propagate_in_video(state))
    assert [r.frame_idx for r in results] == list(range(6))
    assert calls == [4] * 5, calls  # frames 1..5: one call each, all four objects batched
    assert all(isinstance(r, TrackedFrame) and r.masks.shape == (4, 64, 96) for r in results)


def test_batched_tracking_equals_one_object_at_a_time(model, clip):
    predictor = VideoPredictor(model)
    together = predictor.init_state(list(clip.frames))
    for k in range(3):
        predictor.add_new_points_or_box(together, 0, k + 1, centre(clip.masks[0, k]), [1])
    batched = [r.mask_logits for r in predictor.propagate_in_video(together)]
    for k in range(3):
        alone = predictor.init_state(list(clip.frames))
        predictor.add_new_points_or_box(alone, 0, k + 1, centre(clip.masks[0, k]), [1])
        single = [r.mask_logits for r in predictor.propagate_in_video(alone)]
        for t in range(6):
            torch.testing.assert_close(batched[t][k : k + 1], single[t], rtol=0, atol=1e-4)


def test_options_non_overlap_fill_holes_cache_and_offload(model, clip):
    plain = VideoPredictor(model, fill_hole_area=0)
    exclusive = VideoPredictor(model, non_overlap_masks=True, fill_hole_area=0)
    filled = VideoPredictor(model, fill_hole_area=50)
    outputs = {}
    for name, predictor in (("plain", plain), ("exclusive", exclusive), ("filled", filled)):
        state = predictor.init_state(list(clip.frames), feature_cache_size=2, offload_state_to_cpu=True)
        for k in range(2):
            predictor.add_new_points_or_box(state, 0, k + 1, box=[0, 0, 95, 63])  # heavy overlap
        outputs[name] = [r.mask_logits for r in predictor.propagate_in_video(state)]
        assert len(state.features) <= 2
    for logits in outputs["exclusive"]:
        assert int((logits > 0).sum(0).max()) <= 1
    assert any(int(((p > 0) & (p > 0)).sum(0).max()) > 1 for p in outputs["plain"]), "prompts do not overlap"
    for raw, fill in zip(outputs["plain"], outputs["filled"]):
        assert ((raw > 0) <= (fill > 0)).all()  # filling only adds foreground


def test_video_file_source(model, clip, tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(clip.frames, path, fps=5)
    predictor = VideoPredictor(model)
    state = predictor.init_state(path)
    assert (state.num_frames, state.video_height, state.video_width) == (6, 64, 96)
    predictor.add_new_points_or_box(state, 2, 1, centre(clip.masks[2, 0]), [1])
    frames = [r.frame_idx for r in predictor.propagate_in_video(state, reverse=True)]
    assert frames == [2, 1, 0]


def test_bad_input_is_reported_and_the_session_stays_usable(model, clip, tmp_path):
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    with pytest.raises(PredictorStateError, match="add points"):
        predictor.propagate_in_video(state)
    with pytest.raises(InvalidInputError, match=r"\[0, 5\]"):
        predictor.add_new_points_or_box(state, 6, 1, [[1, 1]], [1])
    with pytest.raises(InvalidInputError, match=r"\[0, 5\]"):
        predictor.add_new_points_or_box(state, -1, 1, [[1, 1]], [1])
    with pytest.raises(InvalidInputError, match="together"):
        predictor.add_new_points_or_box(state, 0, 1, [[1, 1]])
    with pytest.raises(InvalidInputError, match="labels"):
        predictor.add_new_points_or_box(state, 0, 1, [[1, 1], [2, 2]], [1])
    with pytest.raises(InvalidInputError, match="box"):
        predictor.add_new_points_or_box(state, 0, 1, box=[1, 2, 3])
    with pytest.raises(InvalidInputError, match="clear_old_points"):
        predictor.add_new_points_or_box(state, 0, 1, box=[1, 2, 3, 4], clear_old_points=False)
    with pytest.raises(InvalidInputError, match="obj_id"):
        predictor.add_new_points_or_box(state, 0, "car", [[1, 1]], [1])
    with pytest.raises(InvalidInputError, match="mask"):
        predictor.add_new_mask(state, 0, 1, np.zeros((2, 3, 4)))
    assert state.obj_ids == []  # nothing half-added
    predictor.add_new_points_or_box(state, 0, 1, centre(clip.masks[0, 0]), [1])
    with pytest.raises(InvalidInputError, match="unknown object 9"):
        predictor.remove_object(state, 9)
    with pytest.raises(InvalidInputError, match="unknown object"):
        predictor.clear_all_prompts_in_frame(state, 0, 9)
    with pytest.raises(InvalidInputError, match="start_frame_idx"):
        predictor.propagate_in_video(state, start_frame_idx=10)
    with pytest.raises(InvalidInputError, match="max_frame_num_to_track"):
        predictor.propagate_in_video(state, max_frame_num_to_track=-1)
    assert len(list(predictor.propagate_in_video(state))) == 6
    predictor.add_new_points_or_box(state, 3, 2, centre(clip.masks[3, 1]), [1])
    predictor.clear_all_prompts_in_frame(state, 3, 2)
    with pytest.raises(PredictorStateError, match=r"objects \[2\]"):
        predictor.propagate_in_video(state)
    predictor.add_new_mask(state, 3, 2, clip.masks[3, 1])
    assert [r.obj_ids for r in predictor.propagate_in_video(state, start_frame_idx=3)][-1] == [1, 2]
    predictor.reset_state(state)
    assert state.obj_ids == []


def test_unreadable_and_empty_videos(model, tmp_path):
    predictor = VideoPredictor(model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoDecodeError):
        predictor.init_state(tmp_path / "empty")
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(VideoDecodeError, match="fake.mp4"):
        predictor.init_state(fake)


def test_init_state_rejects_bad_sources(model, tmp_path):
    predictor = VideoPredictor(model)
    with pytest.raises(VideoDecodeError):
        predictor.init_state(tmp_path / "missing.mp4")
    with pytest.raises(InvalidInputError):
        predictor.init_state(42)
    with pytest.raises(InvalidInputError, match="feature_cache_size"):
        predictor.init_state([np.zeros((8, 8, 3), np.uint8)], feature_cache_size=0)
