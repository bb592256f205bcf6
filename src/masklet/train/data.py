"""Training data: samples, COCO-style instance datasets, DAVIS-style video folders, generators."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        labels = np.stack(
            [np.asarray(Image.open(self.root / "Annotations" / name / (f.stem + ".png"))) for f in frame_files]
        )
        ids = [i for i in np.unique(labels) if i != 0]
        masks = np.stack([labels == i for i in ids], axis=1)  # (T, N, H, W)
        return VideoSample(frames=frames, masks=masks)


HELD_OUT_SEED = 10**6  # held-out evaluation builds scenes and clips from HELD_OUT_SEED + i
TRAINING_SEED_BIT = 1 << 63  # set in every synthetic training seed: never a held-out seed

# The default generator mix of synthetic training data (see masklet.synthetic.make_scene): the
# packaged nano failed on grayscale scenes and split multi-coloured shapes.
GRAYSCALE_SHARE = 0.15
MULTICOLOR_SHARE = 0.25


def endless(source: Iterable | Callable[[int], Iterator], seed: int = 0, shard: tuple[int, int] = (0, 1)) -> Iterator:
    """Samples forever: a generator function of a seed, or a dataset shuffled each epoch.

    ``shard`` (index, count): a dataset yields only its items ``index, index + count, ...`` (the
    share of one of ``count`` workers); a generator function gets its seed and yields all.
    """
    if callable(source) and not hasattr(source, "__getitem__"):
        yield from source(seed)
        return
    rng = random.Random(seed)
    order = list(range(shard[0], len(source), shard[1]))  # type: ignore[arg-type]  # not callable here: a dataset
    if not order:
        raise InvalidInputError(f"the training dataset is empty (or has fewer items than the {shard[1]} workers)")
    while True:
        rng.shuffle(order)
        for i in order:
            yield source[i]  # type: ignore[index]  # a dataset (has __getitem__)


def training_seeds(seed: int) -> Iterator[int]:
    """The item seeds of a synthetic training stream: distinct 64-bit hashes of (seed, i), each
    with :data:`TRAINING_SEED_BIT` set, so no training item is ever a held-out one."""
    from ..synthetic.base import _check_seed
    from ..synthetic.datasets import _child_seed

    seed = _check_seed(seed)
    index = 0
    while True:
        yield _child_seed(seed, index) | TRAINING_SEED_BIT
        index += 1


def synthetic_images(
    seed: int, size: int = 256, grayscale_share: float = GRAYSCALE_SHARE, multicolor_share: float = MULTICOLOR_SHARE
) -> Iterator[ImageSample]:
    """Endless synthetic training scenes (see :func:`masklet.synthetic.make_scene`) in the
    default mix: ``grayscale_share`` of the scenes in greys, ``multicolor_share`` of the shapes
    multi-coloured."""
    from ..synthetic import make_scene

    for item in training_seeds(seed):
        scene = make_scene(item, size=size, grayscale_share=grayscale_share, multicolor_share=multicolor_share)
        yield ImageSample(image=scene.image, masks=scene.masks)


def synthetic_clips(
    seed: int,
    size: int = 256,
    num_frames: int = 4,
    crossing_share: float = 0.0,
    grayscale_share: float = GRAYSCALE_SHARE,
    multicolor_share: float = MULTICOLOR_SHARE,
) -> Iterator[VideoSample]:
    """Endless synthetic training clips (see :func:`masklet.synthetic.make_clip`); a
    ``crossing_share`` of them show exactly two objects that cross, the case where trackers swap
    or merge identities; grey and multi-coloured in the same mix as :func:`synthetic_images`."""
    from ..synthetic import make_clip

    if not 0.0 <= crossing_share <= 1.0:
        raise InvalidInputError(f"crossing_share: expected a share in [0, 1], got {crossing_share!r}")
    style: dict[str, Any] = {"grayscale_share": grayscale_share, "multicolor_share": multicolor_share}
    choose = random.Random(seed)
    for item in training_seeds(seed):
        crossing = bool(crossing_share) and choose.random() < crossing_share
        clip = make_clip(item, num_frames=num_frames, size=size, crossing=crossing, **style)
        yield VideoSample(frames=clip.frames, masks=clip.masks)
