"""Signal quality metrics on a (reference, decoded) pair, and the one place where rates and lengths are settled.

Rates. Every system in an evaluation is compared against the same reference: the source file resampled once
(soxr HQ, `audio.resample`) to the evaluation's *reference rate*, 24 kHz by default (the bundled model's rate),
so rows of one table compare even when the systems run at 8, 24 or 48 kHz. A system encodes the source at its
own rate; its output is resampled here to the reference rate, so a codec that drops a band is charged for it.
Each metric then takes the pair at the rate it is defined at:
  - PESQ wide-band and the MOS predictors at 16 kHz (`Pair.at`, resampled once and shared);
  - STOI at the reference rate (pystoi resamples to its own 10 kHz internally);
  - mel distance and SI-SDR at the reference rate.
The UTMOS papers resample with torchaudio's sinc filter; we use soxr everywhere, whose passband differs from it
by far less than the predictors' resolution.

Lengths. A system's known constant delay (Codec2's, see baselines.py) is removed first; then the decoded signal
is cut or zero-padded to the reference's length, so a codec that loses the tail is charged for it too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..audio import resample
from ..spectral import log_mel

PESQ_RATE = 16000


@dataclass
class Pair:
    """A reference and a decoded signal of equal length at `rate`, with resampled copies made on demand.

    `text` is what the reference says, where the data has it (the WER's reference). Work that several metrics
    share (a transcript, an F0 contour, a speaker embedding) is kept by `cached`: the decoded side's for this pair,
    the reference side's in `shared`, which the evaluation keeps per file, so every system reuses it."""
    reference: np.ndarray
    decoded: np.ndarray
    rate: int
    text: str | None = None
    shared: dict = field(default_factory=dict, repr=False)
    _resampled: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _own: dict = field(default_factory=dict, repr=False)

    def cached(self, feature: str, side: str, rate: int, compute: Callable[[np.ndarray], object]) -> object:
        """`compute(audio)` of the "reference" or the "decoded" signal at `rate`, computed once per pair (once per
        file for the reference)."""
        store = self.shared if side == "reference" else self._own
        if (feature, rate) not in store:
            store[feature, rate] = compute(self.at(rate)[0 if side == "reference" else 1])
        return store[feature, rate]

    def at(self, rate: int) -> tuple[np.ndarray, np.ndarray]:
        if rate == self.rate:
            return self.reference, self.decoded
        if rate not in self._resampled:
            self._resampled[rate] = (resample(self.reference, self.rate, rate).numpy(),
                                     resample(self.decoded, self.rate, rate).numpy())
        return self._resampled[rate]


def align(reference: torch.Tensor | np.ndarray, reference_rate: int, decoded: torch.Tensor | np.ndarray,
          decoded_rate: int, delay: int = 0, text: str | None = None, shared: dict | None = None) -> Pair:
    """Bring `decoded` (at `decoded_rate`, late by `delay` samples) onto the reference's rate and length; `text`
    and `shared` as in `Pair`."""
    reference = np.asarray(reference, dtype=np.float32).reshape(-1)
    decoded = np.asarray(decoded, dtype=np.float32).reshape(-1)[delay:]
    decoded = resample(decoded, decoded_rate, reference_rate).numpy()
    decoded = np.pad(decoded[:len(reference)], (0, max(0, len(reference) - len(decoded))))
    return Pair(reference, decoded, reference_rate, text, {} if shared is None else shared)


def pesq_wideband(pair: Pair) -> float:
    from pesq import pesq
    reference, decoded = pair.at(PESQ_RATE)
    try:
        return float(pesq(PESQ_RATE, reference, decoded, "wb"))
    except Exception:  # pesq raises on clips without detectable speech
        return float("nan")


def stoi(pair: Pair) -> float:
    from pystoi import stoi as compute
    return float(compute(pair.reference.astype(np.float64), pair.decoded.astype(np.float64), pair.rate,
                         extended=False))


def si_sdr(pair: Pair) -> float:
    reference = pair.reference.astype(np.float64) - pair.reference.mean()
    decoded = pair.decoded.astype(np.float64) - pair.decoded.mean()
    scale = np.dot(decoded, reference) / max(np.dot(reference, reference), 1e-12)
    target = scale * reference
    return float(10 * np.log10(max(np.dot(target, target), 1e-12) / max(np.sum((decoded - target) ** 2), 1e-12)))


def mel_distance(pair: Pair) -> float:
    """Mean absolute difference of log10 mel spectrograms (n_fft 1024, hop 256, 80 mels): the training mel loss
    at its 1024-point scale."""
    decoded, reference = (log_mel(torch.from_numpy(x)[None], pair.rate, 1024, 80) for x in (pair.decoded,
                                                                                            pair.reference))
    return float((decoded - reference).abs().mean())
