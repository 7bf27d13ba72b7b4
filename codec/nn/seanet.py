"""SEANet encoder and decoder (the EnCodec shape): causal convolutions, residual blocks, an LSTM, weight norm."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .conv import StreamingConv1d, StreamingConvTranspose1d
from .streaming import LayerState, StreamingModule


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


@dataclass
class LSTMState(LayerState):
    hidden: torch.Tensor  # (layers, B, channels)
    cell: torch.Tensor    # (layers, B, channels)
    BATCH_DIMS: ClassVar[dict[str, int]] = {"hidden": 1, "cell": 1}


HAND_STEPPED_FRAMES = 8  # see StreamingLSTM._step_by_hand; by hand was as fast as nn.LSTM at 16 frames


class StreamingLSTM(StreamingModule):
    """LSTM over frames with a skip connection; in streaming mode the hidden state carries over between chunks."""

    def __init__(self, channels: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, channels, num_layers)

    def init_state(self, batch_size: int) -> LSTMState:
        zeros = self.lstm.weight_ih_l0.new_zeros(self.lstm.num_layers, batch_size, self.lstm.hidden_size)
        return LSTMState(zeros, zeros.clone())  # what nn.LSTM assumes when given no state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 0:
            return x
        sequence = x.permute(2, 0, 1)
        if not self.streaming:
            return self.lstm(sequence)[0].permute(1, 2, 0) + x
        state = (self.state.hidden, self.state.cell)
        if self._step_by_hand(sequence):
            y, (self.state.hidden, self.state.cell) = self._steps(sequence, state)
        else:
            y, (self.state.hidden, self.state.cell) = self.lstm(sequence, state)
        return y.permute(1, 2, 0) + x

    def _step_by_hand(self, sequence: torch.Tensor) -> bool:
        # On a CPU torch's LSTM (oneDNN) costs about 4 ms a call however short the input (bundled encoder, 1
        # thread), and a live stream calls it once a frame: it took a third of a frame's encode and decode. The
        # same equations stepped by hand take 0.8 ms a frame (width 512, 2 layers). Long chunks, gradients and
        # export keep nn.LSTM.
        return (len(sequence) <= HAND_STEPPED_FRAMES and sequence.device.type == "cpu"
                and not torch.is_grad_enabled() and not torch.jit.is_tracing())

    def _steps(self, sequence: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """nn.LSTM's equations frame by frame (its gate order: input, forget, cell, output)."""
        hidden, cell = list(state[0]), list(state[1])
        outputs = []
        for x in sequence:
            for layer in range(self.lstm.num_layers):
                gates = (nn.functional.linear(x, getattr(self.lstm, f"weight_ih_l{layer}"),
                                              getattr(self.lstm, f"bias_ih_l{layer}"))
                         + nn.functional.linear(hidden[layer], getattr(self.lstm, f"weight_hh_l{layer}"),
                                                getattr(self.lstm, f"bias_hh_l{layer}")))
                i, f, g, o = gates.chunk(4, dim=1)
                cell[layer] = torch.sigmoid(f) * cell[layer] + torch.sigmoid(i) * torch.tanh(g)
                hidden[layer] = x = torch.sigmoid(o) * torch.tanh(cell[layer])
            outputs.append(x)
        return torch.stack(outputs), (torch.stack(hidden), torch.stack(cell))


# The EnCodec choices, fixed here rather than configured: kernel 7 at both ends, residual kernel 3 with dilation
# growing 1, 2, 4..., and residual blocks that halve the width inside.
KERNEL, LAST_KERNEL, RESIDUAL_KERNEL, DILATION_BASE, COMPRESS = 7, 7, 3, 2, 2


class ChannelNorm(nn.Module):
    """Zero mean and unit variance over channels, frame by frame (so streaming is unaffected)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(x.transpose(1, 2), x.shape[1:2]).transpose(1, 2)


def _residual_stack(channels: int, num_blocks: int) -> list[nn.Module]:
    return [ResidualBlock(channels, RESIDUAL_KERNEL, DILATION_BASE ** j, COMPRESS) for j in range(num_blocks)]


class SEANetEncoder(nn.Module):
    """Waveform (B, 1, T) -> latents (B, D, T // hop_length), hop_length = prod(ratios)."""

    def __init__(self, n_filters: int, ratios: list[int], num_residual_layers: int, lstm_layers: int,
                 dimension: int, normalize_latents: bool = False, standardize_latents: bool = False,
                 channels: int = 1) -> None:
        super().__init__()
        self.hop_length = math.prod(ratios)
        # The encoder downsamples in the reverse order of the decoder's upsampling (EnCodec convention).
        layers: list[nn.Module] = [StreamingConv1d(channels, n_filters, KERNEL)]
        width = n_filters
        for ratio in reversed(ratios):
            layers += _residual_stack(width, num_residual_layers)
            layers += [nn.ELU(), StreamingConv1d(width, width * 2, 2 * ratio, stride=ratio)]
            width *= 2
        if lstm_layers:
            layers.append(StreamingLSTM(width, lstm_layers))
        layers += [nn.ELU(), StreamingConv1d(width, dimension, LAST_KERNEL)]
        if normalize_latents:
            layers.append(ChannelNorm())
        if standardize_latents:
            layers.append(nn.BatchNorm1d(dimension, affine=False, momentum=0.01))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SEANetDecoder(nn.Module):
    """Latents (B, D, F) -> waveform (B, 1, F * hop_length)."""

    def __init__(self, n_filters: int, ratios: list[int], num_residual_layers: int, lstm_layers: int,
                 dimension: int, channels: int = 1) -> None:
        super().__init__()
        self.hop_length = math.prod(ratios)
        width = n_filters * 2 ** len(ratios)
        layers: list[nn.Module] = [StreamingConv1d(dimension, width, KERNEL)]
        if lstm_layers:
            layers.append(StreamingLSTM(width, lstm_layers))
        for ratio in ratios:
            layers += [nn.ELU(), StreamingConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio)]
            width //= 2
            layers += _residual_stack(width, num_residual_layers)
        layers += [nn.ELU(), StreamingConv1d(width, channels, LAST_KERNEL)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
