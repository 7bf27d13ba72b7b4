"""Residual stack of single quantizers, with quantizer dropout so that one model serves several bitrates.

Stage i quantizes what stages 1..i-1 left, carries its own codebook and commitment loss, and passes the
gradient straight through its own quantization. Chained that way, plain stages give the encoder exactly the
identity gradient (the first stage's straight-through; every later residual is x minus something that moves
with x, so its gradient is zero) and only the first stage's commitment reaches the encoder, as in EnCodec.
Factorized stages, whose projections are learned, give the encoder the gradient of the actual path
I - prod(I - out_i in_i) (as in DAC): an identity there would train the encoder as if the decoder saw its
latents, while it sees the sum of the projected codes.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import CodesError
from .base import QuantizerOutput, SingleQuantizer, to_latents, to_vectors


class ResidualQuantizer(nn.Module):
    def __init__(self, stages: list[SingleQuantizer]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    @property
    def num_codebooks(self) -> int:
        return len(self.stages)

    @property
    def codebook_sizes(self) -> list[int]:
        return [stage.codebook_size for stage in self.stages]

    def _check(self, num_codebooks: int | None) -> int:
        n = self.num_codebooks if num_codebooks is None else num_codebooks
        if not 1 <= n <= self.num_codebooks:
            raise ValueError(f"num_codebooks must be between 1 and {self.num_codebooks}, got {n}")
        return n

    def forward(self, latents: torch.Tensor, num_codebooks: int | None = None) -> QuantizerOutput:
        n = self._check(num_codebooks)
        x = to_vectors(latents)
        residual, total, loss, ids = x, torch.zeros_like(x), x.new_zeros(()), []
        for stage in self.stages[:n]:
            stage_ids, quantized, stage_loss = stage.quantize(residual)
            loss = loss + stage_loss
            residual = residual - quantized
            total = total + quantized
            ids.append(stage_ids)
        quantized = total
        codes = torch.stack(ids).view(n, len(latents), -1).transpose(0, 1)
        return QuantizerOutput(to_latents(quantized, len(latents)), codes, loss)

    @torch.no_grad()
    def encode(self, latents: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        n = self._check(num_codebooks)
        residual, ids = to_vectors(latents), []
        for stage in self.stages[:n]:
            stage_ids, codes = stage.lookup(residual)
            residual = residual - codes
            ids.append(stage_ids)
        return torch.stack(ids).view(n, len(latents), -1).transpose(0, 1)

    def check_codes(self, codes: torch.Tensor) -> None:
        """codes (B, n, F), n <= Q; an id of -1 stands for a dropped stage. Any other id outside 0..K-1 is a
        CodesError (too large would be a bare IndexError, -2 would pass for a dropped stage)."""
        self._check(codes.shape[1])
        sizes = torch.tensor(self.codebook_sizes[:codes.shape[1]], device=codes.device)[None, :, None]
        bad = (codes < -1) | (codes >= sizes)
        if bad.any():
            batch, stage, frame = (int(i) for i in bad.nonzero()[0])
            raise CodesError(f"code {int(codes[batch, stage, frame])} at codebook {stage}, frame {frame} is out of "
                             f"range: ids run from 0 to {self.codebook_sizes[stage] - 1} (-1: a dropped stage)")

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, n, F), checked by `check_codes` -> latents (B, D, F); a dropped stage contributes nothing."""
        self.check_codes(codes)
        return self.dequantize(codes)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """`decode` without the check (what an ONNX graph traces): the sum of the stages' vectors (B, D, F)."""
        total = sum(stage.vectors(codes[:, i]) for i, stage in enumerate(self.stages[:codes.shape[1]]))
        return total.transpose(1, 2)
