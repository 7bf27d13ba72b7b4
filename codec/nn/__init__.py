"""Neural network building blocks, and the encoders and decoders a model configuration names.

ENCODERS and DECODERS map the name in `ModelConfig.encoder` / `ModelConfig.decoder` to a function that builds the
module from the model configuration (its own section: `seanet`, `istft`, `harmonic`, `world`). The layers themselves
take plain arguments. A new decoder is a file here, a config section, and one entry below."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .conv import StreamingConv1d, StreamingConvTranspose1d
from .harmonic import HarmonicDecoder
from .istft import ISTFTDecoder
from .seanet import SEANetDecoder, SEANetEncoder
from .world import WorldDecoder, WorldEncoder
from .streaming import LayerState, StreamingModule, StreamState, bound, streaming


def _seanet_encoder(config) -> SEANetEncoder:
    s = config.seanet
    return SEANetEncoder(s.n_filters, s.ratios, s.num_residual_layers, s.lstm_layers, s.dimension,
                         s.normalize_latents, s.standardize_latents)


def _seanet_decoder(config) -> SEANetDecoder:
    s = config.seanet
    return SEANetDecoder(s.n_filters, s.ratios, s.num_residual_layers, s.lstm_layers, s.dimension)


def _istft_decoder(config) -> ISTFTDecoder:
    d = config.istft
    return ISTFTDecoder(config.seanet.dimension, config.hop_length, d.dim, d.hidden_dim, d.num_layers, d.n_fft,
                        integrate_phase=d.phase == "integrated")


def _harmonic_decoder(config) -> HarmonicDecoder:
    d = config.harmonic
    return HarmonicDecoder(config.seanet.dimension, config.hop_length, d.dim, d.hidden_dim, d.num_layers, d.n_fft,
                           config.sample_rate, d.f0_min, d.f0_max, d.f0_bins)


def _world_encoder(config) -> WorldEncoder:
    return WorldEncoder(config.world, config.hop_length, config.sample_rate)


def _world_decoder(config) -> WorldDecoder:
    return WorldDecoder(config.world, config.hop_length, config.sample_rate)


# name -> builder(ModelConfig); each module maps (B, 1, T) audio to (B, D, F) latents or back, with `hop_length`.
ENCODERS: dict[str, Callable[..., nn.Module]] = {"seanet": _seanet_encoder, "world": _world_encoder}
DECODERS: dict[str, Callable[..., nn.Module]] = {"seanet": _seanet_decoder, "istft": _istft_decoder,
                                                 "harmonic": _harmonic_decoder, "world": _world_decoder}

__all__ = ["StreamingConv1d", "StreamingConvTranspose1d", "StreamingModule", "StreamState", "LayerState", "bound",
           "streaming", "SEANetEncoder", "SEANetDecoder", "ISTFTDecoder", "HarmonicDecoder", "WorldEncoder",
           "WorldDecoder", "ENCODERS", "DECODERS"]
