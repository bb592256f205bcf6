"""The automatic mask generator: segment everything in an image from a grid of point prompts.

:class:`MaskGenerator` is masklet's version of the official ``SAM2AutomaticMaskGenerator``: the
same options with the same defaults, the same records in the same order, and the
``min_mask_region_area`` clean-up of the first Segment Anything really applied. It gets there
with much less work:

* the mask decoder runs on the whole grid with the work that does not depend on the prompt done
  once per crop (:class:`~masklet.amg.decoder.GridDecoder`);
* the predicted-IoU filter needs no masks: the decoder's last attention first runs for the IoU
  token alone, and the mask tokens and the mask upscaling only run for prompts with at least
  one mask above ``pred_iou_thresh``;
* stability scores and boxes are computed exactly, but from the low-resolution logits
  (:class:`~masklet.amg.upsample.Upsampler`); full-resolution masks are only built for the masks
  that survive every filter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import InvalidInputError
from ..io import ImageSource, load_image
from ..masks import (
    batched_nms,
    encode_rle,
    encode_uncompressed_rle,
    fill_holes_and_remove_sprinkles,
    masks_to_boxes,
    remove_small_regions,
)
from ..model import Sam2Model
from ..precision import inference
from ..transforms import preprocess, to_model_coords
from .data import MaskData
from .decoder import POINTS_PER_BATCH, DecoderState, GridDecoder
from .grids import generate_crop_boxes, near_crop_edge
from .options import Progress, check_options
from .upsample import Upsampler

__all__ = ["MaskGenerator"]

#: Masks whose stability and box are computed together (bounds the memory of the cell maps).
_MASK_CHUNK = 32


@dataclass(frozen=True)
class _Crop:
    """One crop being segmented: its index, XYXY box in the image, size, decoder and upsampler."""

    index: int
    box: list[int]
    hw: tuple[int, int]
    orig_hw: tuple[int, int]
    decoder: GridDecoder
    upsampler: Upsampler


class MaskGenerator:
    """Segment everything: masks from a grid of point prompts, filtered and de-duplicated.

    Same options, defaults, records and record order as the official
    ``SAM2AutomaticMaskGenerator`` (see :meth:`generate`), plus ``progress``:

    - ``points_per_side`` (int) or ``point_grids`` (list of (N, 2) arrays in [0, 1], one per
      crop layer): exactly one of them. ``points_per_batch``: prompts decoded at once (a memory
      knob; results do not depend on it).
    - ``pred_iou_thresh``, ``stability_score_thresh`` (in [0, 1]; 0 disables the filter),
      ``stability_score_offset``, ``mask_threshold``: mask quality filters; the stability score
      is the IoU of the full-resolution masks thresholded at ``mask_threshold +- offset``.
    - ``box_nms_thresh``: box IoU above which a lower-scored mask of the same crop is dropped.
    - ``crop_n_layers``, ``crop_nms_thresh``, ``crop_overlap_ratio``,
      ``crop_n_points_downscale_factor``: also segment overlapping crops (layer i has 4**i
      crops and ``points_per_side / factor**i`` points per side); masks touching a crop edge
      (but not the image edge) are dropped, and duplicates between crops are removed
      preferring smaller crops.
    - ``min_mask_region_area``: if > 0, fill holes and remove islands smaller than this area
      (pixels) in every mask, then remove the new duplicates, as the first Segment Anything
      does (the official SAM2 generator only passes it to its predictor, whose low-resolution
      clean-up needs a CUDA extension; masklet does that clean-up too, on any device). The
      full-resolution step is :attr:`full_resolution_cleanup`; ``masklet.sam2`` turns it off.
    - ``output_mode``: "binary_mask", "uncompressed_rle" or "coco_rle".
    - ``use_m2m``: refine every mask once with its own low-resolution logits as mask prompt.
    - ``multimask_output``: three masks per point (else one, chosen by stability).
    - ``progress``: a callable ``progress(done, total)`` (prompts decoded) or True for a tqdm bar.
    - ``mask_nms_thresh`` (masklet option, default 0: off, the official results): if > 0, drop a
      mask whose mask IoU with a higher-scored kept mask exceeds it (copies of one shape that
      stray pixels keep apart under box NMS); see :func:`masklet.mask_nms.mask_iou_nms`.
    """

    #: With ``min_mask_region_area`` > 0, also apply the first Segment Anything's full-resolution
    #: clean-up after the low-resolution one. The official SAM2 generator never calls it, so its
    #: drop-in :class:`masklet.sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator` sets False.
    full_resolution_cleanup: ClassVar[bool] = True

    def __init__(
        self,
        model: Sam2Model,
        points_per_side: int | None = 32,
        points_per_batch: int = POINTS_PER_BATCH,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[Any] | None = None,
        min_mask_region_area: float = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        progress: bool | Callable[[int, int], Any] = False,
        mask_nms_thresh: float = 0.0,
    ) -> None:
        grids = check_options(
            model,
            points_per_side,
            points_per_batch,
            pred_iou_thresh,
            stability_score_thresh,
            stability_score_offset,
            mask_threshold,
            box_nms_thresh,
            crop_n_layers,
            crop_nms_thresh,
            crop_overlap_ratio,
            crop_n_points_downscale_factor,
            point_grids,
            min_mask_region_area,
            output_mode,
            use_m2m,
            multimask_output,
            progress,
            mask_nms_thresh,
        )

        self.model = model
        self.point_grids = grids
        self.points_per_side = points_per_side
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.mask_threshold = float(mask_threshold)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = int(crop_n_points_downscale_factor)
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)
        self.progress = progress
        self.mask_nms_thresh = float(mask_nms_thresh)

    # ------------------------------------------------------------------ public

    def generate(self, image: ImageSource) -> list[dict[str, Any]]:
        """Masks of everything in ``image`` (any input :func:`masklet.io.load_image` accepts).

        Returns a list of records, each a dict with

        - ``segmentation``: per ``output_mode``, an (H, W) bool array, an uncompressed RLE
          ``{"size": [H, W], "counts": [int, ...]}`` or a COCO RLE ``{"size", "counts": str}``;
        - ``area`` (int, pixels), ``bbox`` (XYWH floats, with w = x1 - x0 of the inclusive
          pixel bounds, as the official), ``predicted_iou`` (float), ``point_coords``
          (``[[x, y]]``, the prompt in image pixels), ``stability_score`` (float) and
          ``crop_box`` (XYWH floats of the crop the mask came from).

        Records are in the official order: by decreasing predicted IoU (one crop); with crops,
        smaller crops first; with ``min_mask_region_area``, masks it left unchanged first.
        """
        img = load_image(image)
        orig_h, orig_w = img.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes((orig_h, orig_w), self.crop_n_layers, self.crop_overlap_ratio)
        for box in crop_boxes:
            if box[2] <= box[0] or box[3] <= box[1]:
                raise InvalidInputError(
                    f"crop_n_layers={self.crop_n_layers}, crop_overlap_ratio={self.crop_overlap_ratio}: "
                    f"the crop {box} (XYXY) of the {orig_w}x{orig_h} image is empty; use fewer crop layers "
                    "or a smaller overlap"
                )
        per_point = self._masks_per_point()
        total = sum(len(self.point_grids[i]) for i in layer_idxs) * (1 + (per_point if self.use_m2m else 0))
        reporter = Progress(self.progress, total)
        try:
            with inference():
                found, upsamplers = [], []
                for index, (box, layer) in enumerate(zip(crop_boxes, layer_idxs)):
                    data, upsampler = self._process_crop(img, index, box, layer, reporter)
                    upsamplers.append(upsampler)
                    if data is not None:
                        found.append(data)
                records = self._finish(found, crop_boxes, upsamplers, (orig_h, orig_w))
            if self.mask_nms_thresh > 0:
                from ..mask_nms import mask_iou_nms

                records = mask_iou_nms(records, self.mask_nms_thresh)
            return records
        finally:
            reporter.close()

    # ------------------------------------------------------------------ crops
    def _masks_per_point(self) -> int:
        return 3 if self.multimask_output else 1

    def _process_crop(
        self, image: np.ndarray, index: int, crop_box: list[int], layer: int, reporter: Progress
    ) -> tuple[MaskData | None, Upsampler]:
        """The masks of one crop after box NMS (image frame; None if none), and its upsampler."""
        model = self.model
        device = model.device
        x0, y0, x1, y1 = crop_box
        crop_image = np.ascontiguousarray(image[y0:y1, x0:x1])
        crop_h, crop_w = crop_image.shape[:2]
        pixels = preprocess(crop_image, model.image_size, device, model.encoder_dtype)
        levels = model.image_embeddings(model.encode_image(pixels))
        custom = getattr(model, "grid_decoder", None)  # a backend (e.g. ONNX Runtime) may bring its own
        decoder = custom(levels) if custom is not None else GridDecoder(model, levels)
        low_hw = (4 * decoder.hw[0], 4 * decoder.hw[1])
        upsampler = Upsampler(low_hw, (crop_h, crop_w), device)
        crop = _Crop(index, crop_box, (crop_h, crop_w), (image.shape[0], image.shape[1]), decoder, upsampler)

        # The official scales the [0, 1] grid to crop pixels in float64, then works in float32.
        points = torch.as_tensor(self.point_grids[layer] * np.array([[crop_w, crop_h]]), dtype=torch.float32)
        points = points.to(device)
        found: list[MaskData] = []
        chunk = decoder.chunk(self.points_per_batch, upscale=False)
        for start in range(0, points.shape[0], chunk):
            kept = self._process_points(crop, points[start : start + chunk], reporter)
            if kept is not None:
                found.append(kept)
        if not found:
            return None, upsampler
        data = MaskData.cat(found)
        keep = batched_nms(data.boxes.float(), data.iou, torch.zeros_like(data.boxes[:, 0]), self.box_nms_thresh)
        return data.filter(keep).shifted(x0, y0), upsampler

    def _process_points(self, crop: _Crop, points: torch.Tensor, reporter: Progress) -> MaskData | None:
        """Decode a batch of points (crop pixels) and keep the masks passing every filter.

        Candidates are ordered point-major (the official order): M masks per point."""
        decoder = crop.decoder
        model_points = to_model_coords(points, crop.hw, self.model.image_size)[:, None, :]
        labels = torch.ones(points.shape[0], 1, dtype=torch.int32, device=points.device)
        per_point = self._masks_per_point()
        iou, state = decoder.decode(model_points, labels, None)
        reporter.advance(points.shape[0])
        cand_points = points.repeat_interleave(per_point, dim=0)
        if self.use_m2m:
            # Every mask is refined once with its own low-res logits (clamped as the official
            # predictor returns them) as mask prompt, and a single output.
            if self.multimask_output:
                first = self._upscale(decoder, state, None, [1, 2, 3]).flatten(0, 1)
            else:
                first = self._single(decoder, iou, state, filter_iou=False)[2]
            first = first.clamp(-32.0, 32.0)
            refine_points = model_points.repeat_interleave(per_point, dim=0)
            refine_labels = labels.repeat_interleave(per_point, dim=0)
            parts = []
            step = decoder.chunk(self.points_per_batch, upscale=False)
            for s in range(0, refine_points.shape[0], step):
                sl = slice(s, s + step)
                r_iou, r_state = decoder.decode(refine_points[sl], refine_labels[sl], first[sl, None])
                parts.append(self._single(decoder, r_iou, r_state, filter_iou=True))
                reporter.advance(refine_points[sl].shape[0])
            iou, has, logits = (torch.cat(x) for x in zip(*parts))
        elif self.multimask_output:
            iou = iou[:, 1:]
            could_pass = (iou > self.pred_iou_thresh).any(1) if self.pred_iou_thresh > 0 else None
            logits = self._upscale(decoder, state, could_pass, [1, 2, 3]).flatten(0, 1)
            iou = iou.flatten()
            has = torch.ones_like(iou, dtype=torch.bool) if could_pass is None else could_pass.repeat_interleave(3)
        else:
            iou, has, logits = self._single(decoder, iou, state, filter_iou=True)
        return self._filter(crop, iou, has, logits, cand_points)

    def _upscale(
        self, decoder: GridDecoder, state: DecoderState, which_points: torch.Tensor | None, which_tokens: list[int]
    ) -> torch.Tensor:
        """Low-res logits (B', len(which_tokens), h, w) of the points in ``which_points`` (all if None)."""
        if which_points is not None:
            state = state[which_points]
        step = decoder.chunk(self.points_per_batch, upscale=True)
        outs = [decoder.masks(state[s : s + step], which_tokens).float() for s in range(0, len(state), step)]
        if not outs:
            h, w = decoder.hw
            return torch.zeros(0, len(which_tokens), 4 * h, 4 * w, device=state.keys.device)
        return torch.cat(outs)

    def _single(
        self, decoder: GridDecoder, iou: torch.Tensor, state: DecoderState, filter_iou: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Single-mask output, chosen as the official decoder does (by stability when its
        ``dynamic_multimask_via_stability`` is on, else the first mask token).

        Returns the chosen IoU (B,), which points have logits (B,) and their logits (B', h, w).
        With ``filter_iou``, logits are only computed where the chosen IoU can pass
        ``pred_iou_thresh``; the IoU of the other points is then some value not above it."""
        dec = decoder.dec
        dynamic = dec.dynamic_multimask_via_stability and not dec.training
        bound = torch.maximum(iou[:, 0], iou[:, 1:].max(1).values) if dynamic else iou[:, 0]
        if filter_iou and self.pred_iou_thresh > 0:
            has = bound > self.pred_iou_thresh
        else:
            has = torch.ones_like(bound, dtype=torch.bool)
        which = has if not bool(has.all()) else None
        if dynamic:
            logits = self._upscale(decoder, state, which, [0, 1, 2, 3])
            chosen_logits, chosen_iou = dec.select_stable(logits, iou[has].to(logits.dtype))
            out_iou = iou[:, 0].clone()
            out_iou[has] = chosen_iou[:, 0].to(iou.dtype)
            return out_iou, has, chosen_logits[:, 0]
        logits = self._upscale(decoder, state, which, [0])
        return iou[:, 0], has, logits[:, 0]

    def _filter(
        self, crop: _Crop, iou: torch.Tensor, has: torch.Tensor, logits: torch.Tensor, cand_points: torch.Tensor
    ) -> MaskData | None:
        """IoU filter, low-res clean-up, stability filter, crop-edge filter: the survivors (crop frame).

        ``iou`` and ``has`` (n,) per candidate; ``logits`` (has.sum(), h, w) in candidate order.
        Candidates without logits cannot pass the IoU filter."""
        device = iou.device
        cand = torch.nonzero(has, as_tuple=True)[0]
        keep = iou[cand] > self.pred_iou_thresh if self.pred_iou_thresh > 0 else torch.ones_like(cand, dtype=torch.bool)
        if not bool(keep.any()):
            return None
        cand, logits = cand[keep], logits[keep]
        if self.min_mask_region_area > 0:
            # the official predictor's low-resolution hole / sprinkle clean-up (its mask_threshold is 0)
            logits = fill_holes_and_remove_sprinkles(
                logits[:, None], 0.0, self.min_mask_region_area, self.min_mask_region_area
            )[:, 0]
        t, off = self.mask_threshold, self.stability_score_offset
        counts_parts, boxes_parts = [], []
        for s in range(0, logits.shape[0], _MASK_CHUNK):
            c, b = crop.upsampler.stats(logits[s : s + _MASK_CHUNK], (t + off, t - off, t), box_index=2)
            counts_parts.append(c)
            boxes_parts.append(b)
        counts, boxes = torch.cat(counts_parts), torch.cat(boxes_parts)
        # the official sums in int16 / int32 and divides in float32: 0 / 0 gives NaN, as there
        stability = counts[:, 0].to(torch.int32) / counts[:, 1].to(torch.int32)
        keep = torch.ones(cand.shape[0], dtype=torch.bool, device=device)
        if self.stability_score_thresh > 0:
            keep &= stability >= self.stability_score_thresh
        keep &= ~near_crop_edge(boxes, crop.box, [0, 0, crop.orig_hw[1], crop.orig_hw[0]])
        if not bool(keep.any()):
            return None
        chosen = cand[keep]
        return MaskData(
            logits=logits[keep],
            iou=iou[chosen],
            stability=stability[keep],
            boxes=boxes[keep],
            points=cand_points[chosen],
            crop_index=torch.full((chosen.shape[0],), crop.index, dtype=torch.int64, device=device),
        )

    # ------------------------------------------------------------------ merge and records

    def _finish(
        self, found: list[MaskData], crop_boxes: list[list[int]], upsamplers: list[Upsampler], orig_hw: tuple[int, int]
    ) -> list[dict[str, Any]]:
        """Merge the crops' masks (NMS preferring smaller crops), clean up small regions, write records."""
        if not found:
            return []
        data = MaskData.cat(found)
        if len(crop_boxes) > 1:
            crops = torch.tensor(crop_boxes, dtype=torch.int64, device=data.boxes.device)[data.crop_index]
            area = (crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1])
            keep = batched_nms(data.boxes.float(), 1 / area, torch.zeros_like(data.boxes[:, 0]), self.crop_nms_thresh)
            data = data.filter(keep)
        masks = _FinalMasks(data, crop_boxes, upsamplers, orig_hw, self.mask_threshold)
        if self.min_mask_region_area > 0 and self.full_resolution_cleanup:
            self._remove_small_regions(masks)
        return self._records(masks, crop_boxes)

    def _remove_small_regions(self, masks: _FinalMasks) -> None:
        """The first Segment Anything's ``postprocess_small_regions``: fill small holes, drop
        small islands, recompute boxes, and NMS preferring masks that did not change."""
        area = self.min_mask_region_area
        scores, new_boxes = [], masks.data.boxes.clone()
        for rows, chunk in masks.chunks(range(len(masks))):
            for i, mask in zip(rows, chunk.cpu().numpy()):
                mask, changed_holes = remove_small_regions(mask, area, mode="holes")
                mask, changed_islands = remove_small_regions(mask, area, mode="islands")
                changed = changed_holes or changed_islands
                scores.append(0.0 if changed else 1.0)
                if changed:
                    cleaned = torch.from_numpy(mask)
                    new_boxes[i] = masks_to_boxes(cleaned)
                    masks.replace(i, cleaned)
        keep = batched_nms(
            new_boxes.float().cpu(),
            torch.as_tensor(scores),
            torch.zeros(len(scores), dtype=torch.int64),
            max(self.box_nms_thresh, self.crop_nms_thresh),
        ).to(new_boxes.device)
        masks.data = masks.data.replace(boxes=new_boxes)
        masks.select(keep)

    def _records(self, masks: _FinalMasks, crop_boxes: list[list[int]]) -> list[dict[str, Any]]:
        segmentations: list[Any] = []
        areas: list[int] = []
        for _, chunk in masks.chunks(range(len(masks))):
            host = chunk.cpu().numpy()
            areas += [int(np.count_nonzero(mask)) for mask in host]  # a bool sum in torch widens to int64
            if self.output_mode == "coco_rle":
                segmentations += encode_rle(chunk)
            elif self.output_mode == "uncompressed_rle":
                segmentations += encode_uncompressed_rle(chunk)
            else:
                segmentations += list(host)
        data = masks.data
        # the official converts everything to float32 numpy before writing records
        boxes_f = data.boxes.float().cpu()
        bbox = torch.cat([boxes_f[:, :2], boxes_f[:, 2:] - boxes_f[:, :2]], 1).tolist()
        crop_f = torch.tensor(crop_boxes, dtype=torch.float32)[data.crop_index.cpu()]
        crop_xywh = torch.cat([crop_f[:, :2], crop_f[:, 2:] - crop_f[:, :2]], 1).tolist()
        iou_l = data.iou.float().cpu().tolist()
        stab_l = data.stability.float().cpu().tolist()
        pts = data.points.float().cpu().tolist()
        return [
            {
                "segmentation": segmentations[i],
                "area": int(areas[i]),
                "bbox": bbox[i],
                "predicted_iou": iou_l[i],
                "point_coords": [pts[i]],
                "stability_score": stab_l[i],
                "crop_box": crop_xywh[i],
            }
            for i in range(len(masks))
        ]


class _FinalMasks:
    """The kept masks, built at full image size only when needed, a few at a time."""

    def __init__(
        self,
        data: MaskData,
        crop_boxes: list[list[int]],
        upsamplers: list[Upsampler],
        orig_hw: tuple[int, int],
        threshold: float,
    ) -> None:
        self.data, self.crop_boxes, self.upsamplers = data, crop_boxes, upsamplers
        self.orig_hw, self.threshold = orig_hw, threshold
        self.replaced: dict[int, np.ndarray] = {}  # position -> bit-packed (H, W) mask

    def __len__(self) -> int:
        return len(self.data)

    def replace(self, i: int, mask: torch.Tensor) -> None:
        self.replaced[i] = np.packbits(mask.cpu().numpy())

    def select(self, keep: torch.Tensor) -> None:
        """Keep the masks at positions ``keep`` (int64 indices), in that order."""
        order = keep.tolist()
        self.data = self.data.filter(keep)
        self.replaced = {new: self.replaced[old] for new, old in enumerate(order) if old in self.replaced}

    def chunks(self, rows: Sequence[int], size: int = 8) -> Iterator[tuple[list[int], torch.Tensor]]:
        """(rows, (k, H, W) bool masks) for consecutive groups of ``rows``."""
        rows = list(rows)
        for s in range(0, len(rows), size):
            yield rows[s : s + size], self.build(rows[s : s + size])

    def build(self, rows: Sequence[int]) -> torch.Tensor:
        H, W = self.orig_hw
        logits = self.data.logits
        out = torch.zeros(len(rows), H, W, dtype=torch.bool, device=logits.device)
        crop_index = self.data.crop_index.tolist()
        by_crop: dict[int, list[int]] = {}
        for j, i in enumerate(rows):
            if i in self.replaced:
                flat = np.unpackbits(self.replaced[i], count=H * W).astype(bool)
                out[j] = torch.from_numpy(flat.reshape(H, W)).to(logits.device)
            else:
                by_crop.setdefault(crop_index[i], []).append(j)
        for ci, js in by_crop.items():
            x0, y0, x1, y1 = self.crop_boxes[ci]
            chosen = logits[[rows[j] for j in js]]
            out[js, y0:y1, x0:x1] = self.upsamplers[ci].binary(chosen, self.threshold)
        return out
