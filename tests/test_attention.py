"""Attention fast paths: low precision (sliced explicit matmuls, values projected late) against
float32, in-place RoPE against the official rotation, chunked rows, windowed blocks a few rows of
windows at a time and a shared frame against the plain computation."""

from __future__ import annotations

import copy

import pytest
import torch

from masklet.model import attention as attention_module
from masklet.model import common as common_module
from masklet.model import gemm
from masklet.model import hiera as hiera_module
from masklet.model.attention import RoPEAttention, _softmax_rows_, softmax_attention
from masklet.model.common import map_rows
from masklet.model.config import HieraConfig, MemoryAttentionConfig
from masklet.model.hiera import Hiera, MultiScaleBlock, max_pool_grid
from masklet.model.memory import MemoryAttention
from masklet.model.position import apply_rope, apply_rope_, axial_rope_angles


@pytest.mark.parametrize(
    ("slice_scores", "min_rows", "sliced"),
    [
        (1 << 22, 8, []),  # one batched matmul a head
        (1500, 8, [21 * 70]),  # 21-query slices (the last one 7)
        (200, 30, [30 * 70]),  # 200 scores would be 2 rows: the fewest rows a slice takes instead
    ],
)
def test_softmax_attention_bfloat16_matches_float32(monkeypatch, slice_scores, min_rows, sliced):
    monkeypatch.setattr(attention_module, "_SLICE_SCORES", slice_scores)
    monkeypatch.setattr(attention_module, "_MIN_SLICE_ROWS", min_rows)
    budgets = []
    real = attention_module._attention_in_slices
    monkeypatch.setattr(attention_module, "_attention_in_slices", lambda *a: budgets.append(a[3]) or real(*a))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 70, 32, generator=gen) for _ in range(3))
    exact = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double()).float()
    with torch.no_grad():
        low = softmax_attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).float()
    assert budgets == sliced
    assert low.shape == exact.shape
    assert float((low - exact).abs().max()) < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place_softmax_equals_torch_softmax(dtype):
    scores = (torch.randn(5, 28_739, generator=torch.Generator().manual_seed(0)) * 8).to(dtype)
    expected = torch.softmax(scores, dim=-1)
    assert _softmax_rows_(scores) is scores
    assert torch.equal(scores, expected)


def test_late_value_projection_is_the_same_attention():
    torch.manual_seed(0)
    layer = RoPEAttention(64, 1, kv_in_dim=16, rope_k_repeat=True, feat_sizes=(4, 4)).eval()
    q, k, v = torch.randn(2, 16, 64), torch.randn(2, 3 * 16 + 4, 16), torch.randn(2, 3 * 16 + 4, 16)
    with torch.no_grad():
        reference = layer(q, k, v, num_k_exclude_rope=4)
        low = copy.deepcopy(layer).bfloat16()
        assert low._project_values_late(q.bfloat16()[:, None], k.bfloat16()[:, None], v.bfloat16())
        result = low(q.bfloat16(), k.bfloat16(), v.bfloat16(), num_k_exclude_rope=4).float()
    assert float((result - reference).abs().max()) < 0.05 * float(reference.abs().max())


class _WithPointers(torch.nn.Module):
    """A RoPE attention whose last 4 keys are pointers (unrotated), as a module a trace can take."""

    def __init__(self, layer: RoPEAttention) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.layer(q, k, v, num_k_exclude_rope=4)


