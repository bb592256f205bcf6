"""The ``masklet`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import MaskletError


def _floats(text: str, count: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count:
        shapes = " or ".join({2: "X,Y", 3: "X,Y,LABEL", 4: "X0,Y0,X1,Y1"}[n] for n in count)
        raise argparse.ArgumentTypeError(f"{what} {text!r}: expected {shapes}")
    return values


def _point(text: str) -> list[float]:
    return _floats(text, (2, 3), "--point")


def _box(text: str) -> list[float]:
    return _floats(text, (4,), "--box")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="masklet", description="Segment Anything 2 from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment one object of an image from points and/or a box")
    seg.add_argument("image", help="image file (any format Pillow reads)")
    seg.add_argument("--point", type=_point, action="append", default=[], metavar="X,Y[,LABEL]",
                     help="a click in image pixels; LABEL 1 = foreground (default), 0 = background; repeatable")
    seg.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="a box in image pixels")
    source = seg.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="hub model name, e.g. sam2.1-hiera-tiny (the default)")
    source.add_argument("--checkpoint", type=Path, help="local checkpoint: official .pt or Hugging Face folder")
    seg.add_argument("--config", type=Path, help="official-style yaml config for a non-standard checkpoint")
    seg.add_argument("--out", type=Path, required=True, help="output folder")
    seg.add_argument("--single", action="store_true", help="output one mask instead of three candidates")
    seg.add_argument("--device", default="cpu", help="torch device (default cpu)")
    seg.add_argument("--bf16", action="store_true", help="run the model in bfloat16")
    seg.add_argument("--max-hole-area", type=float, default=0.0, help="fill holes up to this low-res area")
    seg.add_argument("--max-sprinkle-area", type=float, default=0.0, help="remove specks up to this low-res area")
    return parser


def run_segment(args: argparse.Namespace) -> dict:
    """Run ``masklet segment`` and return the JSON summary it writes."""
    import torch

    from .image import ImagePredictor
    from .io import load_image, overlay_masks, save_image, save_mask_png
    from .masks import encode_rle
    from .weights import load_model

    if not args.point and args.box is None:
        raise SystemExit("masklet segment: give at least one --point or a --box")
    image = load_image(args.image)
    source = args.checkpoint if args.checkpoint is not None else (args.model or "sam2.1-hiera-tiny")
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = load_model(source, device=args.device, dtype=dtype, config=args.config)
    predictor = ImagePredictor(model, max_hole_area=args.max_hole_area, max_sprinkle_area=args.max_sprinkle_area)
    predictor.set_image(image)

    coords = labels = None
    if args.point:
        coords = np.array([p[:2] for p in args.point], dtype=np.float32)
        labels = np.array([int(p[2]) if len(p) == 3 else 1 for p in args.point])
    masks, scores, _ = predictor.predict(
        point_coords=coords, point_labels=labels, box=args.box, multimask_output=not args.single
    )
    order = np.argsort(-scores, kind="stable")
    masks, scores = masks[order], scores[order]

    args.out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    records = []
    for rank, (mask, score) in enumerate(zip(masks, scores)):
        png = args.out / f"{stem}_mask{rank}.png"
        save_mask_png(mask, png)
        rle = encode_rle(torch.from_numpy(mask[None]))[0]
        records.append({"mask_png": png.name, "score": float(score), "area": int(mask.sum()), "rle": rle})
    overlay = args.out / f"{stem}_overlay.png"
    save_image(overlay_masks(image, masks[:1]), overlay)
    summary = {
        "image": str(args.image),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "model": str(source),
        "points": None if coords is None else coords.tolist(),
        "point_labels": None if labels is None else labels.tolist(),
        "box": args.box,
        "overlay_png": overlay.name,
        "masks": records,
    }
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``masklet`` command."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "segment":
            summary = run_segment(args)
            best = summary["masks"][0]
            print(f"wrote {len(summary['masks'])} mask(s) to {args.out} (best score {best['score']:.3f})")
    except MaskletError as err:
        print(f"masklet {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
