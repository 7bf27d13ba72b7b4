"""Causal convolutions that can run offline or chunk by chunk with identical results.

Every layer pads only on the left, so an output sample never depends on future input. In streaming mode a layer
keeps the input it still needs (its receptive field and any samples that do not yet fill a stride) between calls;
feeding a signal in pieces of any size therefore produces exactly the samples the offline call produces.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .streaming import LayerState, StreamingModule


@dataclass
class ConvState(LayerState):
    buffer: torch.Tensor  # (B, C_in, context + samples that do not yet fill a stride)


@dataclass
class TransposedConvState(LayerState):
    tail: torch.Tensor  # (B, C_out, kernel - stride): what past frames add to the next samples


def _signal_preserving(conv: nn.Module, fan_in: float) -> nn.Module:
    """Zero bias and weights of variance 1 / fan_in, before weight norm wraps them.

    PyTorch's default (uniform weights of variance 1 / (3 fan_in) and biases of the same order) shrinks the signal
    threefold per layer while the biases add up: an untrained encoder's latents were ~200 times more bias than
    signal, so every frame looked alike and the first codebooks, fitted to them, were reduced to a few codes."""
    nn.init.normal_(conv.weight, std=fan_in ** -0.5)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class StreamingConv1d(StreamingModule):
    """Weight-normalised causal Conv1d. Offline, a length-T input gives T // stride outputs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups,
                         bias=bias)
        self.conv = weight_norm(_signal_preserving(conv, in_channels // groups * kernel_size))
        self.stride = stride
        effective_kernel = (kernel_size - 1) * dilation + 1
        # Left context so that frame i sees input up to sample (i + 1) * stride - 1 and nothing later.
        self.context = effective_kernel - stride
        assert self.context >= 0, "kernel must be at least as long as the stride"

    def init_state(self, batch_size: int) -> ConvState:
        weight = self.conv.weight
        return ConvState(weight.new_zeros(batch_size, self.conv.in_channels, self.context))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.streaming:
            return self.conv(nn.functional.pad(x, (self.context, 0)))
        x = torch.cat([self.state.buffer, x], dim=-1)
        frames = (x.shape[-1] - self.context) // self.stride
        consumed = frames * self.stride
        self.state.buffer = x[..., consumed:]
        if frames == 0:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        return self.conv(x[..., :consumed + self.context])


class StreamingConvTranspose1d(StreamingModule):
    """Weight-normalised causal ConvTranspose1d: T frames in, T * stride samples out.

    The overlap that a frame adds to later samples is kept and added when the next frames arrive, which is what
    the offline call does in one go before trimming its right edge.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        assert kernel_size >= stride
        conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride, bias=False)
        self.conv = weight_norm(_signal_preserving(conv, in_channels * kernel_size / stride))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride = stride
        self.overlap = kernel_size - stride

    def init_state(self, batch_size: int) -> TransposedConvState:
        return TransposedConvState(self.bias.new_zeros(batch_size, self.bias.shape[0], self.overlap))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.bias.shape[0], 0)
        y = self.conv(x)
        if self.streaming:
            # Adding the zero tail of a fresh stream leaves the samples exactly as they are.
            y = torch.cat([y[..., :self.overlap] + self.state.tail, y[..., self.overlap:]], dim=-1)
            keep = x.shape[-1] * self.stride
            self.state.tail = y[..., keep:]
            y = y[..., :keep]
        else:
            y = y[..., : y.shape[-1] - self.overlap]
        return y + self.bias[:, None]
