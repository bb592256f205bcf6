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
from dataclasses import dataclass

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
        # host copies for stats()
        self.row_pieces = _Pieces.build(self.row_start, self.row_count, self.wy0, self.wy1)
        self.col_pieces = _Pieces.build(self.col_start, self.col_count, self.wx0, self.wx1)
        self._has_pixels = self.cell_size.cpu().numpy() > 0
        self._row_count_f64 = self.row_count.cpu().numpy().astype(np.float64)
        self._col_count_f32 = self.col_count.cpu().numpy().astype(np.float32)
        self._row_has, self._col_has = self._row_count_f64 > 0, self._col_count_f32 > 0
        self._row_count, self._col_count = self.row_count.cpu().numpy(), self.col_count.cpu().numpy()
        self._y0, self._x0 = self.y0.cpu().numpy(), self.x0.cpu().numpy()

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
        """(n, h, w) -> (n, H, W) bool, logits > threshold, the same pixels as ``evaluate(logits) > threshold``.

        On a CPU, big outputs come from the cells (as :meth:`stats`): sure cells are expanded,
        straddling ones evaluated pixel by pixel (the 20 masks of the nano benchmark at 1200x900: 44 -> 7 ms)."""
        H, W = self.out_hw
        if logits.device.type != "cpu" or H * W < _CELL_MIN_PIXELS:
            return self._full_binary(logits, threshold)
        a = logits.detach().to(torch.float32).numpy()
        (on,), unsure, full = self._classify(a, (threshold,))
        out = np.empty((a.shape[0], H, W), dtype=bool)
        if full.any():
            idx = np.flatnonzero(full)
            out[idx] = self._full_binary(logits[torch.from_numpy(idx)], threshold).numpy()
        cells = np.flatnonzero(~full)
        if cells.size:
            sub = a[cells]
            # sure cells whole (unsure ones are off in ``on``): columns first, then rows (0.7 against 2.7 ms)
            masks = np.repeat(np.repeat(on[cells], self._col_count, 2), self._row_count, 1)
            pixels = self._straddling_pixels(sub, unsure[cells])
            if pixels is not None:
                m, values, ri, ci = pixels
                where = (m * (H * W))[None, None, :] + ri[:, None, :] * W + ci[None, :, :]
                real = ~np.isnan(values)  # not the padding of smaller pieces
                masks.reshape(-1)[where[real]] = values[real] > np.float32(threshold)
            out[cells] = masks
        return torch.from_numpy(out)

    def _full_binary(self, logits: torch.Tensor, threshold: float) -> torch.Tensor:
        """:meth:`binary` by evaluating every pixel, a few rows at a time."""
        top = self._top(logits)
        H = self.out_hw[0]
        step = self._row_block(logits.shape[0])
        return torch.cat([self._rows(top, r, min(r + step, H)) > threshold for r in range(0, H, step)], 1)

    def stats(
        self, logits: torch.Tensor, thresholds: Sequence[float], box_index: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Counts (n, len(thresholds)) int64 of pixels > t, and the XYXY int64 box (n, 4) of
        pixels > thresholds[box_index] ([0, 0, 0, 0] if none), for (n, h, w) logits.

        Masks with few straddling cells go through the cells (on the host, in NumPy: they are
        a thin ring along each contour, many small arrays); noisy ones are evaluated in full."""
        n = logits.shape[0]
        dev = logits.device
        pixels = self.out_hw[0] * self.out_hw[1]
        if pixels < _CELL_MIN_PIXELS:  # small crops: evaluating everything is cheaper
            return self._full_stats(logits, thresholds, box_index)
        a = logits.detach().to("cpu", torch.float32).numpy()
        on_cells, any_unsure, full = self._classify(a, thresholds)
        counts = torch.zeros(n, len(thresholds), dtype=torch.int64)
        boxes = torch.zeros(n, 4, dtype=torch.int64)
        if full.any():
            idx = torch.from_numpy(np.flatnonzero(full))
            c_full, b_full = self._full_stats(logits[idx.to(dev)], thresholds, box_index)
            counts[idx], boxes[idx] = c_full.cpu(), b_full.cpu()
        cells = np.flatnonzero(~full)
        if cells.size:
            sub = torch.from_numpy(cells)
            counts[sub], boxes[sub] = self._cell_stats(
                a[cells], [on[cells] for on in on_cells], any_unsure[cells], thresholds, box_index
            )
        return counts.to(dev), boxes.to(dev)

    def _classify(self, a: np.ndarray, thresholds: Sequence[float]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Cells of (n, h, w) logits: per threshold those whose pixels are all surely above it, the
        cells straddling some threshold (with pixels), and the masks with so many straddling cells
        that evaluating them in full is cheaper."""
        lo, hi = _corner_bounds(a)
        # float32 rounding of the blend stays far below 4e-6 of the corners' largest magnitude
        slack = np.maximum(hi, -lo)
        slack *= np.float32(4e-6)
        lo -= slack
        hi += slack
        on_cells, any_unsure = [], np.zeros(a.shape, dtype=bool)
        for t in thresholds:
            margin = abs(t) * 1e-6 + 1e-30
            on = lo > np.float32(t + margin)
            any_unsure |= (hi >= np.float32(t - margin)) & ~on
            on_cells.append(on)
        any_unsure &= self._has_pixels
        work = any_unsure.reshape(a.shape[0], -1).sum(1) * (self.max_rows * self.max_cols)
        return on_cells, any_unsure, work > _CELL_WORK_LIMIT * self.out_hw[0] * self.out_hw[1]

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

    def _cell_stats(self, a, on_cells, any_unsure, thresholds, box_index):
        """stats() from the cells (NumPy): sure cells by their sizes, straddling ones pixel by pixel."""
        n = a.shape[0]
        H, W = self.out_hw
        counts = np.zeros((n, len(thresholds)), dtype=np.int64)
        # cell sizes are separable: rows per cell row x columns per cell column (exact in float64)
        sure = ~any_unsure  # the straddling cells are counted pixel by pixel below
        for k, on in enumerate(on_cells):
            per_row = (on & sure).astype(np.float32) @ self._col_count_f32  # (n, h), < 2**24
            counts[:, k] = np.rint(per_row.astype(np.float64) @ self._row_count_f64).astype(np.int64)
        on_box = on_cells[box_index]
        rows = np.ascontiguousarray((on_box & self._col_has[None, None, :]).any(2)[:, self._y0])  # (n, H)
        cols = np.ascontiguousarray((on_box & self._row_has[None, :, None]).any(1)[:, self._x0])  # (n, W)
        pixels = self._straddling_pixels(a, any_unsure)
        if pixels is not None:
            m, values, ri, ci = pixels
            # hits per piece summed as bytes into a narrow integer (0.36 against 0.14 ms)
            narrow = np.uint16 if values.shape[0] * values.shape[1] <= np.iinfo(np.uint16).max else np.int32
            for k, t in enumerate(thresholds):
                hits = values > np.float32(t)
                per_piece = np.add.reduce(hits.reshape(-1, m.size).view(np.uint8), axis=0, dtype=narrow)
                counts[:, k] += np.bincount(m, weights=per_piece, minlength=n).astype(np.int64)
                if k == box_index:
                    rows.reshape(-1)[(m * H + ri)[hits.any(1)]] = True
                    cols.reshape(-1)[(m * W + ci)[hits.any(0)]] = True
        return torch.from_numpy(counts), torch.from_numpy(_host_flags_to_boxes(rows, cols))

    def _straddling_pixels(
        self, a: np.ndarray, unsure: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Every pixel of the ``unsure`` cells of (n, h, w) logits ``a`` (None if there are none), in
        pieces no larger than an interior cell: the mask of each piece m (K,), the values (R, C, K)
        with the arithmetic of :meth:`evaluate` (pieces last: long inner loops; NaN in the padding
        of smaller pieces), and their output rows ri (R, K) and columns ci (C, K)."""
        n, h, w = a.shape
        lin = np.flatnonzero(unsure)  # in mask order
        if not lin.size:
            return None
        m, r, q = lin // (h * w), (lin // w) % h, lin % w
        r1, q1 = np.minimum(r + 1, h - 1), np.minimum(q + 1, w - 1)  # corners clamped at the edge
        ca, cb, cc, cd = a[m, r, q], a[m, r, q1], a[m, r1, q], a[m, r1, q1]
        rp, cp = self.row_pieces, self.col_pieces
        per = rp.n[r] * cp.n[q]
        pr, pc = rp.first[r], cp.first[q]
        if per.max() > 1:
            cell = np.repeat(np.arange(lin.size), per)
            j = np.arange(cell.size) - (np.cumsum(per) - per)[cell]
            ncol = cp.n[q][cell]
            pr, pc = pr[cell] + j // ncol, pc[cell] + j % ncol
            m, ca, cb, cc, cd = m[cell], ca[cell], cb[cell], cc[cell], cd[cell]
        wy0, wy1, ri = (np.ascontiguousarray(x[pr].T) for x in (rp.w0, rp.w1, rp.index))  # (R, K)
        wx0, wx1, ci = (np.ascontiguousarray(x[pc].T) for x in (cp.w0, cp.w1, cp.index))  # (C, K)
        top = wx0 * ca + wx1 * cb
        bot = wx0 * cc + wx1 * cd
        # into two buffers: the (R, C, K) temporaries are megabytes (3.1 against 1.9 ms)
        values = np.multiply(top[None], wy0[:, None])
        values += np.multiply(bot[None], wy1[:, None], out=np.empty_like(values))
        return m, values, ri, ci


@dataclass(frozen=True)
class _Pieces:
    """The output rows (or columns) of each cell row (or column), cut into pieces of at most
    the size of an interior cell: pieces ``first[i]`` to ``first[i] + n[i] - 1`` belong to cell
    i; each piece has its output indices and blend weights, padded to a common length with
    index 0 and NaN weights (NaN is above no threshold)."""

    first: np.ndarray  # (cells,) int64
    n: np.ndarray  # (cells,) int64
    index: np.ndarray  # (pieces, size) int64
    w0: np.ndarray  # (pieces, size) float32
    w1: np.ndarray

    @staticmethod
    def build(start: torch.Tensor, count: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor) -> _Pieces:
        counts = count.tolist()
        inner = counts[1:-1] if len(counts) > 2 else counts
        size = max(1, max(inner))
        first, n, runs = [], [], list[tuple[int, int]]()
        for s, k in zip(start.tolist(), counts):
            first.append(len(runs))
            n.append(-(-k // size))
            runs += [(p, min(p + size, s + k)) for p in range(s, s + k, size)]
        index = np.zeros((max(1, len(runs)), size), dtype=np.int64)
        valid = np.zeros(index.shape, dtype=bool)
        for i, (p0, p1) in enumerate(runs):
            index[i, : p1 - p0] = np.arange(p0, p1)
            valid[i, : p1 - p0] = True
        nan = np.float32(np.nan)
        return _Pieces(
            first=np.array(first, dtype=np.int64),
            n=np.array(n, dtype=np.int64),
            index=index,
            w0=np.where(valid, w0.cpu().numpy()[index], nan),
            w1=np.where(valid, w1.cpu().numpy()[index], nan),
        )


def _corner_bounds(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest of each cell's four corner logits, (r, c), (r, c + 1), (r + 1, c) and
    (r + 1, c + 1) clamped at the last row and column, for (n, h, w) logits: pairs along the
    columns, then along the rows (four passes, no shifted copies)."""
    lo, hi = a.copy(), a.copy()
    np.minimum(a[:, :, :-1], a[:, :, 1:], out=lo[:, :, :-1])
    np.maximum(a[:, :, :-1], a[:, :, 1:], out=hi[:, :, :-1])
    np.minimum(lo[:, :-1], lo[:, 1:], out=lo[:, :-1])  # overlapping operands: NumPy buffers them
    np.maximum(hi[:, :-1], hi[:, 1:], out=hi[:, :-1])
    return lo, hi


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


def _host_flags_to_boxes(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """:func:`flags_to_boxes` on host arrays (int64): NumPy's argmax over flags takes 35 us where
    PyTorch's takes 630 (a (32, 900) / (32, 1200) pair, 2 threads)."""
    H, W = rows.shape[1], cols.shape[1]
    first_col, first_row = cols.argmax(1), rows.argmax(1)
    last_col, last_row = W - 1 - cols[:, ::-1].argmax(1), H - 1 - rows[:, ::-1].argmax(1)
    boxes = np.stack([first_col, first_row, last_col, last_row], 1).astype(np.int64)
    boxes[~rows.any(1)] = 0
    return boxes
