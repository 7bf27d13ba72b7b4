"""Quantizers: SimVQ, the plain VectorQuantizer baseline, FactorizedQuantizer around either, and
ResidualQuantizer over any of them (PredictiveQuantizer: with a prediction from the previous frame). QUANTIZERS
maps `QuantizerConfig.kind` to one stage's class; `build_quantizer` stacks the stages a configuration asks for."""
from __future__ import annotations

from collections.abc import Callable

from .base import QuantizerOutput, SingleQuantizer
from .factorized import FactorizedQuantizer
from .predictive import PredictiveQuantizer
from .residual import ResidualQuantizer
from .search import CodebookIndex, build_index, nearest_code
from .simvq import SimVQ
from .vq import VectorQuantizer

# kind -> builder(dim, quantizer config, seed) of one stage
QUANTIZERS: dict[str, Callable[..., SingleQuantizer]] = {
    "simvq": lambda dim, q, seed: SimVQ(dim, q.codebook_size, q.basis_dim, q.beta, seed=seed),
    "vq": lambda dim, q, seed: VectorQuantizer(dim, q.codebook_size, q.beta, seed=seed),
}


def build_quantizer(latent_dim: int, config) -> ResidualQuantizer:
    """A residual stack of `config.num_codebooks` stages of `config.kind` (a `QuantizerConfig`), each searching
    in `config.code_dim` dimensions when set (factorized) or in the latents' own."""
    stage = QUANTIZERS[config.kind]
    stages = [stage(config.code_dim or latent_dim, config, config.seed + i) for i in range(config.num_codebooks)]
    if config.code_dim:
        stages = [FactorizedQuantizer(latent_dim, config.code_dim, s) for s in stages]
    if config.prediction:
        return PredictiveQuantizer(stages, latent_dim, config.search_beams, config.search_frames,
                                   config.search_weights)
    return ResidualQuantizer(stages)


__all__ = ["FactorizedQuantizer", "PredictiveQuantizer", "QuantizerOutput", "SingleQuantizer", "ResidualQuantizer",
           "CodebookIndex", "build_index", "nearest_code", "SimVQ", "VectorQuantizer", "QUANTIZERS", "build_quantizer"]
