"""set_image with and without the encoder's allocation-sparing paths, against the official, one run.

Rows, interleaved: the official SAM2ImagePredictor; masklet with both paths forced off (windowed
blocks on whole partitioned maps, the decoder's high-resolution projections after the neck); with
the windowed blocks a few rows of windows at a time only; with both (the default). Each row prints
its median and minimum, the page faults a call takes (glibc backs big fresh buffers page by page)
and the ratio official / this. Same seeded random weights (full tiny config, 1024 px), same image.

    python benchmarks/encoder_allocations.py [--variant sam2.1-hiera-tiny] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

import masklet
import oracles  # noqa: F401  (tests/reference as the package `reference`)
from image_predictor import test_image
from masklet.model import hiera, image_encoder
from reference.official import (
    build_official_model,
    official_image_predictor,
    official_model_dict,
    save_official_checkpoint,
)

WINDOW_ROWS = hiera.MultiScaleBlock._attends_in_window_rows
POINTWISE = image_encoder._is_pointwise


def use_paths(window_rows: bool, fused_projections: bool) -> None:
    """Switch the two paths on or off (off: the checks that choose them always say no)."""
    hiera.MultiScaleBlock._attends_in_window_rows = WINDOW_ROWS if window_rows else (lambda self, x: False)
    image_encoder._is_pointwise = POINTWISE if fused_projections else (lambda conv: False)


def page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="sam2.1-hiera-tiny")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    image = test_image()
    official_model = build_official_model(official_model_dict(args.variant), seed=0)
    official = official_image_predictor(official_model)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.pt")
        save_official_checkpoint(official_model, ckpt)
        ours = masklet.ImagePredictor(masklet.load_model(ckpt))

    def masklet_with(window_rows: bool, fused: bool) -> Callable[[], object]:
        return lambda: (use_paths(window_rows, fused), ours.set_image(image))

    rows: dict[str, Callable[[], object]] = {
        "official": lambda: official.set_image(image),
        "masklet, both off": masklet_with(False, False),
        "masklet, window rows": masklet_with(True, False),
        "masklet, both (default)": masklet_with(True, True),
    }
    times: dict[str, list[float]] = {k: [] for k in rows}
    faults = dict.fromkeys(rows, 0)
    with torch.inference_mode():
        for fn in rows.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in rows.items():
                before, start = page_faults(), time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
                faults[name] += page_faults() - before
    use_paths(True, True)
    print(
        f"{args.variant}, set_image 1200x900, {torch.get_num_threads()} threads, "
        f"{args.repeats} interleaved rounds; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    official_median, official_min = statistics.median(times["official"]), min(times["official"])
    for name, seconds in times.items():
        median, fastest = statistics.median(seconds), min(seconds)
        print(
            f"  {name:24s} median {median * 1000:7.1f} ms  min {fastest * 1000:7.1f} ms  "
            f"page faults a call {faults[name] // args.repeats:7d}  "
            f"official/this {official_median / median:4.2f}x (minimums {official_min / fastest:4.2f}x)"
        )


if __name__ == "__main__":
    main()
