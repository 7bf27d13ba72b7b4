"""Quantizers: SimVQ, the plain VectorQuantizer baseline, FactorizedQuantizer around either, and
ResidualQuantizer over any of them."""
from .base import QuantizerOutput, SingleQuantizer
from .factorized import FactorizedQuantizer
from .residual import ResidualQuantizer
from .search import CodebookIndex, build_index, nearest_code
from .simvq import SimVQ
from .vq import VectorQuantizer

__all__ = ["FactorizedQuantizer", "QuantizerOutput", "SingleQuantizer", "ResidualQuantizer", "CodebookIndex", "build_index",
           "nearest_code", "SimVQ", "VectorQuantizer"]
