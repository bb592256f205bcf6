"""Time the encoder, a click and a tracked video frame: official SAM2 vs masklet PyTorch (float32,
bfloat16) vs masklet's ONNX Runtime backend, in one run, taking turns (the machine is shared and noisy).

Random weights of the chosen official size (no model hub here). Ratios are official / this
(> 1 means faster than the official). Usage: ``python benchmarks/onnx_backend.py [--repeats 3 --frames 6]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

import masklet  # noqa: E402
import oracles  # noqa: E402,F401  (tests/reference as the package `reference`)
import video_predictor as vb  # noqa: E402  (frames, clicks, interleaved tracking)
from masklet.export.onnx import export_onnx  # noqa: E402
from masklet.export.ort import ort_model  # noqa: E402
from masklet.video import VideoPredictor  # noqa: E402
from reference.official import (  # noqa: E402
    build_official_model,
    official_image_predictor,
    official_model_dict,
    save_official_checkpoint,
)
from timing import interleaved  # noqa: E402


def official_encoder_session(official, path: str, threads: int):
    """The official image encoder exported with the standard torch.onnx.export, in ONNX Runtime."""
    import onnxruntime

    size = official.image_size
    with torch.no_grad():
        torch.onnx.export(
            official.image_encoder,
            torch.randn(1, 3, size, size),
            path,
            input_names=["pixels"],
            opset_version=17,
            dynamo=False,
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="sam2.1-hiera-tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", type=vb._size, default=(480, 640))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-bf16", action="store_true", help="leave out bfloat16 (a CPU without native bf16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vb.quiet_official()

    official = build_official_model(official_model_dict(args.variant), seed=0, video=True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.pt")
        save_official_checkpoint(official, ckpt)
        fp32 = masklet.load_model(ckpt, dtype=torch.float32)
        bf16 = None if args.skip_bf16 else masklet.load_model(ckpt, dtype=torch.bfloat16)
        start = time.perf_counter()
        ort = ort_model(fp32, export_onnx(fp32, os.path.join(tmp, "onnx")), threads=args.threads)
        export_s = time.perf_counter() - start
        official_ort = official_encoder_session(official, os.path.join(tmp, "official_encoder.onnx"), args.threads)
    models = {"masklet fp32": fp32, "masklet bf16": bf16, "masklet ORT": ort}
    models = {name: model for name, model in models.items() if model is not None}
    print(
        f"{args.variant} (random weights), {args.threads} threads, export+session {export_s:.1f} s, "
        f"median of {args.repeats} interleaved runs"
    )

    with tempfile.TemporaryDirectory() as folder:
        masks = vb.write_frames(folder, args.frames, args.size, seed=0)
        image = np.asarray(__import__("PIL.Image").Image.open(os.path.join(folder, "00000.jpg")).convert("RGB"))
        click = vb.centre(masks[0, 0])
        point = dict(point_coords=np.array([click]), point_labels=np.array([1]))
        predictors = {"official fp32": official_image_predictor(official)}
        predictors.update({k: masklet.ImagePredictor(m) for k, m in models.items()})
        with torch.inference_mode():
            pixels = np.random.default_rng(0).standard_normal(
                (1, 3, official.image_size, official.image_size), np.float32
            )
            runs = {k: (lambda p=p: p.set_image(image)) for k, p in predictors.items()}
            runs["official ORT"] = lambda: official_ort.run(None, {"pixels": pixels})
            enc = interleaved(runs, args.repeats)
            clicks = interleaved({k: (lambda p=p: p.predict(**point)) for k, p in predictors.items()}, args.repeats * 5)
        videos = {"official fp32": official}
        videos.update({k: VideoPredictor(m, fill_hole_area=official.fill_hole_area) for k, m in models.items()})
        with torch.inference_mode():
            tracked = vb.track_interleaved(videos, folder, [click])
    base = ("official fp32",)
    off_ort = enc["official ORT"]
    print(
        f"  {'implementation':15s} {'encoder s':>10s} {'ratio':>6s} {'vs ORT':>7s} {'click ms':>9s} {'ratio':>6s} "
        f"{'video s/frame':>14s} {'ratio':>6s}"
    )
    for name in predictors:
        e, c, v = enc[name], clicks[name], tracked[name]["frame_s"]
        b = [enc[base[0]], clicks[base[0]], tracked[base[0]]["frame_s"]]
        print(
            f"  {name:15s} {e:10.3f} {b[0] / e:6.2f} {off_ort / e:7.2f} {c * 1000:9.2f} {b[1] / c:6.2f} "
            f"{v:14.3f} {b[2] / v:6.2f}"
        )
    print(
        f"  {'official ORT':15s} {off_ort:10.3f} {enc[base[0]] / off_ort:6.2f} {1.0:7.2f}"
        "   (encoder only: the official exported with the standard torch.onnx.export)"
    )
    best = min((n for n in predictors if n != "official fp32"), key=lambda n: enc[n])
    verdict = "at least as fast as" if enc[best] <= off_ort else "slower than"
    print(
        f"  'vs ORT' = official ORT encoder s / this (> 1: faster). masklet's fastest encoder ({best}) is "
        f"{verdict} ONNX Runtime on the official export ({off_ort / enc[best]:.2f}x); no official export of the "
        "decoder or video step exists to time clicks and frames against"
    )
    ref = tracked["masklet fp32"]["logits"]
    got = tracked["masklet ORT"]["logits"]
    diff = max(float(((a[2] > 0) != (b[2] > 0)).float().mean()) for a, b in zip(got, ref))
    print(f"  ORT vs masklet fp32 video masks: largest share of differing pixels on a frame {diff:.2e}")


if __name__ == "__main__":
    main()
