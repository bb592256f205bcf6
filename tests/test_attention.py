"""Low-precision attention paths (sliced explicit matmuls, values projected late) against float32."""

from __future__ import annotations

import copy

import pytest
import torch

from masklet.model import attention as attention_module
from masklet.model.attention import RoPEAttention, softmax_attention
from masklet.model.config import MemoryAttentionConfig
from masklet.model.memory import MemoryAttention


@pytest.mark.parametrize("budget", [1 << 22, 1000])  # one batched matmul, or many small slices
def test_softmax_attention_bfloat16_matches_float32(monkeypatch, budget):
    monkeypatch.setattr(attention_module, "_SCORE_BUDGET", budget)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 70, 32, generator=gen) for _ in range(3))
    exact = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double()).float()
    low = softmax_attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).float()
    assert low.shape == exact.shape
    assert float((low - exact).abs().max()) < 0.05


def test_late_value_projection_is_the_same_attention():
    torch.manual_seed(0)
    layer = RoPEAttention(64, 1, kv_in_dim=16, rope_k_repeat=True, feat_sizes=(4, 4)).eval()
    q, k, v = torch.randn(2, 16, 64), torch.randn(2, 3 * 16 + 4, 16), torch.randn(2, 3 * 16 + 4, 16)
    with torch.no_grad():
        reference = layer(q, k, v, num_k_exclude_rope=4)
        low = copy.deepcopy(layer).bfloat16()
        assert low._project_values_late(q.bfloat16())
        result = low(q.bfloat16(), k.bfloat16(), v.bfloat16(), num_k_exclude_rope=4).float()
    assert float((result - reference).abs().max()) < 0.05 * float(reference.abs().max())


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
