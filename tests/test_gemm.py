"""oneDNN products (masklet.model.gemm): the same values as PyTorch's own, on every broadcast shape
and dtype they take; the packed weight follows weight updates; autograd, traces and small products
keep PyTorch's kernels."""

from __future__ import annotations

import copy
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from masklet.model import gemm
from masklet.model.gemm import Linear, linear, matmul

pytestmark = pytest.mark.skipif(not gemm.onednn_linear_available(torch.float32), reason="no oneDNN in this build")


@pytest.fixture(autouse=True)
def _float32_on_onednn(monkeypatch):
    """These tests run oneDNN's products on every CPU (on Intel ones float32 otherwise stays on MKL)."""
    monkeypatch.setattr(gemm, "float32_on_onednn", lambda: True)


@pytest.mark.parametrize(
    ("vendor", "mkl", "expected"),
    [("GenuineIntel", True, False), ("AuthenticAMD", True, True), ("GenuineIntel", False, True), ("", True, True)],
)
def test_float32_goes_to_onednn_except_on_intel_with_mkl(monkeypatch, vendor, mkl, expected):
    monkeypatch.undo()  # the real policy, not the autouse pin
    monkeypatch.setattr(gemm, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: mkl)
    gemm.float32_on_onednn.cache_clear()
    try:
        assert gemm.float32_on_onednn() is expected
        calls = _count_onednn(monkeypatch)
        a, b = torch.randn(300, 200), torch.randn(200, 150)
        with torch.no_grad():
            torch.testing.assert_close(matmul(a, b), a @ b, rtol=1e-5, atol=1e-4)
            matmul(a.bfloat16(), b.bfloat16())  # low precision follows its own availability
        float32_calls = 1 if expected else 0
        assert calls[0] == float32_calls + int(gemm.onednn_linear_available(torch.bfloat16))
    finally:
        gemm.float32_on_onednn.cache_clear()


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads Linux's /proc/cpuinfo")
def test_cpu_vendor_is_the_vendor_id_of_proc_cpuinfo():
    with open("/proc/cpuinfo") as info:
        ids = {line.split(":", 1)[1].strip() for line in info if line.startswith("vendor_id")}
    assert ids == ({gemm.cpu_vendor()} if ids else set())


def _count_onednn(monkeypatch) -> list[int]:
    """Counts calls of oneDNN's linear (the wrapped op still runs)."""
    calls = [0]
    real = gemm._onednn_call

    def counted(*args):
        calls[0] += 1
        return real(*args)

    monkeypatch.setattr(gemm, "_onednn_call", counted)
    return calls


@pytest.mark.parametrize(
    "batches", [(1, 1, 1), (3, 1, 3), (3, 3, 3), (3, 1, 1), (1, 3, 3), (3, 3, 1), (3, 1, None), (1, 3, None)]
)
def test_batched_matmul_equals_torch_on_every_broadcast(monkeypatch, batches):
    calls = _count_onednn(monkeypatch)
    ba, bb, bc = batches
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(ba, 300, 200, generator=gen), torch.randn(bb, 200, 150, generator=gen)
    add = None if bc is None else torch.randn(bc, 300, 150, generator=gen)
    batch = max(ba, bb, bc or 1)
    expected = a.double() @ b.double() + (0 if add is None else add.double())
    with torch.no_grad():
        got = matmul(a, b, add)
    assert got.shape == (batch, 300, 150) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-4)
    assert calls[0] >= 1