def test_float32_attention_in_mkl_slices_equals_the_fused_kernel(monkeypatch):
    """Where float32 stays with MKL (Intel), big attentions over wide heads run as explicit products
    in query slices, and one-head RoPE attention over narrow values projects them late: the same
    attention as the fused kernel on projected values."""
    monkeypatch.setattr(gemm, "float32_on_onednn", lambda: False)
    monkeypatch.setattr(attention_module, "_SCORE_BUDGET", 500)  # 16 x 52 scores are "big"
    monkeypatch.setattr(attention_module, "_FLOAT32_SCORE_BUDGET", 200)  # 3-query slices, the last one 1
    monkeypatch.setattr(attention_module, "_PACKED_KEYS_MIN_WIDTH", 64)
    sliced = []
    real = attention_module._attention_in_slices
    monkeypatch.setattr(attention_module, "_attention_in_slices", lambda *a: sliced.append(a[2].shape[-1]) or real(*a))
    torch.manual_seed(0)
    layer = RoPEAttention(64, 1, kv_in_dim=16, rope_k_repeat=True, feat_sizes=(4, 4)).eval()
    q, k, v = torch.randn(2, 16, 64), torch.randn(2, 3 * 16 + 4, 16), torch.randn(2, 3 * 16 + 4, 16)
    with torch.no_grad():
        got = layer(q, k, v, num_k_exclude_rope=4)
    assert sliced == [16]  # the raw 16-channel values, projected after the attention
    monkeypatch.setattr(gemm, "float32_on_onednn", lambda: True)  # oneDNN CPUs: packed keys, projected values
    monkeypatch.setattr(attention_module, "_packed_keys_pay", lambda *a: False)  # ... or the fused kernel
    with torch.no_grad():
        expected = layer(q, k, v, num_k_exclude_rope=4)
    assert sliced == [16]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.enable_grad():  # autograd keeps the fused kernel
        layer(q, k, v, num_k_exclude_rope=4)
    monkeypatch.setattr(gemm, "float32_on_onednn", lambda: False)
    with torch.no_grad():  # so does a trace (an export records one graph on every CPU)
        traced = torch.jit.trace(_WithPointers(layer), (q, k, v), check_trace=False)  # no eager re-run
    assert sliced == [16]
    torch.testing.assert_close(traced(q, k, v), expected, rtol=1e-5, atol=1e-5)


def test_float32_attention_on_packed_keys_projects_narrow_values_late(monkeypatch):
    """Where float32 goes to oneDNN (AMD), one-head RoPE attention over narrow values hands the raw
    values to the packed-key attention and projects after it: the fused kernel's attention on
    projected values. With a key mask (no packed keys) the values are projected first."""
    monkeypatch.setattr(gemm, "float32_on_onednn", lambda: True)
    monkeypatch.setattr(attention_module, "_SCORE_BUDGET", 500)  # 16 x 52 scores are "big"
    monkeypatch.setattr(attention_module, "_PACKED_KEYS_MIN_WIDTH", 64)
    monkeypatch.setattr(gemm, "ONEDNN_MIN_MACS", 1)
    widths = []
    real = attention_module._attention_on_packed_keys
    monkeypatch.setattr(
        attention_module, "_attention_on_packed_keys", lambda *a: widths.append(a[2].shape[-1]) or real(*a)
    )
    torch.manual_seed(0)
    layer = RoPEAttention(64, 1, kv_in_dim=16, rope_k_repeat=True, feat_sizes=(4, 4)).eval()
    q, k, v = torch.randn(2, 16, 64), torch.randn(2, 3 * 16 + 4, 16), torch.randn(2, 3 * 16 + 4, 16)
    with torch.no_grad():
        got = layer(q, k, v, num_k_exclude_rope=4)
        assert widths == [16]  # the raw 16-channel values
        every_key = torch.ones(2, k.shape[1], dtype=torch.bool)
        masked = layer(q, k, v, num_k_exclude_rope=4, key_mask=every_key)  # the fused kernel, projected values
    assert widths == [16]
    monkeypatch.setattr(attention_module, "_packed_keys_pay", lambda *a: False)
    with torch.no_grad():
        expected = layer(q, k, v, num_k_exclude_rope=4)  # the fused kernel on projected values
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(masked, expected, rtol=1e-5, atol=1e-5)


