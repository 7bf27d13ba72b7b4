"""Causal convolutions that can run offline or chunk by chunk with identical results.

Every layer pads only on the left, so an output sample never depends on future input. In streaming mode a layer
keeps the input it still needs (its receptive field and any samples that do not yet fill a stride) between calls;
feeding a signal in pieces of any size therefore produces exactly the samples the offline call produces.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class StreamingModule(nn.Module):
    """A module with an optional streaming state, reset with `reset_stream`."""

    def __init__(self) -> None:
        super().__init__()
        self._stream: dict | None = None

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def start_stream(self) -> None:
        self._stream = {}

    def stop_stream(self) -> None:
        self._stream = None


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.streaming:
            return self.conv(nn.functional.pad(x, (self.context, 0)))
        previous = self._stream.get("buffer")
        if previous is None:
            previous = x.new_zeros(x.shape[0], x.shape[1], self.context)
        x = torch.cat([previous, x], dim=-1)
        frames = (x.shape[-1] - self.context) // self.stride
        consumed = frames * self.stride
        self._stream["buffer"] = x[..., consumed:]
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.bias.shape[0], 0)
        y = self.conv(x)
        if self.streaming:
            tail = self._stream.get("tail")
            if tail is not None:
                y = torch.cat([y[..., :self.overlap] + tail, y[..., self.overlap:]], dim=-1)
            keep = x.shape[-1] * self.stride
            self._stream["tail"] = y[..., keep:]
            y = y[..., :keep]
        else:
            y = y[..., : y.shape[-1] - self.overlap]
        return y + self.bias[:, None]
