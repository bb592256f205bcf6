"""Low-resolution logits to image size: bilinear upsampling and its exact statistics.

A full-resolution pixel is a bilinear blend of four low-resolution logits, so every pixel of a
low-resolution cell whose four corners are all clearly above (or all clearly below) a threshold is
decided at once; only cells straddling a threshold are evaluated pixel by pixel. This gives the
stability scores and boxes of the full-resolution masks without building them.

Logits are evaluated with PyTorch's bilinear formula (``align_corners=False``, the source indices
and weights of ``F.interpolate``) in float32; a value can differ from ``F.interpolate``'s in the
last bit (as its own CPU kernels differ from each other and from CUDA), which only matters for a
pixel whose logit lies within a few ulps of a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["Upsampler", "flags_to_boxes", "linear_map"]

#: A mask is evaluated in full when its straddling cells hold more than this share of its pixels
#: (noisy masks); smooth masks only evaluate the cells along their contours.
_CELL_WORK_LIMIT = 0.3
#: Below this many output pixels masks are always evaluated in full.
_CELL_MIN_PIXELS = 1 << 18
#: Elements per row block when logits are evaluated in full (keeps the passes in cache).
_FULL_BLOCK_ELEMENTS = 1 << 17


def linear_map(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Source indices i0, i1 and weights w0, w1 of each output position (align_corners=False).

    The source coordinate is computed as PyTorch's CPU kernel does, with one rounding
    (``fma(scale, i + 0.5, -0.5)`` in float32, ``scale = float32(n_in / n_out)``).
    """
    if n_in == n_out:
        idx = torch.arange(n_out, device=device)
        return idx, idx, torch.ones(n_out, device=device), torch.zeros(n_out, device=device)
    scale = np.float32(n_in) / np.float32(n_out)
    src = (np.float64(scale) * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    w0 = (np.float32(1.0) - w1).astype(np.float32)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    return tuple(torch.from_numpy(a).to(device) for a in (i0, i1, w0, w1))


class Upsampler:
    """Bilinear upsampling of (n, h, w) logits to (H, W), and exact statistics of it.

    ``evaluate`` gives the full logits; ``stats`` gives, for thresholds t, the number of pixels
    above each t and the box of the pixels above ``box_t`` without building full masks: every
    output pixel lies in one low-resolution cell (its two source rows and columns), whose four
    corner logits bound it, so a cell is decided at once unless it straddles a threshold; only
    straddling cells are evaluated, with exactly the arithmetic of ``evaluate``.
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int], device: torch.device) -> None:
        (h, w), (H, W) = in_hw, out_hw
        self.in_hw, self.out_hw = (h, w), (H, W)
        self.y0, self.y1, self.wy0, self.wy1 = linear_map(h, H, device)
        self.x0, self.x1, self.wx0, self.wx1 = linear_map(w, W, device)
        # output rows / columns of each cell row / column (i0 is non-decreasing)
        self.row_start, self.row_count = _runs(self.y0, h)
        self.col_start, self.col_count = _runs(self.x0, w)
        self.max_rows = int(self.row_count.max())
        self.max_cols = int(self.col_count.max())
        self.cell_size = self.row_count[:, None] * self.col_count[None, :]  # (h, w) int64

    def _top(self, logits: torch.Tensor) -> torch.Tensor:
        """Horizontal pass: (n, h, w) -> (n, h, W)."""
        return logits.index_select(2, self.x0) * self.wx0 + logits.index_select(2, self.x1) * self.wx1

    def _rows(self, top: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        """Vertical pass for output rows r0:r1: (n, r1 - r0, W)."""
        y0, y1 = self.y0[r0:r1], self.y1[r0:r1]
        return top.index_select(1, y0) * self.wy0[r0:r1, None] + top.index_select(1, y1) * self.wy1[r0:r1, None]

    def _row_block(self, n: int) -> int:
        return max(1, _FULL_BLOCK_ELEMENTS // max(1, n * self.out_hw[1]))

    def evaluate(self, logits: torch.Tensor) -> torch.Tensor:
        """(n, h, w) -> (n, H, W) float32 logits."""
        return self._rows(self._top(logits), 0, self.out_hw[0])

    def binary(self, logits: torch.Tensor, threshold: float) -> torch.Tensor:
        """(n, h, w) -> (n, H, W) bool, logits > threshold (row blocks, same values as evaluate)."""
        top = self._top(logits)
        H = self.out_hw[0]
        step = self._row_block(logits.shape[0])
        return torch.cat([self._rows(top, r, min(r + step, H)) > threshold for r in range(0, H, step)], 1)

    def stats(
        self, logits: torch.Tensor, thresholds: Sequence[float], box_index: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Counts (n, len(thresholds)) int64 of pixels > t, and the XYXY int64 box (n, 4) of
        pixels > thresholds[box_index] ([0, 0, 0, 0] if none), for (n, h, w) logits.

        Masks with few straddling cells go through the cells; noisy ones are evaluated in full."""
        n = logits.shape[0]
        dev = logits.device
        pixels = self.out_hw[0] * self.out_hw[1]
        if pixels < _CELL_MIN_PIXELS:  # small crops: evaluating everything is cheaper
            return self._full_stats(logits, thresholds, box_index)
        a = logits
        b = torch.cat((logits[:, :, 1:], logits[:, :, -1:]), 2)  # corner (r, c + 1), clamped
        c = torch.cat((logits[:, 1:], logits[:, -1:]), 1)  # corner (r + 1, c)
        d = torch.cat((c[:, :, 1:], c[:, :, -1:]), 2)
        lo = torch.minimum(torch.minimum(a, b), torch.minimum(c, d))
        hi = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        # float32 rounding of the blend stays far below 1e-6 of the corners' magnitude
        slack = (a.abs() + b.abs()).add_(c.abs()).add_(d.abs()).mul_(1e-6)
        has_pixels = self.cell_size > 0
        on_cells, unsure_cells = [], []
        for t in thresholds:
            margin = slack + (abs(t) * 1e-6 + 1e-30)
            on = lo > margin.add(t)
            unsure = (hi >= margin.neg_().add_(t)) & ~on & has_pixels
            on_cells.append(on)
            unsure_cells.append(unsure)
        any_unsure = unsure_cells[0]
        for u in unsure_cells[1:]:
            any_unsure = any_unsure | u
        work = any_unsure.flatten(1).sum(1) * (self.max_rows * self.max_cols)
        full = work > _CELL_WORK_LIMIT * pixels
        counts = torch.zeros(n, len(thresholds), dtype=torch.int64, device=dev)
        boxes = torch.zeros(n, 4, dtype=torch.int64, device=dev)
        if bool(full.any()):
            idx = torch.nonzero(full, as_tuple=True)[0]
            counts[idx], boxes[idx] = self._full_stats(logits[idx], thresholds, box_index)
        cells = torch.nonzero(~full, as_tuple=True)[0]
        if cells.numel():

            def sub(x):
                return x[cells]

            counts[cells], boxes[cells] = self._cell_stats(
                sub(a),
                sub(b),
                sub(c),
                sub(d),
                [sub(x) for x in on_cells],
                [sub(x) for x in unsure_cells],
                sub(any_unsure),
                thresholds,
                box_index,
            )
        return counts, boxes

    def _full_stats(self, logits, thresholds, box_index):
        n = logits.shape[0]
        H, W = self.out_hw
        top = self._top(logits)
        counts = torch.zeros(n, len(thresholds), dtype=torch.int64, device=logits.device)
        rows = torch.zeros(n, H, dtype=torch.bool, device=logits.device)
        cols = torch.zeros(n, W, dtype=torch.bool, device=logits.device)
        for i in range(n):  # one mask at a time: row blocks stay large and in cache
            one = top[i : i + 1]
            step = self._row_block(1)
            for r in range(0, H, step):
                values = self._rows(one, r, min(r + step, H))[0]
                for k, t in enumerate(thresholds):
                    above = values > t
                    counts[i, k] += above.sum()
                    if k == box_index:
                        rows[i, r : r + step] = above.any(1)
                        cols[i] |= above.any(0)
        return counts, flags_to_boxes(rows, cols)

    def _cell_stats(self, a, b, c, d, on_cells, unsure_cells, any_unsure, thresholds, box_index):
        n = a.shape[0]
        dev = a.device
        counts = torch.zeros(n, len(thresholds), dtype=torch.int64, device=dev)
        # cell sizes are separable: rows per cell row x columns per cell column (exact in float64)
        row_count = self.row_count.to(torch.float64)
        col_count = self.col_count.to(torch.float32)
        for k, on in enumerate(on_cells):
            per_row = (on.to(torch.float32) @ col_count).to(torch.float64)  # (n, h), < 2**24
            counts[:, k] = (per_row @ row_count).round().to(torch.int64)
        on_box = on_cells[box_index]
        rows = (on_box & (self.col_count > 0)).any(2)[:, self.y0]  # (n, H)
        cols = (on_box & (self.row_count > 0)[:, None]).any(1)[:, self.x0]  # (n, W)
        m, r, q = torch.nonzero(any_unsure, as_tuple=True)
        if m.numel():
            # every pixel of the straddling cells: (K, R, C), padded to the largest cell
            R, C = self.max_rows, self.max_cols
            ar, ac = torch.arange(R, device=dev), torch.arange(C, device=dev)
            rvalid = ar < self.row_count[r][:, None]
            cvalid = ac < self.col_count[q][:, None]
            ri = torch.where(rvalid, self.row_start[r][:, None] + ar, 0)  # (K, R)
            ci = torch.where(cvalid, self.col_start[q][:, None] + ac, 0)  # (K, C)
            wx0, wx1 = self.wx0[ci], self.wx1[ci]
            top = a[m, r, q][:, None] * wx0 + b[m, r, q][:, None] * wx1  # (K, C)
            bot = c[m, r, q][:, None] * wx0 + d[m, r, q][:, None] * wx1
            values = top[:, None, :] * self.wy0[ri][:, :, None] + bot[:, None, :] * self.wy1[ri][:, :, None]
            values.masked_fill_(~(rvalid[:, :, None] & cvalid[:, None, :]), float("-inf"))
            for k, t in enumerate(thresholds):
                here = unsure_cells[k][m, r, q]  # cells already counted as sure for t add nothing
                hits = values > t
                counts[:, k].index_add_(0, m, hits.flatten(1).sum(1) * here)
                if k == box_index:
                    hit_rows = (hits.any(2) & here[:, None]).to(torch.int32)
                    hit_cols = (hits.any(1) & here[:, None]).to(torch.int32)
                    rows_i, cols_i = rows.to(torch.int32), cols.to(torch.int32)
                    rows_i.index_put_((m[:, None].expand_as(ri), ri), hit_rows, accumulate=True)
                    cols_i.index_put_((m[:, None].expand_as(ci), ci), hit_cols, accumulate=True)
                    rows, cols = rows_i > 0, cols_i > 0
        return counts, flags_to_boxes(rows, cols)


def _runs(index: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First position and length of each value 0..n-1 in a non-decreasing index tensor."""
    values = torch.arange(n, device=index.device)
    start = torch.searchsorted(index, values, right=False)
    end = torch.searchsorted(index, values, right=True)
    return start, end - start


def flags_to_boxes(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """XYXY boxes from (n, H) / (n, W) occupancy flags, [0, 0, 0, 0] where empty."""
    H, W = rows.shape[1], cols.shape[1]
    r8, c8 = rows.to(torch.uint8), cols.to(torch.uint8)
    top = r8.argmax(1)
    bottom = H - 1 - r8.flip(1).argmax(1)
    left = c8.argmax(1)
    right = W - 1 - c8.flip(1).argmax(1)
    boxes = torch.stack([left, top, right, bottom], 1)
    return torch.where(rows.any(1, keepdim=True), boxes, torch.zeros_like(boxes))
