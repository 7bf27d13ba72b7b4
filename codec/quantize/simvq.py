"""SimVQ (Zhu et al., arXiv 2411.02038): a frozen random basis C and one learned linear map W with bias.

Codes are C W^T + b, so every gradient step on W moves the whole codebook and no code is left behind. Following
the paper's pitfalls: W is trained only by the codebook term of the loss (never drop it), decoding applies W and b
(the reference `get_codebook_entry` forgets to), and the gradient path gathers the chosen rows of C before
projecting them, so the K x D codebook never carries a gradient.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SingleQuantizer


class SimVQ(SingleQuantizer):
    def __init__(self, dim: int, codebook_size: int, basis_dim: int | None = None, beta: float = 0.25,
                 seed: int = 0) -> None:
        super().__init__()
        basis_dim = basis_dim or dim
        self.codebook_size, self.beta = codebook_size, beta
        generator = torch.Generator().manual_seed(seed)
        # N(0, 1/Dc) rows have norm ~1; a buffer, not a parameter, so no optimizer or gradient ever touches it.
        self.register_buffer("basis", torch.randn(codebook_size, basis_dim, generator=generator) * basis_dim ** -0.5)
        self.projection = nn.Linear(basis_dim, dim)

    def codebook_parts(self):
        return self.basis, self.projection.weight, self.projection.bias

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.projection(self.basis[ids.clamp(min=0)]) * (ids >= 0).unsqueeze(-1)
