"""Turn a trained inverse-STFT model into a harmonic-decoder model to train on (stage 7 of the low-latency recipe).

    python recipes/low-latency/to_harmonic.py codec/pretrained/low-latency.safetensors runs/harmonic-init.safetensors

The two decoders share their ConvNeXt backbone, and their heads have the same shape: the inverse-STFT head's
linear layer predicts n_fft/2 + 1 log-magnitudes and as many phases, the harmonic head's a harmonic and a noise
log-envelope. The backbone and the encoder and quantizer are copied; both envelopes start from the trained
log-magnitude rows, shifted by the level of the excitation they will shape (a unit-power pulse train or noise,
windowed: about e^2.7 per bin), the noise part lower than the harmonic one; the f0 and voicing head starts fresh.
Scored with oracle f0 (the pitch labels driving the oscillator) before any training, on 4 `eval` files, the
shifts below came closest to the inverse-STFT model (PESQ 1.487 against 1.499; -2.7/-2.7: 1.267; -2.4/-4.0: 1.422).
"""
import argparse
import copy

import torch

from codec.config import HarmonicDecoderConfig
from codec.model import Codec
from codec.weights import load_weights, save_weights

HARMONIC_SHIFT, NOISE_SHIFT = -1.8, -4.0  # added to the log-magnitude bias


def to_harmonic(source: Codec) -> Codec:
    config = copy.deepcopy(source.config)
    istft = config.istft
    config.decoder = "harmonic"
    config.harmonic = HarmonicDecoderConfig(dim=istft.dim, hidden_dim=istft.hidden_dim,
                                            num_layers=istft.num_layers, n_fft=istft.n_fft)
    torch.manual_seed(0)  # the fresh f0 and voicing head
    target = Codec.from_config(config)
    target.encoder.load_state_dict(source.encoder.state_dict())
    target.quantizer.load_state_dict(source.quantizer.state_dict())
    missing = target.decoder.load_state_dict(source.decoder.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["head.pitch.bias", "head.pitch.weight"], missing
    bins = istft.n_fft // 2 + 1
    linear = source.decoder.head.linear
    with torch.no_grad():
        for rows, shift in ((slice(0, bins), HARMONIC_SHIFT), (slice(bins, 2 * bins), NOISE_SHIFT)):
            target.decoder.head.linear.weight[rows] = linear.weight[:bins]
            target.decoder.head.linear.bias[rows] = linear.bias[:bins] + shift
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="weights of a model with the inverse-STFT decoder")
    parser.add_argument("out", help="weights file to write")
    args = parser.parse_args()
    save_weights(to_harmonic(load_weights(args.source, for_training=True)), args.out)
