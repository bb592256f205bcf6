"""Big CPU matrix products through oneDNN instead of PyTorch's default float32 GEMM, where that pays.

PyTorch's float32 ``F.linear`` / ``bmm`` on CPU call MKL, which runs its AVX2 kernels on AMD CPUs;
oneDNN picks its kernels by instruction set. On Intel CPUs MKL runs its own best kernels, and float32
stays with PyTorch (:func:`float32_on_onednn`). Measured on a 2-core AMD EPYC with AVX-512, 2 threads
(``benchmarks/gemm_kernels.py``): 4096 x 384 -> 1536, MKL 193 GFLOP/s, oneDNN 412; a click's
4096 x 256 x 256 ``baddbmm`` 3.1 ms, oneDNN 1.2 ms. With oneDNN held to AVX2
(``ONEDNN_MAX_CPU_ISA=AVX2``) it still matches or beats MKL on big products. oneDNN costs about
20-45 us per call, so small products (prompt tokens, heads) stay where they were. Same float32
arithmetic in a different summation order: results agree to rounding (about 1e-6 relative).
"""

from __future__ import annotations

import functools
import math
import platform

import torch
import torch.nn.functional as F
from torch import nn

#: Multiply-adds (rows x in x out) from which oneDNN's per-call cost pays (2 threads, AVX-512 EPYC):
#: 64 x 256 x 256 (4.2M) is even, 128 x 256 x 256 takes 86 us in oneDNN and 121 us in MKL, and a
#: click's hypernetwork product 3 x 32 x 65536 (6.3M) 162 us against 434 us.
ONEDNN_MIN_MACS = 1 << 22


@functools.cache
def onednn_linear_available(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build has oneDNN's linear for ``dtype`` (bfloat16: only where oneDNN runs it)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    return dtype is torch.float32 or (dtype is torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.cache
def cpu_vendor() -> str:
    """The CPU's vendor id ("GenuineIntel", "AuthenticAMD", ...), or "" where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "GenuineIntel" if "GenuineIntel" in platform.processor() else ""  # Windows names it there


@functools.cache
def float32_on_onednn() -> bool:
    """Whether big float32 CPU products go to oneDNN: everywhere except on Intel CPUs with PyTorch's MKL.

    There MKL runs its AVX-512 kernels. On a 2-core Xeon with AVX-512 (2 threads) it beat oneDNN on the
    whole paths (set_image 1724 against 1828 ms, a click 29.5 against 32.9 ms, one interleaved run) and
    matched it on most products (``benchmarks/gemm_kernels.py``: linears within 10 % either way, a click's
    token-to-image scores 478 against 617 us, memory attention's fused kernel 581 against 790 ms on
    packed keys). Elsewhere (AMD) MKL runs AVX2.
    """
    return not (torch.backends.mkl.is_available() and cpu_vendor() == "GenuineIntel")


def _pays(macs: int, *tensors: torch.Tensor) -> bool:
    """CPU float32 / bfloat16 of one dtype, no autograd, not inside a trace or compile, and a product
    of ``macs`` multiply-adds, enough to pay oneDNN's per-call cost (float32: where oneDNN beats MKL)."""
    dtype = tensors[0].dtype
    if any(t.device.type != "cpu" or t.dtype is not dtype for t in tensors):
        return False
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if dtype is torch.float32 and not float32_on_onednn():
        return False
    return macs >= ONEDNN_MIN_MACS and onednn_linear_available(dtype)


def _uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return _pays(x.numel() * weight.shape[0], x, weight)


def _onednn_call(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    add: torch.Tensor | None,
    post_op: tuple[str, str] = ("none", ""),
) -> torch.Tensor:
    """(M, K) rows times an (N, K) weight (dense, strided or packed), plus (N,) bias and (M, N) ``add``,
    then the element-wise ``post_op`` (oneDNN's name and algorithm: ("gelu", "none"), ("relu", ""))."""
    if add is None:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, post_op[0], [], post_op[1])
    return torch.ops.mkldnn._linear_pointwise.binary(x, add.contiguous(), weight, bias, "add")


def _onednn_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    out_features: int,
    post_op: tuple[str, str] = ("none", ""),
) -> torch.Tensor:
    out = _onednn_call(x.reshape(-1, x.shape[-1]), weight, bias, None, post_op)
    return out.view(*x.shape[:-1], out_features)


