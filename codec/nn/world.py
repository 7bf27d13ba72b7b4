"""The WORLD vocoder's parameters as the latents: an analysis encoder and a decoder that synthesises from them.

Why: the learned encoders' latents do not carry the spectral envelope finely enough for the harmonic decoder
(docs/harmonic-decoder.md: probes reach 0.98 nepers from 6 kbps codes), while the harmonic head driven by WORLD's
own analysis scores far above any decoder we trained on this CPU. Here nothing before the quantizer is learned:
the encoder is WORLD's analysis (Harvest's f0, CheapTrick's envelope, D4C's aperiodicity, each coded to a few
numbers per frame by WORLD's own coders) and the codebooks are fitted to those numbers (`codec.train.codebooks`).
The decoder undoes WORLD's coders with fixed linear maps in the log domain (they are exactly linear there) and
drives the harmonic head's oscillator and noise with the result, so decoding streams like the harmonic decoder's.

Latents per frame, each part scaled by its `WorldConfig` weight: log f0 (interpolated through unvoiced frames,
so that the voiced flag alone decides voicing), the voiced flag (+1 / -1), the coded envelope (`envelope_dims`
mel-cepstral coefficients) and the coded aperiodicity (dB, one value per 3 kHz band below Nyquist).

Frame f is WORLD's analysis at sample (f + 1) hop: the centre of the head's frame-f segment, as for the
harmonic decoder's labels (`codec.train.pitch`). The analysis runs on fixed blocks with a little context
(`WorldEncoder`), so that streaming encoding equals offline encoding, at a latency of a block.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import CodecError
from .harmonic import HarmonicHead
from .streaming import LayerState, StreamingModule

# WORLD's envelopes (CheapTrick's power, split by D4C) and the harmonic head's log-envelopes differ by a constant,
# the excitations' own scale: measured as tools/oracle_envelopes.py matches each part's energy to its share of the
# original's (10 `train` files: -0.18 +- 0.03 nepers for the harmonic part, -0.12 +- 0.05 for the noise).
WORLD_TO_HEAD = (-0.18, -0.12)
NO_APERIODICITY = -60.0  # dB: WORLD's floor (an aperiodicity of 0.001)


def pyworld():
    try:
        import pyworld as module
    except ImportError:
        raise CodecError("WORLD's analysis and synthesis need pyworld: pip install pyworld-prebuilt") from None
    return module


def aperiodicity_bands(sample_rate: int) -> int:
    """D4C's coded bands: one per 3 kHz below min(Nyquist - 3 kHz, 15 kHz) (WORLD's GetNumberOfAperiodicities)."""
    return int(min(15000.0, sample_rate / 2.0 - 3000.0) / 3000.0)


def world_dimension(envelope_dims: int, sample_rate: int) -> int:
    return 2 + envelope_dims + aperiodicity_bands(sample_rate)


def fft_size(sample_rate: int, f0_min: float) -> int:
    """CheapTrick's smallest FFT for an f0 floor (WORLD's GetFFTSizeForCheapTrick)."""
    return 2 ** (1 + int(math.log2(3.0 * sample_rate / f0_min + 1)))


@dataclass
class WorldEncoderState(LayerState):
    buffer: torch.Tensor  # (B, n) float64: the audio from the next block's left context on


class WorldEncoder(StreamingModule):
    """Audio (B, 1, F * hop) -> WORLD's parameters (B, D, F), computed by pyworld in float64, block by block.

    Harvest smooths f0 over all the audio it is given, so a frame's parameters would depend on the whole signal.
    Each block of `block_frames` frames is therefore analysed with `context_frames` of audio on either side and
    nothing more (zeros before the start and after the end), offline as in a stream: a stream's codes equal the
    offline ones, at a latency of block + context. `lookahead_frames` says how many frames of zeros a stream's
    flush must push for the last block to complete. Blocks run on `torch.get_num_threads()` threads (pyworld
    releases the GIL)."""

    traceable = False  # numpy's analysis: no ONNX graph of it

    def __init__(self, config, hop_length: int, sample_rate: int) -> None:
        super().__init__()
        self.config, self.hop_length, self.sample_rate = config, hop_length, sample_rate
        self.lookahead_frames = config.block_frames + config.context_frames
        self.register_buffer("dummy", torch.zeros(0), persistent=False)  # the model's device, for `as_batch`

    @property
    def segment(self) -> int:
        """Samples a block's analysis reads: the block and its context on either side."""
        return (self.config.block_frames + 2 * self.config.context_frames) * self.hop_length

    def init_state(self, batch_size: int) -> WorldEncoderState:
        # the first block's left context lies before the start: zeros, as offline
        return WorldEncoderState(torch.zeros(batch_size, self.config.context_frames * self.hop_length,
                                             dtype=torch.float64, device=self.dummy.device))

    def analyse(self, segment: np.ndarray) -> np.ndarray:
        """One block's `segment` samples (float64) -> its block_frames frames of latents (block_frames, D)."""
        world, c = pyworld(), self.config
        rate = self.sample_rate
        period = 1000.0 * self.hop_length / rate
        told_rate = round(rate * c.pitch_time_scale)  # Harvest takes a whole number of samples per second
        scale = told_rate / rate
        f0, _ = world.harvest(segment, told_rate, f0_floor=c.f0_min * scale, f0_ceil=c.f0_max * scale,
                              frame_period=period / scale)
        f0, times = f0 / scale, np.arange(len(f0)) * period / 1000.0
        if c.stonemask:
            f0 = world.stonemask(segment, f0, times, rate)
        size = fft_size(rate, c.f0_min)
        envelope = world.cheaptrick(segment, f0, times, rate, f0_floor=c.f0_min, fft_size=size)
        aperiodicity = world.d4c(segment, f0, times, rate, fft_size=size)
        coded = world.code_spectral_envelope(np.maximum(envelope, 1e-16), rate, c.envelope_dims)
        bands = world.code_aperiodicity(aperiodicity, rate)
        # frame f of the block is the analysis at sample (f + 1) hop of the block (see the module doc): index
        # context + 1 + f of the segment's track, which starts `context` frames before the block
        take = np.minimum(np.arange(c.block_frames) + c.context_frames + 1, len(f0) - 1)
        f0, coded, bands = f0[take], coded[take], bands[take]
        voiced = f0 > 0
        centre = c.log_f0_centre
        log_f0 = np.log(np.where(voiced, f0, 1.0))
        if voiced.any():
            index = np.arange(len(f0))
            log_f0 = np.interp(index, index[voiced], log_f0[voiced])
        else:
            log_f0 = np.full(len(f0), centre)
        return np.concatenate([((log_f0 - centre) * c.f0_weight)[:, None],
                               ((2.0 * voiced - 1.0) * c.voicing_weight)[:, None],
                               coded, bands * c.aperiodicity_weight], axis=1)

    def blocks(self, audio: np.ndarray, count: int) -> np.ndarray:
        """(B, n) float64 audio that starts at a block's left context and holds `count` whole segments' worth ->
        (B, count * block_frames, D), the blocks analysed on threads."""
        step = self.config.block_frames * self.hop_length
        jobs = [np.ascontiguousarray(row[k * step:k * step + self.segment]) for row in audio for k in range(count)]
        with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
            frames = list(pool.map(self.analyse, jobs))
        return np.stack([np.concatenate(frames[i * count:(i + 1) * count]) for i in range(len(audio))])

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        audio = audio.detach().reshape(audio.shape[0], -1).double()
        c, hop, step = self.config, self.hop_length, self.config.block_frames * self.hop_length
        if self.streaming:
            buffer = torch.cat([self.state.buffer, audio.to(self.state.buffer)], dim=-1)
            count = max(0, (buffer.shape[-1] - self.segment) // step + 1)
            self.state.buffer = buffer[:, count * step:]
            latents = self.blocks(buffer.cpu().numpy(), count) if count else np.zeros((len(audio), 0, 1))
        else:
            frames = audio.shape[-1] // hop
            count = -(-frames // c.block_frames)
            padded = nn.functional.pad(audio, (c.context_frames * hop, count * step + self.segment - step -
                                               c.context_frames * hop - audio.shape[-1]))
            latents = self.blocks(padded.cpu().numpy(), count)[:, :frames]
        if latents.shape[1] == 0:
            return torch.zeros(len(audio), world_dimension(c.envelope_dims, self.sample_rate), 0,
                               device=self.dummy.device)
        return torch.from_numpy(latents).float().transpose(1, 2).to(self.dummy.device)


class WorldHead(HarmonicHead):
    """WORLD's parameters (B, D, F) -> audio (B, 1, F * hop): the harmonic head's oscillator and noise, shaped
    by WORLD's envelopes instead of predicted ones (so without the harmonic head's prediction layers)."""

    def __init__(self, config, hop_length: int, sample_rate: int) -> None:
        super().__init__(1, config.n_fft, hop_length, sample_rate, config.f0_min, config.f0_max, 2)
        del self.linear, self.pitch  # nothing is predicted: the latents are the parameters
        self.config = config
        envelope_map, band_map = self.decoding_maps(config, sample_rate, config.n_fft // 2 + 1)
        self.register_buffer("envelope_map", envelope_map, persistent=False)  # (dims + 1, bins): log power
        self.register_buffer("band_map", band_map, persistent=False)          # (bands + 1, bins): dB

    @staticmethod
    def decoding_maps(config, sample_rate: int, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
        """WORLD's decoders of the coded envelope and aperiodicity, as affine maps onto the head's bins: the
        natural-log power envelope and the aperiodicity in dB are exactly affine in the coded values (a DCT and
        interpolations), so each map is read off WORLD's decoder at zero and at each unit vector; the last row
        is the constant. Then resampled linearly from WORLD's bins to the head's, both spanning 0 .. Nyquist."""
        world, size = pyworld(), fft_size(sample_rate, config.f0_min)
        dims, bands = config.envelope_dims, aperiodicity_bands(sample_rate)
        basis = np.vstack([np.zeros(dims), np.eye(dims)])
        envelope = np.log(world.decode_spectral_envelope(np.ascontiguousarray(basis), sample_rate, size))
        base = np.full((bands + 1, bands), -20.0) + np.vstack([np.zeros(bands), np.eye(bands)])
        band = 20 * np.log10(world.decode_aperiodicity(np.ascontiguousarray(base), sample_rate, size))
        theirs, ours = np.linspace(0, 1, size // 2 + 1), np.linspace(0, 1, bins)

        def affine(values: np.ndarray, origin: np.ndarray) -> torch.Tensor:
            rows = np.vstack([values[1:] - values[:1], values[:1] - origin @ (values[1:] - values[:1])])
            return torch.from_numpy(np.stack([np.interp(ours, theirs, row) for row in rows]))
        return affine(envelope, np.zeros(dims)), affine(band, np.full(bands, -20.0))

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        c, dims = self.config, self.config.envelope_dims
        latents = x.transpose(1, 2).double()
        f0 = torch.exp(latents[..., 0] / c.f0_weight + c.log_f0_centre)
        f0 = f0.clamp(c.f0_min, c.f0_max)
        voiced = (latents[..., 1] > 0)[..., None]
        coded = latents[..., 2:2 + dims].clone()
        coded[..., 2:] *= c.postfilter
        ones = torch.ones_like(latents[..., :1])
        log_power = torch.cat([coded, ones], -1) @ self.envelope_map
        bands = latents[..., 2 + dims:] / c.aperiodicity_weight
        decibels = (torch.cat([bands, ones], -1) @ self.band_map).clamp(NO_APERIODICITY, 0.0)
        share = (10 ** (decibels / 10)).clamp(max=1 - 1e-12)  # the aperiodic share of the power, ap^2
        harmonic = torch.where(voiced, 0.5 * (log_power + torch.log1p(-share)) + WORLD_TO_HEAD[0], -30.0)
        noise = 0.5 * (log_power + torch.where(voiced, torch.log(share), 0.0)) + WORLD_TO_HEAD[1]
        return self.synthesise(f0, harmonic.exp().float(), noise.exp().float())


class WorldDecoder(nn.Module):
    """WORLD's parameters (B, D, F) -> waveform (B, 1, F * hop_length)."""

    def __init__(self, config, hop_length: int, sample_rate: int) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.head = WorldHead(config, hop_length, sample_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)
