"""codec: a neural audio codec toolkit around SimVQ."""
import os

# Before torch loads OpenMP, which reads this once: threads that sleep at a barrier instead of spinning. With
# spinning threads, a core taken by another job slowed an encode 6 to 15 times (docs/hardening.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import ModelConfig, QuantizerConfig, SEANetConfig
from .model import Codec
from .weights import load
from .tokendata import TokenDataset

__all__ = ["Codec", "ModelConfig", "QuantizerConfig", "SEANetConfig", "TokenDataset", "load"]
__version__ = "0.1.0"
