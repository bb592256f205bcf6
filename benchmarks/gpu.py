"""GPU benchmark: masklet against the official sam2 on one lent GPU, image / automatic masks / video.

One prepared script for a short device lease (about 15 minutes in all, start included): for tiny
and large random weights (seeded, saved as an official checkpoint and loaded by both), it times in
one run, taking turns where it can:

- ``set_image`` and one click on the cached embedding (official under bfloat16 autocast as its README
  does, masklet with ``dtype=bfloat16``; float32 for both too);
- automatic masks on a synthetic scene (thresholds lowered so masks survive on random weights);
- video: a synthetic clip, one click per object on frame 0, per-frame propagation time; the official
  also in its compiled ``vos_optimized`` mode when torch.compile works there (cold start reported).

Each line prints official, masklet and the ratio official / masklet (> 1: masklet faster). The
official wheel has no CUDA extension here, so it skips its hole filling (less work than masklet).

    python benchmarks/gpu.py                          # on the GPU, under 5 minutes
    python benchmarks/gpu.py --device cpu --quick     # smoke run of the script itself on a CPU

The lent machine reaches no package index: ``benchmarks/gpu_prepare.sh`` copies the official sam2
and its pure-Python dependencies (hydra, omegaconf, iopath, antlr4) into ``.gpu_site/``; carry that
folder and run ``PYTHONPATH=.gpu_site:src python3 benchmarks/gpu.py`` there (gpu_prepare.sh's header
gives the whole device command).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

import masklet  # noqa: E402
import oracles  # noqa: E402,F401  (tests/reference as `reference`; the torchvision stand-in binds only without a real one)
from masklet.synthetic import make_clip, make_scene  # noqa: E402
from reference.official import (  # noqa: E402
    build_official_model,
    feat_sizes,
    official_model_dict,
    save_official_checkpoint,
)

VARIANTS = {"tiny": "sam2.1-hiera-tiny", "large": "sam2.1-hiera-large"}


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up, synchronised on ``device``."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def autocast(device: torch.device, dtype: torch.dtype) -> Any:
    """The official README's pattern: bfloat16 autocast on CUDA; a no-op for float32."""
    if dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def row(what: str, official_s: float | None, ours_s: float, unit: str = "ms") -> None:
    scale = 1000.0 if unit == "ms" else 1.0
    ref = "      n/a" if official_s is None else f"{official_s * scale:9.2f}"
    ratio = "" if official_s is None else f"{official_s / ours_s:6.2f}x"
    print(f"  {what:<44s} official {ref} {unit}   masklet {ours_s * scale:9.2f} {unit}   {ratio}", flush=True)


def bench_image(
    official: Any, ours: masklet.Sam2Model, image: np.ndarray, device: torch.device, dtype: torch.dtype, repeats: int
) -> None:
    """set_image and one click, both implementations, same image and click."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    ref = SAM2ImagePredictor(official)
    ref._bb_feat_sizes = feat_sizes(int(official.image_size))
    mine = masklet.ImagePredictor(ours)
    point, label = np.array([[image.shape[1] / 2, image.shape[0] / 2]], np.float32), np.array([1])
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    with torch.inference_mode():
        with autocast(device, dtype):
            ref_set = timed(lambda: ref.set_image(image), device, repeats)
        ours_set = timed(lambda: mine.set_image(image), device, repeats)
        row(f"set_image {image.shape[1]}x{image.shape[0]} {name}", ref_set, ours_set)
        with autocast(device, dtype):
            ref_click = timed(lambda: ref.predict(point_coords=point, point_labels=label), device, repeats * 3)
        ours_click = timed(lambda: mine.predict(point_coords=point, point_labels=label), device, repeats * 3)
        row(f"click on cached embedding {name}", ref_click, ours_click)


def bench_amg(
    official: Any,
    ours: masklet.Sam2Model,
    image: np.ndarray,
    device: torch.device,
    dtype: torch.dtype,
    points_per_side: int,
) -> None:
    """Automatic masks with thresholds where random-weight masks survive; counts printed."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    options = dict(points_per_side=points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.5)
    ref = SAM2AutomaticMaskGenerator(official, **options)
    ref.predictor._bb_feat_sizes = feat_sizes(int(official.image_size))
    mine = masklet.MaskGenerator(ours, **options)
    counts: dict[str, int] = {}

    def run_ref() -> None:
        with torch.inference_mode(), autocast(device, dtype):
            counts["official"] = len(ref.generate(image))

    def run_ours() -> None:
        counts["masklet"] = len(mine.generate(image))

    ref_s, ours_s = timed(run_ref, device, 1), timed(run_ours, device, 1)
    row(
        f"automatic masks {points_per_side}x{points_per_side} ({counts['official']} / {counts['masklet']} masks)",
        ref_s,
        ours_s,
        unit="s",
    )


def write_clip(folder: str, frames: int, size: tuple[int, int], objects: int) -> list[list[float]]:
    """JPEG frames of a synthetic clip; returns one click per object on frame 0."""
    clip = make_clip(0, num_frames=frames, size=size, num_objects=(objects, objects))
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(os.path.join(folder, f"{t:05d}.jpg"), quality=95)
    clicks = []
    for mask in clip.masks[0]:
        ys, xs = np.nonzero(mask)
        i = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        clicks.append([float(xs[i]), float(ys[i])])
    return clicks


