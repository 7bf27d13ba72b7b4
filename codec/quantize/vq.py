"""Plain vector quantizer (VQ-VAE style): a learned codebook, updated only where codes are chosen.

This is the baseline that collapses at large K: codes that are never picked never receive a gradient.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SingleQuantizer
from .search import CodebookIndex, build_index, nearest_code


class VectorQuantizer(SingleQuantizer):
    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, seed: int = 0) -> None:
        super().__init__()
        self.codebook_size, self.beta = codebook_size, beta
        generator = torch.Generator().manual_seed(seed)
        # Same scale as SimVQ's initial codebook, so the two start from comparable geometry.
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim, generator=generator) * dim ** -0.5)
        self._index: CodebookIndex | None = None
        self._index_key: tuple | None = None

    def search_index(self) -> CodebookIndex:
        key = (self.codebook._version, self.codebook.data_ptr(), self.codebook.dtype)
        if self._index is None or key != self._index_key:
            self._index = build_index(self.codebook)
            self._index_key = key
        return self._index

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = nearest_code(x, self.search_index())
        return ids, self.vectors(ids)

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.codebook[ids.clamp(min=0)] * (ids >= 0).unsqueeze(-1)
