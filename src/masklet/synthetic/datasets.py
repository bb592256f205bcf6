"""Deterministic streams of scenes and clips, and the COCO- and DAVIS-style dataset writers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..formats import coco_document, save_davis_png
from .base import Clip, Scene, _check_count, _check_seed
from .clips import make_clip
from .scenes import make_scene


def _child_seed(seed: int, index: int) -> int:
    """The seed of item ``index`` of a stream started from ``seed``."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def _stream(make: Callable[..., Any], seed: int, kwargs: dict[str, Any]) -> Iterator[Any]:
    """Validate eagerly (the first item is built now), then yield items 0, 1, 2, ... forever."""
    seed = _check_seed(seed)
    first = make(_child_seed(seed, 0), **kwargs)

    def items() -> Iterator[Any]:
        yield first
        index = 1
        while True:
            yield make(_child_seed(seed, index), **kwargs)
            index += 1

    return items()


def scene_stream(seed: int, **kwargs: Any) -> Iterator[Scene]:
    """Endless deterministic scenes; item i is ``make_scene(child_seed(seed, i), **kwargs)``."""
    return _stream(make_scene, seed, kwargs)


def clip_stream(seed: int, **kwargs: Any) -> Iterator[Clip]:
    """Endless deterministic clips; item i is ``make_clip(child_seed(seed, i), **kwargs)``."""
    return _stream(make_clip, seed, kwargs)


def save_scene_dataset(root: str | os.PathLike, count: int, seed: int, size: int | tuple[int, int] = 256) -> Path:
    """Write ``count`` scenes COCO-style: ``root/images/*.png`` and ``root/annotations.json``."""
    from PIL import Image

    from masklet.masks import encode_rle, rle_to_bbox

    count = _check_count(count, "count")
    stream = scene_stream(seed, size=size)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(count):
        scene = next(stream)
        name = f"{index:06d}.png"
        Image.fromarray(scene.image).save(root / "images" / name)
        h, w = scene.image.shape[:2]
        images.append({"id": index + 1, "file_name": name, "height": h, "width": w, "seed": scene.seed})
        for mask, rle, kind in zip(scene.masks, encode_rle(scene.masks), scene.kinds):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": int(np.count_nonzero(mask)),
                    "bbox": rle_to_bbox(rle),
                    "iscrowd": 0,
                    "shape": kind,
                }
            )
    dataset = coco_document({"description": "masklet synthetic scenes", "seed": int(seed)}, images, annotations)
    (root / "annotations.json").write_text(json.dumps(dataset))
    return root


def save_clip_dataset(
    root: str | os.PathLike,
    count: int,
    seed: int,
    num_frames: int = 8,
    size: int | tuple[int, int] = 256,
) -> Path:
    """Write ``count`` clips DAVIS-style: ``JPEGImages/<clip>/`` and ``Annotations/<clip>/``."""
    from PIL import Image

    count = _check_count(count, "count")
    stream = clip_stream(seed, num_frames=num_frames, size=size)
    root = Path(root)
    for index in range(count):
        clip = next(stream)
        name = f"clip{index:05d}"
        frame_dir, mask_dir = root / "JPEGImages" / name, root / "Annotations" / name
        frame_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        t_count, _, h, w = clip.masks.shape
        for t in range(t_count):
            Image.fromarray(clip.frames[t]).save(frame_dir / f"{t:05d}.jpg", quality=95, subsampling=0)
            ids = np.zeros((h, w), dtype=np.uint8)
            for obj_id, mask in zip(clip.object_ids, clip.masks[t]):
                ids[mask] = obj_id
            save_davis_png(ids, mask_dir / f"{t:05d}.png")
    return root
