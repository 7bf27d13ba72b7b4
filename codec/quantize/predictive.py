"""Closed-loop prediction around the residual stack: each frame is predicted from the previous frame's
quantized latents, and the stages quantize only what the prediction misses.

Why: latents that move slowly from frame to frame (WORLD's f0 and envelope: docs/world-codec.md) repeat most
of themselves every frame, and a memoryless quantizer pays for that again each time. The prediction is per
dimension, a decay towards the mean:

    prediction_t = mean + decay * (quantized_{t-1} - mean),   quantized_t = prediction_t + stages(x_t - prediction_t)

It reads the *quantized* previous frame, which the decoder has too, so the encoder and the decoder predict
the same thing and the quantization error does not pile up (open-loop prediction would integrate it). The
decay (below 1) makes a wrong frame fade from the prediction instead of persisting.

The previous frame is streaming state on both sides, the mean before the first frame: a stream's
codes and latents equal the offline ones. Codes depend on the past codes at the same number of codebooks, so
decode with the codebooks the audio was encoded with: fewer decode to latents that drift from the encoder's.
The mean and the decay are fitted with the codebooks (`codec.train.codebooks`); a decay of 0 is no prediction.

The encoder may search its codes (`search_beams` paths per number of codebooks, see `_search`) instead of taking
each stage's nearest code; the decoder is the same either way, so a search is a setting of the encoder alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..nn.streaming import LayerState, StreamingModule
from .base import QuantizerOutput, SingleQuantizer
from .residual import ResidualQuantizer

EXPORT_STEPS = 20  # an ONNX decoder's doubling steps: 2^20 frames (3.9 hours at 75 Hz)


@dataclass
class PredictionState(LayerState):
    deviation: torch.Tensor  # (B, D): the last quantized frame less the mean; zeros before the first (as ONNX
    # streams start every state)


class PredictiveQuantizer(ResidualQuantizer, StreamingModule):
    export_friendly = False  # set by `codec onnx` while it traces (see `dequantize`)

    def __init__(self, stages: list[SingleQuantizer], dim: int, search_beams: tuple[int, ...] = (1,),
                 search_frames: int = 150, search_weights: tuple[float, ...] = ()) -> None:
        super().__init__(stages)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("decay", torch.zeros(dim))
        self.search_beams, self.search_frames = tuple(search_beams), search_frames
        # a setting, not a weight (so not in the tokenizer's sha256): what each dimension's squared error counts
        self.search_weights = torch.tensor(search_weights or [1.0] * dim)

    def init_state(self, batch_size: int) -> PredictionState:
        return PredictionState(self.mean.new_zeros(batch_size, len(self.mean)))

    def search_width(self, num_codebooks: int) -> int:
        """Paths the encoder keeps at this many codebooks: `search_beams`' entry for it, or its last."""
        return self.search_beams[min(num_codebooks, len(self.search_beams)) - 1]

    def predict(self, previous: torch.Tensor) -> torch.Tensor:
        return self.mean + self.decay * (previous - self.mean)

    def _run(self, latents: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """latents (B, D, F) -> codes (B, n, F) and quantized latents (B, D, F), frame by frame."""
        previous = self.mean + (self.state.deviation if self.streaming else latents.new_zeros(len(latents), 1))
        # Each stage's whole table of codes, once per call: a frame's search is then one small matrix product per
        # stage, the fp32 brute force that `nearest_code` runs for tables this size, without its per-call set-up
        # (which took 90 % of the time at one frame per call).
        tables = [stage.vectors(torch.arange(stage.codebook_size, device=latents.device)).detach()
                  for stage in self.stages[:n]]
        width = self.search_width(n)
        # One path takes each stage's nearest code, by the distance the codebooks were fitted with; a search over
        # paths minimises the weighted error.
        weights = self.search_weights.to(latents) if width > 1 else torch.ones_like(self.mean)
        norms = [(table.square() * weights).sum(1) for table in tables]
        if width == 1:
            search = partial(self._nearest, tables=tables, norms=norms)
        else:
            search = partial(self._search, tables=tables, norms=norms, width=width, weights=weights)
        codes, quantized = [], []
        # Segments start at multiples of `search_frames` from the call's start; a stream's calls start at the
        # encoder's blocks, which `search_frames` divides (`ModelConfig.problem`), so they search what one call does.
        for segment in latents.detach().split(self.search_frames, -1) if latents.shape[-1] else ():
            segment_codes, segment_quantized = search(segment, previous)
            codes.append(segment_codes)
            quantized.append(segment_quantized)
            previous = segment_quantized[..., -1]
        if self.streaming:
            self.state.deviation = previous - self.mean
        if not codes:
            return latents.new_zeros(len(latents), n, 0, dtype=torch.long), latents.detach()
        return torch.cat(codes, -1), torch.cat(quantized, -1)

    def _nearest(self, frames: torch.Tensor, previous: torch.Tensor, tables: list[torch.Tensor],
                 norms: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """`_search` with one path: each stage's nearest code, without the paths' bookkeeping, which would make
        it 3.5 times slower (at 8 codebooks, 0.06 s per second of audio against 0.017 on one core)."""
        codes, quantized = [], []
        for frame in frames.unbind(-1):
            residual, ids = frame - self.predict(previous), []
            for table, norm in zip(tables, norms):
                ids.append(torch.addmm(norm, residual, table.T, alpha=-2).argmin(1))
                residual = residual - table[ids[-1]]
            previous = frame - residual  # the prediction plus every stage's code
            codes.append(torch.stack(ids, 1))
            quantized.append(previous)
        return torch.stack(codes, -1), torch.stack(quantized, -1)

    def _search(self, frames: torch.Tensor, previous: torch.Tensor,
                tables: list[torch.Tensor], norms: list[torch.Tensor], width: int,
                weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, D, f) after the quantized frame `previous` (B, D) -> the codes (B, n, f) whose quantized
        frames (B, D, f) come nearest to `frames` over the whole segment (squared error, each dimension's times
        its `weights` (norms: each code's weighted squared norm), summed), searched over
        `width` paths (a beam search through stages and frames).

        Why search: the prediction makes each frame's codes decide the next frame's starting point, and the
        nearest code of each stage is not the nearest sum of codes either, so the greedy choice is not the best
        one. Kept paths cost a matrix product each; the decoder is the same (docs/world-codec.md, *Search*)."""
        batch = len(frames)
        rows = torch.arange(batch, device=frames.device)[:, None]
        paths = previous[:, None]                    # (B, m, D): each kept path's last quantized frame
        cost = frames.new_zeros(batch, 1)            # (B, m): each path's summed squared error so far
        steps = []
        for frame in frames.unbind(-1):
            residual = frame[:, None] - self.predict(paths)
            score = cost + (residual.square() * weights).sum(-1)  # each path's cost if the frame's codes stopped here
            # a column of each path's origin among the frame's first paths, then one of codes per stage
            trace = torch.arange(paths.shape[1], device=frames.device).expand(batch, -1)[..., None]
            for table, norm in zip(tables, norms):
                # each (path, code) pair's cost: score - |residual|^2 + |residual - code|^2, weighted
                total = ((residual * weights) @ table.T).mul_(-2).add_(norm).add_(score[..., None]).flatten(1)
                score, pick = total.topk(min(width, total.shape[1]), dim=1, largest=False)
                row, code = pick.div(len(table), rounding_mode="floor"), pick.remainder(len(table))
                residual = residual[rows, row].sub_(table[code])
                trace = torch.cat([trace[rows, row], code[..., None]], -1)
            cost, paths = score, frame[:, None] - residual
            steps.append((trace[..., 0], trace[..., 1:], paths))
        best = cost.argmin(1)
        codes, quantized = [], []
        for parent, ids, frame_paths in reversed(steps):
            codes.append(ids[rows[:, 0], best])
            quantized.append(frame_paths[rows[:, 0], best])
            best = parent[rows[:, 0], best]
        return torch.stack(codes[::-1], -1), torch.stack(quantized[::-1], -1)

    def forward(self, latents: torch.Tensor, num_codebooks: int | None = None) -> QuantizerOutput:
        """Straight-through like the plain stack; the codebooks are fitted, not trained, so the loss is zero."""
        codes, quantized = self._run(latents, self._check(num_codebooks))
        return QuantizerOutput(latents + (quantized - latents).detach(), codes, latents.new_zeros(()))

    @torch.no_grad()
    def encode(self, latents: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        return self._run(latents, self._check(num_codebooks))[0]

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, n, F) -> latents (B, D, F): the stages' sums are the corrections, and each frame's latents
        are its prediction plus its correction, which unrolls to a first-order filter per dimension,

            latents_t - mean = decay * (latents_{t-1} - mean) + correction_t,

        summed here by doubling: after step j every frame holds its last 2^j corrections, each decayed by its
        age. log2(F) vectorised steps instead of F small ones, and a graph without a loop for ONNX, whose
        export runs `EXPORT_STEPS` steps (any length up to 2^EXPORT_STEPS frames)."""
        corrections = super().dequantize(codes)
        # In float64 (float32 in an ONNX graph): f0 integrates into the oscillator's phase, so float32's rounding,
        # which differs between one call's doubling and a stream's, grew to 2e-3 apart in the audio by 1.4 s.
        filtered = corrections if self.export_friendly else corrections.double()
        decay = self.decay[:, None].to(filtered)
        if self.streaming:  # the frame before, as the first frame's input (offline: none, the mean)
            filtered = torch.cat([filtered[..., :1] + decay * self.state.deviation[..., None], filtered[..., 1:]], -1)
        steps = EXPORT_STEPS if self.export_friendly else max(0, codes.shape[-1] - 1).bit_length()
        for step in range(steps):
            shift = 2 ** step
            filtered = filtered + decay ** shift * nn.functional.pad(filtered, (shift, 0))[..., :-shift]
        if self.streaming and codes.shape[-1]:
            self.state.deviation = filtered[..., -1]
        return (self.mean[:, None] + filtered).to(corrections.dtype)
