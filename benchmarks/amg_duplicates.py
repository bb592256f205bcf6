"""Automatic masks of the demo scene on masklet-nano: counts with the official de-duplication
(box NMS) and with masklet's mask-IoU NMS (``MaskGenerator(mask_nms_thresh=...)``).

Run: python benchmarks/amg_duplicates.py   (the scene of `masklet demo`: seed 7, 384x512)
"""

from __future__ import annotations

from masklet import MaskGenerator, load_model
from masklet.mask_nms import mask_iou_nms
from masklet.synthetic import make_scene


def main() -> None:
    """Print the mask counts of the README's automatic-mask section."""
    model = load_model("masklet-nano")
    scene = make_scene(7, size=(384, 512), num_shapes=(4, 6))
    records = MaskGenerator(model, pred_iou_thresh=0.5, stability_score_thresh=0.7).generate(scene.image)
    print(f"official (box NMS 0.7): {len(records)} masks")
    for thresh in (0.95, 0.9, 0.8, 0.7):
        print(f"mask_nms_thresh={thresh}: {len(mask_iou_nms(records, thresh))} masks")


if __name__ == "__main__":
    main()
