"""Multi-head attention with an optional internal downsampling, and its rotary (RoPE) variant."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import gemm
from .gemm import Linear
from .position import apply_rope, apply_rope_, axial_rope_angles

#: Score elements from which an attention counts as big (32 MB in bfloat16): it goes a batch-head and
#: a slice of queries at a time through one reused score buffer instead of one batched matmul.
_SCORE_BUDGET = 1 << 24

#: Scores per low-precision query slice (8 MB in bfloat16), but never fewer rows than
#: ``_MIN_SLICE_ROWS``: 2 threads on a Zen 4 EPYC, the trunk's global attention (4096 queries and keys,
#: 4 heads of 96) took 90.7 ms in 1024-row slices against 113.4 in one slice a head, memory
#: self-attention (one head of 256) 55.4 against 64.7; over memory attention's 28.7k keys, 146-row
#: slices lose ~15 % against 512-583 rows, which all run alike.
_SLICE_SCORES = 1 << 22
_MIN_SLICE_ROWS = 512


def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax attention over (B, heads, N, d) tensors; ``key_mask`` (B, Nk) bool, False for keys
    no query may attend (padding tokens of a batch of unequal prompts), None: every key.

    float32 uses PyTorch's fused kernel, except big CPU attentions over wide heads (memory attention):
    where float32 products go to oneDNN (:func:`gemm.float32_on_onednn`), on keys packed for it (about
    1.3x the fused kernel); elsewhere (MKL on Intel) as explicit products a few hundred queries at a
    time (1.33x). On CPU in bfloat16 / float16, explicit matmuls are about twice as fast (oneDNN's
    low-precision GEMMs; the fused kernel is slower there than in float32). Small attentions (windows)
    run a head at a time over every window; big ones (global, memory) go one batch-head and a slice of
    queries at a time, the softmax in place in one reused buffer.
    """
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16):
        if key_mask is None and _packed_keys_pay(q, k, v):
            return _attention_on_packed_keys(q, k, v)
        if key_mask is None and _float32_slices_pay(q, k):
            return _attention_in_slices(q, k, v, _FLOAT32_SCORE_BUDGET)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, Nk)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scale = q.shape[-1] ** -0.5
    b, h, n, _ = q.shape
    num_keys = k.shape[-2]
    if key_mask is not None:  # small (prompt tokens as keys): one batched matmul with the mask
        scores = ((q * scale) @ k.transpose(-2, -1)).masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return torch.softmax(scores, dim=-1) @ v
    if torch.is_grad_enabled():  # training or an export trace: out= and in-place ops cannot be differentiated
        return torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1) @ v
    rows = max(_MIN_SLICE_ROWS, _SLICE_SCORES // num_keys)
    if n <= rows and b * h * n * num_keys <= _SCORE_BUDGET:
        # a head at a time: the (B, N, d) slices of (B, N, heads, d) projections are read in place
        # (a batched matmul over (B, heads) would first copy q, k and v), the scale rides in the GEMM
        out = q.new_empty(b, n, h, v.shape[-1])
        scores = q.new_empty(b, n, num_keys)
        for i in range(h):
            torch.baddbmm(scores, q[:, i], k[:, i].transpose(-2, -1), beta=0, alpha=scale, out=scores)
            out[:, :, i] = torch.bmm(_softmax_rows_(scores), v[:, i])
        return out.transpose(1, 2)
    return _attention_in_slices(q, k, v, rows * num_keys)


def _attention_in_slices(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, budget: int) -> torch.Tensor:
    """Softmax attention one batch-head and a slice of queries at a time, ``budget`` scores per slice
    in one reused buffer, the softmax in place (no autograd)."""
    b, h, n, _ = q.shape
    num_keys = k.shape[-2]
    qs, ks, vs = (q * q.shape[-1] ** -0.5).flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)
    out = q.new_empty(b * h, n, v.shape[-1])
    rows = max(1, min(n, budget // num_keys))
    scores = q.new_empty(rows, num_keys)
    for i in range(b * h):
        kt = ks[i].transpose(0, 1)  # oneDNN and MKL read transposed keys as fast as a contiguous copy
        for j in range(0, n, rows):
            s = scores[: min(rows, n - j)]
            torch.matmul(qs[i, j : j + rows], kt, out=s)
            _softmax_rows_(s)
            torch.matmul(s, vs[i], out=out[i, j : j + rows])
    return out.view(b, h, n, -1)


#: Head width from which explicit or packed-key attention beats the fused kernel (2 threads, float32):
#: memory attention's 4096 queries over 28672 keys of 256 channels take 422-488 ms against 561-627 on
#: packed keys (AMD EPYC), 417 against 556 in MKL slices with the values projected late (Intel Xeon);
#: the trunk's global attention (96 channels a head) stays faster fused, its scores being mostly writes.
_PACKED_KEYS_MIN_WIDTH = 128

#: Scores per float32 slice (16 MB): 146 queries over memory attention's 28.7k keys, 2 threads. In MKL
#: 7 % faster than 583 (Intel Xeon); on oneDNN's packed keys 444-490 against 584-648 ms (Zen 4 EPYC).
_FLOAT32_SCORE_BUDGET = 1 << 22


def _big_and_wide(q: torch.Tensor, k: torch.Tensor) -> bool:
    b, h, n, d = q.shape
    return b * h * n * k.shape[-2] > _SCORE_BUDGET and d >= _PACKED_KEYS_MIN_WIDTH


def _packed_keys_pay(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """float32 on CPU through oneDNN: big attentions (more scores than one slice) over wide heads."""
    return _big_and_wide(q, k) and q.dtype is torch.float32 and gemm.onednn_ready(q, k, v)


def _float32_slices_pay(q: torch.Tensor, k: torch.Tensor) -> bool:
    """float32 on CPU where float32 stays with PyTorch's MKL: big attentions over wide heads, eager
    (no autograd, trace or compile: those keep the fused kernel, as on oneDNN CPUs)."""
    return (
        q.device.type == "cpu"
        and q.dtype is torch.float32
        and not torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not gemm.float32_on_onednn()
        and _big_and_wide(q, k)
    )


def _attention_on_packed_keys(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention a batch-head and a slice of queries at a time, keys and transposed values
    packed once per batch-head in oneDNN's layout (each is the weight of one product per slice)."""
    b, h, n, d = q.shape
    num_keys = k.shape[-2]
    out = q.new_empty(b, h, n, v.shape[-1])
    rows = max(1, min(n, _FLOAT32_SCORE_BUDGET // num_keys))
    for i in range(b):
        for j in range(h):
            keys = gemm.pack(k[i, j])  # (Nk, d)
            values = gemm.pack(v[i, j].transpose(0, 1))  # (d_v, Nk); the reorder reads it strided
            queries = q[i, j] * d**-0.5
            for r in range(0, n, rows):
                scores = _softmax_rows_(gemm.packed_product(queries[r : r + rows], keys))
                out[i, j, r : r + rows] = gemm.packed_product(scores, values)
    return out


def _softmax_rows_(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of a contiguous tensor, in place (no second score buffer).

    PyTorch's row-wise kernel reads a row before writing it, so its out= may alias the input
    (tests check the result against torch.softmax).
    """
    return torch.ops.aten._softmax.out(x, -1, False, out=x)


class Attention(nn.Module):
    """Attention whose q/k/v are projected to ``embedding_dim // downsample_rate`` channels."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        internal_dim = embedding_dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        kv_in_dim = kv_in_dim or embedding_dim
        self.num_heads = num_heads
        self.internal_dim = internal_dim
        self.dropout_p = dropout
        self.q_proj = Linear(embedding_dim, internal_dim)
        self.k_proj = Linear(kv_in_dim, internal_dim)
        self.v_proj = Linear(kv_in_dim, internal_dim)
        self.out_proj = Linear(internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, h, N, d)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.training and self.dropout_p > 0:
            mask = None if key_mask is None else key_mask[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout_p)
        else:
            out = softmax_attention(q, k, v, key_mask)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, Nq, C) queries attend (B, Nk, C) keys / values; ``key_mask`` (B, Nk): see :func:`softmax_attention`."""
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        return self._attend(q, k, v, key_mask)


class RoPEAttention(Attention):
    """Attention with 2D axial rotary encoding on a square query grid.

    Keys may hold several grids (memories of several frames, ``rope_k_repeat``) followed by
    ``num_k_exclude_rope`` tokens (object pointers) that get no rotation.
    """

    def __init__(
        self,
        *args,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: tuple[int, int] = (64, 64),
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = tuple(feat_sizes)
        # complex64 rotations per (tokens, device); not a buffer, so module.to(dtype) cannot cast them
        self._rotation_cache: dict[tuple[int, torch.device], torch.Tensor] = {}

    def _rotations(self, num_tokens: int, device: torch.device) -> torch.Tensor:
        key = (num_tokens, device)
        if key not in self._rotation_cache:
            if num_tokens == self.feat_sizes[0] * self.feat_sizes[1]:
                end_x, end_y = self.feat_sizes
            else:
                side = math.isqrt(num_tokens)
                if side * side != num_tokens:
                    raise ValueError(f"RoPE needs a square token grid, got {num_tokens} tokens")
                end_x = end_y = side
            head_dim = self.internal_dim // self.num_heads
            # a normal tensor even when first built under inference_mode, so training can follow evaluation
            with torch.inference_mode(False):
                self._rotation_cache[key] = axial_rope_angles(head_dim, end_x, end_y, self.rope_theta).to(device)
        return self._rotation_cache[key]

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_k_exclude_rope: int = 0,
        *,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        project_late = self._project_values_late(q, k, v, key_mask)
        v = v[:, None] if project_late else self._heads(self.v_proj(v))
        rotations = self._rotations(q.shape[-2], q.device)
        # q and k are fresh projections: CPU inference rotates them in place
        rotate = apply_rope_ if q.device.type == "cpu" and not torch.is_grad_enabled() else apply_rope
        q = rotate(q, rotations)
        num_rope = k.shape[-2] - num_k_exclude_rope
        if num_rope > 0:
            if num_rope != q.shape[-2] and (not self.rope_k_repeat or num_rope % q.shape[-2]):
                raise ValueError("keys must hold a whole number of query grids for RoPE")
            k = rotate(k, rotations, num_rope)
        if project_late:
            return self.out_proj(self.v_proj(softmax_attention(q, k, v, key_mask)[:, 0]))
        return self._attend(q, k, v, key_mask)

    def _project_values_late(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> bool:
        """Whether to attend over the raw values ``v`` and project the result instead.

        softmax(qk) @ v_proj(v) equals v_proj(softmax(qk) @ v) (the weights of a row sum to 1, so
        the bias passes through). With one head and narrow values (64-channel memories against
        256-channel queries) it quarters the value product; used where attention runs as explicit
        matmuls or on packed keys (low precision, big float32 ones in MKL slices or through oneDNN),
        not in the fused kernel, which is 4-5x slower on narrow values. On packed keys (2 threads, a
        Zen 4 EPYC) one object's memory attention at full memory (4 layers) took 3274 against 4392 ms.
        """
        low = q.dtype in (torch.bfloat16, torch.float16)
        explicit = low or _float32_slices_pay(q, k) or (key_mask is None and _packed_keys_pay(q, k, v))
        return (
            self.num_heads == 1
            and self.v_proj.in_features < self.internal_dim
            and q.device.type == "cpu"
            and explicit
            and not (self.training and self.dropout_p > 0)
        )
