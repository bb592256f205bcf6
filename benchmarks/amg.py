"""Time automatic mask generation: official SAM2AutomaticMaskGenerator vs masklet.MaskGenerator.

Same weights, same image, same options. The default case is the packaged masklet-nano on a
synthetic scene of shapes (the data it was trained on) with filters where masks survive
(pred_iou_thresh 0.5, stability_score_thresh 0.7), so both sides do the full work and the masks
are compared for real. One untimed warm-up run each, then ``--repeats`` runs interleaved
(masklet, official, masklet, ...). Prints every time, the medians, the ratio official / masklet
(> 1 means masklet is faster), the number of masks and whether they match (same count, every
masklet mask paired with an official one: the tests' tolerances, test_amg.match_masks).

    python benchmarks/amg.py                                   # nano, scene 1, 32x32 grid, 1200x900
    python benchmarks/amg.py --points-per-side 8 --repeats 1   # quick check
    python benchmarks/amg.py --checkpoint random               # seeded random full tiny config
    python benchmarks/amg.py --checkpoint trained.pt [--config trained.yaml]
    python benchmarks/amg.py --compiled                        # and masklet's compiled mode, interleaved

Random weights predict low IoUs: with the official thresholds (0.8 / 0.95) no mask survives,
so ``--checkpoint random`` is a zero-output run unless the thresholds are lowered; the script
says so. ``--scene -1`` uses the smooth test image of benchmarks/image_predictor.py instead.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import masklet  # noqa: E402
import oracles  # noqa: E402,F401  (tests/reference as the package `reference`)
from image_predictor import test_image  # noqa: E402  (the same smooth 1200x900 image)
from masklet.checkpoints import packaged_checkpoint  # noqa: E402
from masklet.compiled import compile_model  # noqa: E402
from masklet.synthetic import make_scene  # noqa: E402
from reference.amg_compare import match_masks  # noqa: E402
from reference.official import (  # noqa: E402
    build_official_model,
    feat_sizes,
    install_connected_components,
    official_model_dict,
    save_official_checkpoint,
)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-size {text!r}: expected WIDTHxHEIGHT, e.g. 1200x900") from None
    return w, h


def official_model(args: argparse.Namespace) -> torch.nn.Module:
    """The official SAM2Base: seeded random weights, or the checkpoint's."""
    if args.config:
        from omegaconf import OmegaConf

        model_dict = OmegaConf.to_container(OmegaConf.load(args.config).model, resolve=True)
    else:
        model_dict = official_model_dict(args.variant)
    if args.checkpoint == "random":
        return build_official_model(model_dict, seed=args.seed)
    model = build_official_model(model_dict, seed=None)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("model", state), strict=True)
    return model


