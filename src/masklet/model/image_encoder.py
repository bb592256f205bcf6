"""Image encoder: Hiera trunk + FPN neck, giving multi-scale features and their position encodings."""

from __future__ import annotations

from typing import TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from .config import HieraConfig, NeckConfig
from .gemm import linear
from .hiera import Hiera
from .position import PositionEmbeddingSine


def _lateral(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; a 1x1 convolution runs as a linear over the channels of the trunk's channels-last
    grid (the same product in oneDNN's float32 GEMM: the float32 neck 100 -> 25-32 ms on 2 threads),
    its output a channels-last view as the convolution's was."""
    if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or conv.groups != 1:
        return conv(x)
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding != (0, 0):
        return conv(x)
    weight = conv.weight.view(conv.out_channels, conv.in_channels)
    return linear(x.permute(0, 2, 3, 1), weight, conv.bias).permute(0, 3, 1, 2)


def _is_pointwise(conv: nn.Module) -> TypeGuard[nn.Conv2d]:
    """A plain 1x1 convolution (a linear map of the channels at every position)."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.groups == 1
    )


def _lateral_then(conv: nn.Conv2d, then: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``then(conv(x))`` for two 1x1 convolutions as one, in x's dtype: the wide intermediate map is
    never built (the finest lateral of a 1024 px image is 256 x 256 x 256, 67 MB, for the decoder's
    32-channel projection of it: 136 -> 30 ms for the two finest levels on 2 threads)."""
    first = conv.weight.view(conv.out_channels, conv.in_channels).float()
    second = then.weight.view(then.out_channels, then.in_channels).float()
    bias = second @ (first.new_zeros(conv.out_channels) if conv.bias is None else conv.bias.float())
    if then.bias is not None:
        bias = bias + then.bias.float()
    weight, bias = (second @ first).to(x.dtype), bias.to(x.dtype)
    return linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)


def conv_in_input_dtype(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` with the weights cast to ``x``'s dtype: the decoder's high-resolution projections
    run in the encoder's dtype, so the cast to the heads' dtype is of their outputs (8x and 4x fewer
    values than their inputs; bfloat16 set_image on 2 CPU threads: about 40 ms less)."""
    if conv.weight.dtype is x.dtype:
        return conv(x)
    bias = None if conv.bias is None else conv.bias.to(x.dtype)
    return F.conv2d(x, conv.weight.to(x.dtype), bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class FpnNeck(nn.Module):
    """1x1 lateral convs to ``d_model`` channels, with top-down fusion on the chosen levels."""

    def __init__(self, config: NeckConfig, backbone_channel_list: list[int]) -> None:
        super().__init__()
        self.position_encoding = PositionEmbeddingSine(config.d_model, config.position_temperature)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module(
                "conv",
                nn.Conv2d(dim, config.d_model, config.kernel_size, config.stride, config.padding),
            )
            self.convs.append(lateral)
        self.backbone_channel_list = list(backbone_channel_list)
        self.interp_mode = config.fpn_interp_model
        self.fuse_avg = config.fuse_type == "avg"
        levels = config.fpn_top_down_levels
        self.top_down_levels = set(range(len(self.convs)) if levels is None else levels)

    def forward(
        self, xs: list[torch.Tensor], then: dict[int, nn.Conv2d] | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Features (and their positions) of the trunk's maps, finest first. ``then`` maps a level to a
        convolution applied to its feature in the feature's dtype (the decoder's high-resolution
        projections): a 1x1 one after a level without top-down fusion, whose lateral no finer level
        reads, is fused with the level's 1x1 lateral."""
        then = then or {}
        n = len(self.convs) - 1
        features: list[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]  # every slot is set in the loop below
        prev = None
        for i in range(n, -1, -1):  # deepest level first
            conv = self.convs[n - i].get_submodule("conv")
            after = then.get(i)
            read_below = i - 1 in self.top_down_levels
            if after is not None and i not in self.top_down_levels and not read_below:
                if _is_pointwise(conv) and _is_pointwise(after):
                    features[i] = prev = _lateral_then(conv, after, xs[i])
                    continue
            lateral = _lateral(conv, xs[i])
            if i in self.top_down_levels and prev is not None:
                top_down = F.interpolate(
                    prev.float(),
                    scale_factor=2.0,
                    mode=self.interp_mode,
                    align_corners=None if self.interp_mode == "nearest" else False,
                    antialias=False,
                )
                prev = lateral + top_down.to(lateral.dtype)
                if self.fuse_avg:
                    prev = prev / 2
            else:
                prev = lateral
            features[i] = prev if after is None else conv_in_input_dtype(after, prev)
        # float32 views of the cached grids: a cast here would copy every level (16M values at the
        # finest) for nothing, as the SAM heads take the positions in their own dtype
        positions = [self.position_encoding(f) for f in features]
        return features, positions


class ImageEncoder(nn.Module):
    """Trunk + neck; drops the ``scalp`` coarsest levels. Features are listed finest first."""

    def __init__(self, trunk_config: HieraConfig, neck_config: NeckConfig) -> None:
        super().__init__()
        self.trunk = Hiera(trunk_config)
        self.neck = FpnNeck(neck_config, self.trunk.channel_list)
        self.scalp = neck_config.scalp

    def forward(
        self, images: torch.Tensor, then: dict[int, nn.Conv2d] | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(B, 3, S, S) normalised images -> (features, position encodings), finest first; ``then``:
        projections of some levels (see :meth:`FpnNeck.forward`)."""
        features, positions = self.neck(self.trunk(images), then)
        if self.scalp > 0:
            features, positions = features[: -self.scalp], positions[: -self.scalp]
        return features, positions
