"""``masklet amg``: automatic masks from a grid of prompts, as COCO JSON and an overlay."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .common import add_model_options, add_server_option, client, library_default, load_model, model_source

#: The MaskGenerator options the command line offers (``--points-per-side`` ...).
AMG_OPTIONS = (
    "points_per_side",
    "pred_iou_thresh",
    "stability_score_thresh",
    "mask_nms_thresh",
    "crop_n_layers",
    "min_mask_region_area",
)


def configure(sub: Any) -> None:
    """Register ``masklet amg``; option defaults are the model's recommended ones, else MaskGenerator's."""
    from ..amg import MaskGenerator

    d = {name: library_default(MaskGenerator, name) for name in AMG_OPTIONS}
    p = sub.add_parser("amg", help="segment everything: automatic masks from a grid of points (COCO JSON + overlay)")
    p.add_argument("image", help="image file (any format Pillow reads)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_model_options(p)
    p.add_argument("--points-per-side", type=int, help=f"grid points per image side (default {d['points_per_side']})")
    p.add_argument(
        "--pred-iou-thresh",
        type=float,
        help=f"predicted-IoU filter (default {d['pred_iou_thresh']:g}; masklet-nano recommends its own)",
    )
    p.add_argument(
        "--stability-score-thresh",
        type=float,
        help=f"stability filter (default {d['stability_score_thresh']:g}; masklet-nano recommends its own)",
    )
    p.add_argument(
        "--mask-nms-thresh",
        type=float,
        help="drop masks whose mask IoU with a better one exceeds this "
        f"(default {d['mask_nms_thresh']:g}: off, as the official)",
    )
    p.add_argument("--crop-n-layers", type=int, help=f"layers of overlapping crops (default {d['crop_n_layers']})")
    p.add_argument(
        "--min-mask-region-area",
        type=float,
        help=f"fill holes and remove islands smaller than this many pixels (default {d['min_mask_region_area']:g}: off)",
    )
    p.add_argument("--progress", action="store_true", help="report progress on stderr (prompts decoded)")
    p.add_argument("--use-m2m", action="store_true", help="refine every mask once with its own logits")
    add_server_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``masklet amg`` and print the count and the options used (with where each came from)."""
    coco = run_amg(args)
    used = ", ".join(f"{k}={v:g} ({o})" for k, (v, o) in args.amg_options.items())
    print(f"wrote {len(coco['annotations'])} mask(s) to {args.out}")
    print(f"  options: {used}")
    return 0


def amg_options(source: str, args: argparse.Namespace | None = None) -> tuple[dict, dict[str, str]]:
    """MaskGenerator options: explicit ones, else the model's recommended ones, else the library
    defaults; returns the options and where each came from ("option", the source, "default")."""
    from ..amg import MaskGenerator
    from ..checkpoints import recommended_amg_options

    recommended = recommended_amg_options(source)
    options: dict = {}
    origin: dict[str, str] = {}
    for name in AMG_OPTIONS:
        default = library_default(MaskGenerator, name)
        given = None if args is None else getattr(args, name, None)
        if given is not None:
            options[name], origin[name] = given, "option"
        elif name in recommended:
            value = recommended[name]
            options[name] = int(value) if isinstance(default, int) and value.is_integer() else value
            origin[name] = Path(source).name if Path(source).exists() else source
        else:
            options[name], origin[name] = default, "default"
    return options, origin


def _stderr_progress(done: int, total: int) -> None:
    """A one-line progress report on stderr, rewritten in place."""
    end = "\n" if done >= total else ""
    print(
        f"\rmasklet amg: {done}/{total} prompts ({100 * done // max(total, 1)}%)", end=end, file=sys.stderr, flush=True
    )


def run_amg(args: argparse.Namespace) -> dict:
    """Write ``STEM.json`` (COCO format) and ``STEM_overlay.png``; returns the JSON."""
    from ..amg import MaskGenerator
    from ..annotate import annotate_masks
    from ..formats import coco_document
    from ..io import load_image, save_image
    from ..masks import decode_rle

    image = load_image(args.image)
    source = model_source(args)
    options, origin = amg_options(source, args)
    args.amg_options = {k: (v, origin[k]) for k, v in options.items()}
    if args.server:  # the same run on a masklet server
        generator = client(args).mask_generator(args.model, **options, use_m2m=args.use_m2m, output_mode="coco_rle")
    else:
        generator = MaskGenerator(
            load_model(args),
            **options,
            use_m2m=args.use_m2m,
            output_mode="coco_rle",
            progress=_stderr_progress if args.progress else False,
        )
    records = generator.generate(image)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    height, width = int(image.shape[0]), int(image.shape[1])
    annotations = [
        {
            "id": i + 1,
            "image_id": 1,
            "category_id": 1,
            "segmentation": r["segmentation"],
            "area": int(r["area"]),
            "bbox": [float(v) for v in r["bbox"]],
            "score": float(r["predicted_iou"]),
            "iscrowd": 0,
            "predicted_iou": float(r["predicted_iou"]),
            "stability_score": float(r["stability_score"]),
            "point_coords": r["point_coords"],
            "crop_box": r["crop_box"],
        }
        for i, r in enumerate(records)
    ]
    coco = coco_document(
        {"description": f"masklet amg of {Path(args.image).name} with {source}"},
        [{"id": 1, "file_name": Path(args.image).name, "height": height, "width": width}],
        annotations,
    )
    (args.out / f"{stem}.json").write_text(json.dumps(coco))
    # larger masks first, so that small ones stay visible on top
    order = sorted(range(len(records)), key=lambda i: -records[i]["area"])
    if records:
        masks = decode_rle([records[i]["segmentation"] for i in order]).numpy()
    else:
        masks = np.zeros((0, height, width), dtype=bool)
    # labels are the annotation ids of masks.json; a legend only while it stays readable
    save_image(
        annotate_masks(image, masks, [str(i + 1) for i in order], legend=len(order) <= 24),
        args.out / f"{stem}_overlay.png",
    )
    return coco