def test_two_dimensional_and_transposed_operands(monkeypatch):
    calls = _count_onednn(monkeypatch)
    gen = torch.Generator().manual_seed(1)
    a, bt, add = torch.randn(500, 200, generator=gen), torch.randn(150, 200, generator=gen), torch.randn(500, 150)
    with torch.no_grad():
        torch.testing.assert_close(matmul(a, bt.t(), add), torch.addmm(add, a, bt.t()), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(matmul(a.t().contiguous().t(), bt.t()), a @ bt.t(), rtol=1e-5, atol=1e-4)
    assert calls[0] == 2


@pytest.mark.parametrize("batches", [None, (3, 3, 3), (3, 1, 1), (1, 3, 3), (3, 3, 1)])
def test_addend_under_torch_compile_is_a_separate_addition(batches):
    """Inside a compiled graph the addend is added after the product (inductor fuses it into the
    next reader); the graph holds no addmm / baddbmm and equals the product plus the addend."""
    gen = torch.Generator().manual_seed(3)
    if batches is None:
        a, b, add = torch.randn(40, 30, generator=gen), torch.randn(30, 20, generator=gen), torch.randn(40, 20)
    else:
        ba, bb, bc = batches
        a, b = torch.randn(ba, 40, 30, generator=gen), torch.randn(bb, 30, 20, generator=gen)
        add = torch.randn(bc, 40, 20, generator=gen)
    ops: list[str] = []

    def backend(graph: torch.fx.GraphModule, example_inputs):
        ops.extend(str(node.target) for node in graph.graph.nodes if node.op == "call_function")
        return graph.forward

    torch._dynamo.reset()
    with torch.no_grad():
        got = torch.compile(lambda x, y, z: matmul(x, y, z, add_is_scratch=True), backend=backend)(a, b, add)
    torch.testing.assert_close(got.double(), a.double() @ b.double() + add.double(), rtol=1e-5, atol=1e-4)
    assert ops and not any("addmm" in op or "baddbmm" in op for op in ops), ops


def test_activated_linear_under_torch_compile_adds_its_bias_apart():
    """Compiled, ``forward_activated`` is a product without bias, a bias addition and the activation
    (which inductor fuses into one kernel); it equals the eager module."""
    layer = Linear(48, 96)
    x = torch.randn(20, 48, generator=torch.Generator().manual_seed(4))
    calls: list[tuple[str, int]] = []

    def backend(graph: torch.fx.GraphModule, example_inputs):
        calls.extend((str(n.target), len(n.args)) for n in graph.graph.nodes if n.op == "call_function")
        return graph.forward

    torch._dynamo.reset()
    with torch.no_grad():
        got = torch.compile(lambda t: layer.forward_activated(t, torch.nn.GELU()), backend=backend)(x)
        torch.testing.assert_close(got, F.gelu(F.linear(x, layer.weight, layer.bias)), rtol=1e-5, atol=1e-5)
    products = [args for target, args in calls if "linear" in target]
    assert products == [2], calls  # input and weight only
    assert any("add" in target for target, _ in calls), calls


def test_bfloat16_products_round_like_torch():
    gen = torch.Generator().manual_seed(2)
    a, b = (torch.randn(256, 192, generator=gen) for _ in range(2))
    exact = a.double() @ b.double().t()
    with torch.no_grad():
        low = matmul(a.bfloat16(), b.bfloat16().t())
    assert low.dtype == torch.bfloat16
    assert float((low.double() - exact).abs().max() / exact.abs().max()) < 0.02


def test_small_products_autograd_and_traces_keep_torch(monkeypatch):
    calls = _count_onednn(monkeypatch)
    x, w = torch.randn(4, 64), torch.randn(64, 64)
    with torch.no_grad():
        matmul(x, w)  # 16k multiply-adds: below ONEDNN_MIN_MACS
    big, weight = torch.randn(512, 256, requires_grad=True), torch.randn(256, 256)
    out = linear(big, weight)  # autograd on
    out.sum().backward()
    assert big.grad is not None
    torch.jit.trace(lambda t: linear(t, weight), torch.randn(512, 256), check_trace=False)
    assert calls[0] == 0
    with torch.no_grad():
        linear(big, weight)
    assert calls[0] == 1


def test_linear_module_keeps_its_state_dict_and_follows_weight_updates(monkeypatch):
    calls = _count_onednn(monkeypatch)
    packs = gemm.onednn_linear_available(torch.bfloat16)  # False on CPUs without native bfloat16 (AVX2)
    layer, plain = Linear(256, 512), torch.nn.Linear(256, 512)
    assert set(layer.state_dict()) == set(plain.state_dict())
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 300, 256)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), plain(x), rtol=1e-5, atol=1e-4)
        assert layer._packed is None  # float32 weights are read as they are
        layer.to(torch.bfloat16)
        plain.to(torch.bfloat16)
        low = x.bfloat16()
        torch.testing.assert_close(layer(low), plain(low), rtol=2e-2, atol=2e-2)
        assert (layer._packed is not None) == packs
        packed = layer._packed[1] if layer._packed else None
        layer(low)
        assert (layer._packed[1] if layer._packed else None) is packed  # reused while the weight is unchanged
        new = {k: torch.randn_like(v) for k, v in plain.state_dict().items()}  # outputs ~16, were ~0.6
        plain.load_state_dict(new)
        layer.load_state_dict(new)  # in place: the version counter moves, the packed copy is rebuilt
        torch.testing.assert_close(layer(low), plain(low), rtol=2e-2, atol=0.2)
        assert (layer._packed is not None and layer._packed[1] is not packed) == packs
    assert calls[0] == (4 if packs else 1)
    clone = copy.deepcopy(layer)  # the oneDNN tensor (no storage) is left out
    assert clone._packed is None
    assert pickle.loads(pickle.dumps(layer))._packed is None


