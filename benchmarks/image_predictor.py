"""Time set_image and a one-point predict: official SAM2ImagePredictor vs masklet, same run.

Same seeded random weights (full tiny config, 1024 px), same image. Prints medians, the ratios
official / masklet (> 1 means masklet is faster), and the mask IoU of masklet bfloat16 against
masklet float32.

    python benchmarks/image_predictor.py [--variant sam2.1-hiera-tiny] [--repeats 5] [--compiled]

``--compiled`` adds masklet float32 with ``load_model(compile=True)`` and prints its cold start
(artefacts under ``$MASKLET_COMPILE_CACHE``, a second run loads them).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch

import masklet  # noqa: E402
import oracles  # noqa: E402,F401  (tests/reference as the package `reference`)
from reference.official import (  # noqa: E402
    build_official_model,
    official_image_predictor,
    official_model_dict,
    save_official_checkpoint,
)
from timing import interleaved  # noqa: E402


def test_image(height: int = 900, width: int = 1200, seed: int = 0) -> np.ndarray:
    """A smooth synthetic RGB image (blobs on a gradient), so masks are not pure noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx / width, yy / height, 0.5 + 0.0 * xx], -1)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(40, 200)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return (img * 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="sam2.1-hiera-tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compiled", action="store_true")
    args = parser.parse_args()

    image = test_image()
    point = dict(point_coords=np.array([[600.0, 450.0]]), point_labels=np.array([1]))
    official_model = build_official_model(official_model_dict(args.variant), seed=0)
    official = official_image_predictor(official_model)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.pt")
        save_official_checkpoint(official_model, ckpt)
        fp32 = masklet.ImagePredictor(masklet.load_model(ckpt, dtype=torch.float32))
        bf16 = masklet.ImagePredictor(masklet.load_model(ckpt, dtype=torch.bfloat16))
        predictors = {"official fp32": official, "masklet fp32": fp32, "masklet bf16": bf16}
        if args.compiled:
            from masklet.compiled import compile_model

            model = masklet.load_model(ckpt)
            report = compile_model(model)
            print(f"compiled encoder: cold start {report.seconds:.1f} s, artefacts loaded: {report.loaded}")
            predictors["masklet fp32 compiled"] = masklet.ImagePredictor(model)

    print(
        f"{args.variant}, image {image.shape[1]}x{image.shape[0]}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} interleaved runs"
    )
    with torch.inference_mode():
        set_times = interleaved({k: (lambda p=p: p.set_image(image)) for k, p in predictors.items()}, args.repeats)
        pred_times = interleaved({k: (lambda p=p: p.predict(**point)) for k, p in predictors.items()}, args.repeats * 4)
    rows = {name: (set_times[name], pred_times[name]) for name in predictors}
    for name, (set_s, pred_s) in rows.items():
        print(f"  {name:14s} set_image {set_s * 1000:8.1f} ms   predict {pred_s * 1000:7.2f} ms")

    base_set, base_pred = rows["official fp32"]
    for name in list(predictors)[1:]:
        set_s, pred_s = rows[name]
        print(
            f"  speed-up {name:13s} vs official fp32: set_image {base_set / set_s:5.2f}x   "
            f"predict {base_pred / pred_s:5.2f}x   set_image+predict {(base_set + base_pred) / (set_s + pred_s):5.2f}x"
        )

    masks32, _, _ = fp32.predict(**point)
    masks16, _, _ = bf16.predict(**point)
    ious = [float((a & b).sum() / max((a | b).sum(), 1)) for a, b in zip(masks32, masks16)]
    official_masks, _, _ = official.predict(**point)
    same = [float((a == b).mean()) for a, b in zip(official_masks, masks32)]
    print(
        f"  mask IoU bf16 vs fp32 (3 masks): {', '.join(f'{v:.4f}' for v in ious)}; "
        f"mask areas fp32: {[int(m.sum()) for m in masks32]}"
    )
    print(f"  pixel agreement masklet fp32 vs official: {', '.join(f'{v:.6f}' for v in same)}")


if __name__ == "__main__":
    main()
