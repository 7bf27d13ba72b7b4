"""Plain vector quantizer (VQ-VAE style): a learned codebook, updated only where codes are chosen.

This is the baseline that collapses at large K: codes that are never picked never receive a gradient.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import SingleQuantizer, gaussian_fit


class VectorQuantizer(SingleQuantizer):
    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, seed: int = 0) -> None:
        super().__init__()
        self.codebook_size, self.beta = codebook_size, beta
        generator = torch.Generator().manual_seed(seed)
        # Same scale as SimVQ's initial codebook, so the two start from comparable geometry.
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim, generator=generator) * dim ** -0.5)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("scale", torch.tensor(1.0))  # codes = scale * codebook; see SimVQ for why

    def initialize(self, x: torch.Tensor) -> None:
        # The same placement as SimVQ's (a Gaussian fit of the batch), so the baseline differs only in how the
        # codebook learns afterwards: one row at a time, only where it is chosen.
        mean, root = gaussian_fit(x, rank=max(1, math.ceil(math.log2(self.codebook_size))))
        self.scale.fill_((root.square().sum() / len(root)).sqrt().clamp(min=1e-8))  # RMS spread
        self.codebook.copy_((self.codebook * self.codebook.shape[1] ** 0.5 @ root + mean) / self.scale)

    def codebook_parts(self):
        return self.codebook * self.scale, None, None

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.codebook[ids.clamp(min=0)] * self.scale * (ids >= 0).unsqueeze(-1)
