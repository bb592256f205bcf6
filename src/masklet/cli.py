"""The ``masklet`` command line."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

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
    values = _floats(text, (2, 3), "--point")
    if len(values) == 3 and values[2] not in (0, 1):
        raise argparse.ArgumentTypeError(f"--point {text!r}: LABEL must be 1 (foreground) or 0 (background)")
    return values


_DEFAULT_MODEL = "sam2.1-hiera-tiny"
_MODEL_HELP = (f"hub model name (default {_DEFAULT_MODEL}, downloaded once); offline, use the packaged "
               "--model masklet-nano or --checkpoint PATH")


def _model_source(args: argparse.Namespace) -> str:
    """The model the options name, as a plain string (a path prints as a path, not a repr)."""
    return str(args.checkpoint) if args.checkpoint is not None else (args.model or _DEFAULT_MODEL)


def _load_model(args: argparse.Namespace, **kwargs):
    """Load the model the CLI options name; an unreachable hub says which options work offline."""
    from .checkpoints import load_model
    from .errors import ModelNotFoundError

    source = _model_source(args)
    try:
        return load_model(source, device=args.device, config=args.config, **kwargs)
    except ModelNotFoundError as err:
        if args.checkpoint is not None or "Hugging Face" not in str(err):
            raise
        raise ModelNotFoundError(
            f"{source} is not in the local cache and the hub cannot be reached; offline, pass "
            f"--model masklet-nano (packaged) or --checkpoint PATH to a downloaded .pt"
        ) from None


def _check_inside(what: str, values: Sequence[float], height: int, width: int) -> None:
    """Points and boxes must lie within the image (pixels 0..W, 0..H)."""
    from .errors import InvalidInputError

    xs, ys = values[0:4:2], values[1:4:2]
    if not all(0 <= x <= width for x in xs) or not all(0 <= y <= height for y in ys):
        raise InvalidInputError(
            f"{what} lies outside the image, which is {width}x{height} (WxH): x must be in 0..{width}, y in 0..{height}"
        )


def _join_negative(argv: Sequence[str]) -> list[str]:
    """``--point -10,-10`` -> ``--point=-10,-10``: argparse would read the value as an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in ("--point", "--box", "--prompt") and token[:1] == "-" and token[1:2].isdigit():
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _box(text: str) -> list[float]:
    return _floats(text, (4,), "--box")


