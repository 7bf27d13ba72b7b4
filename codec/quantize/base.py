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


def _all_ranks_mean(value: torch.Tensor) -> torch.Tensor:
    """Average over processes, so that every rank fits its codebook to the same statistics."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= torch.distributed.get_world_size()
    return value


def gaussian_fit(x: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and a rank-`rank` covariance square root of the rows of x (N, D), averaged over processes.

    Codes drawn as mean + z @ root with z ~ N(0, I) then follow the data's mean and its `rank` main directions.
    Why not the full covariance: random codes in many dimensions suffer from hubness, where the few codes
    nearest the centre are the nearest neighbours of almost every query (we saw 1-5 codes of 1024 in use).
    In about log2(K) dimensions, K random codes tile the space and nearest neighbours spread over them."""
    mean = _all_ranks_mean(x.mean(0))
    centred = x - mean
    covariance = _all_ranks_mean(centred.T @ centred / max(1, len(x) - 1))
    values, vectors = torch.linalg.eigh(covariance.double())
    values, vectors = values[-rank:].clamp(min=0), vectors[:, -rank:]
    return mean, ((vectors * values.sqrt()) @ vectors.T).float()


class SingleQuantizer(nn.Module):
    """A codebook of `codebook_size` vectors of size `dim`; subclasses define `codebook_parts` and `vectors`."""

    codebook_size: int
    beta: float
    initialized: torch.Tensor  # bool buffer, saved with the weights so a resumed run does not refit
    _index: CodebookIndex | None = None
    _index_key: tuple | None = None

    def codebook_parts(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(basis, transform, bias) such that code j = transform @ basis[j] + bias (see `search`)."""
        raise NotImplementedError

    def search_index(self) -> CodebookIndex:
        # The codebook only changes when the optimizer steps; cache its index until a tensor's version moves.
        state = list(self.parameters()) + list(self.buffers())
        key = tuple((t._version, t.data_ptr(), t.dtype) for t in state)
        if self._index is None or key != self._index_key:
            certificate = self._index.certificate if self._index is not None else None
            self._index = None  # free it first: at large K it is as big as the codebook
            self._index = build_index(*self.codebook_parts(), bounds=certificate and certificate.bounds)
            self._index_key = key
        return self._index

    def initialize(self, x: torch.Tensor) -> None:
        """Fit the codebook to the first training batch `x` (N, D); subclasses say how."""
        raise NotImplementedError

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) -> ids (N,), code vectors (N, D) carrying gradients to the codebook parameters."""
        # A codebook far from the data collapses: if every code is farther from the latents than their own
        # spread, one code wins everything and the encoder shrinks towards it (seen in our first bundled run:
        # one code per stage after 600 steps). So the first training batch places the codebook on the data.
        if self.training and not self.initialized:
            with torch.no_grad():
                self.initialize(x.detach().float())
            self.initialized.fill_(True)
        ids = nearest_code(x, self.search_index())
        return ids, self.vectors(ids)

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors for ids (any shape) -> (..., D)."""
        raise NotImplementedError

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, D) -> ids, quantized vectors with a straight-through gradient to x, and the loss."""
        ids, codes = self.lookup(x)
        return ids, x + (codes - x).detach(), vq_loss(x, codes, self.beta)

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        ids, quantized, loss = self.quantize(to_vectors(latents))
        return QuantizerOutput(to_latents(quantized, len(latents)), ids.view(len(latents), 1, -1), loss)

    @torch.no_grad()
    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.lookup(to_vectors(latents))[0].view(len(latents), 1, -1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vectors(codes[:, 0]).transpose(1, 2)
