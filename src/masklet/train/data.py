"""Training data: samples, COCO-style instance datasets, DAVIS-style video folders, generators."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InvalidInputError
from ..io import load_image
from ..masks import decode_rle


@dataclass
class ImageSample:
    """One image and its instance masks: (H, W, 3) uint8 and (N, H, W) bool."""

    image: np.ndarray
    masks: np.ndarray


@dataclass
class VideoSample:
    """A clip and its per-frame instance masks: (T, H, W, 3) uint8 and (T, N, H, W) bool."""

    frames: np.ndarray
    masks: np.ndarray


class CocoInstances:
    """A COCO-style instance dataset (``annotations.json`` + image folder); RLE or polygon masks.

    Crowd annotations are skipped; images without instances are skipped.
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path) -> None:
        try:
            data = json.loads(Path(annotation_file).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InvalidInputError(f"cannot read COCO annotations {annotation_file}: {err}") from None
        if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
            raise InvalidInputError(f"{annotation_file} is not a COCO instance file (needs 'images' and 'annotations')")
        self.image_dir = Path(image_dir)
        by_image: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            if not ann.get("iscrowd", 0):
                by_image.setdefault(ann["image_id"], []).append(ann)
        self.images = [img for img in data["images"] if img["id"] in by_image]
        self.annotations = by_image

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> ImageSample:
        info = self.images[index]
        image = load_image(self.image_dir / info["file_name"])
        h, w = image.shape[:2]
        masks = np.stack([_annotation_mask(a, h, w) for a in self.annotations[info["id"]]])
        return ImageSample(image=image, masks=masks)


def _annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    seg = ann["segmentation"]
    if isinstance(seg, dict):  # RLE (compressed or not)
        return decode_rle(seg)[0].numpy()
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in seg:
        draw.polygon([tuple(p) for p in np.asarray(polygon).reshape(-1, 2)], fill=1)
    return np.asarray(canvas, dtype=bool)


class DavisFolders:
    """DAVIS-style video folders: ``JPEGImages/<clip>/*.jpg`` and indexed ``Annotations/<clip>/*.png``.

    Object ids are the palette indices (0 is background); every clip yields the objects seen in
    any of its annotated frames.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        frames_dir = self.root / "JPEGImages"
        if not frames_dir.is_dir() or not (self.root / "Annotations").is_dir():
            raise InvalidInputError(f"{root} is not a DAVIS-style folder (needs JPEGImages/ and Annotations/)")
        self.clips = sorted(p.name for p in frames_dir.iterdir() if p.is_dir())

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> VideoSample:
        name = self.clips[index]
        frame_files = sorted((self.root / "JPEGImages" / name).iterdir())
        frames = np.stack([load_image(f) for f in frame_files])
        labels = np.stack([
            np.asarray(Image.open(self.root / "Annotations" / name / (f.stem + ".png")))
            for f in frame_files
        ])
        ids = [i for i in np.unique(labels) if i != 0]
        masks = np.stack([labels == i for i in ids], axis=1)  # (T, N, H, W)
        return VideoSample(frames=frames, masks=masks)


def endless(source: Iterable | Callable[[int], Iterator], seed: int = 0) -> Iterator:
    """Samples forever: a generator function of a seed, or a dataset shuffled each epoch."""
    if callable(source) and not hasattr(source, "__getitem__"):
        yield from source(seed)
        return
    rng = random.Random(seed)
    order = list(range(len(source)))  # type: ignore[arg-type]
    if not order:
        raise InvalidInputError("the training dataset is empty")
    while True:
        rng.shuffle(order)
        for i in order:
            yield source[i]  # type: ignore[index]


def synthetic_images(seed: int, size: int = 256) -> Iterator[ImageSample]:
    """Endless synthetic scenes (see :mod:`masklet.synthetic`)."""
    from ..synthetic import scene_stream

    for scene in scene_stream(seed, size=size):
        yield ImageSample(image=scene.image, masks=scene.masks)


def synthetic_clips(
    seed: int, size: int = 256, num_frames: int = 4, crossing_share: float = 0.0
) -> Iterator[VideoSample]:
    """Endless synthetic clips (see :mod:`masklet.synthetic`); a ``crossing_share`` of them show
    exactly two objects that cross, the case where trackers swap or merge identities."""
    from ..synthetic import clip_stream

    if not 0.0 <= crossing_share <= 1.0:
        raise InvalidInputError(f"crossing_share: expected a share in [0, 1], got {crossing_share!r}")
    free = clip_stream(seed, size=size, num_frames=num_frames)
    crossing = clip_stream(seed, size=size, num_frames=num_frames, crossing=True) if crossing_share else None
    choose = random.Random(seed)
    while True:
        clip = next(crossing) if crossing is not None and choose.random() < crossing_share else next(free)
        yield VideoSample(frames=clip.frames, masks=clip.masks)
