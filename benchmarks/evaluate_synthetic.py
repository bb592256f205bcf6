"""Held-out synthetic evaluation of a model (masklet-nano by default).

Prints 1-click mIoU, box mIoU, automatic-mask recall of the shapes at IoU 0.75, and tracking J&F
on clips with two crossing objects. Held-out seeds start at 10**6, far from the training streams.

    python benchmarks/evaluate_synthetic.py [--model masklet-nano] [--scenes 100] [--clips 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from masklet import load_model
from masklet.synthetic import make_clip, make_scene
from masklet.train.data import ImageSample, VideoSample
from masklet.train.evaluate import amg_recall, evaluate_clips, evaluate_images

HELD_OUT_SEED = 10**6


def held_out_scenes(count: int, size: int) -> list[ImageSample]:
    scenes = [make_scene(HELD_OUT_SEED + i, size=size) for i in range(count)]
    return [ImageSample(s.image, s.masks) for s in scenes]


def held_out_clips(count: int, size: int, num_frames: int) -> list[VideoSample]:
    clips = [make_clip(HELD_OUT_SEED + i, num_frames=num_frames, size=size, crossing=True) for i in range(count)]
    return [VideoSample(c.frames, c.masks) for c in clips]


def evaluate(
    model_name: str, scenes: int, clips: int, frames: int, amg_scenes: int, **amg_options: float
) -> dict[str, float]:
    """All four figures for a model name or checkpoint path (``amg_options``: MaskGenerator's)."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="masklet-nano")
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--amg-scenes", type=int, default=20)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.8, help="automatic masks' IoU filter")
    parser.add_argument("--stability-score-thresh", type=float, default=0.95, help="automatic masks' stability filter")
    args = parser.parse_args()
    f = evaluate(args.model, args.scenes, args.clips, args.frames, args.amg_scenes,
                 pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh)
    print(f"model {args.model}: {args.scenes} scenes ({f['objects']} objects), {args.amg_scenes} scenes for "
          f"automatic masks, {args.clips} crossing clips of {args.frames} frames")
    print(f"  1-click mIoU      {f['click_miou']:.3f}   (target >= 0.85)")
    print(f"  box mIoU          {f['box_miou']:.3f}   (target >= 0.90)")
    print(f"  AMG recall@0.75   {f['amg_recall']:.3f}   (target >= 0.80; filters {args.pred_iou_thresh} / "
          f"{args.stability_score_thresh})")
    print(f"  video J&F         {f['video_jf']:.3f}   (target >= 0.80)")
    print(f"  ({f['seconds']:.0f} s)")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