def _index(text: str) -> int:
    """A frame index or count: a plain non-negative integer."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected an int >= 0")
    return int(text)


class _Prompt(NamedTuple):
    """One ``--prompt``: a click (X, Y, LABEL) or a box (X0, Y0, X1, Y1) for an object on a frame."""

    frame: int
    obj: int
    kind: str  # "point" or "box"
    values: tuple[float, ...]
    text: str  # as given, for error messages


_PROMPT_SYNTAX = "FRAME:OBJ:point=X,Y[,LABEL] or FRAME:OBJ:box=X0,Y0,X1,Y1 (OBJ in 1..255, LABEL 1 or 0)"


def _prompt(text: str) -> _Prompt:
    """Parse ``FRAME:OBJ:point=X,Y[,LABEL]`` or ``FRAME:OBJ:box=X0,Y0,X1,Y1`` strictly."""

    def bad(why: str) -> argparse.ArgumentTypeError:
        return argparse.ArgumentTypeError(f"{text!r}: {why}; expected {_PROMPT_SYNTAX}")

    parts = text.split(":")
    if len(parts) != 3 or "=" not in parts[2]:
        raise bad("expected FRAME:OBJ:KIND=VALUES")
    frame, obj, (kind, _, coords) = parts[0], parts[1], parts[2].partition("=")
    if not (frame.isascii() and frame.isdigit()):
        raise bad(f"FRAME {frame!r} is not an int >= 0")
    if not (obj.isascii() and obj.isdigit() and 1 <= int(obj) <= 255):
        raise bad(f"OBJ {obj!r} is not an int in 1..255")
    if kind not in ("point", "box"):
        raise bad(f"unknown kind {kind!r}")
    try:
        values = tuple(float(v) for v in coords.split(","))
    except ValueError:
        raise bad(f"coordinates {coords!r} are not numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise bad(f"coordinates {coords!r} are not finite")
    if kind == "point" and len(values) not in (2, 3):
        raise bad(f"a point has 2 or 3 values, got {len(values)}")
    if kind == "point" and len(values) == 3 and values[2] not in (0, 1):
        raise bad(f"LABEL must be 1 (positive) or 0 (negative), got {coords.split(',')[2]!r}")
    if kind == "box" and len(values) != 4:
        raise bad(f"a box has 4 values, got {len(values)}")
    if kind == "box" and (values[0] > values[2] or values[1] > values[3]):
        raise bad("a box needs X0 <= X1 and Y0 <= Y1")
    return _Prompt(int(frame), int(obj), kind, values, text)


def _prompt_sets(prompts: Sequence[_Prompt]) -> dict[tuple[int, int], dict]:
    """Group prompts by (frame, object), in order: ``{"points": [[x, y]...], "labels": [...], "box": ...}``."""
    from .errors import InvalidInputError

    sets: dict[tuple[int, int], dict] = {}
    for p in prompts:
        entry = sets.setdefault((p.frame, p.obj), {"points": [], "labels": [], "box": None})
        if p.kind == "point":
            entry["points"].append(list(p.values[:2]))
            entry["labels"].append(int(p.values[2]) if len(p.values) == 3 else 1)
        elif entry["box"] is not None:
            raise InvalidInputError(
                f"--prompt {p.text!r}: a second box for frame {p.frame}, object {p.obj}; give one box per frame and object"
            )
        else:
            entry["box"] = list(p.values)
    return sets


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="masklet", description="Segment Anything 2 from the command line.",
        epilog="Works offline with the packaged model: --model masklet-nano (small, trained on synthetic scenes).")
    parser.add_argument("--version", action="version", version=f"masklet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment one object of an image from points and/or a box")
    seg.add_argument("image", help="image file (any format Pillow reads)")
    seg.add_argument("--point", type=_point, action="append", default=[], metavar="X,Y[,LABEL]",
                     help="a click in image pixels; LABEL 1 = foreground (default), 0 = background; repeatable")
    seg.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="a box in image pixels")
    source = seg.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help=_MODEL_HELP)
    source.add_argument("--checkpoint", type=Path, help="local checkpoint: official .pt or Hugging Face folder")
    seg.add_argument("--config", type=Path, help="official-style yaml config for a non-standard checkpoint")
    seg.add_argument("--out", type=Path, required=True, help="output folder")
    seg.add_argument("--single", action="store_true", help="output one mask instead of three candidates")
    seg.add_argument("--all-candidates", action="store_true",
                     help="draw every candidate mask in the overlay (labelled by rank and score), not only the best")
    seg.add_argument("--device", default="cpu", help="torch device (default cpu)")
    seg.add_argument("--bf16", action="store_true", help="run the model in bfloat16")
    seg.add_argument("--max-hole-area", type=float, default=0.0, help="fill holes up to this low-res area")
    seg.add_argument("--max-sprinkle-area", type=float, default=0.0, help="remove specks up to this low-res area")
    seg.add_argument("--server", metavar="URL", help="run on a masklet server (masklet serve) instead; key from MASKLET_API_KEY")

    amg = sub.add_parser("amg", help="segment everything: automatic masks from a grid of points (COCO JSON + overlay)")
    amg.add_argument("image", help="image file (any format Pillow reads)")
    amg.add_argument("--out", type=Path, required=True, help="output folder")
    amg_source = amg.add_mutually_exclusive_group()
    amg_source.add_argument("--model", default=None, help=_MODEL_HELP)
    amg_source.add_argument("--checkpoint", type=Path, help="local checkpoint: official .pt or Hugging Face folder")
    amg.add_argument("--config", type=Path, help="official-style yaml config for a non-standard checkpoint")
    # defaults: the model's recommended options (STEM.amg.json beside it), else MaskGenerator's own
    amg.add_argument("--points-per-side", type=int, help="grid points per image side (default 32)")
    amg.add_argument("--pred-iou-thresh", type=float,
                     help="predicted-IoU filter (default 0.8; masklet-nano recommends its own)")
    amg.add_argument("--stability-score-thresh", type=float,
                     help="stability filter (default 0.95; masklet-nano recommends its own)")
    amg.add_argument("--mask-nms-thresh", type=float,
                     help="drop masks whose mask IoU with a better one exceeds this (default 0: off, as the official)")
    amg.add_argument("--crop-n-layers", type=int, help="layers of overlapping crops (default 0)")
    amg.add_argument("--min-mask-region-area", type=float,
                     help="fill holes and remove islands smaller than this many pixels (default 0: off)")
    amg.add_argument("--progress", action="store_true", help="report progress on stderr (prompts decoded)")
    amg.add_argument("--use-m2m", action="store_true", help="refine every mask once with its own logits")
    amg.add_argument("--device", default="cpu", help="torch device (default cpu)")
    amg.add_argument("--server", metavar="URL", help="run on a masklet server (masklet serve) instead; key from MASKLET_API_KEY")

    track = sub.add_parser("track", help="track objects through a video from clicks and boxes (COCO RLE JSON, "
                           "DAVIS PNGs, overlay video)")
    track.add_argument("video", help="video file or folder of frames")
    track.add_argument("--prompt", type=_prompt, action="append", required=True, metavar="FRAME:OBJ:KIND=VALUES",
                       help="FRAME:OBJ:point=X,Y[,LABEL] (LABEL 1 positive, the default, or 0 negative) or "
                            "FRAME:OBJ:box=X0,Y0,X1,Y1, in video pixels, OBJ in 1..255; repeatable, points of one "
                            "frame and object accumulate")
    track.add_argument("--out", type=Path, required=True, help="output folder")
    direction = track.add_mutually_exclusive_group()
    direction.add_argument("--reverse", action="store_true", help="track backward from the start frame")
    direction.add_argument("--both-directions", action="store_true",
                           help="track forward from the start frame, then backward from it")
    track.add_argument("--start", type=_index, metavar="N", help="frame to start from (default: the earliest prompted frame)")
    track.add_argument("--max-frames", type=_index, metavar="N",
                       help="track at most N frames beyond the start frame (default: to the end of the video)")
    track_source = track.add_mutually_exclusive_group()
    track_source.add_argument("--model", default=None, help=_MODEL_HELP)
    track_source.add_argument("--checkpoint", type=Path, help="local checkpoint: official .pt or Hugging Face folder")
    track.add_argument("--config", type=Path, help="official-style yaml config for a non-standard checkpoint")
    track.add_argument("--device", default="cpu", help="torch device (default cpu)")
    track.add_argument("--server", metavar="URL", help="run on a masklet server (masklet serve) instead; key from MASKLET_API_KEY")
    track.add_argument("--no-video", action="store_true", help="do not write overlay.mp4 (which needs PyAV)")
    track.add_argument("--fps", type=float, default=24.0, metavar="F", help="frame rate of overlay.mp4 (default 24)")
    track.add_argument("--lost-threshold", type=float, default=0.5, metavar="P",
                       help="presence below this counts towards 'lost' (default 0.5)")
    track.add_argument("--lost-frames", type=int, default=2, metavar="K",
                       help="frames of low presence or collapsed mask before 'lost' (default 2)")
    track.add_argument("--low-confidence", type=float, default=0.8, metavar="P",
                       help="presence below this (but not lost) is 'low_confidence' (default 0.8)")
    track.add_argument("--min-area-ratio", type=float, default=0.25, metavar="R",
                       help="a mask below R x its recent area counts towards 'lost'; 0 turns it off (default 0.25)")
    track.add_argument("--score-drop", type=float, default=1.5, metavar="D",
                       help="an object score D logits below its recent level counts towards 'lost'; 0 turns it off (default 1.5)")

    demo = sub.add_parser("demo", help="offline demo on generated data: click, box, automatic masks, tracking")
    demo.add_argument("--model", default="masklet-nano", help="model name or path (default masklet-nano)")
    demo.add_argument("--out", type=Path, default=Path("masklet-demo"), help="output folder (default masklet-demo)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the generated scene and clip")
    demo.add_argument("--device", default="cpu")

    from .server.serve import add_parser as add_serve_parser

    add_serve_parser(sub)  # masklet serve, in server/serve.py
    from .batch import add_parser as add_batch_parser

    add_batch_parser(sub)  # masklet batch, in batch.py
    from .export.onnx import add_cli as add_export_cli

    add_export_cli(sub)
    train = sub.add_parser("train", help="train or fine-tune a model on instance masks (needs masklet[train])")
    init = train.add_mutually_exclusive_group(required=True)
    init.add_argument("--model", help="weights to fine-tune: hub name, .pt file or Hugging Face folder")
    init.add_argument("--variant", help="train from scratch: a named config, e.g. masklet-nano")
    init.add_argument("--config", type=Path, help="train from scratch: an official-style yaml config")
    train.add_argument("--images", default="synthetic",
                       help="'synthetic', or coco:ANNOTATIONS.json:IMAGE_DIR (default synthetic)")
    train.add_argument("--videos", default=None, help="'synthetic', or davis:ROOT (folders of frames + indexed PNGs)")
    train.add_argument("--video-fraction", type=float, default=0.0, help="share of steps on clips (default 0)")
    train.add_argument("--clip-frames", type=int, default=4, help="frames per synthetic clip (default 4)")
    train.add_argument("--crossing-share", type=float, default=0.0,
                       help="share of synthetic clips with two crossing objects (default 0)")
    train.add_argument("--video-mask-prompts", type=float, default=0.2,
                       help="share of clips whose first frame is prompted with its masks (default 0.2)")
    train.add_argument("--steps", type=int, default=1000)
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--max-objects", type=int, default=4)
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--warmup-steps", type=int, default=200)
    train.add_argument("--correction-rounds", type=int, default=2)
    train.add_argument("--freeze", action="append", default=[], metavar="PREFIX",
                       help="keep parameters with this name prefix fixed (e.g. image_encoder); repeatable")
    train.add_argument("--save-every", type=int, default=500)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu")
    train.add_argument("--out", type=Path, required=True, help="folder for model.pt, model.yaml and trainer_state.pt")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    return parser


def _dataset(spec: str | None, kind: str, seed: int, size: int, clip_frames: int, crossing_share: float = 0.0):
    """A training source from a command-line spec."""
    from functools import partial

    from .errors import InvalidInputError
    from .train import CocoInstances, DavisFolders, synthetic_clips, synthetic_images

    if spec is None:
        return None
    if spec == "synthetic":
        return partial(synthetic_images, size=size) if kind == "images" else partial(
            synthetic_clips, size=size, num_frames=clip_frames, crossing_share=crossing_share)
    if kind == "images" and spec.startswith("coco:"):
        parts = spec.split(":", 2)
        if len(parts) != 3:
            raise InvalidInputError("--images coco:ANNOTATIONS.json:IMAGE_DIR expected")
        return CocoInstances(parts[1], parts[2])
    if kind == "videos" and spec.startswith("davis:"):
        return DavisFolders(spec.split(":", 1)[1])
    accepted = "'synthetic' or coco:ANNOTATIONS.json:IMAGE_DIR" if kind == "images" else "'synthetic' or davis:ROOT"
    raise InvalidInputError(f"--{kind} {spec!r}: expected {accepted}")


def run_train(args: argparse.Namespace) -> Path:
    """Run ``masklet train``; returns the path of the saved checkpoint."""
    import torch

    from .checkpoints import load_model, load_official_yaml
    from .model import Sam2Model, variant_config
    from .train import TrainConfig, Trainer

    if args.model:
        model = load_model(args.model, device=args.device)
    else:
        config = variant_config(args.variant) if args.variant else load_official_yaml(args.config)
        torch.manual_seed(args.seed)
        model = Sam2Model(config).to(args.device)
    size = model.image_size
    train_config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, max_objects=args.max_objects, lr=args.lr,
        warmup_steps=args.warmup_steps, correction_rounds=args.correction_rounds,
        video_fraction=args.video_fraction, prob_video_mask_prompt=args.video_mask_prompts,
        freeze=tuple(args.freeze), save_every=args.save_every, seed=args.seed,
    )
    trainer = Trainer(
        model, train_config,
        images=_dataset(args.images, "images", args.seed, size, args.clip_frames),
        videos=_dataset(args.videos, "videos", args.seed, size, args.clip_frames, args.crossing_share),
        out_dir=args.out,
    )
    if args.resume:
        trainer.resume(args.out)
    trainer.fit()
    return trainer.save(args.out)


def _client(args: argparse.Namespace):
    """The masklet server client of ``--server URL`` (needs masklet[client])."""
    import os

    from .client import Client

    return Client(args.server, api_key=os.environ.get("MASKLET_API_KEY"))


def run_segment(args: argparse.Namespace) -> dict:
    """Run ``masklet segment`` and return the JSON summary it writes."""
    import torch

    from .annotate import annotate_masks
    from .errors import InvalidInputError
    from .image import ImagePredictor
    from .io import load_image, save_image, save_mask_png
    from .masks import encode_rle

    if not args.point and args.box is None:
        raise InvalidInputError("no prompt: give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    image = load_image(args.image)
    for p in args.point:
        _check_inside(f"--point {','.join(f'{v:g}' for v in p)}", p[:2], image.shape[0], image.shape[1])
    if args.box is not None:
        _check_inside(f"--box {','.join(f'{v:g}' for v in args.box)}", args.box, image.shape[0], image.shape[1])
    source = _model_source(args)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    if args.server:  # the same run on a masklet server
        predictor = _client(args).image_predictor(
            args.model, max_hole_area=args.max_hole_area, max_sprinkle_area=args.max_sprinkle_area)
    else:
        model = _load_model(args, dtype=dtype)
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


_AMG_OPTIONS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "mask_nms_thresh",
                "crop_n_layers", "min_mask_region_area")


def amg_options(source: str, args: argparse.Namespace | None = None) -> tuple[dict, dict[str, str]]:
    """MaskGenerator options: explicit ones, else the model's recommended ones, else the library
    defaults; returns the options and where each came from ("option", the source, "default")."""
    import inspect

    from .amg import MaskGenerator
    from .checkpoints import recommended_amg_options

    defaults = {k: p.default for k, p in inspect.signature(MaskGenerator).parameters.items()}
    recommended = recommended_amg_options(source)
    options: dict = {}
    origin: dict[str, str] = {}
    for name in _AMG_OPTIONS:
        given = None if args is None else getattr(args, name, None)
        if given is not None:
            options[name], origin[name] = given, "option"
        elif name in recommended:
            value = recommended[name]
            options[name] = int(value) if isinstance(defaults[name], int) and value.is_integer() else value
            origin[name] = Path(source).name if Path(source).exists() else source
        else:
            options[name], origin[name] = defaults[name], "default"
    return options, origin


def _stderr_progress(done: int, total: int) -> None:
    """A one-line progress report on stderr, rewritten in place."""
    end = "\n" if done >= total else ""
    print(f"\rmasklet amg: {done}/{total} prompts ({100 * done // max(total, 1)}%)", end=end, file=sys.stderr, flush=True)


def run_amg(args: argparse.Namespace) -> dict:
    """Run ``masklet amg``: write ``STEM.json`` (COCO format) and ``STEM_overlay.png``; returns the JSON."""
    from .amg import MaskGenerator
    from .annotate import annotate_masks
    from .io import load_image, save_image
    from .masks import decode_rle

    image = load_image(args.image)
    source = _model_source(args)
    options, origin = amg_options(source, args)
    args.amg_options = {k: (v, origin[k]) for k, v in options.items()}
    if args.server:  # the same run on a masklet server
        generator = _client(args).mask_generator(args.model, **options, use_m2m=args.use_m2m, output_mode="coco_rle")
    else:
        generator = MaskGenerator(
            _load_model(args), **options, use_m2m=args.use_m2m, output_mode="coco_rle",
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
    coco = {
        "info": {"description": f"masklet amg of {Path(args.image).name} with {source}"},
        "images": [{"id": 1, "file_name": Path(args.image).name, "height": height, "width": width}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
    }
    (args.out / f"{stem}.json").write_text(json.dumps(coco))
    # larger masks first, so that small ones stay visible on top
    order = sorted(range(len(records)), key=lambda i: -records[i]["area"])
    if records:
        masks = decode_rle([records[i]["segmentation"] for i in order]).numpy()
    else:
        masks = np.zeros((0, height, width), dtype=bool)
    # labels are the annotation ids of masks.json; a legend only while it stays readable
    save_image(annotate_masks(image, masks, [str(i + 1) for i in order], legend=len(order) <= 24),
               args.out / f"{stem}_overlay.png")
    return coco


def run_track(args: argparse.Namespace) -> dict:
    """Run ``masklet track``: write masks.json, masks/ and overlay.mp4 under ``--out``; returns a summary."""
    import os
    import shutil
    import tempfile
    import time
    from contextlib import ExitStack
    from importlib.util import find_spec

    from PIL import Image

    from .errors import InvalidInputError
    from .video import (
        CocoRleWriter,
        DavisPngWriter,
        HealthMonitor,
        OverlayVideoWriter,
        VideoPredictor,
        open_frames,
    )
    from .video.frames import IMAGE_EXTENSIONS

    prompt_sets = _prompt_sets(args.prompt)
    health_options = {"lost_threshold": args.lost_threshold, "lost_frames": args.lost_frames,
                      "low_confidence": args.low_confidence, "min_area_ratio": args.min_area_ratio,
                      "score_drop": args.score_drop}
    HealthMonitor(**health_options)  # check the options before any work
    lost_on: dict[int, list[int]] = {}  # frame -> ids of the objects lost there
    video_path = Path(args.video)
    if video_path.is_file() and video_path.suffix.lower() in IMAGE_EXTENSIONS:
        raise InvalidInputError(
            f"{args.video} is a single image; track expects a video file or a folder of frames "
            f"(for one image use: masklet segment {args.video} --point X,Y)"
        )
    if video_path.is_dir():
        _check_frame_sizes(video_path)
    with open_frames(args.video) as frames:
        # check frame indices before loading the model, naming the option at fault
        n = len(frames)
        for p in args.prompt:
            if p.frame >= n:
                raise InvalidInputError(f"--prompt {p.text!r}: frame {p.frame} is out of range; the video has {n} frames (0..{n - 1})")
        start = args.start if args.start is not None else min(frame for frame, _ in prompt_sets)
        if start >= n:
            raise InvalidInputError(f"--start {start}: out of range; the video has {n} frames (0..{n - 1})")
        for p in args.prompt:
            _check_inside(f"--prompt {p.text!r}", p.values[:2] if p.kind == "point" else p.values,
                          frames.height, frames.width)

        if args.server:  # the same run on a masklet server
            predictor = _client(args).video_predictor(args.model)
        else:
            predictor = VideoPredictor(_load_model(args), progress=find_spec("tqdm") is not None)
        state = predictor.init_state(frames)
        for (frame_idx, obj_id), entry in prompt_sets.items():
            predictor.add_new_points_or_box(
                state, frame_idx, obj_id, points=entry["points"] or None, labels=entry["labels"] or None, box=entry["box"]
            )

        # write into a temporary folder beside --out and move the files in only when all succeeded
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
        paths = {"masks.json": tmp / "masks.json", "masks/": tmp / "masks", "overlay.mp4": tmp / "overlay.mp4"}
        directions = [False, True] if args.both_directions else [args.reverse]
        done: set[int] = set()
        steps = 0
        try:
            with ExitStack() as stack:
                coco = stack.enter_context(CocoRleWriter(paths["masks.json"], video_name=Path(args.video).name))
                davis = stack.enter_context(DavisPngWriter(paths["masks/"]))
                overlay = None if args.no_video else stack.enter_context(
                    OverlayVideoWriter(paths["overlay.mp4"], fps=args.fps, annotate=True))
                # the overlay needs increasing frame indices: stream it only when tracking forward once
                streamed = overlay if directions == [False] else None
                began = time.perf_counter()
                for reverse in directions:
                    health = HealthMonitor(**health_options)
                    for result in predictor.propagate_in_video(state, start, args.max_frames, reverse, health=health):
                        logits = result.mask_logits.cpu()  # (N, 1, H, W); a later result of a frame replaces it
                        lost_on[result.frame_idx] = [i for i in result.obj_ids if health.is_lost(i)]
                        coco.write(result.frame_idx, result.obj_ids, logits, result.presence, result.events)
                        davis.write(result.frame_idx, result.obj_ids, logits)
                        if streamed is not None:
                            streamed.write(result.frame_idx, result.obj_ids, logits, state.frames[result.frame_idx],
                                           lost=lost_on[result.frame_idx])
                        done.add(result.frame_idx)
                        steps += 1
                seconds = time.perf_counter() - began
                if overlay is not None and streamed is None:
                    # second pass in frame order, from the PNGs just written (one frame in memory at a time)
                    ids = np.array(state.obj_ids)
                    for frame_idx in sorted(done):
                        labels = np.array(Image.open(paths["masks/"] / f"{frame_idx:05d}.png"))  # (H, W) object ids
                        overlay.write(frame_idx, state.obj_ids, labels[None] == ids[:, None, None],
                                      state.frames[frame_idx], lost=lost_on.get(frame_idx, []))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        args.out.mkdir(parents=True, exist_ok=True)
        final = {name: args.out / path.name for name, path in paths.items()}
        for name, path in paths.items():
            if path.exists():
                if final[name].is_dir():
                    shutil.rmtree(final[name])
                os.replace(path, final[name])
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "frames": len(done),
        "obj_ids": state.obj_ids,
        "seconds_per_frame": seconds / steps if steps else 0.0,
        "written": {name: path for name, path in final.items() if path.exists()},
    }


def _check_frame_sizes(folder: Path) -> None:
    """All frames of a folder must have one size; checked from the image headers before tracking."""
    from PIL import Image

    from .errors import InvalidInputError
    from .video.frames import FolderFrames

    paths = FolderFrames(folder).paths
    with Image.open(paths[0]) as first:
        size = first.size
    for path in paths[1:]:
        with Image.open(path) as im:
            if im.size != size:
                raise InvalidInputError(
                    f"frames: {path.name} is {im.size[0]}x{im.size[1]} (WxH) but {paths[0].name} is "
                    f"{size[0]}x{size[1]}; all frames of a video must have one size"
                )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``masklet`` command."""
    args = build_parser().parse_args(_join_negative(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "segment":
            summary = run_segment(args)
            best = summary["masks"][0]
            print(f"wrote {len(summary['masks'])} mask(s) to {args.out} (best score {best['score']:.3f})")
        elif args.command == "amg":
            coco = run_amg(args)
            used = ", ".join(f"{k}={v:g} ({o})" for k, (v, o) in args.amg_options.items())
            print(f"wrote {len(coco['annotations'])} mask(s) to {args.out}")
            print(f"  options: {used}")
        elif args.command == "track":
            summary = run_track(args)
            ids = ", ".join(str(i) for i in summary["obj_ids"])
            print(f"tracked {summary['frames']} frame(s), {len(summary['obj_ids'])} object(s) (ids {ids}), "
                  f"{summary['seconds_per_frame']:.3f} s/frame")
            for name, path in summary["written"].items():
                print(f"  {name:12s} {path}")
        elif args.command == "demo":
            from .demo import run_demo

            written, count = run_demo(args.model, args.out, args.seed, args.device)
            print(f"masklet demo with {args.model}:")
            for name, path in written.items():
                print(f"  {name:12s} {path}")
            from .checkpoints import recommended_amg_options

            filters = ", ".join(f"{k}={v:g}" for k, v in recommended_amg_options(args.model).items()) or "defaults"
            print(f"  ({count} automatic masks; options: {filters})")
        elif args.command == "train":
            print(f"saved {run_train(args)}")
        elif args.command in ("serve", "batch"):
            return args.run(args)
        elif args.command == "export":
            from .export.onnx import run_cli as run_export

            print(run_export(args))
    except MaskletError as err:
        print(f"masklet {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
