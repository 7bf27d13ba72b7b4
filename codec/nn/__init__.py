"""Neural network building blocks."""
from .conv import StreamingConv1d, StreamingConvTranspose1d, StreamingModule
from .harmonic import HarmonicDecoder
from .istft import ISTFTDecoder
from .seanet import SEANetDecoder, SEANetEncoder

__all__ = ["StreamingConv1d", "StreamingConvTranspose1d", "StreamingModule", "SEANetEncoder", "SEANetDecoder",
           "ISTFTDecoder", "HarmonicDecoder"]
