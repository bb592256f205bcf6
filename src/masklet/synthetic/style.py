"""Colours, textures and per-item styles (grayscale, multicolour) of synthetic objects."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from .base import _STYLE_STREAM, _TWO_PI, MULTICOLOR_TEXTURE_KINDS, TEXTURE_KINDS, Field, FloatArray


def _random_color(rng: np.random.Generator, gray: bool = False) -> np.ndarray:
    """A random colour (3,) float32 in [0, 255] drawn in HSV (some greys, varied brightness);
    ``gray``: the same draws with no saturation, a grey of that brightness."""
    hue = rng.random() * 6.0
    sat = rng.uniform(0.0, 0.15) if rng.random() < 0.15 else rng.uniform(0.35, 1.0)
    val = rng.uniform(0.15, 1.0)
    if gray:
        sat = 0.0
    i, f = int(hue) % 6, hue - int(hue)
    p, q, t = val * (1 - sat), val * (1 - sat * f), val * (1 - sat * (1 - f))
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255.0


def _distinct_color(rng: np.random.Generator, avoid: Sequence[np.ndarray], gray: bool = False) -> np.ndarray:
    """A random colour at least ~60 RGB units away from every colour in ``avoid`` (best effort)."""
    best, best_dist = _random_color(rng, gray), -1.0
    for _ in range(12):
        color = _random_color(rng, gray)
        dist = min((float(np.linalg.norm(color - a)) for a in avoid), default=math.inf)
        if dist >= 60.0:
            return color
        if dist > best_dist:
            best, best_dist = color, dist
    return best


def _second_color(rng: np.random.Generator, c1: np.ndarray, gray: bool = False) -> np.ndarray:
    """The other colour of a two-colour texture: a darker / lighter shade or another hue."""
    roll = rng.random()
    if roll < 0.35:
        return c1 * rng.uniform(0.3, 0.65)
    if roll < 0.6:
        return c1 + (255.0 - c1) * rng.uniform(0.35, 0.7)
    return _random_color(rng, gray)


def _wave_field(rng: np.random.Generator, scale: float, waves: int = 3) -> Field:
    """Smooth random field in [0, 1]: a sum of plane waves with periods ~0.4..1.5 x ``scale``."""
    ang = rng.uniform(0.0, _TWO_PI, waves)
    freq = _TWO_PI / (scale * rng.uniform(0.4, 1.5, waves))
    fx = (freq * np.cos(ang)).astype(np.float32)
    fy = (freq * np.sin(ang)).astype(np.float32)
    phase = rng.uniform(0.0, _TWO_PI, waves).astype(np.float32)
    gain = float(rng.uniform(0.8, 2.0)) / math.sqrt(waves)

    def field(u: FloatArray, v: FloatArray) -> FloatArray:
        acc = np.sin(u * fx[0] + v * fy[0] + phase[0])
        for k in range(1, waves):
            acc += np.sin(u * fx[k] + v * fy[k] + phase[k])
        return 0.5 + 0.5 * np.tanh(acc * gain)

    return field


def _pattern_field(rng: np.random.Generator, kind: str, extent: float, period: float) -> Field:
    """A [0, 1] field: gradient across ``extent``, stripes / checker of ``period``, or noise."""
    ang = rng.uniform(0.0, _TWO_PI)
    ca, sa = math.cos(ang), math.sin(ang)
    if kind == "gradient":
        return lambda u, v: np.clip((u * ca + v * sa) / extent + 0.5, 0.0, 1.0)
    if kind == "stripes":
        sharp, phase = rng.uniform(0.6, 3.0), rng.uniform(0.0, _TWO_PI)
        k = _TWO_PI / period
        return lambda u, v: np.clip(0.5 + sharp * np.sin((u * ca + v * sa) * k + phase), 0.0, 1.0)
    if kind == "checker":
        ox, oy = rng.uniform(0.0, period, 2)
        return lambda u, v: (
            (np.floor((u * ca + v * sa) / period + ox) + np.floor((v * ca - u * sa) / period + oy)) % 2.0
        )
    return _wave_field(rng, extent)


@dataclass(frozen=True)
class _Texture:
    """Colouring of a shape: ``c1 + field(u, v) * (c2 - c1)`` in the shape's own coordinates."""

    kind: str
    c1: np.ndarray
    c2: np.ndarray
    field: Field | None
    paint: Callable[[FloatArray, FloatArray], np.ndarray] | None = None  # multi-colour: (h, w, 3)

    def colors(self, u: FloatArray, v: FloatArray) -> np.ndarray:
        """(h, w, 3) colours at local coordinates, or (3,) for a flat texture."""
        if self.paint is not None:
            return self.paint(u, v)
        if self.field is None:
            return self.c1
        t = self.field(u, v).astype(np.float32, copy=False)
        return self.c1 + t[..., None] * (self.c2 - self.c1)


