"""Where masklet's time goes: each model module's share of set_image, automatic masks and a video
frame, against its FLOP floor (issue 22's per-module tables).

Forward hooks on the model's modules (the trunk's patch embedding and stages, the neck, prompt
encoder, mask decoder parts, memory attention, memory encoder, object-pointer heads) and wrappers
of the automatic-mask stages (grid decoder, filters, NMS and full-size masks, records) add up each
one's self time (a labelled call inside another counts for the inner one only); whatever none
covers is the path's glue ("rest": preprocessing, hole filling, upscaling). A second pass under
``torch.utils.flop_counter.FlopCounterMode`` gives each one's FLOPs; its floor is FLOP / the
GEMM peak of ``--dtype`` measured in the same run (the better of MKL and oneDNN). With one thread
(the default; ``--wall`` to opt out) the clock is this process's CPU time, which leaves out the
time other processes hold the core.

    python benchmarks/module_times.py [--paths set_image amg video] [--threads 1] [--repeats 3]

set_image and video use the full sam2.1 tiny config (1024 px) with seeded random weights, a
1200x900 image and a 480x854 clip (one click, ``--frames`` tracked); automatic masks use the
packaged masklet-nano on synthetic scene 1 with benchmarks/amg.py's filters (masks survive).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

import masklet
import oracles  # noqa: F401  (tests/reference as the package `reference`)
from image_click import gemm_peak
from image_predictor import test_image
from masklet.synthetic import make_scene
from reference.pairs import random_model
from video_predictor import centre, write_frames


def module_parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(label, module) pairs that never nest: each forward is counted once, under its label."""
    trunk = model.image_encoder.trunk
    parts = [("trunk patch embed", trunk.patch_embed)]
    start = 0
    for stage, end in enumerate(trunk.stage_ends):
        parts += [(f"trunk stage {stage + 1}", block) for block in trunk.blocks[start : end + 1]]
        start = end + 1
    decoder = model.sam_mask_decoder
    parts += [("neck", model.image_encoder.neck), ("prompt encoder", model.sam_prompt_encoder)]
    parts += [("decoder: two-way transformer", decoder.transformer)]
    high_res = ("conv_s0", "conv_s1")  # the encoder's high-res features, projected once per image
    parts += [("decoder: high-res convs", m) for n, m in decoder.named_children() if n in high_res]
    parts += [
        ("decoder: upscaling, heads", m) for n, m in decoder.named_children() if n not in (*high_res, "transformer")
    ]
    parts += [("memory attention", model.memory_attention), ("memory encoder", model.memory_encoder)]
    parts += [("object pointers", model.obj_ptr_proj), ("object pointers", model.mask_downsample)]
    return parts


def method_parts() -> list[tuple[str, type, str]]:
    """(label, class, method) of the automatic-mask path's own stages (not modules)."""
    from masklet.amg.decoder import GridDecoder
    from masklet.amg.generator import MaskGenerator

    return [
        ("amg: grid decoder prep (per image)", GridDecoder, "__init__"),
        ("amg: grid decoder transformer", GridDecoder, "decode"),
        ("amg: grid decoder masks", GridDecoder, "masks"),
        ("amg: filters (IoU, stability, box)", MaskGenerator, "_filter"),
        ("amg: crop NMS, small-region cleanup", MaskGenerator, "_finish"),
        ("amg: full-size masks, records", MaskGenerator, "_records"),
    ]


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _onednn_linear_flops(x_shape, *args, **kwargs) -> int:
    """masklet.model.gemm's oneDNN linear, (M, K) rows times an (N, K) weight: (x, w, b, attr,
    scalars, algorithm), or with a fused addend (x, other, w, b, attr)."""
    w_shape = args[1] if len(args) == 4 else args[0]
    return 2 * x_shape[0] * x_shape[1] * w_shape[0]


#: the CPU's fused attention and masklet's oneDNN products, which FlopCounterMode does not count
COUNTED_ELSEWHERE = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    torch.ops.mkldnn._linear_pointwise: _onednn_linear_flops,
}


