"""SEANet encoder and decoder (the EnCodec shape): causal convolutions, residual blocks, an LSTM, weight norm."""
from __future__ import annotations

import math

import torch
from torch import nn

from .conv import StreamingConv1d, StreamingConvTranspose1d, StreamingModule


class ResidualBlock(nn.Module):
    """ELU -> dilated conv (k) -> ELU -> 1x1 conv, added to the input. Stride 1, so streaming keeps lengths."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, compress: int) -> None:
        super().__init__()
        hidden = channels // compress
        self.block = nn.Sequential(
            nn.ELU(), StreamingConv1d(channels, hidden, kernel_size, dilation=dilation),
            nn.ELU(), StreamingConv1d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class StreamingLSTM(StreamingModule):
    """LSTM over frames with a skip connection; in streaming mode the hidden state carries over between chunks."""

    def __init__(self, channels: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, channels, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 0:
            return x
        sequence = x.permute(2, 0, 1)
        state = self._stream.get("state") if self.streaming else None
        y, state = self.lstm(sequence, state)
        if self.streaming:
            self._stream["state"] = state
        return y.permute(1, 2, 0) + x


def _residual_stack(channels: int, num_blocks: int, kernel_size: int, dilation_base: int,
                    compress: int) -> list[nn.Module]:
    return [ResidualBlock(channels, kernel_size, dilation_base ** j, compress) for j in range(num_blocks)]


class SEANetEncoder(nn.Module):
    """Waveform (B, 1, T) -> latents (B, D, T // hop_length), hop_length = prod(ratios)."""

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32, ratios=(8, 5, 4, 2),
                 num_residual_layers: int = 1, kernel_size: int = 7, last_kernel_size: int = 7,
                 residual_kernel_size: int = 3, dilation_base: int = 2, compress: int = 2,
                 lstm_layers: int = 2) -> None:
        super().__init__()
        self.hop_length = math.prod(ratios)
        # The encoder downsamples in the reverse order of the decoder's upsampling (EnCodec convention).
        layers: list[nn.Module] = [StreamingConv1d(channels, n_filters, kernel_size)]
        width = n_filters
        for ratio in reversed(ratios):
            layers += _residual_stack(width, num_residual_layers, residual_kernel_size, dilation_base, compress)
            layers += [nn.ELU(), StreamingConv1d(width, width * 2, 2 * ratio, stride=ratio)]
            width *= 2
        if lstm_layers:
            layers.append(StreamingLSTM(width, lstm_layers))
        layers += [nn.ELU(), StreamingConv1d(width, dimension, last_kernel_size)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SEANetDecoder(nn.Module):
    """Latents (B, D, F) -> waveform (B, 1, F * hop_length)."""

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32, ratios=(8, 5, 4, 2),
                 num_residual_layers: int = 1, kernel_size: int = 7, last_kernel_size: int = 7,
                 residual_kernel_size: int = 3, dilation_base: int = 2, compress: int = 2,
                 lstm_layers: int = 2) -> None:
        super().__init__()
        self.hop_length = math.prod(ratios)
        width = n_filters * 2 ** len(ratios)
        layers: list[nn.Module] = [StreamingConv1d(dimension, width, kernel_size)]
        if lstm_layers:
            layers.append(StreamingLSTM(width, lstm_layers))
        for ratio in ratios:
            layers += [nn.ELU(), StreamingConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio)]
            width //= 2
            layers += _residual_stack(width, num_residual_layers, residual_kernel_size, dilation_base, compress)
        layers += [nn.ELU(), StreamingConv1d(width, channels, last_kernel_size)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
