"""The interface every quantizer shares: latents (B, D, F) in, codes (B, Q, F) and quantized latents out."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .search import CodebookIndex, build_index, nearest_code


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, D, F), straight-through: gradients reach the encoder unchanged
    codes: torch.Tensor      # (B, Q, F) int64
    loss: torch.Tensor       # scalar: codebook + beta * commitment, summed over stages


def to_vectors(latents: torch.Tensor) -> torch.Tensor:
    """(B, D, F) -> (B * F, D)"""
    return latents.transpose(1, 2).reshape(-1, latents.shape[1])


def to_latents(vectors: torch.Tensor, batch: int) -> torch.Tensor:
    """(B * F, D) -> (B, D, F)"""
    return vectors.reshape(batch, -1, vectors.shape[1]).transpose(1, 2)


def vq_loss(inputs: torch.Tensor, codes: torch.Tensor, beta: float) -> torch.Tensor:
    """||q - sg(z)||^2 trains the codebook (for SimVQ: the only signal W gets); beta ||sg(q) - z||^2 the encoder."""
    codebook = torch.mean((codes - inputs.detach()) ** 2)
    commitment = torch.mean((codes.detach() - inputs) ** 2)
    return codebook + beta * commitment


class SingleQuantizer(nn.Module):
    """A codebook of `codebook_size` vectors of size `dim`; subclasses define `codebook_parts` and `vectors`."""

    codebook_size: int
    beta: float
    _index: CodebookIndex | None = None
    _index_key: tuple | None = None

    def codebook_parts(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(basis, transform, bias) such that code j = transform @ basis[j] + bias (see `search`)."""
        raise NotImplementedError

    def search_index(self) -> CodebookIndex:
        # The codebook only changes when the optimizer steps; cache its index until a tensor's version moves.
        parts = [t for t in self.codebook_parts() if t is not None]
        key = tuple((t._version, t.data_ptr(), t.dtype) for t in parts)
        if self._index is None or key != self._index_key:
            self._index = build_index(*self.codebook_parts())
            self._index_key = key
        return self._index

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) -> ids (N,), code vectors (N, D) carrying gradients to the codebook parameters."""
        ids = nearest_code(x, self.search_index())
        return ids, self.vectors(ids)

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors for ids (any shape) -> (..., D)."""
        raise NotImplementedError

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        x = to_vectors(latents)
        ids, codes = self.lookup(x)
        quantized = x + (codes - x).detach()
        return QuantizerOutput(to_latents(quantized, len(latents)), ids.view(len(latents), 1, -1),
                               vq_loss(x, codes, self.beta))

    @torch.no_grad()
    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.lookup(to_vectors(latents))[0].view(len(latents), 1, -1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vectors(codes[:, 0]).transpose(1, 2)
