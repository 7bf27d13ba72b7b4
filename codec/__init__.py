"""codec: a neural audio codec toolkit around SimVQ."""
from .config import ModelConfig, QuantizerConfig, SEANetConfig
from .model import Codec
from .tokendata import TokenDataset
from .weights import load

__all__ = ["Codec", "ModelConfig", "QuantizerConfig", "SEANetConfig", "TokenDataset", "load"]
__version__ = "0.1.0"
