"""PyTorch's default CPU GEMM (MKL for float32) against masklet.model.gemm's oneDNN route, on the
products SAM2 runs, interleaved in one run.

Rows: the trunk's and memory attention's linears (``F.linear`` vs ``masklet.model.gemm.Linear``),
a click's batched products (``torch.baddbmm`` / ``bmm`` vs ``masklet.model.gemm.matmul``) and two
float32 attentions (the fused kernel vs ``masklet.model.attention.softmax_attention``, which takes
memory attention's to packed keys), and, where oneDNN runs float16, float32 linears against its
float16 ones (whether a float16 path would pay: on an AVX-512 FP16 Xeon without AMX it does not). Prints microseconds, GFLOP/s and the ratio (> 1: masklet
faster; products below ``ONEDNN_MIN_MACS`` stay on PyTorch's kernel, so their rows show the
wrapper's cost). float32 goes to oneDNN here even on CPUs where masklet leaves it with MKL (Intel,
``masklet.model.gemm.float32_on_onednn``): the line above the rows says which this CPU takes.
``ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/gemm_kernels.py`` shows an AVX2-only CPU's side.

    python benchmarks/gemm_kernels.py [--threads 2] [--repeats 30]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from masklet.model import gemm
from masklet.model.attention import softmax_attention
from masklet.model.gemm import Linear, matmul
from timing import interleaved

#: (label, rows, in, out) of linears at 1024 px, sam2.1 tiny
LINEARS = [
    ("trunk stage 1 qkv", 65536, 96, 288),
    ("trunk stage 2 qkv", 16384, 192, 576),
    ("trunk stage 3 mlp up", 4096, 384, 1536),
    ("trunk stage 3 mlp down", 4096, 1536, 384),
    ("trunk stage 4 mlp up", 1024, 768, 3072),
    ("memory attention q/out", 4096, 256, 256),
    ("decoder prompt tokens", 8, 256, 256),
]

#: (label, batch a, m, k, batch b, n, addend) of a click's products
PRODUCTS = [
    ("click upscaling 1 (+ features)", 1, 4096, 256, 1, 256, True),
    ("click upscaling 2 (+ features)", 1, 16384, 64, 1, 128, True),
    ("click image-to-token (+ keys)", 1, 4096, 56, 1, 256, True),
    ("click token-to-image scores", 1, 56, 256, 1, 4096, False),
    ("click hypernetwork product", 1, 3, 32, 1, 65536, False),
]


#: (label, batch, heads, queries, keys, head width) of float32 attentions at 1024 px, sam2.1 tiny
ATTENTIONS = [
    ("memory attention, full memory", 1, 1, 4096, 28672, 256),
    ("trunk global attention", 1, 4, 4096, 4096, 96),
]


def row(label: str, flop: float, torch_s: float, ours_s: float, names: tuple[str, str] = ("torch", "masklet")) -> None:
    print(
        f"  {label:34s} {names[0]} {torch_s * 1e6:9.1f} us {flop / torch_s / 1e9:6.0f} GFLOP/s   "
        f"{names[1]} {ours_s * 1e6:9.1f} us {flop / ours_s / 1e9:6.0f} GFLOP/s   {torch_s / ours_s:5.2f}x"
    )


def float16_linears(repeats: int, gen: torch.Generator) -> None:
    """Whether a float16 path would pay: float32 ``F.linear`` against oneDNN's float16 linear, on CPUs
    where oneDNN runs float16 (AVX-512 FP16 or AMX-FP16). Not a masklet route: a measurement."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_fp16_supported()):
        print("linears, float16: oneDNN has no float16 kernels on this CPU (skipped)")
        return
    print("linears, float16: F.linear float32 vs oneDNN float16 (a measurement; masklet has no float16 route)")
    for label, rows, fan_in, fan_out in LINEARS:
        x = torch.randn(rows, fan_in, generator=gen)
        w, b = torch.randn(fan_out, fan_in, generator=gen), torch.randn(fan_out, generator=gen)
        x16, w16, b16 = x.half(), w.half(), b.half()
        runs = {
            "float32": lambda x=x, w=w, b=b: F.linear(x, w, b),
            "float16": lambda x=x16, w=w16, b=b16: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""),
        }
        t = interleaved(runs, repeats)
        row(label, 2 * rows * fan_in * fan_out, t["float32"], t["float16"], ("fp32", "fp16"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, median of {args.repeats}")
    route = "oneDNN" if gemm.float32_on_onednn() else "MKL (PyTorch's own)"
    print(f"float32 route masklet takes on this CPU ({gemm.cpu_vendor() or 'vendor unknown'}): {route}; rows: oneDNN")
    gemm.float32_on_onednn = lambda: True  # type: ignore[assignment]  # compare the kernels themselves
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # not inference_mode: its weights would not be packed
        for dtype in (torch.float32, torch.bfloat16):
            print(f"linears, {dtype}: F.linear vs masklet Linear")
            for label, rows, fan_in, fan_out in LINEARS:
                layer = Linear(fan_in, fan_out).to(dtype)
                x = torch.randn(rows, fan_in, generator=gen).to(dtype)
                runs = {
                    "torch": lambda x=x, layer=layer: F.linear(x, layer.weight, layer.bias),
                    "ours": lambda x=x, layer=layer: layer(x),
                }
                t = interleaved(runs, args.repeats)
                row(label, 2 * rows * fan_in * fan_out, t["torch"], t["ours"])
            print(f"batched products, {dtype}: torch.baddbmm / bmm vs masklet matmul")
            for label, ba, m, k, bb, n, with_add in PRODUCTS:
                a = torch.randn(ba, m, k, generator=gen).to(dtype)
                b = torch.randn(bb, k, n, generator=gen).to(dtype)
                add = torch.randn(ba, m, n, generator=gen).to(dtype) if with_add else None

                def plain(a=a, b=b, add=add):
                    return torch.bmm(a, b) if add is None else torch.baddbmm(add, a, b)

                t = interleaved({"torch": plain, "ours": lambda a=a, b=b, add=add: matmul(a, b, add)}, args.repeats)
                row(label, 2 * ba * m * k * n, t["torch"], t["ours"])
        float16_linears(args.repeats, gen)
        print("attention, float32: F.scaled_dot_product_attention vs masklet softmax_attention")
        for label, batch, heads, queries, keys, width in ATTENTIONS:
            q = torch.randn(batch, heads, queries, width, generator=gen)
            k, v = (torch.randn(batch, heads, keys, width, generator=gen) for _ in range(2))
            runs = {
                "torch": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v),
                "ours": lambda q=q, k=k, v=v: softmax_attention(q, k, v),
            }
            t = interleaved(runs, max(3, args.repeats // 10))
            row(label, 4 * batch * heads * queries * keys * width, t["torch"], t["ours"])


if __name__ == "__main__":
    main()
