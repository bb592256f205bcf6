"""StreamTracker: same masks as an offline session, flat memory over a long stream, clear errors."""

from __future__ import annotations

import copy
import resource

import numpy as np
import pytest
import torch

from masklet.checkpoints import config_from_official
from masklet.errors import InvalidInputError, PredictorStateError
from masklet.model import Sam2Model
from masklet.synthetic import make_clip
from masklet.video import StreamTracker, VideoPredictor
from reference.official import (
    SMALL,
    apply_overrides,
    image_postprocess_overrides,
    official_model_dict,
    randomize_parameters_,
)

#: An even smaller input (128 px) for the long-stream test.
TINY_INPUT = {
    **SMALL,
    "image_size": 128,
    "memory_attention.layer.self_attention.feat_sizes": [8, 8],
    "memory_attention.layer.cross_attention.feat_sizes": [8, 8],
}


def small_model(variant: str = "sam2.1-hiera-tiny", seed: int = 5, overrides: dict = SMALL) -> Sam2Model:
    model_dict = apply_overrides(official_model_dict(variant, **overrides), image_postprocess_overrides())
    model = Sam2Model(config_from_official(copy.deepcopy(model_dict)))
    return randomize_parameters_(model, seed).eval()


def centre(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs[len(xs) // 2]), float(ys[len(ys) // 2])]


def box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def test_stream_matches_offline_session():
    model = small_model()
    clip = make_clip(21, num_frames=18, size=(80, 112), num_objects=(3, 3))  # >= 16 frames: same pointer span
    frames, masks = clip.frames, clip.masks

    stream = StreamTracker(model)
    live = {0: stream.track(frames[0])}
    assert live[0].obj_ids == [] and live[0].mask_logits.shape == (0, 1, 80, 112)
    prompts0 = [stream.add_points(1, [centre(masks[0, 0])], [1]), stream.add_box(2, box_of(masks[0, 1]))]
    for t in range(1, 7):
        live[t] = stream.track(frames[t])
    prompts6 = [
        stream.add_box(3, box_of(masks[6, 2])),
        stream.add_points(1, [centre(masks[6, 1])], [0], clear_old_points=False),
    ]
    for t in range(7, 18):
        live[t] = stream.track(frames[t])

    offline = VideoPredictor(model)
    state = offline.init_state(list(frames))
    ref_prompts0 = [
        offline.add_new_points_or_box(state, 0, 1, [centre(masks[0, 0])], [1]),
        offline.add_new_points_or_box(state, 0, 2, box=box_of(masks[0, 1])),
    ]
    ref = {out.frame_idx: out for out in offline.propagate_in_video(state, 0, max_frame_num_to_track=6)}
    ref_prompts6 = [
        offline.add_new_points_or_box(state, 6, 3, box=box_of(masks[6, 2])),
        offline.add_new_points_or_box(state, 6, 1, [centre(masks[6, 1])], [0], clear_old_points=False),
    ]
    ref.update({out.frame_idx: out for out in offline.propagate_in_video(state, start_frame_idx=7)})

    for mine, theirs in zip(prompts0 + prompts6, ref_prompts0 + ref_prompts6):
        assert mine.obj_ids == theirs.obj_ids
        torch.testing.assert_close(mine.mask_logits, theirs.mask_logits, rtol=0, atol=1e-5)
    for t in range(1, 18):
        assert live[t].obj_ids == ref[t].obj_ids == ([1, 2] if t < 7 else [1, 2, 3])
        torch.testing.assert_close(live[t].mask_logits, ref[t].mask_logits, rtol=0, atol=1e-5)
    assert any(0 < float(live[t].masks.float().mean()) < 1 for t in range(1, 18))


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_stream_memory_stays_flat_over_1000_frames():
    model = small_model(overrides=TINY_INPUT)
    tracker = StreamTracker(model)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    rss = {}
    for t in range(1000):
        frame = np.roll(base, t % 64, axis=1)
        tracker.track(frame)
        if t == 0:
            tracker.add_points(1, [[20, 20]], [1])
            tracker.add_box(2, [30, 10, 60, 40])
        if t == 500:
            tracker.add_points(1, [[25, 22]], [1], clear_old_points=False)  # a correction mid-stream
        if t + 1 in (100, 1000):
            rss[t + 1] = resident_mb()
    state = tracker._state
    window = tracker.engine.memory_window()
    for obj in state.objects.values():
        assert len(obj.non_cond) <= window + 1
        assert len(obj.cond) == 1 and len(obj.tracked) <= 1
    assert len(state.features) == 1
    print(f"resident memory: {rss[100]:.1f} MB at frame 100, {rss[1000]:.1f} MB at frame 1000")
    assert rss[1000] - rss[100] < 25, rss


def test_stream_errors_leave_it_usable():
    tracker = StreamTracker(small_model())
    with pytest.raises(PredictorStateError, match="call track"):
        tracker.add_points(1, [[5, 5]], [1])
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    tracker.track(frame)
    with pytest.raises(InvalidInputError, match="48x64"):
        tracker.track(np.zeros((40, 64, 3), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="labels"):
        tracker.add_points(1, [[5, 5], [6, 6]], [1])
    with pytest.raises(InvalidInputError, match="unknown object"):
        tracker.remove_object(4)
    out = tracker.add_points(1, [[5, 5]], [1])
    assert out.obj_ids == [1]
    assert tracker.track(frame).obj_ids == [1]
    assert tracker.remove_object(1) == []
    assert tracker.track(frame).obj_ids == []
