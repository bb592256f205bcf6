"""``masklet segment``: one object of an image from clicks and/or a box."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    add_model_options,
    add_server_option,
    check_inside,
    client,
    floats,
    library_default,
    load_model,
    model_source,
)


def _point(text: str) -> list[float]:
    values = floats(text, (2, 3), "--point")
    if len(values) == 3 and values[2] not in (0, 1):
        raise argparse.ArgumentTypeError(f"--point {text!r}: LABEL must be 1 (foreground) or 0 (background)")
    return values


def _box(text: str) -> list[float]:
    return floats(text, (4,), "--box")


def configure(sub: Any) -> None:
    """Register ``masklet segment``."""
    from ..image import ImagePredictor

    hole, sprinkle = (library_default(ImagePredictor, k) for k in ("max_hole_area", "max_sprinkle_area"))
    p = sub.add_parser("segment", help="segment one object of an image from points and/or a box")
    p.add_argument("image", help="image file (any format Pillow reads)")
    p.add_argument(
        "--point",
        type=_point,
        action="append",
        default=[],
        metavar="X,Y[,LABEL]",
        help="a click in image pixels; LABEL 1 = foreground (default), 0 = background; repeatable",
    )
    p.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="a box in image pixels")
    add_model_options(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--single", action="store_true", help="output one mask instead of three candidates")
    p.add_argument(
        "--all-candidates",
        action="store_true",
        help="draw every candidate mask in the overlay (labelled by rank and score), not only the best",
    )
    p.add_argument("--bf16", action="store_true", help="run the model in bfloat16 (same as --dtype bfloat16)")
    p.add_argument(
        "--max-hole-area", type=float, default=hole, help=f"fill holes up to this low-res area (default {hole:g})"
    )
    p.add_argument(
        "--max-sprinkle-area",
        type=float,
        default=sprinkle,
        help=f"remove specks up to this low-res area (default {sprinkle:g})",
    )
    add_server_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``masklet segment`` and print what it wrote."""
    summary = run_segment(args)
    best = summary["masks"][0]
    print(f"wrote {len(summary['masks'])} mask(s) to {args.out} (best score {best['score']:.3f})")
    return 0


def run_segment(args: argparse.Namespace) -> dict:
    """Segment, write the masks, the overlay and ``STEM.json``; returns the JSON summary."""
    import torch

    from ..annotate import annotate_masks
    from ..errors import InvalidInputError
    from ..image import ImagePredictor
    from ..io import load_image, save_image, save_mask_png
    from ..masks import encode_rle

    if not args.point and args.box is None:
        raise InvalidInputError("no prompt: give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    image = load_image(args.image)
    for pt in args.point:
        check_inside(f"--point {','.join(f'{v:g}' for v in pt)}", pt[:2], image.shape[0], image.shape[1])
    if args.box is not None:
        check_inside(f"--box {','.join(f'{v:g}' for v in args.box)}", args.box, image.shape[0], image.shape[1])
    source = model_source(args)
    if args.server:  # the same run on a masklet server
        predictor = client(args).image_predictor(
            args.model, max_hole_area=args.max_hole_area, max_sprinkle_area=args.max_sprinkle_area
        )
    else:
        predictor = ImagePredictor(
            load_model(args), max_hole_area=args.max_hole_area, max_sprinkle_area=args.max_sprinkle_area
        )
    predictor.set_image(image)

    coords = labels = None
    if args.point:
        coords = np.array([pt[:2] for pt in args.point], dtype=np.float32)
        labels = np.array([int(pt[2]) if len(pt) == 3 else 1 for pt in args.point])
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
    shown = len(masks) if args.all_candidates else 1
    tags = [f"mask{rank} {score:.2f}" for rank, score in enumerate(scores[:shown])]
    save_image(annotate_masks(image, masks[:shown][::-1], tags[::-1]), overlay)  # the best on top
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
