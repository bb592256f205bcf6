"""``masklet train``: train or fine-tune a model on instance masks (defaults are TrainConfig's)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: TrainConfig fields offered as options: (option, field, type, help).
_FIELDS = (
    ("--video-fraction", "video_fraction", float, "share of steps on clips"),
    (
        "--video-mask-prompts",
        "prob_video_mask_prompt",
        float,
        "share of clips whose first frame is prompted with its masks",
    ),
    ("--steps", "steps", int, "optimiser steps"),
    ("--batch-size", "batch_size", int, "images per image step"),
    ("--max-objects", "max_objects", int, "objects per image (or clip) per step"),
    ("--lr", "lr", float, "peak learning rate"),
    ("--warmup-steps", "warmup_steps", int, "linear warm-up steps"),
    ("--correction-rounds", "correction_rounds", int, "corrective clicks after the first prompt"),
    ("--save-every", "save_every", int, "steps between checkpoints"),
    ("--seed", "seed", int, "seed of the data and the initialisation"),
)


def configure(sub: Any) -> None:
    """Register ``masklet train``."""
    from ..train import TrainConfig

    defaults = TrainConfig()
    p = sub.add_parser("train", help="train or fine-tune a model on instance masks (needs masklet[train])")
    init = p.add_mutually_exclusive_group(required=True)
    init.add_argument("--model", help="weights to fine-tune: hub name, .pt file or Hugging Face folder")
    init.add_argument("--variant", help="train from scratch: a named config, e.g. masklet-nano")
    init.add_argument("--config", type=Path, help="train from scratch: an official-style yaml config")
    p.add_argument(
        "--images", default="synthetic", help="'synthetic', or coco:ANNOTATIONS.json:IMAGE_DIR (default synthetic)"
    )
    p.add_argument("--videos", default=None, help="'synthetic', or davis:ROOT (folders of frames + indexed PNGs)")
    p.add_argument("--clip-frames", type=int, default=4, help="frames per synthetic clip (default 4)")
    p.add_argument(
        "--crossing-share",
        type=float,
        default=0.0,
        help="share of synthetic clips with two crossing objects (default 0)",
    )
    for option, name, kind, text in _FIELDS:
        default = getattr(defaults, name)
        p.add_argument(
            option,
            type=kind,
            default=default,
            dest=name,
            metavar=option[2:].upper().replace("-", "_"),
            help=f"{text} (default {default:g})",
        )
    p.add_argument(
        "--freeze",
        action="append",
        default=[],
        metavar="PREFIX",
        help="keep parameters with this name prefix fixed (e.g. image_encoder); repeatable",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", type=Path, required=True, help="folder for model.pt, model.yaml and trainer_state.pt")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train and print the saved checkpoint's path."""
    print(f"saved {run_train(args)}")
    return 0


def _dataset(spec: str | None, kind: str, size: int, clip_frames: int, crossing_share: float = 0.0) -> Any:
    """A training source from a command-line spec."""
    from functools import partial

    from ..errors import InvalidInputError
    from ..train import CocoInstances, DavisFolders, synthetic_clips, synthetic_images

    if spec is None:
        return None
    if spec == "synthetic":
        return (
            partial(synthetic_images, size=size)
            if kind == "images"
            else partial(synthetic_clips, size=size, num_frames=clip_frames, crossing_share=crossing_share)
        )
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

    from ..checkpoints import load_model, load_official_yaml
    from ..model import Sam2Model, variant_config
    from ..train import TrainConfig, Trainer

    if args.model:
        model = load_model(args.model, device=args.device)
    else:
        config = variant_config(args.variant) if args.variant else load_official_yaml(args.config)
        torch.manual_seed(args.seed)
        model = Sam2Model(config).to(args.device)
    size = model.image_size
    train_config = TrainConfig(**{name: getattr(args, name) for _, name, _, _ in _FIELDS}, freeze=tuple(args.freeze))
    trainer = Trainer(
        model,
        train_config,
        images=_dataset(args.images, "images", size, args.clip_frames),
        videos=_dataset(args.videos, "videos", size, args.clip_frames, args.crossing_share),
        out_dir=args.out,
    )
    if args.resume:
        trainer.resume(args.out)
    trainer.fit()
    return trainer.save(args.out)