def test_memory_attention_in_bfloat16_stays_close_to_float32(monkeypatch):
    monkeypatch.setattr(attention_module, "_SCORE_BUDGET", 5000)
    torch.manual_seed(0)
    module = MemoryAttention(MemoryAttentionConfig(num_layers=2, dim_feedforward=128), 64, 16, 8).eval()
    curr, curr_pos = torch.randn(64, 2, 64), torch.randn(64, 2, 64)
    memory, memory_pos = torch.randn(4 * 64 + 8, 2, 16), torch.randn(4 * 64 + 8, 2, 16)
    with torch.no_grad():
        reference = module(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=8)
        low = copy.deepcopy(module).bfloat16()
        result = low(curr.bfloat16(), memory.bfloat16(), curr_pos.bfloat16(), memory_pos.bfloat16(), 8).float()
    cosine = torch.nn.functional.cosine_similarity(result.flatten(), reference.flatten(), dim=0)
    assert float(cosine) > 0.999


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_matches_the_official_rotation(dtype):
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 1, 16, 32, generator=gen).to(dtype)
    k = torch.randn(2, 1, 3 * 16 + 4, 32, generator=gen).to(dtype)  # three 4x4 grids + 4 pointers
    ref_q, ref_k = apply_rotary_enc(q, k[:, :, :48], compute_axial_cis(32, 4, 4), repeat_freqs_k=True)
    rotations = axial_rope_angles(32, 4, 4)
    torch.testing.assert_close(apply_rope(q, rotations), ref_q)
    rotated = apply_rope(k, rotations, 48)
    torch.testing.assert_close(rotated[:, :, :48], ref_k)
    assert torch.equal(rotated[:, :, 48:], k[:, :, 48:])
    in_place = k.clone()
    assert apply_rope_(in_place, rotations, 48) is in_place
    assert torch.equal(in_place, rotated)
    with pytest.raises(ValueError, match="whole number"):
        apply_rope(k, rotations, 40)


def test_map_rows_in_chunks_equals_one_call(monkeypatch):
    monkeypatch.setattr(common_module, "_CHUNK_ROWS", 7)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.LayerNorm(6), torch.nn.Linear(6, 24), torch.nn.GELU(), torch.nn.Linear(24, 5))
    x = torch.randn(3, 6, 10).permute(0, 2, 1)  # 30 rows, not contiguous
    reference = mlp(x)
    calls = []
    with torch.no_grad():
        result = map_rows(lambda rows: calls.append(len(rows)) or mlp(rows), x)
    assert calls == [7, 7, 7, 7, 2] and result.shape == (3, 10, 5)
    torch.testing.assert_close(result, reference)


def test_windowed_blocks_in_window_rows_equal_the_partitioned_path(monkeypatch):
    """A small trunk whose windowed blocks (a plain one, a widening q-pooling one, a stage-2 one) run
    a few rows of windows at a time gives the partitioned path's stage outputs; autograd keeps the
    partitioned path, and both agree on the forward there too."""
    monkeypatch.setattr(hiera_module, "_WINDOW_ROWS_QKV_ELEMENTS", 3000)  # 2-4 chunks per block here
    torch.manual_seed(0)
    config = HieraConfig(
        embed_dim=16, stages=(1, 2, 2, 1), global_att_blocks=(4,), window_spec=(4, 2, 4, 2),
        window_pos_embed_bkg_spatial_size=(4, 4),
    )  # fmt: skip
    trunk = Hiera(config).eval()
    pixels = torch.randn(1, 3, 96, 96)  # stage maps 24, 12, 6, 3: window 4 pads the 6 x 6 map
    chunked, attends = [], MultiScaleBlock._attend_in_window_rows
    monkeypatch.setattr(
        MultiScaleBlock, "_attend_in_window_rows", lambda self, x: chunked.append(self.window_size) or attends(self, x)
    )
    with torch.no_grad():
        rows = trunk(pixels)
        assert chunked == [4, 4, 2, 2]  # stage 1, two widening blocks, stage 2; stage 3 pads
        monkeypatch.setattr(MultiScaleBlock, "_attends_in_window_rows", lambda self, x: False)
        partitioned = trunk(pixels)
    for a, b in zip(rows, partitioned):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    monkeypatch.undo()
    monkeypatch.setattr(hiera_module, "_WINDOW_ROWS_QKV_ELEMENTS", 3000)
    monkeypatch.setattr(
        MultiScaleBlock, "_attend_in_window_rows", lambda self, x: chunked.append(self.window_size) or attends(self, x)
    )
    chunked.clear()
    trained = trunk(pixels.requires_grad_())  # autograd: the partitioned path, nothing in place
    assert chunked == []
    sum(level.sum() for level in trained).backward()
    assert pixels.grad is not None and bool(pixels.grad.abs().sum() > 0)
    for a, b in zip(trained, partitioned):
        torch.testing.assert_close(a.detach(), b, rtol=1e-6, atol=1e-6)


