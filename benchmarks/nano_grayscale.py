"""masklet-nano on colour scenes and their grayscale copies: 1-click mIoU and best predicted IoU.

Run: python benchmarks/nano_grayscale.py   (synthetic scenes 0-9 at 384x512; about a minute on CPU)
"""

from __future__ import annotations

import numpy as np

from masklet import ImagePredictor, load_model
from masklet.synthetic import make_scene
from masklet.train.evaluate import farthest_point


def main() -> None:
    """Print the colour and grayscale figures of the model card (docs/masklet-nano.md)."""
    predictor = ImagePredictor(load_model("masklet-nano"))
    results: dict[str, list[tuple[float, float]]] = {"colour": [], "grayscale": []}
    for seed in range(10):
        scene = make_scene(seed, size=(384, 512), num_shapes=(4, 6))
        luma = scene.image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        gray = np.repeat(luma[..., None], 3, -1).round().astype(np.uint8)
        for name, image in (("colour", scene.image), ("grayscale", gray)):
            predictor.set_image(image)
            for mask in scene.masks:
                x, y = farthest_point(mask)
                masks, scores, _ = predictor.predict(point_coords=[[x, y]], point_labels=[1])
                best = masks[scores.argmax()]
                iou = (best & mask).sum() / max((best | mask).sum(), 1)
                results[name].append((float(iou), float(scores.max())))
    for name, rows in results.items():
        values = np.array(rows)
        print(
            f"{name:9s} shapes {len(values)}  1-click mIoU {values[:, 0].mean():.3f}  "
            f"mean best score {values[:, 1].mean():.3f}"
        )


if __name__ == "__main__":
    main()
