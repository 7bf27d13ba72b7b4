"""What quantization loses, estimated from what the decoder has, and added back to the decoded latents.

Why: at few codebooks the decoded latents are a coarse, smoothed copy of the encoder's (at 1.5 kbps the WORLD
codec's envelope loses the detail that makes speech sound natural: docs/world-codec.md). What they miss is not
noise: it follows from the decoded frames themselves (a formant pattern implies its finer shape), so a small
network that reads the decoded frame and the frames before it can predict much of it. One network per number of
codebooks, since what is lost differs with the bitrate; a number of codebooks without a network decodes as before.

Each network is causal (the frame and `context_frames` frames before it): the past decoded frames are streaming
state, so a stream decodes as one call does and a stream decoder returns every frame's audio as its codes arrive.
The inputs are standardised by fixed statistics (`shift`, `scale`, set when fitted); the frames before the first
are the standardised zeros, offline and in a stream. The networks are fitted after the codebooks
(`codec.train.refiner`); the encoder and its codes do not change, so a model gains or retrains its refiner
without changing its tokens (the refiner is no part of the tokenizer's sha256).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .streaming import LayerState, StreamingModule


@dataclass
class RefinerState(LayerState):
    history: torch.Tensor  # (B, D, context_frames): the last standardised decoded frames; zeros before the first


class LatentRefiner(StreamingModule):
    """Decoded latents (B, D, F) and each frame's number of codebooks (B, F) -> refined latents (B, D, F).

    It computes in float64 (float32 in an ONNX graph): f0 integrates into the oscillator's phase, and float32's
    rounding, which differs between one call's convolution and a stream's pieces, put a stream's audio 4e-5 from
    the offline audio within 2.5 s (as for the prediction's sum, `quantize/predictive.py`)."""
    export_friendly = False  # set by `codec onnx` while it traces

    def __init__(self, dim: int, codebooks: list[int], context_frames: int, hidden_dim: int) -> None:
        super().__init__()
        self.codebooks, self.context_frames = list(codebooks), context_frames
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        # a convolution over the frame and its context is the same MLP at every frame
        self.networks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dim, hidden_dim, context_frames + 1), nn.GELU(),
                          nn.Conv1d(hidden_dim, hidden_dim, 1), nn.GELU(), nn.Conv1d(hidden_dim, dim, 1))
            for _ in codebooks)
        for network in self.networks:  # start as no correction: a model refines nothing until it is fitted
            nn.init.zeros_(network[-1].weight)
            nn.init.zeros_(network[-1].bias)

    def init_state(self, batch_size: int) -> RefinerState:
        return RefinerState(self.shift.new_zeros(batch_size, len(self.shift), self.context_frames))

    def windows(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, D, F) decoded latents -> (B, D, context + F): standardised, after the context before them."""
        x = (latents - self.shift[:, None].to(latents)) / self.scale[:, None].to(latents)
        if not self.streaming:
            return nn.functional.pad(x, (self.context_frames, 0))
        x = torch.cat([self.state.history.to(x), x], -1)
        self.state.history = x[..., x.shape[-1] - self.context_frames:]
        return x

    def corrections(self, windows: torch.Tensor) -> list[torch.Tensor]:
        """Each network's correction (B, D, F) of the frames `windows` ends with, in the windows' precision (the
        weights cast to it)."""
        corrections = []
        for network in self.networks:
            x = windows
            for layer in network:
                x = nn.functional.conv1d(x, layer.weight.to(x), layer.bias.to(x)) \
                    if isinstance(layer, nn.Conv1d) else layer(x)
            corrections.append(x)
        return corrections

    def forward(self, latents: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
        refined = latents.to(torch.float32 if self.export_friendly else torch.float64)
        x = self.windows(refined)
        # Every network runs on every frame and each frame keeps its own number's correction: the same graph for
        # any codes (an ONNX decoder's dropped stages set the number per frame); a network costs about 0.5 MFLOP a
        # frame, against the decoder's synthesis of 320 samples.
        for count, correction in zip(self.codebooks, self.corrections(x)):
            refined = refined + (codebooks == count)[:, None].to(refined) * correction
        return refined.to(latents.dtype)
