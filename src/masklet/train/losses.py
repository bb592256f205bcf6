"""SAM2 training losses: focal + dice on masks, L1 on predicted IoU, BCE on the object score."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """Relative weights, as in the SAM2 training recipe."""

    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0


def sigmoid_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Mean focal loss per mask: logits and targets (..., H, W) -> (...)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice loss per mask: (..., H, W) -> (...)."""
    prob = logits.sigmoid().flatten(-2)
    target = target.flatten(-2)
    inter = (prob * target).sum(-1)
    return 1 - (2 * inter + eps) / (prob.sum(-1) + target.sum(-1) + eps)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks (..., H, W) -> (...); 1 where both are empty."""
    pred, target = pred.flatten(-2), target.flatten(-2)
    inter = (pred & target).sum(-1).float()
    union = (pred | target).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(
    mask_logits: torch.Tensor,
    iou_pred: torch.Tensor,
    object_logits: torch.Tensor,
    target: torch.Tensor,
    weights: LossWeights = LossWeights(),
) -> dict[str, torch.Tensor]:
    """Loss of B predictions with M candidate masks each against B targets.

    ``mask_logits`` (B, M, H, W) at the target's resolution, ``iou_pred`` (B, M),
    ``object_logits`` (B, 1), ``target`` (B, H, W) bool. The mask loss is taken on the best of
    the M candidates only (the multimask rule), the IoU loss on all of them; mask and IoU losses
    count only where the object is present.
    """
    t = target[:, None].float().expand_as(mask_logits)
    focal = sigmoid_focal_loss(mask_logits, t)
    dice = dice_loss(mask_logits, t)
    combined = weights.focal * focal + weights.dice * dice
    best = combined.argmin(dim=1)
    rows = torch.arange(mask_logits.shape[0], device=mask_logits.device)
    present = target.flatten(1).any(1).float()
    actual_iou = mask_iou(mask_logits.detach() > 0, target[:, None].expand_as(mask_logits))
    iou_l1 = (iou_pred.float() - actual_iou).abs().mean(dim=1)
    obj = F.binary_cross_entropy_with_logits(object_logits.float().squeeze(1), present, reduction="none")
    denom = present.sum().clamp(min=1)
    losses = {
        "focal": (focal[rows, best] * present).sum() / denom,
        "dice": (dice[rows, best] * present).sum() / denom,
        "iou": (iou_l1 * present).sum() / denom,
        "object_score": obj.mean(),
    }
    losses["total"] = (
        weights.focal * losses["focal"]
        + weights.dice * losses["dice"]
        + weights.iou * losses["iou"]
        + weights.object_score * losses["object_score"]
    )
    return losses
