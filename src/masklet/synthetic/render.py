"""Backgrounds and camera effects (noise, specks, blur, exposure) of a synthetic image."""

from __future__ import annotations

import math

import numpy as np

from .base import BACKGROUND_KINDS
from .style import _pattern_field, _random_color


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise (h, w) in [0, 1]: a coarse random grid, smoothstep-interpolated."""
    gy = max(1, round(cells * h / max(h, w)))
    gx = max(1, round(cells * w / max(h, w)))
    grid = rng.random((gy + 1, gx + 1), dtype=np.float32)
    fy = np.arange(h, dtype=np.float32) * np.float32(gy / h)
    fx = np.arange(w, dtype=np.float32) * np.float32(gx / w)
    iy, ix = fy.astype(np.int64), fx.astype(np.int64)
    ty, tx = fy - iy, fx - ix
    ty, tx = (ty * ty * (3 - 2 * ty))[:, None], (tx * tx * (3 - 2 * tx))[None, :]
    top = grid[iy][:, ix] * (1 - tx) + grid[iy][:, ix + 1] * tx
    bottom = grid[iy + 1][:, ix] * (1 - tx) + grid[iy + 1][:, ix + 1] * tx
    out = top * (1 - ty) + bottom * ty
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) * np.float32(1.0 / max(hi - lo, 1e-6))


def _specks(rng: np.random.Generator, image: np.ndarray, density: float, gray: bool = False) -> None:
    """Scatter tiny random-coloured dots (radius <= 2.5 px) over ``image`` in place."""
    h, w, _ = image.shape
    count = int(density * h * w)
    if count == 0:
        return
    cy, cx = rng.integers(0, h, count), rng.integers(0, w, count)
    radius = rng.uniform(0.6, 2.5, count)
    colors = np.stack([_random_color(rng, gray) for _ in range(count)])
    off = np.arange(-2, 3)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    hit = (oy**2 + ox**2)[None] <= (radius**2)[:, None, None]  # (count, 5, 5)
    yy, xx = cy[:, None, None] + oy[None], cx[:, None, None] + ox[None]
    hit &= (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    which = np.broadcast_to(np.arange(count)[:, None, None], hit.shape)[hit]
    image[yy[hit], xx[hit]] = colors[which]


def _background(
    rng: np.random.Generator, h: int, w: int, gray: bool = False
) -> tuple[np.ndarray, str, list[np.ndarray]]:
    """A random (h, w, 3) float32 background, its kind and its main colours."""
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    c1 = _random_color(rng, gray)
    c2 = c1 + (_random_color(rng, gray) - c1) * np.float32(rng.uniform(0.3, 1.0))
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    base = kind
    if kind == "clutter":  # a calm base under many specks
        base = ("flat", "gradient", "noise")[int(rng.integers(3))]
        c2 = c1 + (c2 - c1) * np.float32(0.5)
    colors = [c1, c2]
    if base == "flat":
        image = np.empty((h, w, 3), dtype=np.float32)
        image[:] = c1
    else:
        if base == "noise":
            t = _smooth_noise(rng, h, w, int(rng.integers(2, 8)))
        elif base == "gradient":
            t = _pattern_field(rng, "gradient", float(math.hypot(h, w)), 1.0)(xs - w / 2, ys - h / 2)
        else:
            period = rng.uniform(6.0, 48.0) if base == "stripes" else rng.uniform(8.0, 56.0)
            t = _pattern_field(rng, base, 1.0, period)(xs, ys)
        image = c1 + np.broadcast_to(t, (h, w))[..., None] * (c2 - c1)
        if base == "noise" and rng.random() < 0.5:  # a third colour in another noise field
            c3 = _random_color(rng, gray)
            colors.append(c3)
            t3 = _smooth_noise(rng, h, w, int(rng.integers(2, 6)))[..., None]
            image += (t3 * t3) * (c3 - image)
    if kind == "clutter":
        _specks(rng, image, rng.uniform(0.0015, 0.004), gray)
    elif rng.random() < 0.2:
        _specks(rng, image, rng.uniform(0.0002, 0.001), gray)
    return image.astype(np.float32, copy=False), kind, colors


def _blur(image: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur of an (H, W, 3) float image (edges replicated)."""
    p = np.concatenate([image[:1], image, image[-1:]], axis=0)
    image = (p[:-2] + 2 * p[1:-1] + p[2:]) * np.float32(0.25)
    p = np.concatenate([image[:, :1], image, image[:, -1:]], axis=1)
    return (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) * np.float32(0.25)


def _finish(rng: np.random.Generator, image: np.ndarray, noise: float, blur: bool, gray: bool = False) -> np.ndarray:
    """Optional blur, uniform per-pixel noise of std ``noise``, rounding to uint8 (``gray``: the
    channels averaged, so the noise is grey too)."""
    if blur:
        image = _blur(image)
    if noise > 0:
        jitter = rng.random(image.shape, dtype=np.float32)
        jitter -= np.float32(0.5)
        jitter *= np.float32(noise * math.sqrt(12.0))
        image = image + jitter
    if gray:
        image = np.repeat(image.mean(axis=2, keepdims=True, dtype=np.float32), 3, axis=2)
    image += np.float32(0.5)
    return np.clip(image, 0.0, 255.0, out=image).astype(np.uint8)


def _camera(rng: np.random.Generator) -> tuple[float, bool]:
    """Per-image (or per-clip) noise std and whether to blur."""
    return float(rng.uniform(0.0, 6.0)), bool(rng.random() < 0.3)