def _random_texture(rng: np.random.Generator, radius: float, c1: np.ndarray, gray: bool = False) -> _Texture:
    """A random texture for a shape of bounding ``radius`` (px) with base colour ``c1``."""
    kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    if kind == "flat":
        return _Texture(kind, c1, c1, None)
    c2 = np.clip(_second_color(rng, c1, gray), 0.0, 255.0).astype(np.float32)
    period = rng.uniform(max(4.0, 0.15 * radius), max(7.0, 0.8 * radius))
    return _Texture(kind, c1, c2, _pattern_field(rng, kind, 2.0 * radius, period))


def _multicolor_texture(rng: np.random.Generator, radius: float, c1: np.ndarray, gray: bool = False) -> _Texture:
    """3 to 5 mutually distinct colours (``c1`` first) in one shape: Voronoi patches or bands.

    Hard colour borders inside one object: what a model must learn not to split along.
    """
    kind = MULTICOLOR_TEXTURE_KINDS[int(rng.integers(len(MULTICOLOR_TEXTURE_KINDS)))]
    count = int(rng.integers(3, 6))
    colors = [np.asarray(c1, np.float32)]
    for _ in range(count - 1):
        colors.append(_distinct_color(rng, colors, gray))
    palette = np.clip(np.stack(colors), 0.0, 255.0).astype(np.float32)
    if kind == "patches":
        cx = (rng.uniform(-0.7, 0.7, count) * radius).astype(np.float32)
        cy = (rng.uniform(-0.7, 0.7, count) * radius).astype(np.float32)

        def paint(u: FloatArray, v: FloatArray) -> np.ndarray:
            d = (u[..., None] - cx) ** 2 + (v[..., None] - cy) ** 2
            return palette[np.argmin(d, axis=-1)]
    else:
        ang = rng.uniform(0.0, _TWO_PI)
        ca, sa = np.float32(math.cos(ang)), np.float32(math.sin(ang))
        period = np.float32(rng.uniform(0.25, 0.6) * radius)
        phase = np.float32(rng.uniform(0.0, count))

        def paint(u: FloatArray, v: FloatArray) -> np.ndarray:
            band = np.floor((u * ca + v * sa) / period + phase).astype(np.int64) % count
            return palette[band]

    return _Texture(kind, palette[0], palette[1], None, paint)


@dataclass(frozen=True)
class _Style:
    """How a scene or clip is coloured: greys only, and the share of multi-coloured shapes.

    ``rng`` draws the multi-colour choices apart from the geometry's generator, so turning
    multi-colour shapes on changes their colours only, never where shapes are or their masks.
    """

    gray: bool = False
    multicolor_share: float = 0.0
    rng: np.random.Generator | None = None


_PLAIN = _Style()


def _style(seed: int, grayscale_share: float, multicolor_share: float) -> _Style:
    """The style of the scene or clip of ``seed``: deterministic, independent of its geometry."""
    for name, share in (("grayscale_share", grayscale_share), ("multicolor_share", multicolor_share)):
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise InvalidInputError(f"{name}: expected a share in [0, 1], got {share!r}")
    if grayscale_share == 0 and multicolor_share == 0:
        return _PLAIN
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STYLE_STREAM]))
    gray = bool(rng.random() < grayscale_share)
    return _Style(gray, float(multicolor_share), rng)
