"""Time one click on a cached embedding: official SAM2ImagePredictor vs masklet, interleaved in one run.

Same seeded random weights (full config, 1024 px), same 1200x900 image, one positive point,
masks upscaled to the image. Rows, timed round-robin so that machine load hits all alike:
official; masklet with the plain decoder (before); masklet's cached-click decoder in float32
(default) and bfloat16 (``ImagePredictor(decoder_dtype=torch.bfloat16)``). Prints medians, ratios
against the official, mask agreement, this CPU's measured GEMM peak, and with ``--stages`` the
time of each part of a click against its FLOP floor at that peak (with ``--profile`` a
torch.profiler table by op). Round-robin clicks find the image's cached tensors evicted by the
other rows (as clicks seconds apart do in an annotation tool); ``--warm`` also times each row's
clicks back to back, caches warm, in the same run.

    python benchmarks/image_click.py [--variant sam2.1-hiera-tiny] [--repeats 30] [--stages] [--profile] [--warm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

import masklet  # noqa: E402
import oracles  # noqa: E402,F401  (tests/reference as the package `reference`, with the torchvision stand-in)
from image_predictor import test_image  # noqa: E402
from masklet.precision import inference  # noqa: E402
from reference.official import (  # noqa: E402
    build_official_model,
    official_image_predictor,
    official_model_dict,
    save_official_checkpoint,
)


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n x n product in ``dtype``, the better of PyTorch's matmul (MKL for
    float32) and masklet's oneDNN linear (``masklet.model.gemm.linear``): the floor either can reach."""
    from masklet.model.gemm import linear

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    bt = b.t().contiguous()
    best = float("inf")
    with torch.no_grad():
        for fn in (lambda: a @ b, lambda: linear(a, bt)):
            fn()
            for _ in range(repeats):
                best = min(best, timed(fn))
    return 2 * n**3 / best / 1e9


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


#: the clock of every timing: wall time, or with --cpu-time this process's CPU time (with one thread
#: it leaves out the time other processes take the core, on a loaded machine)
CLOCK = [time.perf_counter]


def timed(fn) -> float:
    start = CLOCK[0]()
    fn()
    return CLOCK[0]() - start


