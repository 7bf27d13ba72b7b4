"""What quantization loses, estimated from what the decoder has, and added back to the decoded latents.

Why: at few codebooks the decoded latents are a coarse, smoothed copy of the encoder's (at 1.5 kbps the WORLD
codec's envelope loses the detail that makes speech sound natural: docs/world-codec.md). What they miss is not
noise: it follows from the decoded frames themselves (a formant pattern implies its finer shape), so a small
network that reads the decoded frame and the frames before it can predict much of it. One network per number of
codebooks, since what is lost differs with the bitrate; a number of codebooks without a network decodes as before.

Each network reads the frame, `context_frames` frames before it and `lookahead_frames` after it: at 1.5 kbps the
three frames after the one it corrects lower its held-out error from 0.0176 to 0.0171 and lift DistillMOS by 0.11 on
the whole eval split (docs/world-codec.md). The frames around the signal are the standardised zeros, offline and in
a stream. In a stream the past frames are state, and a frame waits for the frames after it: a stream's refined
frames lag its codes by `lookahead_frames` (beside the WORLD analysis's 170 frames of look-ahead, 40 ms more at
three), the first `lookahead_frames` frames a stream returns hold no frame of the signal (the stream decoder drops
them), and `flush` refines the frames still waiting with the zeros after them. The inputs are standardised by fixed
statistics (`shift`, `scale`, set when fitted). The networks are fitted after the codebooks (`codec.train.refiner`);
the encoder and its codes do not change, so a model gains or retrains its refiner without changing its tokens (the
refiner is no part of the tokenizer's sha256).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .streaming import LayerState, StreamingModule


@dataclass
class RefinerState(LayerState):
    history: torch.Tensor  # (B, D, context + lookahead): the last standardised decoded frames; zeros before the first
    waiting: torch.Tensor  # (B, D, lookahead): the last decoded frames, waiting for the frames after them
    waiting_codebooks: torch.Tensor  # (B, lookahead): their numbers of codebooks (0 before the first: no correction)


class LatentRefiner(StreamingModule):
    """Decoded latents (B, D, F) and each frame's number of codebooks (B, F) -> refined latents (B, D, F) (in a
    stream: of the F frames that end `lookahead_frames` before the last one given).

    It computes in float64 (float32 in an ONNX graph): f0 integrates into the oscillator's phase, and float32's
    rounding, which differs between one call's convolution and a stream's pieces, put a stream's audio 4e-5 from
    the offline audio within 2.5 s (as for the prediction's sum, `quantize/predictive.py`)."""
    export_friendly = False  # set by `codec onnx` while it traces

    def __init__(self, dim: int, codebooks: list[int], context_frames: int, hidden_dim: int,
                 lookahead_frames: int = 0) -> None:
        super().__init__()
        self.codebooks, self.context_frames, self.lookahead_frames = list(codebooks), context_frames, lookahead_frames
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        # a convolution over the frame and its context is the same MLP at every frame
        self.networks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dim, hidden_dim, context_frames + 1 + lookahead_frames), nn.GELU(),
                          nn.Conv1d(hidden_dim, hidden_dim, 1), nn.GELU(), nn.Conv1d(hidden_dim, dim, 1))
            for _ in codebooks)
        for network in self.networks:  # start as no correction: a model refines nothing until it is fitted
            nn.init.zeros_(network[-1].weight)
            nn.init.zeros_(network[-1].bias)

    def init_state(self, batch_size: int) -> RefinerState:
        dim, ahead = len(self.shift), self.lookahead_frames
        return RefinerState(self.shift.new_zeros(batch_size, dim, self.context_frames + ahead),
                            self.shift.new_zeros(batch_size, dim, ahead),
                            torch.zeros(batch_size, ahead, dtype=torch.long, device=self.shift.device))

    def windows(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, D, F) decoded latents -> (B, D, context + F + lookahead): standardised, between the frames before
        and after them (offline: zeros; in a stream: the frames before, and the last frames stand for the future
        of the frames that wait)."""
        x = (latents - self.shift[:, None].to(latents)) / self.scale[:, None].to(latents)
        if not self.streaming:
            return nn.functional.pad(x, (self.context_frames, self.lookahead_frames))
        x = torch.cat([self.state.history.to(x), x], -1)
        self.state.history = x[..., x.shape[-1] - self.context_frames - self.lookahead_frames:]
        return x

    def flush(self, batch_size: int) -> torch.Tensor:
        """In a stream, at its end: the waiting frames (B, D, lookahead) refined with the standardised zeros after
        them (latents equal to `shift`, with no codebooks), as offline refining pads."""
        future = self.shift[None, :, None].expand(batch_size, -1, self.lookahead_frames)
        return self(future, torch.zeros(batch_size, self.lookahead_frames, dtype=torch.long, device=self.shift.device))

    def _wait(self, latents: torch.Tensor, codebooks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """In a stream: the frames whose future is now in (the waiting ones first) and their numbers of
        codebooks; the last `lookahead_frames` of all wait."""
        if not self.streaming or not self.lookahead_frames:
            return latents, codebooks
        frames = latents.shape[-1]
        latents = torch.cat([self.state.waiting.to(latents), latents], -1)
        codebooks = torch.cat([self.state.waiting_codebooks, codebooks], -1)
        self.state.waiting, self.state.waiting_codebooks = latents[..., frames:], codebooks[..., frames:]
        return latents[..., :frames], codebooks[..., :frames]

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
        refined, codebooks = self._wait(refined, codebooks)
        # Every network runs on every frame and each frame keeps its own number's correction: the same graph for
        # any codes (an ONNX decoder's dropped stages set the number per frame); a network costs about 0.5 MFLOP a
        # frame, against the decoder's synthesis of 320 samples.
        for count, correction in zip(self.codebooks, self.corrections(x)):
            refined = refined + (codebooks == count)[:, None].to(refined) * correction
        return refined.to(latents.dtype)
