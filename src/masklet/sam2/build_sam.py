"""``sam2.build_sam`` for masklet: build models from official config names or yaml files.

Config names resolve as the official ones do (``configs/sam2.1/sam2.1_hiera_t.yaml``,
``sam2.1_hiera_t.yaml``, ``configs/sam2/sam2_hiera_l.yaml`` ...) to masklet's built-in variants; a
path to an official-style yaml of one's own works too. ``hydra_overrides_extra`` entries are
``[+|++]model.<key>=<value>``; the post-processing flags and top-level model fields are honoured,
anything else is refused with a :class:`~masklet.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import config_from_official, config_to_official
from ..errors import ConfigError
from ..model import VARIANTS, Sam2Config, Sam2Model

#: Official hub ids -> (config name, checkpoint file), as ``sam2.build_sam`` has them.
HF_MODEL_ID_TO_FILENAMES: dict[str, tuple[str, str]] = {
    f"facebook/{version}-hiera-{size}": (
        f"configs/{version}/{version}_hiera_{short}.yaml",
        f"{version}_hiera_{size.replace('-', '_')}.pt",
    )
    for version in ("sam2", "sam2.1")
    for size, short in (("tiny", "t"), ("small", "s"), ("base-plus", "b+"), ("large", "l"))
}

_SHORT = {"t": "tiny", "s": "small", "b+": "base-plus", "l": "large"}
_DECODER_KEYS = (
    "dynamic_multimask_via_stability",
    "dynamic_multimask_stability_delta",
    "dynamic_multimask_stability_thresh",
)
#: Keys the video predictor (not the network) takes, with the official SAM2VideoPredictor defaults.
VIDEO_PREDICTOR_DEFAULTS: dict[str, Any] = {
    "fill_hole_area": 0,
    "non_overlap_masks": False,
    "clear_non_cond_mem_around_input": False,
    "add_all_frames_to_correct_as_cond": False,
}
_IGNORED = ("_target_", "compile_image_encoder", "clear_non_cond_mem_for_multi_obj")


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def official_model_section(config_file: str | Path) -> dict[str, Any]:
    """The ``model`` section (a plain dict) for an official config name or an official-style yaml path."""
    path = Path(config_file).expanduser()
    if path.is_file():
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read SAM2 config {path}: {err}") from None
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise ConfigError(f"{path} has no top-level 'model' section; expected an official SAM2 config")
        return data["model"]
    name = str(config_file).replace("\\", "/").split("/")[-1].removesuffix(".yaml")
    for version in ("sam2.1", "sam2"):
        prefix = f"{version}_hiera_"
        if name.startswith(prefix) and name[len(prefix) :] in _SHORT:
            model = config_to_official(VARIANTS[f"{version}-hiera-{_SHORT[name[len(prefix) :]]}"])
            model["sam_mask_decoder_extra_args"] = {}  # the shipped yamls leave these at the decoder's defaults
            return model
    known = sorted({n for n, _ in HF_MODEL_ID_TO_FILENAMES.values()})
    raise ConfigError(
        f"config_file: {str(config_file)!r} is neither an existing yaml file nor an official config name; "
        f"known names: {', '.join(known)} (or their file names alone)"
    )


def _parse_override(entry: str) -> tuple[list[str], Any]:
    import yaml

    if not isinstance(entry, str) or "=" not in entry:
        raise ConfigError(f"hydra_overrides_extra: expected entries like '++model.fill_hole_area=8', got {entry!r}")
    key, _, text = entry.lstrip("+~").partition("=")
    parts = key.strip().split(".")
    if parts[0] != "model" or len(parts) < 2:
        raise ConfigError(f"hydra_overrides_extra: {key!r} is not under 'model.'; only model keys can be overridden")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return parts[1:], value


def _allowed(path: list[str]) -> bool:
    top = {f.name for f in fields(Sam2Config)} - {"trunk", "neck", "memory_attention", "memory_encoder", "decoder"}
    if path[0] == "sam_mask_decoder_extra_args":
        return len(path) == 2 and path[1] in _DECODER_KEYS
    return len(path) == 1 and (path[0] in top or path[0] in VIDEO_PREDICTOR_DEFAULTS or path[0] in _IGNORED)


def apply_hydra_overrides(model: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``[+|++]model.key=value`` overrides to a model section; unsupported keys are refused by name."""
    if isinstance(overrides, str):
        raise ConfigError("hydra_overrides_extra: expected a list of strings, got one string")
    out = copy.deepcopy(model)
    for entry in overrides:
        path, value = _parse_override(entry)
        if not _allowed(path):
            raise ConfigError(
                f"hydra_overrides_extra: 'model.{'.'.join(path)}' is not supported by masklet.sam2 (supported: "
                "model.sam_mask_decoder_extra_args.{" + ",".join(_DECODER_KEYS) + "}, the top-level model "
                "fields such as model.binarize_mask_from_pts_for_mem_enc, and model."
                + ", model.".join(VIDEO_PREDICTOR_DEFAULTS)
                + "); edit an official-style yaml for architecture changes"
            )
        if len(path) == 2:  # sam_mask_decoder_extra_args.<key>
            out[path[0]] = dict(out.get(path[0]) or {}, **{path[1]: value})
        else:
            out[path[0]] = value
    return out