def encoder_seconds(set_image, clock) -> float:
    """Time of one image encoding (what both generators do once per crop)."""
    with torch.inference_mode():
        start = clock()
        set_image()
        return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="sam2.1-hiera-tiny", help="config of the random model (default tiny)")
    parser.add_argument(
        "--checkpoint",
        default="masklet-nano",
        help="official-format .pt checkpoint, masklet-nano (default, the packaged one) or random",
    )
    parser.add_argument("--config", default=None, help="official yaml of --checkpoint (default: the variant's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--image-size", type=_size, default=(1200, 900), metavar="WxH")
    parser.add_argument(
        "--scene",
        type=int,
        default=1,
        metavar="SEED",
        help="seed of the synthetic scene of shapes (default 1); -1 for the smooth test image",
    )
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument(
        "--pred-iou-thresh",
        type=float,
        default=None,
        help="default 0.5 for masklet-nano (its scores are less confident), else the official 0.8",
    )
    parser.add_argument(
        "--stability-score-thresh",
        type=float,
        default=None,
        help="default 0.7 for masklet-nano, else the official 0.95",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each, interleaved, after one warm-up")
    parser.add_argument("--crop-n-layers", type=int, default=0)
    parser.add_argument("--use-m2m", action="store_true")
    parser.add_argument("--skip-official", action="store_true", help="time masklet only")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="also time masklet in compiled mode (compile_model(..., automatic_masks=True); its cold start "
        "is printed, artefacts cached in the default folder)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="clock this process's CPU time instead of wall time (robust on a shared machine; use with --threads 1)",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter

    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    nano = args.checkpoint == "masklet-nano"
    if args.pred_iou_thresh is None:
        args.pred_iou_thresh = 0.5 if nano else 0.8
    if args.stability_score_thresh is None:
        args.stability_score_thresh = 0.7 if nano else 0.95
    if nano:
        args.checkpoint = str(packaged_checkpoint("masklet-nano"))
        args.config = args.config or str(Path(args.checkpoint).with_suffix(".yaml"))
    width, height = args.image_size
    image = test_image(height, width) if args.scene < 0 else make_scene(args.scene, size=(height, width)).image
    options = dict(
        points_per_side=args.points_per_side,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        crop_n_layers=args.crop_n_layers,
        use_m2m=args.use_m2m,
    )
    ref_model = official_model(args)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.pt")
        save_official_checkpoint(ref_model, ckpt)
        config = args.config
        ours = masklet.load_model(ckpt, config=config)

    source = args.checkpoint if args.checkpoint != "random" else f"{args.variant} (random, seed {args.seed})"
    picture = "smooth test image" if args.scene < 0 else f"synthetic scene {args.scene}"
    print(
        f"{source}, {picture} {width}x{height}, {args.points_per_side}x{args.points_per_side} grid, "
        f"{torch.get_num_threads()} threads, {'CPU' if args.cpu_time else 'wall'} time, options {options}"
    )

    prompts = args.points_per_side**2  # of the whole-image crop; crops add their own
    generator = masklet.MaskGenerator(ours, **options)
    official = None
    if not args.skip_official:
        install_connected_components()
        official = SAM2AutomaticMaskGenerator(ref_model, **options)
        official.predictor._bb_feat_sizes = feat_sizes(int(ref_model.image_size))

    def timed(which: masklet.MaskGenerator) -> tuple[float, list]:
        start = clock()
        out = which.generate(image)
        return clock() - start, out

    compiled_generator = None
    if args.compiled:
        fast = copy.deepcopy(ours)
        report = compile_model(fast, automatic_masks=True)
        compiled_generator = masklet.MaskGenerator(fast, **options)
        print(
            f"  compiled mode: cold start {report.seconds:.1f} s ({'artefacts loaded' if report.loaded else 'no artefacts yet'})"
        )

    def run_official() -> tuple[float, list]:
        start = clock()
        with torch.inference_mode():
            out = official.generate(image)
        return clock() - start, out

    timed(generator)  # warm-up: allocator, thread pools, lazy imports
    if compiled_generator is not None:
        timed(compiled_generator)
    if official is not None:
        run_official()
    ours_times, compiled_times, official_times = [], [], []
    compiled_masks: list = []
    for _ in range(max(1, args.repeats)):
        seconds, masks = timed(generator)
        ours_times.append(seconds)
        if compiled_generator is not None:
            seconds, compiled_masks = timed(compiled_generator)
            compiled_times.append(seconds)
        if official is not None:
            seconds, reference = run_official()
            official_times.append(seconds)
    ours_s = statistics.median(ours_times)
    ours_enc = encoder_seconds(lambda: masklet.ImagePredictor(ours).set_image(image), clock)
    print(
        f"  masklet  {ours_s:8.2f} s median of {', '.join(f'{t:.2f}' for t in ours_times)}   {len(masks)} masks   "
        f"(image encoder {ours_enc:.2f} s)"
    )
    if compiled_times:
        compiled_s = statistics.median(compiled_times)
        print(
            f"  compiled {compiled_s:8.2f} s median of {', '.join(f'{t:.2f}' for t in compiled_times)}   "
            f"{len(compiled_masks)} masks   (eager / compiled: {ours_s / compiled_s:.2f}x)"
        )
    if official is None:
        return
    official_s = statistics.median(official_times)
    official_enc = encoder_seconds(lambda: official.predictor.set_image(image), clock)
    print(
        f"  official {official_s:8.2f} s median of {', '.join(f'{t:.2f}' for t in official_times)}   "
        f"{len(reference)} masks   (image encoder {official_enc:.2f} s)"
    )
    print(f"  speed-up official / masklet (medians): {official_s / ours_s:.1f}x")
    if compiled_times:
        print(f"  speed-up official / masklet compiled (medians): {official_s / compiled_s:.1f}x")
        problems = match_masks(compiled_masks, reference)
        print(f"  compiled masks {'DIFFER: ' + str(problems[:3]) if problems else 'match'}")
    if args.crop_n_layers == 0:
        # The encoder runs once either way; the rest grows with the number of prompts. Rough on
        # small grids: timing noise of the separate encoder run and fixed per-crop work count too.
        ours_p, official_p = (ours_s - ours_enc) / prompts, (official_s - official_enc) / prompts
        print(
            f"  rough, per prompt (without the encoder): masklet {ours_p * 1000:.1f} ms, official {official_p * 1000:.1f} ms "
            f"({official_p / ours_p:.1f}x)"
        )
    problems = match_masks(masks, reference)
    if problems:
        print(f"  masks DIFFER: {len(problems)} problem(s), first: {problems[:3]}")
    elif masks:
        print(f"  masks match: {len(masks)} = {len(reference)} (test_amg.match_masks tolerances)")
    if not reference:
        print(
            "  NO MASK SURVIVED on either side: the timing compares unequal work (masklet skips what the "
            "official computes); lower --pred-iou-thresh / --stability-score-thresh or use a trained checkpoint"
        )


if __name__ == "__main__":
    main()