def test_weights_made_in_inference_mode_are_not_packed():
    with torch.inference_mode():
        layer = Linear(256, 256).to(torch.bfloat16)  # inference tensors: no version counter
        x = torch.randn(300, 256).bfloat16()
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=2e-2, atol=2e-2)
    assert layer._packed is None


@pytest.mark.parametrize(
    "activation", [torch.nn.GELU(), torch.nn.GELU(approximate="tanh"), torch.nn.ReLU(), torch.nn.SiLU()]
)
def test_activation_fused_into_the_product_equals_applying_it_after(monkeypatch, activation):
    post_ops = []
    real = gemm._onednn_call

    def recorded(*args):
        post_ops.append(args[4] if len(args) > 4 else ("none", ""))
        return real(*args)

    monkeypatch.setattr(gemm, "_onednn_call", recorded)
    layer = Linear(96, 384)
    x = torch.randn(2, 700, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = activation(F.linear(x, layer.weight, layer.bias))
        got = layer.forward_activated(x, activation)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    fused = {torch.nn.GELU: ("gelu", getattr(activation, "approximate", "")), torch.nn.ReLU: ("relu", "")}
    assert post_ops == [fused.get(type(activation), ("none", ""))]


def test_matmul_refuses_operands_of_mixed_rank():
    with pytest.raises(ValueError, match="one rank"):
        matmul(torch.randn(2, 4, 8), torch.randn(8, 3))


@pytest.mark.parametrize("kernel", [1, 3])
def test_neck_lateral_equals_its_convolution(kernel):
    """The neck's 1x1 lateral convolutions run as linears over the channels-last trunk output."""
    from masklet.model.image_encoder import _lateral

    conv = torch.nn.Conv2d(96, 256, kernel, padding=kernel // 2)
    x = torch.randn(1, 40, 48, 96).permute(0, 3, 1, 2)  # the trunk's (B, C, H, W) view of (B, H, W, C)
    with torch.no_grad():
        got, expected = _lateral(conv, x), conv(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_flush_subnormals_zeroes_only_subnormal_weights():
    tiny = torch.finfo(torch.float32).tiny
    weights = torch.tensor([0.0, tiny / 4, tiny / 1e6, tiny, 2 * tiny, 1e-20, 0.5, 1.0])
    expected = torch.tensor([0.0, 0.0, 0.0, 0.0, 2 * tiny, 1e-20, 0.5, 1.0])
    with torch.no_grad():
        assert gemm.flush_subnormals_(weights) is weights
    assert torch.equal(weights, expected)
    kept = torch.tensor([tiny / 4, 1.0])
    gemm.flush_subnormals_(kept.bfloat16())  # bfloat16: left alone (its products flush them)
    with torch.enable_grad():  # autograd: left alone (softmax's backward reads its output)
        assert torch.equal(gemm.flush_subnormals_(kept), torch.tensor([tiny / 4, 1.0]))


@pytest.mark.parametrize("dim", [0, 2, -1])
def test_softmax_flushed_equals_the_flushed_softmax(dim):
    """Scores over a range of thousands: many weights underflow to subnormals or zero; the
    pre-masked softmax gives exactly the flushed softmax, and never leaves a subnormal."""
    tiny = torch.finfo(torch.float32).tiny
    scores = torch.randn(6, 7, 8, 33, generator=torch.Generator().manual_seed(0)) * 60
    scores[..., 0] = -1e4  # far below the rest
    scores[0, 0, 0] = -5.0  # a row of one value
    with torch.no_grad():
        expected = gemm.flush_subnormals_(scores.softmax(dim))
        underflowed = scores.softmax(dim)
        assert ((underflowed > 0) & (underflowed < tiny)).any()  # the case the helper is for
        got = gemm.softmax_flushed_(scores.clone(), dim)
    assert torch.equal(got, expected)
    assert not ((got > 0) & (got < tiny)).any()
    with torch.enable_grad():  # autograd: a plain softmax
        x = scores.clone().requires_grad_()
        assert torch.equal(gemm.softmax_flushed_(x, dim), scores.softmax(dim))


def test_grid_decoder_products_run_on_flushed_softmax_weights(monkeypatch):
    """The automatic-mask decoder flushes every softmax it multiplies (masklet-nano's weights are
    about 10 % subnormal in the first block's image-to-token attention)."""
    import masklet
    from masklet.amg import decoder as amg_decoder

    tiny = torch.finfo(torch.float32).tiny
    seen: list[float] = []
    real = amg_decoder.matmul

    def checked(a, b, add=None, **options):
        for t in (a, b):
            if t.dtype is torch.float32:
                seen.append(float(((t != 0) & (t.abs() < tiny)).sum()))
        return real(a, b, add, **options)

    flushed: list[int] = []
    real_flush = amg_decoder.flush_subnormals_

    def counted_flush(x):
        flushed.append(1)
        return real_flush(x)

    monkeypatch.setattr(amg_decoder, "matmul", checked)
    monkeypatch.setattr(amg_decoder, "flush_subnormals_", counted_flush)
    model = masklet.load_model("masklet-nano")
    from masklet.synthetic import make_scene

    generator = masklet.MaskGenerator(model, points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.7)
    generator.generate(make_scene(1, size=(240, 320)).image)
    assert flushed and seen
    assert sum(seen) == 0


@pytest.mark.parametrize("route", ["onednn", "torch"])
def test_scratch_addend_holds_the_result_only_on_torchs_kernels(monkeypatch, route):
    """``add_is_scratch``: PyTorch's kernels accumulate into the addend (no copy); oneDNN's fused
    addend, a broadcast addend and autograd leave it as it was. Same values either way."""
    if route == "torch":
        monkeypatch.setattr(gemm, "float32_on_onednn", lambda: False)
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(3, 300, 200, generator=gen), torch.randn(3, 200, 150, generator=gen)
    add = torch.randn(3, 300, 150, generator=gen)
    expected = torch.baddbmm(add, a, b)
    for shape in [(3, 300, 150), (1, 300, 150)]:
        scratch = add[: shape[0]].clone()
        with torch.no_grad():
            got = matmul(a, b, scratch, add_is_scratch=True)
        torch.testing.assert_close(got, torch.baddbmm(add[: shape[0]], a, b), rtol=1e-5, atol=1e-4)
        in_place = route == "torch" and shape[0] == 3
        assert (got.data_ptr() == scratch.data_ptr()) is in_place
        assert torch.equal(scratch, add[: shape[0]]) is not in_place
    flat = add[0].clone()
    with torch.no_grad():
        got2 = matmul(a[0], b[0], flat, add_is_scratch=True)
    torch.testing.assert_close(got2, expected[0], rtol=1e-5, atol=1e-4)
    assert (got2.data_ptr() == flat.data_ptr()) is (route == "torch")
    kept = add.clone()
    with torch.enable_grad():
        matmul(a, b, kept, add_is_scratch=True)
    assert torch.equal(kept, add)