def per_frame_seconds(
    predictor: Any, folder: str, clicks: list[list[float]], device: torch.device, dtype: torch.dtype, official: bool
) -> float:
    """Mean seconds per propagated frame (frame 0, the prompted one, left out)."""
    context = autocast(device, dtype) if official else torch.autocast(device.type, enabled=False)
    with torch.inference_mode(), context:
        state = predictor.init_state(folder)
        for obj_id, point in enumerate(clicks, start=1):
            predictor.add_new_points_or_box(
                state, 0, obj_id, points=np.array([point], np.float32), labels=np.array([1], np.int32)
            )
        stamps = []
        for _ in predictor.propagate_in_video(state):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())
    return float(np.diff(stamps).mean())


def bench_video(
    official_dict: dict,
    ckpt: str,
    ours: masklet.Sam2Model,
    device: torch.device,
    dtype: torch.dtype,
    frames: int,
    size: tuple[int, int],
    objects: int,
    compiled: bool,
) -> None:
    """Per-frame tracking time; the official plain and, if asked, in its compiled vos_optimized mode."""
    from masklet.video import VideoPredictor

    official = build_official_model(official_dict, seed=None, video=True)
    official.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    official = official.to(device)
    with tempfile.TemporaryDirectory() as folder:
        clicks = write_clip(folder, frames, size, objects)
        name = f"video {size[1]}x{size[0]} {objects} obj {'bf16' if dtype == torch.bfloat16 else 'fp32'}"
        ref_s = per_frame_seconds(official, folder, clicks, device, dtype, official=True)
        ours_s = per_frame_seconds(VideoPredictor(ours), folder, clicks, device, dtype, official=False)
        row(f"{name}, per frame", ref_s, ours_s)
        if compiled:
            bench_video_compiled(official_dict, ckpt, ours_s, folder, clicks, device, dtype, name)


def bench_video_compiled(
    official_dict: dict,
    ckpt: str,
    ours_s: float,
    folder: str,
    clicks: list[list[float]],
    device: torch.device,
    dtype: torch.dtype,
    name: str,
) -> None:
    """The official SAM2VideoPredictorVOS (torch.compile of encoder and memory); skipped with the reason."""
    try:
        cfg = dict(
            official_dict, _target_="sam2.sam2_video_predictor.SAM2VideoPredictorVOS", compile_image_encoder=True
        )
        model = build_official_model(cfg, seed=None, video=True)
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
        model = model.to(device)
        start = time.perf_counter()
        per_frame_seconds(model, folder, clicks, device, dtype, official=True)  # compiles
        cold = time.perf_counter() - start
        warm = per_frame_seconds(model, folder, clicks, device, dtype, official=True)
        row(f"{name}, official vos_optimized (cold {cold:.0f} s)", warm, ours_s)
    except Exception as error:  # noqa: BLE001 (report why the compiled mode did not run, keep the rest)
        print(f"  {name}, official vos_optimized: did not run ({type(error).__name__}: {str(error)[:200]})")


def quiet_official() -> None:
    """Silence the official progress bars (frame loading, propagation)."""
    import sam2.sam2_video_predictor
    import sam2.utils.misc

    def no_bar(iterable: Any, *args: Any, **kwargs: Any) -> Any:
        return iterable

    sam2.sam2_video_predictor.tqdm = no_bar
    sam2.utils.misc.tqdm = no_bar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="small image, grid and clip (a smoke run on a CPU)")
    parser.add_argument("--no-compiled", action="store_true", help="skip the official vos_optimized mode")
    args = parser.parse_args()
    device = torch.device(args.device)
    quiet_official()
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu --quick for a smoke run)")
    image_hw, grid, clip_size, frames, repeats = (
        ((240, 320), 4, (120, 160), 3, 1) if args.quick else ((900, 1200), 32, (480, 854), 16, 5)
    )
    print(
        f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
        f"masklet {masklet.__version__}",
        flush=True,
    )
    image = make_scene(0, size=image_hw).image
    for key in args.variants:
        variant = VARIANTS[key]
        overrides = {"image_size": 256} if args.quick else {}
        official_dict = official_model_dict(variant, **overrides)
        official = build_official_model(official_dict, seed=0).to(device)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = os.path.join(tmp, "model.pt")
            save_official_checkpoint(official.cpu(), ckpt)
            official = official.to(device)
            print(f"{variant} (random weights, seed 0, {official.image_size} px)", flush=True)
            for dtype in (torch.float32, torch.bfloat16):
                ours = masklet.load_model(ckpt, device=device, dtype=dtype, config=_yaml(official_dict, tmp))
                bench_image(official, ours, image, device, dtype, repeats)
                if dtype == torch.bfloat16:
                    bench_amg(official, ours, image, device, dtype, grid)
                    for objects in (1, 4):
                        bench_video(
                            official_dict,
                            ckpt,
                            ours,
                            device,
                            dtype,
                            frames,
                            clip_size,
                            objects,
                            compiled=key == "tiny" and objects == 4 and not args.no_compiled,
                        )


def _yaml(model_dict: dict, folder: str) -> str:
    """The model's official-style yaml in ``folder`` (masklet reads the config beside the weights)."""
    from omegaconf import OmegaConf

    path = os.path.join(folder, "model.yaml")
    OmegaConf.save(OmegaConf.create({"model": model_dict}), path)
    return path


if __name__ == "__main__":
    main()