def test_memory_attention_runs_a_shared_frame_once():
    torch.manual_seed(0)
    module = MemoryAttention(MemoryAttentionConfig(num_layers=2, dim_feedforward=128), 64, 16, 8).eval()
    curr, curr_pos = torch.randn(64, 1, 64), torch.randn(64, 1, 64)
    memory, memory_pos = torch.randn(2 * 64 + 8, 3, 16), torch.randn(2 * 64 + 8, 3, 16)
    calls = []
    module.layers[0].self_attn.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        shared = module(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=8)
        expanded = module(curr.expand(-1, 3, -1), memory, curr_pos.expand(-1, 3, -1), memory_pos, num_obj_ptr_tokens=8)
    assert calls == [1, 3] and shared.shape == (64, 3, 64)
    torch.testing.assert_close(shared, expanded)


def test_softmax_attention_bfloat16_reads_head_strided_projections():
    """The trunk passes q, k, v as (B, heads, N, d) views of one (B, N, 3, heads, d) projection."""
    gen = torch.Generator().manual_seed(1)
    qkv = torch.randn(6, 49, 3, 4, 16, generator=gen)
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    assert not q.is_contiguous()
    exact = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double()).float()
    low = softmax_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert low.shape == exact.shape
    assert float((low.float() - exact).abs().max()) < 0.05


@pytest.mark.parametrize("stride", [(2, 2), (3, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_max_pool_grid_equals_max_pool2d(stride, dtype):
    """Channels-last pooling keeps MaxPool2d's values: remainders dropped, NaN propagated."""
    x = torch.randn(2, 9, 7, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
    x[1, 4, 3, 2] = float("nan")
    expected = torch.nn.MaxPool2d(stride, stride)(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    got = max_pool_grid(x, stride)
    assert got.shape == expected.shape == (2, 9 // stride[0], 7 // stride[1], 5)
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    assert bool(got.isnan().any())


def test_softmax_attention_in_low_precision_can_be_differentiated():
    """Export traces and training run with autograd on: no out= or in-place op on the way."""
    q, k, v = (torch.randn(2, 3, 20, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    q16 = q.to(torch.float16).requires_grad_()
    out = softmax_attention(q16, k.to(torch.float16), v.to(torch.float16))
    out.float().sum().backward()
    assert q16.grad is not None and bool(q16.grad.abs().sum() > 0)
    exact = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double())
    assert float((out.detach().double() - exact).abs().max()) < 0.05


def test_float32_attention_on_packed_keys_equals_the_fused_kernel(monkeypatch):
    """Big float32 attentions over wide heads go through oneDNN on packed keys, in query slices
    (where float32 goes to oneDNN: pinned here, as on an AMD CPU)."""
    monkeypatch.setattr(gemm, "float32_on_onednn", lambda: True)
    monkeypatch.setattr(attention_module, "_SCORE_BUDGET", 5000)  # 2 x 3 x 70 x 90 scores are "big"
    monkeypatch.setattr(attention_module, "_FLOAT32_SCORE_BUDGET", 3000)  # 33-query slices, the last one 4
    products = []
    packed_product = gemm.packed_product
    monkeypatch.setattr(gemm, "packed_product", lambda x, w: products.append(len(x)) or packed_product(x, w))
    calls = []
    real = attention_module._attention_on_packed_keys
    monkeypatch.setattr(attention_module, "_attention_on_packed_keys", lambda *a: calls.append(1) or real(*a))
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(2, 3, 70, 128, generator=gen)
    k, v = torch.randn(2, 3, 90, 128, generator=gen), torch.randn(2, 3, 90, 128, generator=gen)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with torch.no_grad():
        got = softmax_attention(q, k, v)
        narrow = softmax_attention(q[..., :64], k[..., :64], v[..., :64])  # narrow heads: the fused kernel
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert calls == [1]
    assert products == [33, 33, 33, 33, 4, 4] * 6  # scores and output of each slice, per batch-head
    torch.testing.assert_close(
        narrow, torch.nn.functional.scaled_dot_product_attention(q[..., :64], k[..., :64], v[..., :64])
    )
