"""Neural network building blocks."""
from .conv import StreamingConv1d, StreamingConvTranspose1d
from .harmonic import HarmonicDecoder
from .istft import ISTFTDecoder
from .seanet import SEANetDecoder, SEANetEncoder
from .streaming import LayerState, StreamingModule, StreamState, bound, streaming

__all__ = ["StreamingConv1d", "StreamingConvTranspose1d", "StreamingModule", "StreamState", "LayerState", "bound",
           "streaming", "SEANetEncoder", "SEANetDecoder", "ISTFTDecoder", "HarmonicDecoder"]
