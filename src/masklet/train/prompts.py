"""Prompts sampled from ground truth, as SAM2 is trained: clicks, jittered boxes, corrective clicks."""

from __future__ import annotations

import torch

from ..masks import masks_to_boxes
from ..prompts import box_corner_labels


def sample_points(region: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly random pixel (x, y) of each (B, H, W) boolean region; also whether it exists."""
    b, h, w = region.shape
    noise = torch.rand(b, h * w, generator=generator, device=region.device)
    noise = noise * region.flatten(1)  # zero outside the region
    index = noise.argmax(dim=1)
    points = torch.stack((index % w, torch.div(index, w, rounding_mode="floor")), dim=-1).float()
    return points, region.flatten(1).any(dim=1)


def initial_clicks(gt: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A positive click inside each (B, H, W) mask: points (B, 1, 2), labels (B, 1)."""
    points, _ = sample_points(gt, generator)
    return points[:, None], torch.ones(gt.shape[0], 1, dtype=torch.int32, device=gt.device)


def jittered_boxes(
    gt: torch.Tensor, generator: torch.Generator, noise: float = 0.1, max_shift: float = 20.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Box corners of each (B, H, W) mask, each coordinate moved by up to ``noise`` of the box side
    (at most ``max_shift`` pixels), as corner points (B, 2, 2) with the box labels."""
    b, h, w = gt.shape
    boxes = masks_to_boxes(gt).float()  # (B, 4) inclusive XYXY
    side = torch.stack((boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), dim=-1).repeat(1, 2)
    limit = torch.clamp(side * noise, max=max_shift)
    shift = (2 * torch.rand(b, 4, generator=generator, device=gt.device) - 1) * limit
    boxes = boxes + shift
    upper = boxes.new_tensor([w - 1, h - 1, w - 1, h - 1])
    boxes = torch.minimum(boxes.clamp(min=0), upper)
    x0, x1 = torch.minimum(boxes[:, 0], boxes[:, 2]), torch.maximum(boxes[:, 0], boxes[:, 2])
    y0, y1 = torch.minimum(boxes[:, 1], boxes[:, 3]), torch.maximum(boxes[:, 1], boxes[:, 3])
    corners = torch.stack((x0, y0, x1, y1), dim=-1).reshape(b, 2, 2)
    return corners, box_corner_labels(b, gt.device)


def corrective_clicks(
    gt: torch.Tensor, pred: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One click in the error region of each prediction: positive on a missed pixel, negative on a
    wrongly included one. Points (B, 1, 2), labels (B, 1). A perfect prediction gets a positive
    click inside the object (or a negative one in the background of an empty target)."""
    errors = gt ^ pred
    points, has_error = sample_points(errors, generator)
    fallback, _ = sample_points(torch.where(gt.flatten(1).any(1)[:, None, None], gt, ~gt), generator)
    points = torch.where(has_error[:, None], points, fallback)
    x, y = points[:, 0].long(), points[:, 1].long()
    rows = torch.arange(gt.shape[0], device=gt.device)
    labels = gt[rows, y, x].to(torch.int32)
    return points[:, None], labels[:, None]
