"""Segment by example with masklet.ExemplarPredictor: quality on generated scenes and time per query.

Quality: for each seed, masklet.synthetic.make_example_set draws N objects on two support scenes
(each prompted with its box) and 20 query scenes where each object is present with probability
0.8, moved, turned, scaled 0.75..1.3, with a distractor shape and often a shape partly over it.
Reports the mIoU over present objects, the presence accuracy (presence > 0.5 against "the
object is on the image"), raw and with masklet-nano's presence calibration
(masklet.exemplar.NANO_PRESENCE_CALIBRATION, fit on seeds 100-103, not the seeds measured here),
the calibrated presence quartiles for present and absent objects, and the presence AUC (how often
a present object's score is above an absent one's).

Time: per query (segment of one image: image encoder, memory attention over each object's two
memories, decoder), for 1, 4 and 8 objects, median over --repeats queries after one warm-up.

    python benchmarks/exemplar.py [--checkpoint masklet-nano] [--seeds 4] [--quality-objects 1 2 3]
        [--objects 1 4 8] [--threads 2] [--no-plain]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from masklet import ExemplarPredictor, load_model
from masklet.exemplar import NANO_PRESENCE_CALIBRATION
from masklet.synthetic import make_example_set


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def prompted(model, scenes, **options) -> ExemplarPredictor:
    """A predictor holding every object of the support scenes, prompted by its box."""
    predictor = ExemplarPredictor(model, **options)
    for k in range(scenes.num_support):
        for n in range(scenes.masks.shape[1]):
            predictor.add_example(scenes.images[k], n + 1, box=_box(scenes.masks[k, n]))
    return predictor


def quality(model, num_objects: int, seeds: int, **options) -> dict[str, float | list[float] | int]:
    ious, present, logits = [], [], []
    for seed in range(seeds):
        scenes = make_example_set(seed, num_objects=num_objects, num_support=2, num_query=20, size=256)
        predictor = prompted(model, scenes, **options)
        for k in range(scenes.num_support, len(scenes.images)):
            result = predictor.segment(scenes.images[k])
            for n in range(num_objects):
                truth = scenes.masks[k, n]
                present.append(bool(truth.any()))
                logits.append(float(result.object_score_logits[n]))
                if truth.any():
                    found = result.masks[n].numpy()
                    ious.append((found & truth).sum() / (found | truth).sum())
    x, y = np.array(logits), np.array(present)
    scale, bias = NANO_PRESENCE_CALIBRATION
    raw, calibrated = 1 / (1 + np.exp(-x)), 1 / (1 + np.exp(-(scale * x + bias)))
    auc = float(np.mean(x[y][:, None] > x[~y][None, :])) if y.any() and (~y).any() else float("nan")
    quartiles = [25, 50, 75]
    return {
        "miou": float(np.mean(ious)), "accuracy": float(np.mean((raw > 0.5) == y)),
        "calibrated_accuracy": float(np.mean((calibrated > 0.5) == y)), "auc": auc, "count": len(y),
        "present": np.percentile(calibrated[y], quartiles).round(2).tolist() if y.any() else [],
        "absent": np.percentile(calibrated[~y], quartiles).round(2).tolist() if (~y).any() else [],
    }


def query_time(model, num_objects: int, repeats: int) -> float:
    scenes = make_example_set(100 + num_objects, num_objects=num_objects, num_support=2, num_query=repeats + 1, size=384)
    predictor = prompted(model, scenes)
    times = []
    for k in range(scenes.num_support, len(scenes.images)):
        start = time.perf_counter()
        predictor.segment(scenes.images[k])
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="masklet-nano")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--quality-objects", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-plain", action="store_true", help="skip the run with Ultralytics' semantics")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    print(f"{args.checkpoint}, {args.threads} threads, {args.seeds} seeds x 20 queries")
    for n in args.quality_objects:
        q = quality(model, n, args.seeds)
        print(f"  {n} object(s): mIoU {q['miou']:.3f}, presence accuracy {q['accuracy']:.3f} raw / "
              f"{q['calibrated_accuracy']:.3f} calibrated, presence AUC {q['auc']:.3f} ({q['count']} object-queries); "
              f"calibrated presence quartiles: present {q['present']}, absent {q['absent']}")
        if not args.no_plain:
            plain = quality(model, n, args.seeds, object_pointers=False, multimask_queries=False)
            print(f"    Ultralytics' semantics (no pointers, single mask): mIoU {plain['miou']:.3f}")
    with torch.inference_mode():
        for n in args.objects:
            print(f"  per query, {n} object(s): {1000 * query_time(model, n, args.repeats):.1f} ms")


if __name__ == "__main__":
    main()
