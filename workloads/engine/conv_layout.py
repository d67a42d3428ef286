"""1-D convolutions run as channels-last 2-D convolutions.

PyTorch has no channels-last layout for 3-D (N, C, L) tensors, so its 1-D convolutions do not
get the channels-last kernels that 2-D ones do. Here a 1-D convolution runs as a 2-D one over
(N, C, 1, L) in channels-last memory. No library offers the rewrite as a module swap, so it is
written here; it touches only modules of type `nn.Conv1d` and knows nothing of the model
around them.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class Conv1dAsConv2d(nn.Module):
    """An `nn.Conv1d` computed as a channels-last `nn.Conv2d` with a (1, k) kernel."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"only zero padding converts, got padding_mode={conv.padding_mode!r}")
        padding = conv.padding if isinstance(conv.padding, str) else (0, conv.padding[0])
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]),
                              stride=(1, conv.stride[0]), padding=padding, dilation=(1, conv.dilation[0]),
                              groups=conv.groups, bias=conv.bias is not None,
                              device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight.unsqueeze(2))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias)
        self.conv.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.unsqueeze(2).contiguous(memory_format=torch.channels_last)).squeeze(2)


def conv1d_as_channels_last_2d(module: nn.Module) -> nn.Module:
    """A copy of `module` with every plain `nn.Conv1d` swapped for a `Conv1dAsConv2d` of the same
    weights; the module given is left as it is. Plain: the type itself (a parametrized one, e.g.
    weight-normed, is another type), zero padding, and no forward pre-hook (the old weight norm
    recomputes its weight in one)."""
    module = copy.deepcopy(module)

    def plain(m: nn.Module) -> bool:
        return type(m) is nn.Conv1d and m.padding_mode == "zeros" and not m._forward_pre_hooks

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if plain(child):
                setattr(parent, name, Conv1dAsConv2d(child))
            else:
                swap(child)

    if plain(module):
        return Conv1dAsConv2d(module)
    swap(module)
    return module
