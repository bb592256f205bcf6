"""Held-out synthetic evaluation of a model (masklet-nano by default).

Prints 1-click mIoU, box mIoU, automatic-mask recall of the shapes at IoU 0.75, and tracking J&F
on clips with two crossing objects. Held-out seeds start at 10**6, far from the training streams.

    python benchmarks/evaluate_synthetic.py [--model masklet-nano] [--scenes 100] [--clips 20]
"""

from __future__ import annotations

import argparse

import numpy as np

from masklet.train.evaluate import evaluate_held_out

evaluate = evaluate_held_out  # the figures, computed in masklet.train.evaluate


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
    f = evaluate(
        args.model,
        args.scenes,
        args.clips,
        args.frames,
        args.amg_scenes,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
    )
    print(
        f"model {args.model}: {args.scenes} scenes ({f['objects']} objects), {args.amg_scenes} scenes for "
        f"automatic masks, {args.clips} crossing clips of {args.frames} frames"
    )
    print(f"  1-click mIoU      {f['click_miou']:.3f}   (target >= 0.85)")
    print(f"  box mIoU          {f['box_miou']:.3f}   (target >= 0.90)")
    print(
        f"  AMG recall@0.75   {f['amg_recall']:.3f}   (target >= 0.80; filters {args.pred_iou_thresh} / "
        f"{args.stability_score_thresh})"
    )
    print(f"  video J&F         {f['video_jf']:.3f}   (target >= 0.80)")
    print(f"  ({f['seconds']:.0f} s)")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
