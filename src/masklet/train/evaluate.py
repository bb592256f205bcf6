"""Held-out evaluation: 1-click and box mIoU on images, J&F of tracking on clips (DAVIS measures)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..image import ImagePredictor
from ..model import Sam2Model
from .data import ImageSample, VideoSample


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def farthest_point(mask: np.ndarray) -> tuple[float, float]:
    """The pixel (x, y) of a mask farthest from its border: the standard 1-click evaluation point."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return float(x), float(y)


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: float = 0.008) -> float:
    """DAVIS boundary F-measure: contour precision / recall within ``tolerance`` x image diagonal."""
    from scipy import ndimage

    def contour(mask: np.ndarray) -> np.ndarray:
        return mask & ~ndimage.binary_erosion(mask, border_value=0)

    if not pred.any() and not gt.any():
        return 1.0
    if not pred.any() or not gt.any():
        return 0.0
    radius = max(1, int(np.ceil(tolerance * np.hypot(*gt.shape))))
    disk = ndimage.generate_binary_structure(2, 1)
    disk = ndimage.iterate_structure(disk, radius)
    pc, gc = contour(pred), contour(gt)
    precision = (pc & ndimage.binary_dilation(gc, disk)).sum() / max(pc.sum(), 1)
    recall = (gc & ndimage.binary_dilation(pc, disk)).sum() / max(gc.sum(), 1)
    return float(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))


@dataclass
class ImageScores:
    """Mean IoU with one click (best-scored of three masks) and with the exact box."""

    click_miou: float
    box_miou: float
    objects: int


def evaluate_images(model: Sam2Model, samples: Iterable[ImageSample]) -> ImageScores:
    """Prompt every object once with a click at its centre and once with its box."""
    predictor = ImagePredictor(model)
    clicks, boxes = [], []
    for sample in samples:
        predictor.set_image(sample.image)
        for gt in sample.masks:
            if not gt.any():
                continue
            masks, scores, _ = predictor.predict(point_coords=[farthest_point(gt)], point_labels=[1])
            clicks.append(iou(masks[int(scores.argmax())], gt))
            ys, xs = np.nonzero(gt)
            box = [xs.min(), ys.min(), xs.max(), ys.max()]
            masks, _, _ = predictor.predict(box=box, multimask_output=False)
            boxes.append(iou(masks[0], gt))
    return ImageScores(float(np.mean(clicks)), float(np.mean(boxes)), len(clicks))


def track_clip(
    model: Sam2Model,
    frames: np.ndarray,
    first_masks: np.ndarray | None = None,
    first_points: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Track objects prompted on frame 0 through a clip with :class:`~masklet.video.VideoPredictor`:
    (T, N, H, W) bool.

    Prompts are masks (N, H, W), or clicks: coordinates (N, P, 2) in frame pixels and labels (N, P).
    """
    from ..video import VideoPredictor

    if (first_masks is None) == (first_points is None):
        raise ValueError("give exactly one of first_masks and first_points")
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(frames))
    if first_masks is not None:
        for n, mask in enumerate(first_masks):
            predictor.add_new_mask(state, 0, n + 1, mask)
    else:
        assert first_points is not None  # exactly one of the two, checked above
        coords, labels = first_points
        for n in range(len(coords)):
            predictor.add_new_points_or_box(state, 0, n + 1, coords[n], labels[n])
    out = np.zeros((frames.shape[0], len(state.obj_ids), *frames.shape[1:3]), dtype=bool)
    for result in predictor.propagate_in_video(state):
        out[result.frame_idx] = result.masks.cpu().numpy()
    return out


def evaluate_clips(model: Sam2Model, clips: Iterable[VideoSample]) -> float:
    """Mean J&F over objects and frames after the first, objects prompted by their frame-0 masks."""
    scores = []
    for clip in clips:
        pred = track_clip(model, clip.frames, first_masks=clip.masks[0])
        for t in range(1, clip.frames.shape[0]):
            for n in range(clip.masks.shape[1]):
                j = iou(pred[t, n], clip.masks[t, n])
                f = boundary_f(pred[t, n], clip.masks[t, n])
                scores.append((j + f) / 2)
    return float(np.mean(scores))


def amg_recall(model: Sam2Model, samples: Iterable[ImageSample], iou_threshold: float = 0.75, **options) -> float:
    """Share of ground-truth shapes matched by an automatic mask with IoU >= ``iou_threshold``."""
    from ..amg import MaskGenerator

    generator = MaskGenerator(model, **options)
    hits = total = 0
    for sample in samples:
        records = generator.generate(sample.image)
        found = np.stack([r["segmentation"] for r in records]).reshape(len(records), -1) if records else None
        for gt in sample.masks:
            total += 1
            if found is None:
                continue
            flat = gt.reshape(-1)
            inter = (found & flat).sum(1)
            union = (found | flat).sum(1)
            hits += int((inter / np.maximum(union, 1)).max() >= iou_threshold)
    return hits / max(total, 1)


#: Held-out synthetic seeds start here, far from the training streams' seeds.
HELD_OUT_SEED = 10**6


def held_out_scenes(count: int, size: int) -> list[ImageSample]:
    """``count`` held-out synthetic scenes of ``size`` pixels as image samples."""
    from ..synthetic import make_scene

    scenes = [make_scene(HELD_OUT_SEED + i, size=size) for i in range(count)]
    return [ImageSample(s.image, s.masks) for s in scenes]


def held_out_clips(count: int, size: int, num_frames: int) -> list[VideoSample]:
    """``count`` held-out synthetic clips with two crossing objects as video samples."""
    from ..synthetic import make_clip

    clips = [make_clip(HELD_OUT_SEED + i, num_frames=num_frames, size=size, crossing=True) for i in range(count)]
    return [VideoSample(c.frames, c.masks) for c in clips]


def evaluate_held_out(
    model_name: str, scenes: int, clips: int, frames: int, amg_scenes: int, **amg_options: float
) -> dict[str, float]:
    """1-click and box mIoU, automatic-mask recall and tracking J&F of a model name or checkpoint
    path on held-out synthetic data (``amg_options``: MaskGenerator's), with the seconds it took."""
    import time

    from ..checkpoints import load_model

    model = load_model(model_name)
    size = model.image_size
    start = time.perf_counter()
    images = evaluate_images(model, held_out_scenes(scenes, size))
    figures = {"click_miou": images.click_miou, "box_miou": images.box_miou, "objects": images.objects}
    amg_samples = held_out_scenes(amg_scenes, size)
    figures["amg_recall"] = amg_recall(model, amg_samples, **amg_options) if amg_scenes else float("nan")
    figures["video_jf"] = evaluate_clips(model, held_out_clips(clips, size, frames)) if clips else float("nan")
    figures["seconds"] = time.perf_counter() - start
    return figures