def _postprocessing(video: bool) -> list[str]:
    flags = [
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    ]
    if video:
        flags += ["++model.binarize_mask_from_pts_for_mem_enc=true", "++model.fill_hole_area=8"]
    return flags


def _build(config_file, ckpt_path, device, mode, hydra_overrides_extra, apply_postprocessing, video):
    if mode not in ("eval", "train"):
        raise ConfigError(f"mode: expected 'eval' or 'train', got {mode!r}")
    overrides = list(hydra_overrides_extra) + (_postprocessing(video) if apply_postprocessing else [])
    section = apply_hydra_overrides(official_model_section(config_file), overrides)
    predictor_opts = {k: section.get(k, v) for k, v in VIDEO_PREDICTOR_DEFAULTS.items()}
    network = {k: v for k, v in section.items() if k not in VIDEO_PREDICTOR_DEFAULTS and k not in _IGNORED}
    config = config_from_official(network)
    device = device or _default_device()
    if ckpt_path is None:
        model = Sam2Model(config).to(device)
    else:
        from ..checkpoints import load_model

        model = load_model(ckpt_path, device=device, config=config)
    model = model.eval() if mode == "eval" else model.train()
    return model, predictor_opts


def build_sam2(
    config_file: str | Path,
    ckpt_path: str | Path | None = None,
    device: str | torch.device | None = None,
    mode: str = "eval",
    hydra_overrides_extra: Sequence[str] = (),
    apply_postprocessing: bool = True,
    **kwargs: Any,
) -> Sam2Model:
    """A masklet :class:`Sam2Model` for an official config and checkpoint, as ``sam2.build_sam.build_sam2``.

    ``device`` defaults to CUDA when available, else the CPU (the official default is ``"cuda"``).
    Without ``ckpt_path`` the weights are randomly initialised. Extra keyword arguments are accepted
    and ignored, as the official builder does.
    """
    del kwargs
    return _build(config_file, ckpt_path, device, mode, hydra_overrides_extra, apply_postprocessing, False)[0]


def build_sam2_video_predictor(
    config_file: str | Path,
    ckpt_path: str | Path | None = None,
    device: str | torch.device | None = None,
    mode: str = "eval",
    hydra_overrides_extra: Sequence[str] = (),
    apply_postprocessing: bool = True,
    vos_optimized: bool = False,
    **kwargs: Any,
):
    """A :class:`~masklet.sam2.sam2_video_predictor.SAM2VideoPredictor`, as the official builder returns.

    ``vos_optimized`` (torch.compile of the official VOS path) is accepted and has no effect.
    """
    from .sam2_video_predictor import SAM2VideoPredictor

    del vos_optimized, kwargs
    model, opts = _build(config_file, ckpt_path, device, mode, hydra_overrides_extra, apply_postprocessing, True)
    return SAM2VideoPredictor(model, **opts)


def _hf_download(model_id: str) -> tuple[str, str]:
    """(config name, local checkpoint path) for an official hub id, from the hub cache or the network."""
    from ..checkpoints import hub_file as _hub_file
    from ..errors import ModelNotFoundError

    key = model_id if model_id.startswith("facebook/") else f"facebook/{model_id}"
    if key not in HF_MODEL_ID_TO_FILENAMES:
        raise ModelNotFoundError(
            f"model_id: {model_id!r} is not an official SAM2 hub id; known: {', '.join(HF_MODEL_ID_TO_FILENAMES)}"
        )
    config_name, filename = HF_MODEL_ID_TO_FILENAMES[key]
    return config_name, str(_hub_file(key, filename))


def build_sam2_hf(model_id: str, **kwargs: Any) -> Sam2Model:
    """:func:`build_sam2` for an official hub id (``facebook/sam2.1-hiera-tiny``), cached or downloaded."""
    config_name, ckpt_path = _hf_download(model_id)
    return build_sam2(config_file=config_name, ckpt_path=ckpt_path, **kwargs)


def build_sam2_video_predictor_hf(model_id: str, **kwargs: Any):
    """:func:`build_sam2_video_predictor` for an official hub id, cached or downloaded."""
    config_name, ckpt_path = _hf_download(model_id)
    return build_sam2_video_predictor(config_file=config_name, ckpt_path=ckpt_path, **kwargs)
