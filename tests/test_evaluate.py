"""Evaluation measures (IoU, DAVIS boundary F, click placement) and the evaluation loops."""

from __future__ import annotations

import numpy as np
import torch

from masklet.model import Sam2Model, variant_config
from masklet.synthetic import make_clip, make_scene
from masklet.train.data import ImageSample, VideoSample
from masklet.train.evaluate import boundary_f, evaluate_clips, evaluate_images, farthest_point, iou, track_clip


def square(y0: int, x0: int, side: int, shape=(64, 64)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def test_measures():
    a, b = square(10, 10, 20), square(10, 20, 20)
    assert iou(a, a) == 1.0 and iou(a, np.zeros_like(a)) == 0.0
    assert abs(iou(a, b) - 200 / 600) < 1e-9
    assert boundary_f(a, a) == 1.0
    assert boundary_f(a, square(11, 10, 20)) == 1.0  # a 1-pixel shift is within tolerance at 64 px
    assert boundary_f(a, square(14, 10, 20)) < 0.9
    assert boundary_f(a, square(40, 40, 20)) == 0.0
    assert boundary_f(np.zeros_like(a), np.zeros_like(a)) == 1.0
    ring = square(10, 10, 30) & ~square(15, 15, 20)
    x, y = farthest_point(ring)
    assert ring[int(y), int(x)]
    assert farthest_point(a) in {(19.0, 19.0), (20.0, 20.0), (19.0, 20.0), (20.0, 19.0)}


def test_evaluation_loops_run_on_a_model():
    torch.manual_seed(0)
    model = Sam2Model(variant_config("masklet-nano")).eval()
    scenes = [make_scene(i, size=(96, 128)) for i in range(2)]
    scores = evaluate_images(model, [ImageSample(s.image, s.masks) for s in scenes])
    assert scores.objects == sum(len(s.masks) for s in scenes)
    assert 0.0 <= scores.click_miou <= 1.0 and 0.0 <= scores.box_miou <= 1.0
    clip = make_clip(3, num_frames=3, size=(96, 128), crossing=True)
    jf = evaluate_clips(model, [VideoSample(clip.frames, clip.masks)])
    assert 0.0 <= jf <= 1.0
    tracked = track_clip(model, clip.frames, first_masks=clip.masks[0])
    assert tracked.shape == clip.masks.shape
    # a mask prompt is reproduced on its own frame
    assert iou(tracked[0, 0], clip.masks[0, 0]) > 0.9
