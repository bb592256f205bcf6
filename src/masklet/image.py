"""ImagePredictor: encode an image once, then segment it from point, box and mask prompts.

The API follows the official ``SAM2ImagePredictor`` (same arguments, shapes and numpy outputs),
and adds batched images with different numbers of objects, reusable embeddings, real CPU
hole / sprinkle clean-up and explicit errors for bad prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checks import check_sam2_model, is_real
from .errors import InvalidInputError, PredictorStateError
from .fast_decoder import DecoderImageCache, FastMaskDecoder
from .io import ImageSource, load_image
from .masks import fill_holes_and_remove_sprinkles
from .model import Sam2Model
from .precision import inference
from .prompts import Prompts, image_prompts
from .transforms import preprocess, threshold_masks, upscale_masks

#: Point labels accepted by ``predict``: -1 padding (ignored), 0 negative, 1 positive,
#: 2 / 3 box top-left / bottom-right corners.


@dataclass
class ImageEmbeddings:
    """Encoder output of a batch of images, to cache and hand back to :meth:`ImagePredictor.set_embeddings`.

    ``levels`` are (B, C, h, w) maps, finest first (the last one is the image embedding, with the
    no-memory embedding already added); ``orig_hw`` gives each image's original (H, W).
    """

    levels: list[torch.Tensor]
    orig_hw: list[tuple[int, int]]

    def save(self, path: str | Path) -> None:
        """Write to a safetensors file."""
        from safetensors.torch import save_file

        tensors = {f"level_{i}": t.detach().contiguous().cpu() for i, t in enumerate(self.levels)}
        save_file(tensors, str(path), metadata={"orig_hw": str([list(hw) for hw in self.orig_hw])})

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ImageEmbeddings:
        """Read what :meth:`save` wrote."""
        import ast

        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            if "orig_hw" not in meta:
                raise InvalidInputError(f"{path} is not a masklet embeddings file (no orig_hw metadata)")
            levels = [f.get_tensor(f"level_{i}") for i in range(len(f.keys()))]
        return cls(levels=levels, orig_hw=[tuple(hw) for hw in ast.literal_eval(meta["orig_hw"])])


class ImagePredictor:
    """Segment images from prompts with a SAM2 model.

    ``max_hole_area`` / ``max_sprinkle_area`` fill background holes and remove foreground
    specks up to that area, measured in pixels of the low-resolution (4x embedding) mask, as the
    official predictor does; here the clean-up really runs on CPU.

    Clicks without a mask prompt reuse the image-side work of the mask decoder, computed at the
    first click on each image (:mod:`masklet.fast_decoder`). ``decoder_dtype=torch.bfloat16``
    runs those clicks' image side in bfloat16, the prompt tokens in float32 (masks within IoU
    ~0.995 of float32): it pays on GPUs
    and on CPUs with bfloat16 GEMMs (AVX512-BF16 / AMX); on AVX2-only CPUs bfloat16 is emulated
    and about 3x slower. The default float32 gives the reference masks.
    """

    # per-image state, emptied by reset_predictor (also the initial state)
    _embeddings: ImageEmbeddings | None
    _is_batch: bool
    _fast_decoder: FastMaskDecoder | None
    _decoder_caches: dict[int, DecoderImageCache]

    def __init__(
        self,
        model: Sam2Model,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        decoder_dtype: torch.dtype = torch.float32,
    ) -> None:
        check_sam2_model(model)
        for name, value in (("max_hole_area", max_hole_area), ("max_sprinkle_area", max_sprinkle_area)):
            if not is_real(value) or value < 0:
                raise InvalidInputError(f"{name}: expected a number >= 0, got {value!r}")
        if not is_real(mask_threshold) or not math.isfinite(mask_threshold):
            raise InvalidInputError(f"mask_threshold: expected a finite number, got {mask_threshold!r}")
        if decoder_dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise InvalidInputError(
                f"decoder_dtype: expected torch.float32, torch.bfloat16 or torch.float16, got {decoder_dtype!r}"
            )
        self.model = model
        self.decoder_dtype = decoder_dtype
        # the cached-click decoder; only for models whose decoding is the plain torch one (not ONNX Runtime)
        self._use_fast_decoder = type(model).decode_masks is Sam2Model.decode_masks
        self.mask_threshold = float(mask_threshold)
        self.max_hole_area = float(max_hole_area)
        self.max_sprinkle_area = float(max_sprinkle_area)
        self.reset_predictor()

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ----------------------------------------------------------------- images

    def set_image(self, image: ImageSource) -> None:
        """Encode one image (numpy HWC, PIL, path, bytes or tensor; RGB, grayscale or RGBA; any size)."""
        self.reset_predictor()
        self._embeddings = self._encode([load_image(image)])

    def set_images(self, images: Sequence[ImageSource]) -> None:
        """Encode a batch of images in one encoder pass; use :meth:`predict_batch` afterwards."""
        if isinstance(images, (str, bytes, np.ndarray, torch.Tensor)) or not isinstance(images, Sequence):
            raise InvalidInputError(f"images: expected a list of images, got {type(images).__name__}")
        if len(images) == 0:
            raise InvalidInputError("images: expected at least one image, got an empty list")
        self.reset_predictor()
        self._embeddings = self._encode([load_image(img) for img in images])
        self._is_batch = True

    set_image_batch = set_images  # the official name

    def _encode(self, images: list[np.ndarray]) -> ImageEmbeddings:
        size, device, dtype = self.model.image_size, self.device, self.model.encoder_dtype
        with inference():
            batch = torch.cat([preprocess(img, size, device, dtype) for img in images])  # (B, 3, S, S)
            levels = self.model.image_embeddings(self.model.encode_image(batch))
        return ImageEmbeddings(levels=levels, orig_hw=[img.shape[:2] for img in images])

    def get_embeddings(self) -> ImageEmbeddings:
        """The cached encoder output of the current image(s), to reuse with :meth:`set_embeddings`."""
        return self._require_image()

    def set_embeddings(self, embeddings: ImageEmbeddings) -> None:
        """Use previously computed embeddings instead of running the encoder."""
        if not isinstance(embeddings, ImageEmbeddings):
            raise InvalidInputError(f"embeddings: expected ImageEmbeddings, got {type(embeddings).__name__}")
        expected = self._expected_level_shapes()
        got = [tuple(t.shape[1:]) for t in embeddings.levels]
        batch = {t.shape[0] for t in embeddings.levels}
        if got != expected or len(batch) != 1 or batch != {len(embeddings.orig_hw)}:
            raise InvalidInputError(
                f"embeddings: levels of shapes {[tuple(t.shape) for t in embeddings.levels]} for "
                f"{len(embeddings.orig_hw)} image(s) do not fit this model, which expects (B, C, h, w) "
                f"levels with (C, h, w) = {expected}"
            )
        self.reset_predictor()
        levels = [t.to(device=self.device, dtype=self.model.dtype) for t in embeddings.levels]
        self._embeddings = ImageEmbeddings(
            levels=levels, orig_hw=[(int(hw[0]), int(hw[1])) for hw in embeddings.orig_hw]
        )
        self._is_batch = len(embeddings.orig_hw) > 1

    def _expected_level_shapes(self) -> list[tuple[int, int, int]]:
        c = self.model.config
        emb, dim = c.embedding_size, c.hidden_dim
        if c.use_high_res_features_in_sam:
            return [(dim // 8, emb * 4, emb * 4), (dim // 4, emb * 2, emb * 2), (dim, emb, emb)]
        return [(dim, emb, emb)]

    def get_image_embedding(self) -> torch.Tensor:
        """The (B, C, h, w) image embedding of the current image(s)."""
        return self._require_image().levels[-1]

    def reset_predictor(self) -> None:
        """Forget the current image(s)."""
        self._embeddings = None
        self._is_batch = False
        self._fast_decoder = None  # rebuilt per image, so it never holds stale decoder weights
        self._decoder_caches = {}

    def _require_image(self) -> ImageEmbeddings:
        if self._embeddings is None:
            raise PredictorStateError("no image is set: call set_image(...) or set_images(...) before predicting")
        return self._embeddings

    # ---------------------------------------------------------------- prompts

    def predict(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts on the current image.

        Points are (N, 2) for one object or (B, N, 2) for B objects (labels (N,) / (B, N)); boxes
        are (4,) / (1, 4) or (B, 4) in XYXY; ``mask_input`` is low-resolution logits (1, h, w) or
        (B, 1, h, w) from a previous call. Coordinates are float pixels of the original image, or
        in [0, 1] with ``normalize_coords=False``.

        Returns masks (C, H, W) and IoU scores (C,) and low-res logits (C, h, w) for one object,
        or with a leading B for several; C is 3 with ``multimask_output`` and 1 otherwise.
        """
        embeddings = self._require_image()
        if self._is_batch and len(embeddings.orig_hw) > 1:
            raise PredictorStateError("several images are set: use predict_batch(...), or set_image(...) for one image")
        masks, ious, low_res = self._predict_one(
            0, point_coords, point_labels, box, mask_input, multimask_output, return_logits, normalize_coords
        )
        return _squeeze_single(masks), _squeeze_single(ious), _squeeze_single(low_res)

    def predict_batch(
        self,
        point_coords_batch: Sequence[Any] | None = None,
        point_labels_batch: Sequence[Any] | None = None,
        box_batch: Sequence[Any] | None = None,
        mask_input_batch: Sequence[Any] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """:meth:`predict` for each image set with :meth:`set_images`; each image may have its own
        number of objects. Returns lists (one entry per image) of masks, IoU scores and logits."""
        embeddings = self._require_image()
        n = len(embeddings.orig_hw)
        for name, value in (
            ("point_coords_batch", point_coords_batch),
            ("point_labels_batch", point_labels_batch),
            ("box_batch", box_batch),
            ("mask_input_batch", mask_input_batch),
        ):
            if value is not None and len(value) != n:
                raise InvalidInputError(f"{name}: expected one entry per image ({n}), got {len(value)}")
        out: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        for i in range(n):
            result = self._predict_one(
                i,
                None if point_coords_batch is None else point_coords_batch[i],
                None if point_labels_batch is None else point_labels_batch[i],
                None if box_batch is None else box_batch[i],
                None if mask_input_batch is None else mask_input_batch[i],
                multimask_output,
                return_logits,
                normalize_coords,
            )
            for acc, part in zip(out, result):
                acc.append(_squeeze_single(part))
        return out

    def _predict_one(
        self,
        index: int,
        point_coords: Any,
        point_labels: Any,
        box: Any,
        mask_input: Any,
        multimask_output: bool,
        return_logits: bool,
        normalize_coords: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        embeddings = self._require_image()
        orig_hw = embeddings.orig_hw[index]
        prompts = self.prepare_prompts(point_coords, point_labels, box, mask_input, orig_hw, normalize_coords)
        levels = [level[index : index + 1] for level in embeddings.levels]
        with inference():
            if self._use_fast_decoder and prompts.mask is None and prompts.points is not None:
                low_res, ious = self._decode_cached(index, levels, prompts.points, bool(multimask_output))
            else:
                low_res, ious, _ = self.model.decode_masks(
                    levels[-1], levels[:-1] or None, prompts.points, prompts.mask, bool(multimask_output)
                )
        return self.postprocess(low_res, ious, orig_hw, return_logits)

    def postprocess(
        self, low_res: torch.Tensor, ious: torch.Tensor, orig_hw: tuple[int, int], return_logits: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoder output of one image, (B, M, h, w) logits and (B, M) IoU -> numpy masks (B, M, H, W)
        (clean-up, upscaling, threshold), scores and clamped low-res logits; the server's prompt batcher
        finishes each request with it exactly as :meth:`predict` does."""
        with inference():
            low_res = low_res.float()
            cleaned = fill_holes_and_remove_sprinkles(
                low_res, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area
            )
            masks = upscale_masks(cleaned, orig_hw)
            out = masks.cpu().numpy() if return_logits else threshold_masks(masks, self.mask_threshold)
            low_res = low_res.clamp(-32.0, 32.0)
        return out, ious.float().cpu().numpy(), low_res.cpu().numpy()

    def _decode_cached(
        self, index: int, levels: list[torch.Tensor], points: tuple[torch.Tensor, torch.Tensor], multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``decode_masks`` through the cached image-side work of image ``index`` (built on first use)."""
        if self._fast_decoder is None:
            self._fast_decoder = FastMaskDecoder(self.model, self.decoder_dtype)
        cache = self._decoder_caches.get(index)
        if cache is None:
            cache = self._fast_decoder.prepare(levels[-1], levels[:-1] or None)
            self._decoder_caches[index] = cache
        sparse, _ = self.model.sam_prompt_encoder(points, None, None)
        masks, ious, _ = self._fast_decoder.decode(cache, sparse, multimask)
        return masks, ious

    # ------------------------------------------------------------ validation

    def prepare_prompts(
        self,
        point_coords: Any,
        point_labels: Any,
        box: Any,
        mask_input: Any,
        orig_hw: tuple[int, int],
        normalize_coords: bool,
    ) -> Prompts:
        """Validated prompts on the model's device (see :func:`masklet.prompts.image_prompts`)."""
        side = 4 * self.model.config.embedding_size
        prompts = image_prompts(
            point_coords, point_labels, box, mask_input, orig_hw, self.model.image_size, side, normalize_coords
        )
        return prompts.to(self.device)


def _squeeze_single(x: np.ndarray) -> np.ndarray:
    """Drop the object axis when there is one object, as the official predictor does."""
    return x[0] if x.shape[0] == 1 else x
