"""Training steps prepared ahead, in worker processes when asked: samples drawn, objects picked,
images resized and normalised, masks resized, all packed into a few tensors per step.

Every worker has its own streams, seeded from (run seed, stream kind, worker index): a run is
reproducible for a given seed and worker count (0 workers and 1 worker give the same steps), and
workers never repeat each other's samples. Synthetic training items are built from seeds with the
top bit set (>= 2**63), so they never meet the held-out seeds (``HELD_OUT_SEED + i``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..transforms import preprocess
from .data import ImageSample, VideoSample, endless

STREAM_KINDS = ("steps", "images", "videos")


def stream_seed(seed: int, kind: str, worker: int) -> int:
    """Seed of one worker's stream of ``kind`` ("steps", "images" or "videos"): a 64-bit hash."""
    if kind not in STREAM_KINDS:
        raise InvalidInputError(f"kind: expected one of {STREAM_KINDS}, got {kind!r}")
    state = np.random.SeedSequence([seed, STREAM_KINDS.index(kind), worker]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


@dataclass
class ImageBatch:
    """One image step: (B, 3, S, S) normalised pixels, (K, S, S) bool targets, (K,) image index."""

    pixels: torch.Tensor
    masks: torch.Tensor
    owners: torch.Tensor

    def pin_memory(self) -> ImageBatch:
        """Page-locked copies, so the copy to the GPU can overlap compute."""
        return ImageBatch(self.pixels.pin_memory(), self.masks.pin_memory(), self.owners.pin_memory())

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> ImageBatch:
        """On ``device`` (non-blocking from pinned memory), pixels in ``dtype``."""
        return ImageBatch(
            self.pixels.to(device, dtype, non_blocking=True),
            self.masks.to(device, non_blocking=True),
            self.owners.to(device, non_blocking=True),
        )


@dataclass
class ClipBatch:
    """One video step: (C, T, 3, S, S) pixels, (T, K, S, S) bool targets, (K,) clip index."""

    pixels: torch.Tensor
    masks: torch.Tensor
    owners: torch.Tensor

    def pin_memory(self) -> ClipBatch:
        """Page-locked copies, so the copy to the GPU can overlap compute."""
        return ClipBatch(self.pixels.pin_memory(), self.masks.pin_memory(), self.owners.pin_memory())

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> ClipBatch:
        """On ``device`` (non-blocking from pinned memory), pixels in ``dtype``."""
        return ClipBatch(
            self.pixels.to(device, dtype, non_blocking=True),
            self.masks.to(device, non_blocking=True),
            self.owners.to(device, non_blocking=True),
        )


def resize_masks(masks: np.ndarray, size: int) -> torch.Tensor:
    """(..., H, W) bool masks -> (..., S, S) bool at the model's input resolution (nearest)."""
    t = torch.from_numpy(np.ascontiguousarray(masks, dtype=bool))
    if t.shape[-2:] == (size, size):
        return t
    lead = t.shape[:-2]
    flat = t.reshape(-1, 1, *t.shape[-2:]).float()
    return (F.interpolate(flat, size=(size, size), mode="nearest") > 0.5).reshape(*lead, size, size)


def _pixels(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    cpu = torch.device("cpu")
    return torch.cat([preprocess(img, size, cpu, torch.float32) for img in images])


def prepare_images(samples: Sequence[ImageSample], size: int, max_objects: int, rng: random.Random) -> ImageBatch:
    """The inputs of an image step: up to ``max_objects`` non-empty objects per image, in order."""
    picked, owners = [], []
    for i, sample in enumerate(samples):
        masks = resize_masks(sample.masks, size)
        present = [n for n in range(masks.shape[0]) if bool(masks[n].any())]
        rng.shuffle(present)
        keep = sorted(present[:max_objects])
        picked.append(masks[keep])
        owners += [i] * len(keep)
    if not owners:
        raise InvalidInputError("a training batch has no object with a non-empty mask")
    return ImageBatch(_pixels([s.image for s in samples], size), torch.cat(picked), torch.tensor(owners))


def prepare_clips(clips: Sequence[VideoSample], size: int, max_objects: int, rng: random.Random) -> ClipBatch:
    """The inputs of a video step: up to ``max_objects`` objects per clip visible in its frame 0."""
    lengths = {len(c.frames) for c in clips}
    if len(lengths) != 1:
        raise InvalidInputError(
            f"clips of one step need the same frame count, got {sorted(lengths)}; "
            "use clips_per_step=1 for clips of different lengths"
        )
    picked, owners = [], []
    for i, clip in enumerate(clips):
        masks = resize_masks(clip.masks, size)  # (T, N, S, S)
        visible = [n for n in range(masks.shape[1]) if bool(masks[0, n].any())]
        rng.shuffle(visible)
        keep = sorted(visible[:max_objects])
        if not keep:
            raise InvalidInputError("a training clip has no object visible in its first frame")
        picked.append(masks[:, keep])
        owners += [i] * len(keep)
    pixels = torch.stack([_pixels(list(c.frames), size) for c in clips])
    return ClipBatch(pixels, torch.cat(picked, dim=1), torch.tensor(owners))


class StepStream(torch.utils.data.IterableDataset):
    """Endless prepared training steps (:class:`ImageBatch` or :class:`ClipBatch`).

    ``images`` / ``videos`` are datasets (``len`` + indexing; each worker takes its share of the
    indices, shuffled each epoch) or generator functions of a seed (each worker its own seed).
    """

    def __init__(
        self,
        images: Iterable[ImageSample] | Callable[[int], Iterator[ImageSample]] | None,
        videos: Iterable[VideoSample] | Callable[[int], Iterator[VideoSample]] | None,
        *,
        size: int,
        batch_size: int,
        clips_per_step: int,
        max_objects: int,
        video_fraction: float,
        seed: int,
    ) -> None:
        super().__init__()
        self.images, self.videos = images, videos
        self.size, self.batch_size, self.clips_per_step = size, batch_size, clips_per_step
        self.max_objects, self.video_fraction, self.seed = max_objects, video_fraction, seed

    def worker_streams(self, worker: int, workers: int) -> Iterator[ImageBatch | ClipBatch]:
        """The steps that worker ``worker`` of ``workers`` prepares."""
        rng = random.Random(stream_seed(self.seed, "steps", worker))
        shard = (worker, workers)
        images = (
            endless(self.images, stream_seed(self.seed, "images", worker), shard) if self.images is not None else None
        )
        videos = (
            endless(self.videos, stream_seed(self.seed, "videos", worker), shard) if self.videos is not None else None
        )
        while True:
            if videos is not None and (images is None or rng.random() < self.video_fraction):
                clips = [next(videos) for _ in range(self.clips_per_step)]
                yield prepare_clips(clips, self.size, self.max_objects, rng)
            else:
                samples = [next(images) for _ in range(self.batch_size)]  # type: ignore[arg-type]  # images is set whenever videos is None
                yield prepare_images(samples, self.size, self.max_objects, rng)

    def __iter__(self) -> Iterator[ImageBatch | ClipBatch]:
        info = torch.utils.data.get_worker_info()
        return self.worker_streams(info.id, info.num_workers) if info is not None else self.worker_streams(0, 1)


def step_loader(stream: StepStream, workers: int, pin_memory: bool, prefetch: int = 4) -> torch.utils.data.DataLoader:
    """A loader of prepared steps: ``workers`` processes (0: in this process), steps in order."""
    if workers < 0:
        raise InvalidInputError(f"workers: expected an int >= 0, got {workers!r}")
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch if workers else None,
        persistent_workers=False,
    )
