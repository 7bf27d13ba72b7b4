"""Quantizers: SimVQ, the plain VectorQuantizer baseline, and ResidualQuantizer over either."""
from .base import QuantizerOutput, SingleQuantizer
from .residual import ResidualQuantizer
from .search import CodebookIndex, build_index, nearest_code
from .simvq import SimVQ
from .vq import VectorQuantizer

__all__ = ["QuantizerOutput", "SingleQuantizer", "ResidualQuantizer", "CodebookIndex", "build_index",
           "nearest_code", "SimVQ", "VectorQuantizer"]