def _post_op(activation: nn.Module) -> tuple[str, str] | None:
    """oneDNN's fused element-wise op computing ``activation`` exactly, or None."""
    if type(activation) is nn.GELU:
        return ("gelu", activation.approximate)
    if type(activation) is nn.ReLU:
        return ("relu", "")
    return None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; big float32 CPU products in oneDNN (see the module docstring)."""
    if x.dtype is torch.float32 and _uses_onednn(x, weight):
        return _onednn_linear(x, weight, bias, weight.shape[0])
    return F.linear(x, weight, bias)


def matmul(
    a: torch.Tensor, b: torch.Tensor, add: torch.Tensor | None = None, *, add_is_scratch: bool = False
) -> torch.Tensor:
    """``a @ b + add``: (M, K) @ (K, N), or batched (B|1, M, K) @ (B|1, K, N) with a (B|1, M, N) addend
    (a batch of one broadcasts, as in ``torch.baddbmm``). Big CPU products run in oneDNN, the
    addend fused into the GEMM; otherwise ``torch.matmul`` / ``torch.addmm`` / ``torch.baddbmm``.

    ``add_is_scratch``: the caller gives ``add`` up (a temporary of the output's shape), so PyTorch's
    kernels accumulate into it in place instead of into a copy (one pass less over the output).
    Inside ``torch.compile`` the addend is a separate addition, which inductor fuses into whatever
    reads the product next (a GEMM's addend is copied into its output first, then read again).
    """
    if a.dim() != b.dim() or a.dim() not in (2, 3) or (add is not None and add.dim() != a.dim()):
        raise ValueError(f"matmul takes 2-D or 3-D operands of one rank, got {a.dim()}, {b.dim()}")
    if add is not None and torch.compiler.is_compiling():
        return torch.matmul(a, b) + add
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    operands = (a, b) if add is None else (a, b, add)
    if a.dim() == 2:
        if not _pays(m * k * n, *operands):
            if add is None:
                return a @ b
            return add.addmm_(a, b) if accumulates_into(add, add_is_scratch, (m, n)) else torch.addmm(add, a, b)
        return _product(a, b, add)
    batch = max(t.shape[0] for t in operands)
    folds = b.shape[0] == 1 and a.shape[0] == batch and (add is None or add.shape[0] == batch)
    if folds and _pays(batch * m * k * n, *operands):
        # one shared right-hand side: all batches' rows in one product
        other = None if add is None else add.reshape(-1, n)
        return _product(a.reshape(-1, k), b[0], other).view(batch, m, n)
    if folds or not _pays(m * k * n, *operands):  # a product per batch: each must pay oneDNN's call
        if add is None:
            return torch.matmul(a, b)
        a, b = a.expand(batch, -1, -1), b.expand(batch, -1, -1)
        if accumulates_into(add, add_is_scratch, (batch, m, n)):
            return add.baddbmm_(a, b)
        return torch.baddbmm(add, a, b)
    out = a.new_empty(batch, m, n)
    for i in range(batch):
        other = None if add is None else add[min(i, add.shape[0] - 1)]
        out[i] = _product(a[min(i, a.shape[0] - 1)], b[min(i, b.shape[0] - 1)], other)
    return out


def accumulates_into(add: torch.Tensor, scratch: bool, shape: tuple[int, ...]) -> bool:
    """Whether a scratch addend can hold a product's output in place: its full ``shape``, dense, no
    autograd (for callers that run PyTorch's ``addmm_`` / ``baddbmm_`` themselves)."""
    return scratch and tuple(add.shape) == shape and add.is_contiguous() and not torch.is_grad_enabled()


def _product(a: torch.Tensor, b: torch.Tensor, add: torch.Tensor | None) -> torch.Tensor:
    """(M, K) @ (K, N) (+ (M, N)) in oneDNN, which reads ``b`` transposed in place as its weight."""
    return _onednn_call(a, b.transpose(0, 1), None, add)


def flush_subnormals_(weights: torch.Tensor) -> torch.Tensor:
    """Zero the subnormal entries of non-negative ``weights`` (softmax outputs) in place, on a CPU in
    float32 / float64 without autograd; returns ``weights``.

    Below the smallest normal float (1.2e-38) they change no sum at float32 precision, but an Intel
    CPU takes a microcode assist for every product with one (PyTorch sets flush-to-zero in the calling
    thread only, not in its worker threads): a grid decoder's (64, 256, 64) x (64, 64, 128) product
    over weights 10 % subnormal took 24 ms against 1.6 ms flushed. bfloat16 products flush them anyway.
    """
    if weights.device.type == "cpu" and weights.dtype in (torch.float32, torch.float64) and not torch.is_grad_enabled():
        torch.threshold_(weights, torch.finfo(weights.dtype).tiny, 0.0)
    return weights


def softmax_flushed_(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """``flush_subnormals_(scores.softmax(dim))`` without computing a subnormal on the way; overwrites
    ``scores`` (CPU float32 / float64 without autograd; elsewhere a plain softmax).

    Scores more than ln(smallest normal) below their maximum exponentiate to a subnormal or zero,
    which the flush zeroes anyway and which change no sum of at least one: they are set to -inf first,
    so the exponential never forms one (an Intel CPU takes a microcode assist for each). masklet-nano's
    grid decoder has 10 % subnormal image-to-token weights: its (8, 64, 8, 256) softmax over the tokens
    took 2.5 ms, 0.5 ms on random scores, 0.76 ms this way."""
    if scores.device.type != "cpu" or scores.dtype not in (torch.float32, torch.float64) or torch.is_grad_enabled():
        return scores.softmax(dim)
    scores.sub_(scores.amax(dim, keepdim=True))
    # a little below ln(tiny), so that everything set to -inf would have been flushed
    torch.threshold_(scores, math.log(torch.finfo(scores.dtype).tiny) - 0.01, -math.inf)
    return flush_subnormals_(scores.softmax(dim))


def onednn_ready(*tensors: torch.Tensor) -> bool:
    """Whether :func:`pack` and :func:`packed_product` run on these tensors (CPU float32 / bfloat16
    of one dtype, no autograd, no trace or compile): for callers that decide on size themselves."""
    return _pays(ONEDNN_MIN_MACS, *tensors)


def pack(weight: torch.Tensor) -> torch.Tensor:
    """An (N, K) weight in oneDNN's own layout, for several :func:`packed_product` calls with it."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, None)


def packed_product(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """(M, K) rows times a :func:`pack`-ed (N, K) weight, transposed: (M, N)."""
    return _onednn_call(x, packed, None, None)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys); big CPU products in oneDNN. bfloat16 weights
    are packed once in oneDNN's layout (4-29 % over ``F.linear``, which reorders the weight on every
    call; a second copy of the weights in memory); float32 ones are read as they are (packing them
    measured within noise on the whole encoder).

    The packed copy is rebuilt when the weight changes (another tensor, or an in-place update such as
    ``load_state_dict``), and is left out of copies and pickles (oneDNN tensors have no storage).
    """

    _packed: tuple[tuple, torch.Tensor] | None = None  # ((data_ptr, version, dtype), packed weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _uses_onednn(x, self.weight):
            return F.linear(x, self.weight, self.bias)
        return _onednn_linear(x, self._onednn_weight(), self.bias, self.out_features)

    def forward_activated(self, x: torch.Tensor, activation: nn.Module) -> torch.Tensor:
        """``activation(self(x))``; a GELU or ReLU fused into oneDNN's GEMM where that runs, which
        saves a pass over the output (stage-2 MLP of the tiny trunk, float32: 80 -> 48 ms). Inside
        ``torch.compile`` the bias is added apart, so that inductor fuses it into the activation's
        kernel (an ``addmm`` first copies the bias into its output; inductor unfuses that on GPUs only)."""
        if torch.compiler.is_compiling() and self.bias is not None:
            return activation(F.linear(x, self.weight) + self.bias)
        post_op = _post_op(activation)
        if post_op is None or not _uses_onednn(x, self.weight):
            return activation(self(x))
        return _onednn_linear(x, self._onednn_weight(), self.bias, self.out_features, post_op)

    def _onednn_weight(self) -> torch.Tensor:
        """A bfloat16 weight packed in oneDNN's layout; float32 ones, and weights made under
        inference_mode (no version counter to see updates by), as they are."""
        weight = self.weight
        if weight.dtype is not torch.bfloat16 or weight.is_inference():
            return weight
        return self._packed_weight(weight)

    def _packed_weight(self, weight: torch.Tensor) -> torch.Tensor:
        key = (weight.data_ptr(), weight._version, weight.dtype)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None))
        return self._packed[1]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_packed", None)
        return state