def stage_table(predictor: masklet.ImagePredictor, point: dict, repeats: int, peak: float) -> None:
    """Median time of each part of a cached click, with its FLOP count and floor at ``peak``."""
    from masklet.fast_decoder import FastMaskDecoder
    from masklet.transforms import upscale_masks

    model = predictor.model
    emb = predictor.get_embeddings()
    levels, orig_hw = emb.levels, emb.orig_hw[0]
    fast = FastMaskDecoder(model, predictor.decoder_dtype)
    cache = fast.prepare(levels[-1], levels[:-1])
    prompts = predictor.prepare_prompts(point["point_coords"], point["point_labels"], None, None, orig_hw, True)
    dec = fast.decoder
    c, hw = cache.keys.shape[-1], cache.keys.shape[1]
    n_tok = 1 + int(dec.pred_obj_scores) + dec.num_mask_tokens + 2
    heads = dec.transformer.layers[0].cross_attn_token_to_image.num_heads
    inner = dec.transformer.layers[0].cross_attn_token_to_image.internal_dim
    mlp = dec.transformer.layers[0].mlp.layers[0].out_features
    depth = len(dec.transformer.layers)
    hn = heads * n_tok
    # image-token products per click (FastMaskDecoder): block 0 on cached projections (scores and
    # values of token->image, block-diagonal scores and folded values of image->token); later blocks
    # and the final attention: (hw, C) x (C, heads*tokens) products, two per attention
    first = 2 * 2 * hw * n_tok * inner + 2 * hw * inner * hn + 2 * hw * hn * c
    lin = first + (2 * (depth - 1) + 1) * 2 * (2 * hw * c * hn)
    tok = 2 * n_tok * (depth * (4 * c * c + 4 * c * inner + 2 * c * mlp) + 2 * c * inner + 2 * inner * c)
    attn = 0
    up = 2 * hw * c * (c // 4) * 4 + 2 * hw * 4 * (c // 4) * (c // 8) * 4
    hyper = 2 * 3 * (c // 8) * hw * 16
    state: dict = {}

    def sparse():
        state["sparse"] = model.sam_prompt_encoder(prompts.points, None, None)[0]

    def transformer():
        state["q"], state["k"] = fast._transformer(
            cache, torch.cat((_tokens(dec, state["sparse"].shape[0]), state["sparse"].to(fast.token_dtype)), 1)
        )

    def masks():
        hyper_in = torch.stack([dec.output_hypernetworks_mlps[i](state["q"][:, 2 + i]) for i in (1, 2, 3)], 1)
        state["m"] = fast._masks(cache, state["k"], hyper_in).float()

    def postprocess():
        (upscale_masks(state["m"], orig_hw) > 0).numpy()

    rows = [
        ("prompt encoder", sparse, 0),
        ("two-way transformer", transformer, lin + attn + tok),
        ("upscaling GEMMs + hypernetwork", masks, up + hyper),
        ("upscale to image + threshold", postprocess, 0),
    ]
    with inference():
        for _, fn, _ in rows:
            fn()
        times: dict[str, list[float]] = {name: [] for name, _, _ in rows}
        for _ in range(repeats):
            for name, fn, _ in rows:
                times[name].append(timed(fn))
    total = sum(statistics.median(t) for t in times.values())
    print(f"  stages of a cached click, decoder {fast.dtype} (FLOP floor at {peak:.0f} GFLOP/s):")
    for name, _, flop in rows:
        t = statistics.median(times[name])
        floor = flop / peak / 1e9
        print(
            f"    {name:32s} {t * 1e3:6.2f} ms  {100 * t / total:5.1f}%  {flop / 1e9:5.2f} GFLOP  "
            f"floor {floor * 1e3:5.2f} ms" + (f"  ({t / floor:4.1f}x floor)" if flop else "")
        )


def float64_masks(predictor: masklet.ImagePredictor, point: dict) -> np.ndarray:
    """The masks of ``point`` from a float64 copy of the decoder on the same (float32) embedding:
    what float32 rounding should give, to count the pixels each float32 implementation flips."""
    import copy

    from masklet.transforms import upscale_masks

    emb = predictor.get_embeddings()
    model = copy.deepcopy(predictor.model).double()
    prompts = predictor.prepare_prompts(point["point_coords"], point["point_labels"], None, None, emb.orig_hw[0], True)
    levels = [level.double() for level in emb.levels]
    coords, labels = prompts.points
    with torch.inference_mode():
        low, _, _ = model.decode_masks(levels[-1], levels[:-1], (coords.double(), labels), None, True)
        return (upscale_masks(low, emb.orig_hw[0], dtype=torch.float64) > 0)[0].numpy()


def _tokens(dec, batch: int) -> torch.Tensor:
    parts = [dec.iou_token.weight, dec.mask_tokens.weight]
    if dec.pred_obj_scores:
        parts.insert(0, dec.obj_score_token.weight)
    return torch.cat(parts).unsqueeze(0).expand(batch, -1, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="sam2.1-hiera-tiny")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--warm", action="store_true", help="also time each row's clicks back to back (caches warm)")
    parser.add_argument(
        "--exact",
        action="store_true",
        help="count mask pixels that differ from a float64 evaluation of the same decoder (rounding)",
    )
    parser.add_argument(
        "--cpu-time", action="store_true", help="time with this process's CPU time (use with --threads 1 under load)"
    )
    parser.add_argument(
        "--skip-bf16", action="store_true", help="leave out the bfloat16 decoder (slow on AVX2-only CPUs)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cpu_time:
        CLOCK[0] = time.process_time

    image = test_image()
    point = dict(point_coords=np.array([[600.0, 450.0]]), point_labels=np.array([1]))
    official_model = build_official_model(official_model_dict(args.variant), seed=0)
    official = official_image_predictor(official_model)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.pt")
        save_official_checkpoint(official_model, ckpt)
        model = masklet.load_model(ckpt)
    before = masklet.ImagePredictor(model)
    before._use_fast_decoder = False
    fp32 = masklet.ImagePredictor(model)
    bf16 = masklet.ImagePredictor(model, decoder_dtype=torch.bfloat16)
    with torch.inference_mode():
        official.set_image(image)
    before.set_image(image)
    for p in (fp32, bf16):
        p.set_embeddings(before.get_embeddings())
    rows = {
        "official": lambda: official.predict(**point),
        "masklet before": lambda: before.predict(**point),
        "masklet fp32": lambda: fp32.predict(**point),
        "masklet bf16 decoder": lambda: bf16.predict(**point),
    }
    if args.skip_bf16:
        del rows["masklet bf16 decoder"]
    first_click = {name: timed(rows[name]) for name in ("masklet fp32", "masklet bf16 decoder") if name in rows}
    times: dict[str, list[float]] = {name: [] for name in rows}
    with torch.inference_mode():
        for fn in rows.values():
            fn()
        for _ in range(args.repeats):
            for name, fn in rows.items():
                times[name].append(timed(fn))
        warm: dict[str, list[float]] = {name: [] for name in rows}
        if args.warm:  # rounds of back-to-back clicks, rows alternating
            for _ in range(args.repeats):
                for name, fn in rows.items():
                    fn()
                    warm[name].append(min(timed(fn) for _ in range(3)))
    peak32 = gemm_peak(torch.float32)
    peak16 = 0.0 if args.skip_bf16 else gemm_peak(torch.bfloat16, n=1024, repeats=2)
    load = os.getloadavg()
    print(
        f"{args.variant}, image {image.shape[1]}x{image.shape[0]}, one point, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} interleaved, {'CPU' if args.cpu_time else 'wall'} time, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"  GEMM peak: float32 {peak32:.0f} GFLOP/s (2048^3), bfloat16 {peak16:.1f} GFLOP/s (1024^3); "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    base = statistics.median(times["official"])
    for name, t in times.items():
        med = statistics.median(t)
        extra = f"  (first click on the image {first_click[name] * 1e3:.1f} ms)" if name in first_click else ""
        print(f"  {name:22s} {med * 1e3:7.2f} ms   {base / med:5.2f}x official{extra}")
    if args.warm:
        print("  back to back (caches warm), best of 3 clicks per round, median of the rounds:")
        warm_base = statistics.median(warm["official"])
        for name, t in warm.items():
            med = statistics.median(t)
            print(f"  {name:22s} {med * 1e3:7.2f} ms   {warm_base / med:5.2f}x official")
    with torch.inference_mode():
        ref = official.predict(**point)[0]
        outs = {name: fn()[0] for name, fn in rows.items() if name != "official"}
    for name, masks in outs.items():
        same = ", ".join(f"{float((a == b).mean()):.6f}" for a, b in zip(ref, masks))
        ious = ", ".join(f"{iou(a, b):.4f}" for a, b in zip(outs["masklet fp32"], masks))
        print(f"  {name:22s} pixel agreement with official: {same}; IoU vs masklet fp32: {ious}")
    print(f"  mask areas: {[int(m.sum()) for m in outs['masklet fp32']]}")
    if args.exact:
        exact = float64_masks(fp32, point)
        with torch.inference_mode():
            ref_masks = {"official": ref, **outs}
        for name, masks in ref_masks.items():
            print(
                f"  {name:22s} pixels that differ from float64: {[int((a != exact[i]).sum()) for i, a in enumerate(masks)]}"
            )
    if args.stages:
        stage_table(fp32, point, args.repeats, peak32)
        if not args.skip_bf16:
            stage_table(bf16, point, args.repeats, peak16)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name in [n for n in ("official", "masklet fp32", "masklet bf16 decoder") if n in rows]:
            with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(10):
                    rows[name]()
            print(f"--- profile {name} (10 clicks)")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


if __name__ == "__main__":
    main()
