"""Loading SAM2 weights: official ``.pt`` checkpoints, Hugging Face safetensors, hub names.

The variant is detected from the weights when no config is given. Every load is strict: a
missing or unexpected key is an error, never a silently half-initialised model.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError, ModelNotFoundError
from ..model import VARIANTS, Sam2Config, Sam2Model

#: Hub names -> (repository, official checkpoint file). Names are accepted with or without ``facebook/``.
HUB_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "sam2-hiera-tiny": ("facebook/sam2-hiera-tiny", "sam2_hiera_tiny.pt"),
    "sam2-hiera-small": ("facebook/sam2-hiera-small", "sam2_hiera_small.pt"),
    "sam2-hiera-base-plus": ("facebook/sam2-hiera-base-plus", "sam2_hiera_base_plus.pt"),
    "sam2-hiera-large": ("facebook/sam2-hiera-large", "sam2_hiera_large.pt"),
    "sam2.1-hiera-tiny": ("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt"),
    "sam2.1-hiera-small": ("facebook/sam2.1-hiera-small", "sam2.1_hiera_small.pt"),
    "sam2.1-hiera-base-plus": ("facebook/sam2.1-hiera-base-plus", "sam2.1_hiera_base_plus.pt"),
    "sam2.1-hiera-large": ("facebook/sam2.1-hiera-large", "sam2.1_hiera_large.pt"),
}

#: Checkpoints shipped inside the package (with an official-style yaml of the same name).
PACKAGED_CHECKPOINTS: dict[str, str] = {"masklet-nano": "masklet_nano.pt"}

# (trunk embed_dim, trunk depth) of the official sizes.
_SIZES = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base-plus", (144, 48): "large"}


def load_model(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: Sam2Config | str | Path | None = None,
    memory_dtype: torch.dtype | None = None,
    backend: str = "torch",
    onnx_dir: str | Path | None = None,
    compile: bool = False,
) -> Sam2Model:
    """Build a SAM2 model and load its weights, in eval mode on ``device``.

    ``dtype`` is that of the image encoder and the memory attention, where nearly all the compute
    of images and video is; the light prompt encoder, mask decoder, memory encoder and object
    pointers stay float32, which keeps low-precision masks close to float32 ones
    (``torch.bfloat16`` is the fast choice on recent CPUs and GPUs); the mask decoder's two 1x1
    projections of the encoder's high-resolution levels run in ``dtype`` on the encoder's output,
    so that only their 8x and 4x smaller results are cast. ``memory_dtype`` sets that
    of the video memory alone (memory attention and memory encoder): with several tracked objects
    it is most of the time per frame, and bfloat16 there moves masks far less than a bfloat16
    image encoder does, which shifts the boundaries of small masks
    (``dtype=torch.float32, memory_dtype=torch.bfloat16``).

    ``name_or_path`` is a hub name (``sam2.1-hiera-tiny``, see :data:`HUB_CHECKPOINTS`), an
    official ``.pt`` file, or a Hugging Face checkpoint (a folder or ``model.safetensors`` file
    with ``config.json`` beside it). ``config`` (a :class:`Sam2Config` or an official-style yaml)
    overrides the config detected from the weights.

    ``backend="onnxruntime"`` (extra ``masklet[onnx]``) returns a model whose networks run in ONNX
    Runtime on the export in ``onnx_dir`` (exported to a temporary folder when None); float32 only.

    ``compile=True`` compiles the image encoder with ``torch.compile`` and warms it up (the cold
    start), caching the artefacts across runs (see :mod:`masklet.compiled`); torch backend only.
    """
    if backend not in ("torch", "onnxruntime"):
        raise ConfigError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")
    if compile and backend != "torch":
        raise ConfigError("compile=True needs backend='torch' (ONNX Runtime compiles its own graphs)")
    for name, value in (("dtype", dtype), ("memory_dtype", memory_dtype or dtype)):
        if value not in (torch.float32, torch.bfloat16, torch.float16):
            raise ConfigError(f"{name} must be torch.float32, torch.bfloat16 or torch.float16, got {value}")
    state, detected = read_checkpoint(resolve_checkpoint(name_or_path))
    if isinstance(config, (str, Path)):
        from .official import load_official_yaml

        config = load_official_yaml(config)
    config = config or detected or detect_config(state)
    model = Sam2Model(config)
    load_state_dict_strict(model, state)
    model = model.to(device=device).eval()
    model.image_encoder.to(dtype=dtype)
    model.memory_attention.to(dtype=memory_dtype or dtype)
    if memory_dtype is not None:
        model.memory_encoder.to(dtype=memory_dtype)
    if backend == "onnxruntime":
        from ..export.ort import ort_model

        return ort_model(model, onnx_dir)
    if compile:
        from ..compiled import compile_model

        compile_model(model)
    return model


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A local checkpoint path for a path or hub name, downloading into the hub cache if needed."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if str(name_or_path) in PACKAGED_CHECKPOINTS:
        return packaged_checkpoint(str(name_or_path))
    key = str(name_or_path).removeprefix("facebook/")
    if key not in HUB_CHECKPOINTS:
        raise ModelNotFoundError(
            f"{str(name_or_path)!r} is neither an existing file or folder nor a known model name; "
            f"known names: {', '.join([*PACKAGED_CHECKPOINTS, *HUB_CHECKPOINTS])}"
        )
    repo, filename = HUB_CHECKPOINTS[key]
    return hub_file(repo, filename)


def hub_file(repo: str, filename: str) -> Path:
    """The local path of ``filename`` from the hub repository ``repo`` (cached, else downloaded)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str):
        return Path(cached)
    reason = _hub_unreachable()
    if reason is None:
        try:
            return Path(hf_hub_download(repo_id=repo, filename=filename))
        except Exception as err:  # huggingface_hub raises many types for "offline" and "not found"
            reason = f"{type(err).__name__}: {err}"
    raise ModelNotFoundError(
        f"could not fetch {filename} from the Hugging Face repository {repo} and it is not in the "
        f"local cache ({reason}). Download https://huggingface.co/{repo}/resolve/main/{filename} on a "
        f"machine with network access and pass its local path instead: load_model('/path/to/{filename}')"
    )


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached (offline mode, no route), or None; probes for a few seconds
    so that a machine without network fails at once instead of after the client's retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # through a proxy a direct probe says nothing; let the client try
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError as err:
        return f"cannot reach {url.hostname}: {err}"
    return None


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], Sam2Config | None]:
    """Read a checkpoint into an official-named state dict (and its config, when the file has one)."""
    if path.is_dir():
        weights = path / "model.safetensors"
        if weights.exists():
            return _read_hf(weights)
        pts = sorted(path.glob("*.pt"))
        if len(pts) == 1:
            return read_checkpoint(pts[0])
        raise CheckpointError(
            f"folder {path} holds neither model.safetensors (+ config.json) nor exactly one .pt checkpoint"
        )
    if path.suffix == ".safetensors":
        return _read_hf(path)
    return _read_official(path), _config_beside(path)


