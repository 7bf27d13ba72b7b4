"""SimVQ (Zhu et al., arXiv 2411.02038): a frozen random basis C and one learned linear map W with bias.

Codes are C W^T + b, so every gradient step on W moves the whole codebook and no code is left behind. Following
the paper's pitfalls: W is trained only by the codebook term of the loss (never drop it), decoding applies W and b
(the reference `get_codebook_entry` forgets to), and the gradient path gathers the chosen rows of C before
projecting them, so the K x D codebook never carries a gradient.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import SingleQuantizer, gaussian_fit


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
        self.register_buffer("initialized", torch.tensor(False))
        # Codes are scale * (C W^T + b) with `scale` fixed at initialisation. Adam moves every weight by about
        # the learning rate per step whatever its size; latents here have a spread of ~0.05, which would make
        # W's entries ~0.005 and each step change them by 10 % or more, scrambling the codebook (seen in
        # practice). With the scale factored out, W's entries are O(1 / sqrt(D)) like any other layer's.
        self.register_buffer("scale", torch.tensor(1.0))

    def initialize(self, x: torch.Tensor) -> None:
        # Fit the codes to the batch's mean and covariance: basis rows are N(0, I / Dc), so an orthonormal
        # map scaled by sqrt(Dc) makes them N(0, I), and the covariance root shapes them like the data.
        basis_dim = self.basis.shape[1]
        rank = max(1, min(basis_dim, math.ceil(math.log2(self.codebook_size))))
        mean, root = gaussian_fit(x, rank=rank)
        self.scale.fill_((root.square().sum() / len(root)).sqrt().clamp(min=1e-8))  # RMS spread
        # Orthonormal columns Q (D, Dc) that span the fitted directions first, then W's random ones: root Q Q^T
        # = root, so codes C (root Q)^T follow the batch's covariance whether the basis is as wide as the latents
        # or narrower (a low-rank SimVQ, Dc < D).
        directions = torch.linalg.eigh(root.double())[1].flip(1)[:, :rank].float()
        orthonormal = torch.linalg.qr(torch.cat([directions, self.projection.weight], 1))[0][:, :basis_dim]
        self.projection.weight.copy_(root @ orthonormal * basis_dim ** 0.5 / self.scale)
        self.projection.bias.copy_(mean / self.scale)

    def codebook_parts(self):
        return self.basis, self.projection.weight * self.scale, self.projection.bias * self.scale

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.projection(self.basis[ids.clamp(min=0)]) * self.scale * (ids >= 0).unsqueeze(-1)
