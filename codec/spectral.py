"""Spectral features shared by the training losses and the evaluation metrics: STFT magnitudes and mel filters.

One home for both, so that a metric and a loss of the same name compute the same thing, and evaluation does not
import training.
"""
from __future__ import annotations

import functools

import librosa
import torch


@functools.lru_cache(maxsize=None)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-normalised mel filter bank (librosa's defaults)."""
    return torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)).float()


def magnitude(audio: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(B, T) -> (B, F, frames) magnitude with a Hann window, floored at 1e-7."""
    window = torch.hann_window(n_fft, device=audio.device)
    spec = torch.stft(audio, n_fft, hop, window=window, return_complex=True, center=True)
    return spec.abs().clamp(min=1e-7)


def log_mel(audio: torch.Tensor, sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """(B, T) -> (B, n_mels, frames) log10 mel magnitudes (hop n_fft / 4, floor 1e-5): what the mel loss and the
    mel distance compare."""
    filters = mel_filters(sample_rate, n_fft, n_mels).to(audio.device)
    return (filters @ magnitude(audio, n_fft, n_fft // 4)).clamp(min=1e-5).log10()
