"""A source-filter decoder: an explicit f0 drives a harmonic-plus-noise excitation that learned envelopes shape.

Why: the inverse-STFT decoder (`istft.py`) has to invent every harmonic's magnitude and phase frame by frame; on
this CPU budget it learns the spectral envelope well but smears harmonics above ~1.5 kHz into noise. Here the
network only predicts smooth quantities per frame (f0, voicing, a harmonic envelope and a noise envelope, as the
WORLD vocoder or DDSP do) and an oscillator supplies the fine structure: harmonics sit exactly at multiples of
f0 whatever the network has learned about phase.

How (DDSP style, in the STFT domain): the same causal ConvNeXt backbone as `ISTFTDecoder`, then per frame f
- f0 (log-scaled between f0_min and f0_max) and a voicing logit, which training supervises with pitch labels;
- a band-limited pulse train: per-sample f0 ramps linearly from frame f-1's value to frame f's over the hop, and
  the phase is the running sum of 2 pi f0 / sr; the harmonics k f0 below Nyquist are summed in closed form
  (Dirichlet kernel), so nothing aliases;
- a noise sequence read from a fixed table at the absolute sample position.
Frame f's segment of each (samples [f hop, f hop + n_fft), the framing `ISTFTHead` synthesises) is windowed,
taken to the spectrum, multiplied by its envelope (the harmonic one gated by the voicing probability), summed and
overlap-added by `ISTFTHead`. Past the first hop a segment holds frame f's f0, since frame f+1 is not known yet.

Why not Wavehax's way (the excitation's STFT as an extra backbone input): that needs an analysis STFT of the
excitation that reaches only into the past, plus a second streaming path; here the excitation enters only in the
head, whose framing and overlap-add already stream exactly. The oscillator sees f0 without gradient: gradients of
a reconstruction loss through an oscillator's phase are notoriously misleading, so f0 learns from its labels.

Streaming state (`HarmonicState`: the parent's overlap and position, plus): the oscillator's running phase at the
next frame's start (float64, so an hour of audio keeps it exact) and the last frame's f0, which the next frame's
ramp starts from (0 before the first frame: the first frame's ramp is flat, as offline). The noise is read at the
state's position, so streams batched together each continue their own noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .istft import HeadState, ISTFTDecoder, ISTFTHead

NOISE_TABLE = 2 ** 17  # samples: 5.5 s at 24 kHz before the noise repeats


@dataclass
class HarmonicState(HeadState):
    oscillator: torch.Tensor  # (B,) float64: the pulse train's phase at the next frame's first sample
    last_f0: torch.Tensor     # (B,) float64 Hz: the previous frame's f0; 0 before the first frame


@dataclass
class PitchPrediction:
    """The last call's pitch: log-f0 (float64: what drove the oscillator, unless teacher-forced) and the voicing
    logit, each (B, F), the f0 head's logits over its bins (B, F, bins) and the bins' log-f0 (bins,); and the
    harmonic and noise natural-log envelopes that shaped it, each (B, F, n_fft / 2 + 1)."""
    log_f0: torch.Tensor
    voicing: torch.Tensor
    bin_logits: torch.Tensor
    bin_log_f0: torch.Tensor
    log_harmonic: torch.Tensor | None = None
    log_noise: torch.Tensor | None = None


def pulse_train(phase: torch.Tensor, harmonics: torch.Tensor) -> torch.Tensor:
    """sum_{k=1..K} cos(k phase), K = `harmonics` (same shape), in closed form: sin((K + 1/2) p) / (2 sin(p / 2))
    - 1/2, whose limit at p = 0 (mod 2 pi) is K."""
    half = torch.sin(phase / 2)
    near_zero = half.abs() < 1e-9
    value = torch.sin((harmonics + 0.5) * phase) / (2 * torch.where(near_zero, torch.ones_like(half), half)) - 0.5
    return torch.where(near_zero, harmonics, value)


class HarmonicHead(ISTFTHead):
    """Frame features (B, dim, F) -> audio (B, 1, F * hop), synthesised from f0, voicing and two envelopes.

    `self.linear` (the parent's) predicts the harmonic and the noise log-envelopes (n_fft / 2 + 1 bins each);
    `self.pitch` predicts logits over `f0_bins` log-spaced f0 values and the voicing logit. The last offline or
    streaming call's predictions are kept in `prediction` for the training losses.

    Why classes, not a regression of log-f0: the oscillator adds f0 up into its phase for as long as a stream
    lasts, so f0 must be the same whichever way the codes are chunked, and the backbone's float32 features are
    not (a convolution or matrix product rounds differently for different lengths: ~1e-6 on the bundled model).
    A regressed f0 carried that into a phase drift (7e-5 in the audio after 5 s); the centre of the strongest
    bin does not move unless two logits tie within the rounding. A classification also learns pitch faster
    (measured: median error 49 cents after 600 steps against 82 after 1,600 for a regression, recipes/low-latency) and
    picks one octave where a regression can land between two, as CREPE's does."""

    def __init__(self, dim: int, n_fft: int, hop_length: int, sample_rate: int, f0_min: float,
                 f0_max: float, f0_bins: int) -> None:
        super().__init__(dim, n_fft, hop_length)
        self.sample_rate = sample_rate
        self.pitch = nn.Linear(dim, f0_bins + 1)  # the last output is the voicing logit
        self.register_buffer("bin_log_f0", torch.linspace(math.log(f0_min), math.log(f0_max), f0_bins,
                                                          dtype=torch.float64), persistent=False)
        # Envelopes start small: unit harmonics and unit noise through a flat envelope of 1 would be far too loud.
        nn.init.constant_(self.linear.bias, -4.0)
        ramp = torch.ones(n_fft, dtype=torch.float64)
        ramp[:hop_length] = torch.arange(1, hop_length + 1, dtype=torch.float64) / hop_length
        self.register_buffer("ramp", ramp, persistent=False)
        generator = torch.Generator().manual_seed(0)  # fixed: a loaded model makes the same noise
        self.register_buffer("noise", torch.randn(NOISE_TABLE, generator=generator), persistent=False)
        self.prediction: PitchPrediction | None = None
        # Teacher forcing: f0 in Hz per frame (B, F), 0 where unvoiced, that the oscillator follows on voiced
        # frames instead of the f0 head (training, and measuring what a perfect f0 head would give).
        self.given_f0: torch.Tensor | None = None
        # Teacher synthesis: natural-log harmonic and noise envelopes (B, F, bins) used instead of the predicted
        # ones, the harmonic one ungated (training targets made from an analysis of the original).
        self.given_envelopes: tuple[torch.Tensor, torch.Tensor] | None = None

    def predict_pitch(self, features: torch.Tensor) -> PitchPrediction:
        """(B, F, dim) -> the pitch prediction; f0 is the centre of the strongest bin (in float64, as the
        oscillator adds it up)."""
        out = nn.functional.linear(features.double(), self.pitch.weight.double(), self.pitch.bias.double())
        logits, voicing = out[..., :-1], out[..., -1]
        return PitchPrediction(self.bin_log_f0[logits.argmax(-1)], voicing.float(), logits.float(), self.bin_log_f0)

    def excitation(self, f0: torch.Tensor) -> torch.Tensor:
        """f0 (B, F) in Hz -> each frame's band-limited pulse-train segment (B, F, n_fft), phase-continuous
        across frames and across streaming calls."""
        f0 = f0.double()
        previous = f0[:, :1]
        if self.streaming:
            # f0 is never below f0_min > 0, so 0 marks a fresh stream (zeros: what an ONNX host starts from)
            previous = torch.where(self.state.last_f0[:, None] > 0, self.state.last_f0[:, None], previous)
        start = torch.cat([previous, f0[:, :-1]], dim=1)
        per_sample = start[..., None] + (f0 - start)[..., None] * self.ramp  # (B, F, n_fft)
        increment = 2 * torch.pi * per_sample / self.sample_rate
        within = increment.cumsum(-1) - increment  # phase at sample j of a segment, from the segment's start
        advance = increment[..., :self.hop].sum(-1)  # how far the phase turns over a frame's own hop
        frame_start = advance.cumsum(1) - advance
        if self.streaming:  # a fresh stream's phase is zero, as offline
            frame_start = frame_start + self.state.oscillator[:, None]
        frame_start = torch.remainder(frame_start, 2 * torch.pi)
        if self.streaming:
            self.state.oscillator = torch.remainder(frame_start[:, -1] + advance[:, -1], 2 * torch.pi)
            self.state.last_f0 = f0[:, -1]
        phase = torch.remainder(frame_start[..., None] + within, 2 * torch.pi)
        nyquist = self.sample_rate / 2
        harmonics = (torch.ceil(nyquist / per_sample) - 1).clamp(min=0)  # k f0 < Nyquist, strictly
        # Unit power, as the noise has: each harmonic's amplitude grows as sqrt(f0), as it does for a voice whose
        # spectral envelope (power per Hz) stays put while f0 moves. Unnormalised, 100 unit harmonics drowned
        # the noise at initialisation and the reconstruction loss shut the voicing gate (measured: every frame
        # called unvoiced after 100 steps).
        return (pulse_train(phase, harmonics) / (harmonics / 2).clamp(min=0.5).sqrt()).float()

    def noise_segments(self, count: int, batch: int) -> torch.Tensor:
        """The noise table read at each frame's absolute samples (each stream's own, when streaming):
        (batch, count, n_fft)."""
        index = torch.arange(count, device=self.noise.device)[:, None] * self.hop + \
            torch.arange(self.n_fft, device=self.noise.device)
        if not self.streaming:
            return self.noise[index % NOISE_TABLE].expand(batch, -1, -1)
        return self.noise[(self.state.position[:, None, None] + index) % NOISE_TABLE]

    def init_state(self, batch_size: int) -> HarmonicState:
        head = super().init_state(batch_size)
        per_stream = torch.zeros(batch_size, dtype=torch.float64, device=self.window.device)
        return HarmonicState(head.tail, head.position, head.phase, per_stream, torch.zeros_like(per_stream))

    def analysis_matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_fft, bins) matrices A_re, A_im with rfft(x * window) = x @ A_re + i x @ A_im: `codec onnx` has no FFT."""
        bins, n = self.n_fft // 2 + 1, self.n_fft
        angle = 2 * torch.pi * torch.outer(torch.arange(n, dtype=torch.float64),
                                           torch.arange(bins, dtype=torch.float64)) / n
        window = self.window.double().cpu()[:, None]
        return ((window * torch.cos(angle)).float().to(self.window.device),
                (-window * torch.sin(angle)).float().to(self.window.device))

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        features = x.transpose(1, 2)
        log_harmonic, log_noise = self.linear(features).float().chunk(2, dim=-1)
        self.prediction = pitch = self.predict_pitch(features)
        pitch.log_harmonic, pitch.log_noise = log_harmonic, log_noise
        f0 = pitch.log_f0.detach().exp()
        if self.given_f0 is not None:
            f0 = torch.where(self.given_f0 > 0, self.given_f0.to(f0), f0)
        gate = torch.sigmoid(pitch.voicing)[..., None]
        if self.given_envelopes is not None:
            (log_harmonic, log_noise), gate = self.given_envelopes, 1.0
        return self.synthesise(f0, gate * log_harmonic.exp().clamp(max=100.0), log_noise.exp().clamp(max=100.0))

    def synthesise(self, f0: torch.Tensor, harmonic_gain: torch.Tensor, noise_gain: torch.Tensor) -> torch.Tensor:
        """f0 (B, F) in Hz and each part's amplitude per bin (B, F, bins) -> windowed frames (B, n_fft, F)."""
        excitation, noise = self.excitation(f0), self.noise_segments(f0.shape[1], f0.shape[0])
        if self.export_friendly:
            to_real, to_imag = self.analysis_matrices()
            from_real, from_imag = self.synthesis_matrices()
            real = (excitation @ to_real) * harmonic_gain + (noise @ to_real) * noise_gain
            imag = (excitation @ to_imag) * harmonic_gain + (noise @ to_imag) * noise_gain
            return (real @ from_real + imag @ from_imag).transpose(1, 2)
        spectrum = torch.fft.rfft(excitation * self.window, dim=-1) * harmonic_gain + \
            torch.fft.rfft(noise * self.window, dim=-1) * noise_gain
        return (torch.fft.irfft(spectrum, n=self.n_fft, dim=-1) * self.window).transpose(1, 2)


class HarmonicDecoder(ISTFTDecoder):
    """Latents (B, D, F) -> waveform (B, 1, F * hop_length): the `ISTFTDecoder`'s backbone with a `HarmonicHead`.
    `pitch_prediction` holds the last call's `PitchPrediction`."""

    def __init__(self, latent_dim: int, hop_length: int, dim: int, hidden_dim: int, num_layers: int, n_fft: int,
                 sample_rate: int, f0_min: float, f0_max: float, f0_bins: int) -> None:
        super().__init__(latent_dim, hop_length, dim, hidden_dim, num_layers, n_fft)
        self.head = HarmonicHead(dim, n_fft, hop_length, sample_rate, f0_min, f0_max, f0_bins)

    @property
    def pitch_prediction(self) -> PitchPrediction | None:
        return self.head.prediction
