"""Hiera: the hierarchical vision transformer trunk of SAM2 (windowed and global attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import softmax_attention
from .common import MLP, DropPath, add_map_rows_, map_rows
from .config import HieraConfig
from .gemm import Linear

#: q, k, v elements per chunk of :meth:`MultiScaleBlock._attend_in_window_rows` (4 MB in float32).
_WINDOW_ROWS_QKV_ELEMENTS = 1 << 20


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nW, window, window, C), zero-padding H and W up to the window."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`, cropping the padding away."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :] if (hp > h or wp > w) else x


def max_pool_grid(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """2D max pooling of a (B, H, W, C) grid with kernel = stride, in its own layout.

    The same values as ``nn.MaxPool2d(stride, stride)`` on the channels-first view (remainder rows and
    columns dropped, NaN kept): an element-wise maximum of strided views, so the strided q slice of
    the qkv projection is read in place instead of being copied to channels-first first (on CPU,
    1 thread, the first stage-2 block's queries: 32 -> 8 ms in bfloat16, 44 -> 9 ms in float32).
    """
    sh, sw = stride
    h, w = x.shape[1] // sh * sh, x.shape[2] // sw * sw
    out = x[:, 0:h:sh, 0:w:sw]
    for i in range(sh):
        for j in range(sw):
            if i or j:
                out = torch.maximum(out, x[:, i:h:sh, j:w:sw])
    return out


class PatchEmbed(nn.Module):
    """Strided convolution from pixels to tokens; output (B, H/4, W/4, C), contiguous.

    The convolution runs channels-last, so its output is already token-major and the additions and
    norms after it read contiguous tokens, not a permuted channels-first tensor. Same bits; on a
    2-core CPU 17.5 against 23.2 ms inside ``set_image`` and 29 against 58 ms for a batch of two.
    """

    def __init__(self, embed_dim: int, kernel_size: int = 7, stride: int = 4, padding: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention whose queries are optionally max-pooled (halving the token grid)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = Linear(dim, dim_out * 3)
        self.proj = Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # each (B, HW, heads, d)
        if self.q_stride is not None:
            q = max_pool_grid(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        x = softmax_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(x.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block; may change width and pool queries at a stage transition."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        q_stride: tuple[int, int] | None = None,
        window_size: int = 0,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride=q_stride)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        shortcut = x
        x = self.norm1(x)
        in_window_rows = self._attends_in_window_rows(x)
        if self.dim != self.dim_out:
            shortcut = self._projected_shortcut(x, in_window_rows)
        if in_window_rows:
            # inference on a big map: the residuals are added in place, into this block's own buffers
            x = self._attend_in_window_rows(x).add_(shortcut)
            return add_map_rows_(x, lambda r: self.mlp(self.norm2(r)))

        window = self.window_size
        if window > 0:
            hw = (int(x.shape[1]), int(x.shape[2]))
            x, padded_hw = window_partition(x, window)
        x = self.attn(x)
        if window > 0:
            if self.q_stride:
                # Queries were pooled inside each window: windows and grid shrink together.
                window = window // self.q_stride[0]
                hw = (int(shortcut.shape[1]), int(shortcut.shape[2]))
                padded_hw = (hw[0] + (-hw[0]) % window, hw[1] + (-hw[1]) % window)
            x = window_unpartition(x, window, padded_hw, hw)

        x = shortcut + self.drop_path(x)
        return x + self.drop_path(map_rows(lambda r: self.mlp(self.norm2(r)), x))

    def _projected_shortcut(self, x: torch.Tensor, in_bands: bool) -> torch.Tensor:
        """The widened (and q-pooled) shortcut of the normalised input; ``in_bands``: a band of rows
        at a time, so that the full-resolution projection is never whole (50 MB at stage 2)."""
        stride = self.q_stride or (1, 1)
        if not in_bands:
            full = self.proj(x)
            return full if self.q_stride is None else max_pool_grid(full, stride)
        b, h, w, _ = x.shape
        rows = max(stride[0], _WINDOW_ROWS_QKV_ELEMENTS // (b * w * self.dim_out) // stride[0] * stride[0])
        return torch.cat([max_pool_grid(self.proj(x[:, r : r + rows]), stride) for r in range(0, h, rows)], 1)

    def _attends_in_window_rows(self, x: torch.Tensor) -> bool:
        """Whether :meth:`_attend_in_window_rows` runs: CPU inference (no autograd, trace, compile or
        stochastic depth) on a contiguous map of whole windows whose q, k, v projection would exceed
        one chunk."""
        window = self.window_size
        if window == 0 or torch.is_grad_enabled() or x.device.type != "cpu" or not x.is_contiguous():
            return False
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return False
        if self.training and not isinstance(self.drop_path, nn.Identity):
            return False
        b, h, w, _ = x.shape
        if h % window or w % window:
            return False
        return b * h * w * 3 * self.dim_out > 2 * _WINDOW_ROWS_QKV_ELEMENTS

    def _attend_in_window_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Windowed attention of a normalised (B, H, W, C) map, a few rows of windows at a time,
        straight from and into the grid layout: no partitioned copies and no full q, k, v projection
        (at stage 1 of a 1024 px image it is 75 MB; allocations that size come fresh from the system,
        page by page, every time). The output overwrites ``x`` when it has x's shape: a chunk's
        results are written over it only once its attention is computed."""
        b, h, w, c = x.shape
        window = self.window_size
        out_window = window // self.q_stride[0] if self.q_stride else window
        nh, nw = h // window, w // window
        grid = x.view(b, nh, window, nw, window, c).permute(0, 1, 3, 2, 4, 5)
        same_shape = out_window == window and self.dim_out == c
        out = x if same_shape else x.new_empty(b, nh * out_window, nw * out_window, self.dim_out)
        out_grid = out.view(b, nh, out_window, nw, out_window, self.dim_out).permute(0, 1, 3, 2, 4, 5)
        rows = max(1, _WINDOW_ROWS_QKV_ELEMENTS // (b * nw * window * window * 3 * self.dim_out))
        for i in range(0, nh, rows):
            windows = grid[:, i : i + rows].reshape(-1, window, window, c)
            part = self.attn(windows).view(b, -1, nw, out_window, out_window, self.dim_out)
            out_grid[:, i : i + rows] = part
        return out


class Hiera(nn.Module):
    """The image trunk; returns one (B, C, H, W) map per stage, finest first."""

    def __init__(self, config: HieraConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        c = config
        self.stage_ends = [sum(c.stages[: i + 1]) - 1 for i in range(len(c.stages))]
        q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][: c.q_pool]
        self.patch_embed = PatchEmbed(c.embed_dim, c.patch_kernel_size, c.patch_stride, c.patch_padding)
        self.pos_embed = nn.Parameter(torch.zeros(1, c.embed_dim, *c.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, c.embed_dim, c.window_spec[0], c.window_spec[0]))

        depth = sum(c.stages)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        dim, heads, stage = c.embed_dim, c.num_heads, 0
        self.blocks = nn.ModuleList()
        widths: list[int] = []  # output width of each block
        for i in range(depth):
            # The first block of a stage still uses the previous stage's window size.
            window = 0 if i in c.global_att_blocks else c.window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out = int(dim * c.dim_mul)
                heads = int(heads * c.head_mul)
                stage += 1
            self.blocks.append(
                MultiScaleBlock(
                    dim,
                    dim_out,
                    heads,
                    mlp_ratio=c.mlp_ratio,
                    drop_path=rates[i],
                    q_stride=c.q_stride if i in q_pool_blocks else None,
                    window_size=window,
                )
            )
            widths.append(dim_out)
            dim = dim_out
        self.channel_list: list[int] = [widths[i] for i in reversed(self.stage_ends)]
        self._pos_cache: tuple[tuple, torch.Tensor] | None = None

    @torch.compiler.disable
    def position_embedding(self, hw: tuple[int, int]) -> torch.Tensor:
        """Background embedding interpolated to the grid plus a tiled per-window embedding.

        Outside training it is cached, keyed on the parameters' identity and version so that
        loading new weights (or moving the module) recomputes it; eagerly under ``torch.compile``,
        whose guards on the cache would fail once it is filled (see ``PositionEmbeddingSine.forward``).
        """
        params = (self.pos_embed, self.pos_embed_window)
        key = None  # parameters made under torch.inference_mode() have no version counter: never cached
        if not any(p.is_inference() for p in params):
            key = (tuple(hw),) + tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if key is not None and self._pos_cache is not None and self._pos_cache[0] == key:
            return self._pos_cache[1]
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic")
        window = self.pos_embed_window
        reps = [a // b for a, b in zip(pos.shape, window.shape)]
        pos = (pos + window.tile(reps)).permute(0, 2, 3, 1)  # (1, H, W, C)
        if key is not None and not (self.training and torch.is_grad_enabled()):
            self._pos_cache = (key, pos)
        return pos

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # (B, H/4, W/4, C)
        x = x + self.position_embedding((int(x.shape[1]), int(x.shape[2])))
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
