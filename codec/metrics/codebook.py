"""How a model uses its codebooks over a whole set: utilization, entropy, perplexity, and what they mean in bits.

Counts are pooled over every frame of every file before any statistic is taken: a per-file average would
understate entropy (short files see few codes) and hide codes that only some speakers use.
The nominal bitrate is what the token stream costs with fixed-length codes (frames/s x sum of log2 K); the
effective bitrate is what an ideal entropy coder would need for the same stream, coding each codebook's
symbols independently (frames/s x sum of entropies), a lower bound that shows how much of the nominal
bitrate the model actually uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class CodebookStats:
    index: int
    size: int               # K, the number of codes
    used: int               # codes seen at least once
    utilization: float      # used / K
    entropy_bits: float     # of the empirical code distribution
    perplexity: float       # 2 ** entropy: the number of equally likely codes with the same entropy


class CodeCounter:
    """Accumulates how often each code of each codebook occurs."""

    def __init__(self, codebook_sizes: list[int]) -> None:
        self.counts = [np.zeros(k, dtype=np.int64) for k in codebook_sizes]

    def add(self, codes: torch.Tensor) -> None:
        """Codes (Q, F) or (B, Q, F) for the first Q codebooks."""
        codes = torch.as_tensor(codes)
        codes = codes.reshape(-1, *codes.shape[-2:]).transpose(0, 1).reshape(codes.shape[-2], -1)
        for counts, row in zip(self.counts, codes.cpu().numpy()):
            counts += np.bincount(row, minlength=len(counts))

    def stats(self) -> list[CodebookStats]:
        return [_stats(i, counts) for i, counts in enumerate(self.counts) if counts.sum()]


def _stats(index: int, counts: np.ndarray) -> CodebookStats:
    probabilities = counts[counts > 0] / counts.sum()
    entropy = float(-(probabilities * np.log2(probabilities)).sum())
    used = int((counts > 0).sum())
    return CodebookStats(index, len(counts), used, used / len(counts), entropy, 2.0 ** entropy)


def nominal_bitrate(frame_rate: float, stats: list[CodebookStats]) -> float:
    return frame_rate * sum(math.log2(s.size) for s in stats)


def effective_bitrate(frame_rate: float, stats: list[CodebookStats]) -> float:
    return frame_rate * sum(s.entropy_bits for s in stats)
