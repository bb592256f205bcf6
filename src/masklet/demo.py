"""The offline demo: segment a generated scene, run automatic masks, track two objects in a clip.

Runs with the packaged masklet-nano and no network; any other model name or path works too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoints import load_model, recommended_amg_options
from .image import ImagePredictor
from .io import overlay_masks, save_image
from .synthetic import make_clip, make_scene
from .train.evaluate import farthest_point
from .video import OverlayVideoWriter, VideoPredictor
from .video.writers import object_colors


def _mark(image: np.ndarray, x: float, y: float, color=(255, 255, 255)) -> np.ndarray:
    """Draw a small cross at (x, y)."""
    out = image.copy()
    h, w = out.shape[:2]
    xi, yi = int(round(x)), int(round(y))
    for d in range(-4, 5):
        if 0 <= yi < h and 0 <= xi + d < w:
            out[yi, xi + d] = color
        if 0 <= yi + d < h and 0 <= xi < w:
            out[yi + d, xi] = color
    return out


def _box(image: np.ndarray, box: list[float], color=(255, 255, 255)) -> np.ndarray:
    """Draw a one-pixel rectangle."""
    out = image.copy()
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    out[y0, x0 : x1 + 1] = out[y1, x0 : x1 + 1] = color
    out[y0 : y1 + 1, x0] = out[y0 : y1 + 1, x1] = color
    return out


def run_demo(
    model_name: str = "masklet-nano",
    out_dir: str | Path = "masklet-demo",
    seed: int = 7,
    device: str = "cpu",
    **load_options: Any,
) -> tuple[dict[str, Path], int]:
    """Write the demo pictures and video into ``out_dir``; returns the files by name and the
    number of automatic masks. ``load_options`` (``dtype``, ``config``) go to :func:`load_model`."""
    out = Path(out_dir)
    model = load_model(
        model_name, device=device, **load_options
    )  # before creating the folder: a failed load leaves none
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _write_demo(model, model_name, out, seed)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _write_demo(model, model_name: str, out: Path, seed: int) -> tuple[dict[str, Path], int]:
    """The demo's pictures and video, written into an existing folder ``out``."""
    from .amg import MaskGenerator

    written: dict[str, Path] = {}

    scene = make_scene(seed, size=(384, 512), num_shapes=(4, 6))
    predictor = ImagePredictor(model)
    predictor.set_image(scene.image)
    order = np.argsort([-m.sum() for m in scene.masks])  # the two largest shapes
    x, y = farthest_point(scene.masks[order[0]])
    masks, scores, _ = predictor.predict(point_coords=[[x, y]], point_labels=[1])
    picture = _mark(overlay_masks(scene.image, masks[int(scores.argmax())][None]), x, y)
    written["click"] = out / "click.png"
    save_image(picture, written["click"])

    ys, xs = np.nonzero(scene.masks[order[1 % len(order)]])
    box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
    masks, _, _ = predictor.predict(box=box, multimask_output=False)
    written["box"] = out / "box.png"
    save_image(_box(overlay_masks(scene.image, masks), box), written["box"])

    # the model's recommended options (masklet-nano ships them beside its weights), as `masklet amg` uses
    filters: dict[str, Any] = dict(recommended_amg_options(model_name))
    records = MaskGenerator(model, **filters).generate(scene.image)
    automatic = (
        np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, *scene.image.shape[:2]), bool)
    )
    written["automatic"] = out / "automatic.png"
    save_image(overlay_masks(scene.image, automatic), written["automatic"])

    clip = make_clip(seed, num_frames=16, size=(384, 512), crossing=True)
    video = VideoPredictor(model)
    state = video.init_state(list(clip.frames))
    for obj_id, mask in enumerate(clip.masks[0], start=1):
        x, y = farthest_point(mask)
        video.add_new_points_or_box(state, 0, obj_id, points=[[x, y]], labels=[1])
    written["first_frame"] = out / "tracking_frame0.png"
    written["video"] = out / "tracking.mp4"
    with OverlayVideoWriter(written["video"], fps=6) as writer:
        for frame_idx, obj_ids, logits in video.propagate_in_video(state):
            writer.write(frame_idx, obj_ids, logits, clip.frames[frame_idx])
            if frame_idx == 0:
                first = overlay_masks(clip.frames[0], (logits[:, 0] > 0).cpu().numpy(), colors=object_colors(obj_ids))
                save_image(first, written["first_frame"])
    return written, len(records)