class ModuleClock:
    """Self time (and, under a FlopCounterMode, self FLOPs) of labelled modules and methods: a
    labelled call inside another is subtracted from the outer one, so the labels add up."""

    def __init__(self, parts: list[tuple[str, nn.Module]], methods: list[tuple[str, type, str]], clock) -> None:
        self.clock, self.seconds, self.flops = clock, defaultdict(float), defaultdict(int)
        self.counter: FlopCounterMode | None = None
        self._open: list[list] = []  # [start, start flops, child seconds, child flops]
        self._handles: list = []
        self._patched: list[tuple[type, str, Callable]] = []
        for label, module in parts:
            self._handles.append(module.register_forward_pre_hook(lambda *_: self.enter()))
            self._handles.append(module.register_forward_hook(lambda *_, label=label: self.leave(label)))
        for label, cls, name in methods:
            original = getattr(cls, name)
            self._patched.append((cls, name, original))
            setattr(cls, name, self._timed(label, original))

    def _timed(self, label: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            self.enter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave(label)

        return wrapper

    def _count(self) -> int:
        return 0 if self.counter is None else self.counter.get_total_flops()

    def enter(self) -> None:
        self._open.append([self.clock(), self._count(), 0.0, 0])

    def leave(self, label: str) -> None:
        start, flops, child_seconds, child_flops = self._open.pop()
        seconds, spent = self.clock() - start, self._count() - flops
        self.seconds[label] += seconds - child_seconds
        self.flops[label] += spent - child_flops
        if self._open:
            self._open[-1][2] += seconds
            self._open[-1][3] += spent

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        for cls, name, original in self._patched:
            setattr(cls, name, original)


def measure(name: str, run: Callable[[], None], model: nn.Module, args, clock, peak: float, per: int = 1) -> None:
    """Median per-module times of ``run`` over the repeats, its FLOPs, and the table."""
    hooks = ModuleClock(module_parts(model), method_parts(), clock)
    run()  # warm-up
    totals, shares = [], defaultdict(list)
    for _ in range(args.repeats):
        hooks.seconds.clear()
        start = clock()
        run()
        totals.append(clock() - start)
        for label, seconds in hooks.seconds.items():
            shares[label].append(seconds)
    hooks.flops.clear()
    with FlopCounterMode(display=False, custom_mapping=COUNTED_ELSEWHERE) as counter:
        hooks.counter = counter
        run()
        hooks.counter = None
        total_flops = counter.get_total_flops()
    hooks.remove()
    total = statistics.median(totals) / per
    rows = {label: statistics.median(times) / per for label, times in shares.items()}
    rows["rest (glue, post-processing)"] = max(total - sum(rows.values()), 0.0)
    flops = {label: f / per for label, f in hooks.flops.items()}
    flops["rest (glue, post-processing)"] = max(total_flops / per - sum(flops.values()), 0)
    print(f"{name}: {total * 1e3:.1f} ms{' per frame' if per > 1 else ''} (median of {args.repeats})")
    print(f"  {'module':36s} {'ms':>9s} {'share':>6s} {'GFLOP':>7s} {'floor ms':>9s} {'x floor':>8s}")
    for label, seconds in sorted(rows.items(), key=lambda kv: -kv[1]):
        floor = flops.get(label, 0) / peak / 1e9
        ratio = f"{seconds / floor:7.1f}x" if flops.get(label, 0) >= 1e7 else "      —"  # not for tiny counts
        print(
            f"  {label:36s} {seconds * 1e3:9.1f} {100 * seconds / total:5.1f}% {flops.get(label, 0) / 1e9:7.2f} "
            f"{floor * 1e3:9.1f} {ratio}"
        )
    floor = total_flops / per / peak / 1e9
    print(
        f"  {'whole path':36s} {total * 1e3:9.1f} 100.0% {total_flops / per / 1e9:7.2f} {floor * 1e3:9.1f} {total / floor:7.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--paths", nargs="+", default=["set_image", "amg", "video"], choices=["set_image", "amg", "video"]
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4, help="video frames tracked after the prompted one")
    parser.add_argument("--objects", type=int, default=1, help="video objects clicked on the first frame (1-4)")
    parser.add_argument("--wall", action="store_true", help="wall time even with one thread")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="of the image encoder and memory attention, as load_model(dtype=) (floors at that dtype's peak)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.threads == 1 and not args.wall else time.perf_counter
    dtype = getattr(torch, args.dtype)
    peak = gemm_peak(dtype)
    print(
        f"{args.threads} thread(s), clock {'CPU time' if clock is time.process_time else 'wall'}, "
        f"{args.dtype} GEMM peak {peak:.0f} GFLOP/s (2048^3, same run; the better of MKL and oneDNN)"
    )
    tiny = random_model("sam2.1-hiera-tiny", 0)
    tiny.image_encoder.to(dtype=dtype)  # as load_model(dtype=) does
    tiny.memory_attention.to(dtype=dtype)
    with torch.inference_mode():
        if "set_image" in args.paths:
            predictor = masklet.ImagePredictor(tiny)
            image = test_image(900, 1200)
            measure("set_image 1200x900, sam2.1 tiny", lambda: predictor.set_image(image), tiny, args, clock, peak)
        if "amg" in args.paths:
            nano = masklet.load_model("masklet-nano")
            options = dict(points_per_side=32, pred_iou_thresh=0.5, stability_score_thresh=0.7)
            generator = masklet.MaskGenerator(nano, **options)
            scene = make_scene(1, size=(900, 1200)).image
            count = len(generator.generate(scene))
            measure(
                f"automatic masks, masklet-nano, scene 1, 32x32 ({count} masks)",
                lambda: generator.generate(scene),
                nano,
                args,
                clock,
                peak,
            )
        if "video" in args.paths:
            video = masklet.video.VideoPredictor(tiny)
            with tempfile.TemporaryDirectory() as folder:
                masks = write_frames(folder, args.frames + 1, (480, 854), seed=0)
                clicks = [centre(masks[0, i]) for i in range(args.objects)]

                def track() -> None:
                    state = video.init_state(folder)
                    for i, click in enumerate(clicks):
                        video.add_new_points_or_box(state, 0, i + 1, points=[click], labels=[1])
                    for _ in video.propagate_in_video(state):
                        pass

                name = f"video 480x854, sam2.1 tiny, {args.objects} object(s), per frame of {args.frames + 1} (prompt included)"
                measure(name, track, tiny, args, clock, peak, per=args.frames + 1)


if __name__ == "__main__":
    main()
