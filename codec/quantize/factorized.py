"""Factorized codes (as in DAC): project each latent into a few dimensions, search there by angle, project back.

Why it exists: our first bundled models searched SimVQ codes in the full 128-dimensional latent space with a
full-rank basis and used 1-50 of 1024 codes per stage: in high dimensions random codes suffer from hubness (the
few codes nearest the centre are everyone's nearest neighbour). In 8 dimensions, on the unit sphere, 1024 codes
tile the space and the search spreads over them.

What we learnt since, and why the bundled model no longer uses it: the codebook loss lives in the small space,
so nothing asks project_out(code) to approximate the residual, and in a residual stack it did not: on a trained
checkpoint the latents' relative residual energy was 1.13 after one stage and 2.73 after eight (each stage
added error, so later codebooks carried almost nothing and 1.5 and 6 kbps sounded the same). A SimVQ with a
low-rank basis (`basis_dim` = 8, no `code_dim`) has the same codes, project_out(C W^T + b), searches them by
distance in the latent space, and trains them there: 0.09 after eight stages on the same latents. Kept for the
bundled model's lineage (`recipes/low-latency/unfactorize.py` converts one into the other) and as DAC's scheme.

Gradients: the straight-through estimator acts in the small space, so the projections and the encoder get the
reconstruction gradient through both projections; the inner codebook learns from its codebook loss as before.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SingleQuantizer, vq_loss
from .search import nearest_code


class FactorizedQuantizer(SingleQuantizer):
    def __init__(self, dim: int, code_dim: int, inner: SingleQuantizer) -> None:
        super().__init__()
        self.inner = inner
        self.codebook_size, self.beta = inner.codebook_size, inner.beta
        self.project_in = nn.Linear(dim, code_dim)
        self.project_out = nn.Linear(code_dim, dim)

    @property
    def initialized(self) -> torch.Tensor:  # the trainer's refits reset the inner codebook's flag
        return self.inner.initialized

    def codebook_parts(self):
        # Search by angle: the nearest unit code to a unit query. K x code_dim is small, so materialise it.
        ids = torch.arange(self.codebook_size, device=self.inner.initialized.device)
        return F.normalize(self.inner.vectors(ids), dim=1), None, None

    def _find(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Small-space queries z (N, code_dim) -> ids, inner code vectors (with the codebook's gradient)."""
        if self.training and not self.initialized:
            with torch.no_grad():
                self.inner.initialize(z.detach().float())
            self.inner.initialized.fill_(True)
        ids = nearest_code(F.normalize(z.detach().float(), dim=1), self.search_index())
        return ids, self.inner.vectors(ids)

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, codes = self._find(self.project_in(x))
        return ids, self.project_out(codes)

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.project_in(x)
        ids, codes = self._find(z)
        return ids, self.project_out(z + (codes - z).detach()), vq_loss(z, codes, self.beta)

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.inner.vectors(ids)) * (ids >= 0).unsqueeze(-1)
