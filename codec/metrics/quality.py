"""Signal quality metrics on a (reference, decoded) pair.

Alignment and rates are handled here and nowhere else: both signals arrive at the codec's rate, are cut to the
shorter length, and each metric resamples to the rate it is defined at. PESQ is wide-band at 16 kHz (as the
SimVQ and WavTokenizer papers report it); STOI is computed at the codec's rate (pystoi resamples to 10 kHz
internally); mel distance and SI-SDR at the codec's rate.
"""
from __future__ import annotations

import numpy as np
import torch

from ..audio import resample
from ..errors import CodecError

PESQ_RATE = 16000


def align(reference: torch.Tensor, decoded: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    n = min(reference.shape[-1], decoded.shape[-1])
    return (np.asarray(reference, dtype=np.float64).reshape(-1)[:n],
            np.asarray(decoded, dtype=np.float64).reshape(-1)[:n])


def pesq_wideband(reference: np.ndarray, decoded: np.ndarray, sample_rate: int) -> float:
    try:
        from pesq import pesq
    except ImportError:
        raise CodecError("PESQ needs the 'pesq' package: pip install pesq") from None
    ref = resample(reference.astype(np.float32), sample_rate, PESQ_RATE).numpy()
    deg = resample(decoded.astype(np.float32), sample_rate, PESQ_RATE).numpy()
    try:
        return float(pesq(PESQ_RATE, ref, deg, "wb"))
    except Exception:  # pesq raises on clips without detectable speech
        return float("nan")


def stoi(reference: np.ndarray, decoded: np.ndarray, sample_rate: int) -> float:
    try:
        from pystoi import stoi as compute
    except ImportError:
        raise CodecError("STOI needs the 'pystoi' package: pip install pystoi") from None
    return float(compute(reference, decoded, sample_rate, extended=False))


def si_sdr(reference: np.ndarray, decoded: np.ndarray) -> float:
    reference = reference - reference.mean()
    decoded = decoded - decoded.mean()
    scale = np.dot(decoded, reference) / max(np.dot(reference, reference), 1e-12)
    target = scale * reference
    return float(10 * np.log10(max(np.dot(target, target), 1e-12) / max(np.sum((decoded - target) ** 2), 1e-12)))


def mel_distance(reference: np.ndarray, decoded: np.ndarray, sample_rate: int) -> float:
    """Mean absolute difference of log10 mel spectrograms (n_fft 1024, hop 256, 80 mels)."""
    from ..train.losses import MultiScaleMelLoss
    loss = MultiScaleMelLoss(sample_rate, windows=(1024,), mels=(80,))
    return float(loss(torch.from_numpy(decoded).float()[None], torch.from_numpy(reference).float()[None]))


def score(reference: torch.Tensor, decoded: torch.Tensor, sample_rate: int) -> dict[str, float]:
    ref, deg = align(reference, decoded)
    return {"pesq": pesq_wideband(ref, deg, sample_rate), "stoi": stoi(ref, deg, sample_rate),
            "mel_distance": mel_distance(ref, deg, sample_rate), "si_sdr": si_sdr(ref, deg)}
