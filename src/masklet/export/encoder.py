"""Export wrapper of the image encoder: pixels to the decoder's features, the embedding and the position."""

from __future__ import annotations

import torch
from torch import nn

from ..model import Sam2Model


class EncoderExport(nn.Module):
    """pixels (B, 3, S, S), normalised -> high-res features, image embedding, raw features, position.

    Traced with autograd on: the inference-only shortcuts of the PyTorch modules (row-chunked
    MLPs, in-place RoPE) loop over sizes in Python, which would bake the batch into the graph.
    """

    def __init__(self, model: Sam2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        with torch.enable_grad():
            features, positions = m.image_encoder(pixels)
        levels = features[-m.num_feature_levels :]
        vision = levels[-1]
        embed = vision + m.no_mem_embed.reshape(1, -1, 1, 1) if m.config.directly_add_no_mem_embed else vision
        if m.config.use_high_res_features_in_sam:
            s0 = m.sam_mask_decoder.conv_s0(levels[0])
            s1 = m.sam_mask_decoder.conv_s1(levels[1])
        else:  # placeholders so that every model has the same signature
            s0 = s1 = vision[:, :1, :1, :1] * 0
        return s0, s1, embed, vision, positions[-1][:1]


class CastExport(nn.Module):
    """A part computing in ``dtype`` behind float32 inputs and outputs (the manifest's contract)."""

    def __init__(self, part: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.part = part.to(dtype)
        self.dtype = dtype

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cast = [x.to(self.dtype) if x.is_floating_point() else x for x in inputs]
        return tuple(y.float() for y in self.part(*cast))
