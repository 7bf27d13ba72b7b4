"""Plain vector quantizer (VQ-VAE style): a learned codebook, updated only where codes are chosen.

This is the baseline that collapses at large K: codes that are never picked never receive a gradient.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SingleQuantizer


class VectorQuantizer(SingleQuantizer):
    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, seed: int = 0) -> None:
        super().__init__()
        self.codebook_size, self.beta = codebook_size, beta
        generator = torch.Generator().manual_seed(seed)
        # Same scale as SimVQ's initial codebook, so the two start from comparable geometry.
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim, generator=generator) * dim ** -0.5)

    def codebook_parts(self):
        return self.codebook, None, None

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.codebook[ids.clamp(min=0)] * (ids >= 0).unsqueeze(-1)
