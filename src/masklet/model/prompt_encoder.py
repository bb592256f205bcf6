"""Prompt encoder: points and box corners to sparse tokens, a mask to a dense embedding."""

from __future__ import annotations

import torch
from torch import nn

from .common import LayerNorm2d
from .position import PositionEmbeddingRandom

#: Point labels understood by the model: padding, negative, positive, box top-left, box bottom-right.
PAD_LABEL, NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3


class PromptEncoder(nn.Module):
    """Encodes prompts in the model's input pixel frame (image resized to ``input_image_size``)."""

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # negative point, positive point, box top-left, box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """(1, C, h, w) encoding of the image embedding grid."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(B, N, 2) pixel coords and (B, N) labels -> (B, N [+1 pad], C) tokens."""
        coords = coords + 0.5  # pixel centres
        if pad:
            coords = torch.cat((coords, coords.new_zeros(coords.shape[0], 1, 2)), dim=1)
            labels = torch.cat((labels, -labels.new_ones(labels.shape[0], 1)), dim=1)
        tokens = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        labels = labels.unsqueeze(-1)
        tokens = torch.where(labels == PAD_LABEL, self.not_a_point_embed.weight.expand_as(tokens), tokens)
        for value in range(len(self.point_embeddings)):
            tokens = torch.where(labels == value, tokens + self._point_weight(value), tokens)
        return tokens

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) XYXY pixel boxes -> (B, 2, C) corner tokens."""
        corners = self.pe_layer.forward_with_coords((boxes + 0.5).reshape(-1, 2, 2), self.input_image_size)
        corner_embeds = torch.cat((self._point_weight(BOX_TOP_LEFT), self._point_weight(BOX_BOTTOM_RIGHT)))
        return corners + corner_embeds

    def _point_weight(self, label: int) -> torch.Tensor:
        """(1, C) embedding added to points of ``label`` (0..3)."""
        embedding: nn.Embedding = self.point_embeddings[label]  # type: ignore[assignment]  # nn.ModuleList is typed as holding Module
        return embedding.weight

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (B, N, C) and dense (B, C, h, w) prompt embeddings."""
        if points is not None:
            batch = points[0].shape[0]
        elif boxes is not None:
            batch = boxes.shape[0]
        elif masks is not None:
            batch = masks.shape[0]
        else:
            batch = 1
        weight = self.no_mask_embed.weight
        sparse = [weight.new_empty((batch, 0, self.embed_dim))]
        if points is not None:
            sparse.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        if masks is not None:
            dense = self.mask_downscaling(masks.to(weight.dtype))
        else:
            dense = weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return torch.cat(sparse, dim=1), dense
