"""codec: a neural audio codec toolkit around SimVQ."""
from .config import ModelConfig, QuantizerConfig, SEANetConfig
from .model import Codec
from .weights import load

__all__ = ["Codec", "ModelConfig", "QuantizerConfig", "SEANetConfig", "load"]
__version__ = "0.1.0"
