"""Position encodings: 2D sine (feature maps), random Fourier (prompts), axial rotary (memory)."""

from __future__ import annotations

import math

import torch
from torch import nn


def _sine_frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    idx = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F) with sin of even and cos of odd frequencies, interleaved."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """Normalised 2D sine encoding of a feature map grid, as in DETR; y half first, then x."""

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        self.half_feats = num_pos_feats // 2
        self.temperature = temperature
        self.scale = 2 * math.pi
        self._cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def grid(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(C, H, W) encoding of an H x W grid (cached per size and device)."""
        key = (height, width, device)
        if key not in self._cache:
            eps = 1e-6
            y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
            x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
            y = y / (height + eps) * self.scale
            x = x / (width + eps) * self.scale
            freqs = _sine_frequencies(self.half_feats, self.temperature, device)
            pos_y = _interleave_sin_cos(y[:, None] / freqs)  # (H, F)
            pos_x = _interleave_sin_cos(x[:, None] / freqs)  # (W, F)
            pos = torch.cat(
                (pos_y[:, None, :].expand(height, width, -1), pos_x[None, :, :].expand(height, width, -1)),
                dim=-1,
            )
            self._cache[key] = pos.permute(2, 0, 1).contiguous()
        return self._cache[key]

    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encoding for a (B, C, H, W) feature map, as (B, num_pos_feats, H, W) float32.

        Eager under ``torch.compile``: traced, the cache lookup became a guard that failed on the
        first call after the warm-up, whose miss had filled the cache (one more graph to capture)."""
        pe = self.grid(x.shape[-2], x.shape[-1], x.device)
        return pe.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


def sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1D sine encoding (sin half, then cos half) of scalar positions: (...,) -> (..., dim)."""
    freqs = _sine_frequencies(dim // 2, temperature, positions.device)
    angles = positions.unsqueeze(-1) / freqs
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised (x, y) coordinates (the SAM prompt encoding)."""

    positional_encoding_gaussian_matrix: torch.Tensor  # (2, num_pos_feats) buffer

    def __init__(self, num_pos_feats: int = 64, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Coordinates in [0, 1], (..., 2) -> (..., 2 * num_pos_feats), computed in float32."""
        coords = (2 * coords.float() - 1) @ self.positional_encoding_gaussian_matrix.float()
        coords = 2 * math.pi * coords
        return torch.cat((coords.sin(), coords.cos()), dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense (C, H, W) encoding of the centres of an H x W grid."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid = torch.stack((xs[None, :].expand(h, w), ys[:, None].expand(h, w)), dim=-1)
        return self.encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode pixel coordinates (B, N, 2) of an image of size (H, W)."""
        size_xy = coords.new_tensor([image_size[1], image_size[0]])
        return self.encode((coords / size_xy).float())


def axial_rope_angles(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> torch.Tensor:
    """Complex rotations (end_x * end_y, dim // 2) for 2D axial RoPE over a row-major grid."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x, t_y = t % end_x, torch.div(t, end_x, rounding_mode="floor")
    angles = torch.cat((torch.outer(t_x, freqs), torch.outer(t_y, freqs)), dim=-1)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, rotations: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
    """Rotate the first ``num_tokens`` (default all) tokens of (B, heads, N, D) by complex
    ``rotations`` (n, D // 2), repeated along the tokens when there are several n-token grids
    (memories of several frames); other tokens pass unchanged. Returns a new tensor in x's dtype."""
    b, h, total, _ = x.shape
    n, num_tokens = rotations.shape[0], total if num_tokens is None else num_tokens
    _check_grids(num_tokens, n)
    xc = torch.view_as_complex(x[:, :, :num_tokens].float().reshape(b, h, num_tokens // n, n, -1, 2))
    rotated = torch.view_as_real(xc * rotations).reshape(b, h, num_tokens, -1).type_as(x)
    return torch.cat((rotated, x[:, :, num_tokens:]), dim=2) if num_tokens < total else rotated


def apply_rope_(x: torch.Tensor, rotations: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
    """In-place :func:`apply_rope` for inference: one grid of one (batch, head) at a time, so the
    float32 intermediates stay in cache (three times faster on seven memory frames) and no
    copy of the untouched tokens is made. Returns x."""
    b, h, total, _ = x.shape
    n, num_tokens = rotations.shape[0], total if num_tokens is None else num_tokens
    _check_grids(num_tokens, n)
    for i in range(b):
        for j in range(h):
            for start in range(0, num_tokens, n):
                grid = x[i, j, start : start + n]
                grid.copy_(
                    torch.view_as_real(torch.view_as_complex(grid.float().reshape(n, -1, 2)) * rotations).flatten(1)
                )
    return x


def _check_grids(num_tokens: int, grid_tokens: int) -> None:
    if num_tokens % grid_tokens:
        raise ValueError(f"RoPE: {num_tokens} tokens are not a whole number of {grid_tokens}-token grids")