def _config_beside(path: Path) -> Sam2Config | None:
    """An official-style yaml with the same stem next to the checkpoint, if any."""
    for candidate in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
        if candidate.exists():
            from .official import load_official_yaml

            return load_official_yaml(candidate)
    return None


def _read_official(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint (truncated or not a .pt file?): {err}"
        ) from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} is not a SAM2 checkpoint: expected {{'model': state_dict}} or a state dict of tensors"
        )
    return state


def _read_hf(weights: Path) -> tuple[dict[str, torch.Tensor], Sam2Config | None]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {weights} as safetensors (truncated or foreign file?): {err}") from None
    if any(k.startswith("image_encoder.trunk.") for k in state):
        return state, None  # already official names
    config_file = weights.parent / "config.json"
    if not config_file.exists():
        raise CheckpointError(f"{weights} uses Hugging Face names but has no config.json beside it")
    try:
        hf_config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_file} is not valid JSON: {err}") from None
    from .hf import hf_config_to_official_dict, hf_to_official_state_dict
    from .official import config_from_official

    config = config_from_official(hf_config_to_official_dict(hf_config))
    return hf_to_official_state_dict(state, hf_config), config


def detect_config(state: dict[str, torch.Tensor]) -> Sam2Config:
    """The official variant whose shapes the state dict has (image size 1024)."""
    try:
        embed_dim = state["image_encoder.trunk.patch_embed.proj.weight"].shape[0]
    except KeyError:
        raise CheckpointError(
            "the weights have no 'image_encoder.trunk.patch_embed.proj.weight': not a SAM2 checkpoint"
        ) from None
    depth = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("image_encoder.trunk.blocks."))
    size = _SIZES.get((embed_dim, depth))
    if size is None:
        raise ConfigError(
            f"the weights have a Hiera trunk of width {embed_dim} and depth {depth}, which is no official "
            "size; pass its config (a Sam2Config or an official-style yaml) with config=..."
        )
    version = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    return VARIANTS[f"{version}-hiera-{size}"]


def packaged_checkpoint(name: str) -> Path:
    """Path of a checkpoint shipped inside the package (its official-style yaml sits beside it)."""
    if name not in PACKAGED_CHECKPOINTS:
        raise ModelNotFoundError(f"{name!r} is not a packaged model; packaged: {', '.join(PACKAGED_CHECKPOINTS)}")
    path = Path(__file__).parent / PACKAGED_CHECKPOINTS[name]
    if not path.exists():
        raise ModelNotFoundError(f"the packaged checkpoint {path} is missing from this installation")
    return path


def recommended_amg_options(name_or_path: str | Path) -> dict[str, float]:
    """The MaskGenerator options a checkpoint recommends, from ``STEM.amg.json`` beside it (the
    packaged masklet-nano ships one: its scores are timid, the official 0.8 / 0.95 filters keep
    almost nothing); ``{}`` when there is none."""
    if str(name_or_path) in PACKAGED_CHECKPOINTS:
        path = packaged_checkpoint(str(name_or_path))
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            return {}
    sidecar = path.with_name(path.stem + ".amg.json")
    if not sidecar.is_file():
        return {}
    try:
        options = json.loads(sidecar.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{sidecar} is not valid JSON: {err}") from None
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in options.items()
    ):
        raise ConfigError(f"{sidecar}: expected a JSON object of option names to numbers")
    return {k: float(v) for k, v in options.items()}


def load_state_dict_strict(model: Sam2Model, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key is a CheckpointError."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        raise CheckpointError("checkpoint does not match the model config; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def save_checkpoint(model: Sam2Model, path: str | Path, dtype: torch.dtype | None = None) -> None:
    """Save in the official format (``{"model": state_dict}``) that ``sam2`` and masklet both load.

    ``dtype`` (e.g. ``torch.float16``) stores the floating-point tensors smaller; loading casts
    them back to the model's dtype.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"model": state}, Path(path))
