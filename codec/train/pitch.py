"""Pitch labels for the harmonic decoder's training, from `pyworld` (WORLD's DIO + StoneMask), per batch.

Used only in training: the decoder never sees a label at inference, only codes. Labels are computed on the fly
from each training crop (no cache to keep in step with the data pipeline); DIO + StoneMask costs a few
milliseconds per second of audio, Harvest several times more (measured in docs/harmonic-decoder.md).

Alignment: the decoder's frame f ramps its f0 towards its own value over samples [f hop, (f + 1) hop), so its
f0 is the f0 at the frame's end, (f + 1) hop: label index f + 1 of a track taken every hop from sample 0.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import CodecError
from ..nn.harmonic import PitchPrediction
from ..nn.world import WORLD_TO_HEAD


def _world():
    try:
        import pyworld
    except ImportError:
        raise CodecError("the harmonic decoder's training needs pyworld: pip install pyworld-prebuilt") from None
    return pyworld


def _track(world, signal: np.ndarray, sample_rate: int, period: float, method: str):
    """One signal's f0 track and its times, one value every `period` ms from sample 0."""
    if method == "harvest":
        return world.harvest(signal, sample_rate, f0_floor=50.0, f0_ceil=500.0, frame_period=period)
    f0, times = world.dio(signal, sample_rate, f0_floor=50.0, f0_ceil=500.0, frame_period=period)
    return world.stonemask(signal, f0, times, sample_rate), times


def pitch_labels(audio: torch.Tensor, sample_rate: int, hop_length: int, frames: int,
                 method: str = "dio") -> torch.Tensor:
    """(B, 1, T) or (B, T) audio -> f0 in Hz per decoder frame (B, frames); 0 where unvoiced."""
    world = _world()
    period = 1000.0 * hop_length / sample_rate
    labels = np.zeros((audio.shape[0], frames))
    for row, signal in enumerate(audio.detach().reshape(audio.shape[0], -1).double().cpu().numpy()):
        f0, _ = _track(world, np.ascontiguousarray(signal), sample_rate, period, method)
        track = f0[1:frames + 1]
        labels[row, :len(track)] = track
    return torch.from_numpy(labels).float().to(audio.device)


def world_labels(audio: torch.Tensor, sample_rate: int, hop_length: int, frames: int,
                 bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 1, T) audio -> `pitch_labels`' f0 (B, frames) and, from the same DIO track, WORLD's harmonic and noise
    natural-log envelopes per decoder frame, each (B, frames, bins) over 0 .. sample_rate / 2: CheapTrick's power
    envelope sp split by D4C's aperiodicity ap into sp (1 - ap^2) on voiced frames and sp ap^2 (all of sp where
    unvoiced), as WORLD's synthesis splits it. Frame f's segment is centred on sample (f + 1) hop: track index
    f + 1, as for the pitch."""
    world = _world()
    period = 1000.0 * hop_length / sample_rate
    fft_size = 2 ** int(np.ceil(np.log2(3 * sample_rate / 50.0)))  # CheapTrick's minimum for a 50 Hz floor
    f0_labels = np.zeros((audio.shape[0], frames))
    envelopes = np.full((2, audio.shape[0], frames, bins), np.log(1e-6))
    ours = np.linspace(0, 1, bins)
    for row, signal in enumerate(audio.detach().reshape(audio.shape[0], -1).double().cpu().numpy()):
        signal = np.ascontiguousarray(signal)
        f0, times = _track(world, signal, sample_rate, period, "dio")
        track = f0[1:frames + 1]
        f0_labels[row, :len(track)] = track
        power = world.cheaptrick(signal, f0, times, sample_rate, fft_size=fft_size)[1:frames + 1]
        ratio = world.d4c(signal, f0, times, sample_rate, fft_size=fft_size)[1:frames + 1].clip(0, 1)
        voiced = (track > 0)[:, None]
        grid = np.linspace(0, 1, power.shape[1])
        parts = (power * (1 - ratio ** 2) * voiced, power * np.where(voiced, ratio ** 2, 1.0))
        for part, value in enumerate(parts):
            resampled = np.stack([np.interp(ours, grid, v) for v in value])
            envelopes[part, row, :len(value)] = 0.5 * np.log(resampled + 1e-12)
    harmonic, noise = torch.from_numpy(envelopes).float().to(audio.device)
    return torch.from_numpy(f0_labels).float().to(audio.device), harmonic, noise


def pitch_losses(prediction: PitchPrediction, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Over the frames voiced in the labels, the f0 head's cross-entropy against a Gaussian 25 cents wide round
    the label's log-f0 (CREPE's target, which tells the head that a neighbouring bin is nearly right and an
    octave away is wrong); and BCE of the voicing logit against voiced/unvoiced on every frame."""
    voiced = labels > 0
    width = 25 / 1200 * np.log(2)
    distance = prediction.bin_log_f0.float() - labels.clamp(min=1.0).log()[..., None]
    closeness = torch.exp(-0.5 * (distance / width) ** 2)
    weights = closeness / closeness.sum(-1, keepdim=True).clamp(min=1e-12)
    per_frame = -(weights * torch.log_softmax(prediction.bin_logits, dim=-1)).sum(-1)
    f0 = (per_frame * voiced).sum() / voiced.sum().clamp(min=1)
    voicing = torch.nn.functional.binary_cross_entropy_with_logits(prediction.voicing, voiced.float())
    return {"f0": f0, "voicing": voicing}


def pitch_errors(prediction: PitchPrediction, labels: torch.Tensor) -> dict[str, float]:
    """Scores against labels: mean and median absolute f0 error in cents and the share of octave errors (off by
    more than 600 cents) over the frames voiced in the labels (the f0 head predicts on every frame, whatever the
    voicing head says), and the share of frames whose voicing decision is wrong."""
    voiced = labels > 0
    cents = 1200 * (prediction.log_f0.float() - labels.clamp(min=1.0).log()).abs() / np.log(2)
    count = voiced.sum().clamp(min=1)
    return {"f0_cents": float((cents * voiced).sum() / count),
            "f0_median_cents": float(cents[voiced].median()) if voiced.any() else 0.0,
            "octave_errors": float(((cents > 600) & voiced).sum() / count),
            "voicing_errors": float(((prediction.voicing > 0) != voiced).float().mean())}


def envelope_losses(prediction: PitchPrediction, harmonic: torch.Tensor, noise: torch.Tensor,
                    voiced: torch.Tensor) -> torch.Tensor:
    """L1 between the shapes of the predicted and WORLD's log-envelopes: each frame's mean log difference is
    taken out, because WORLD's level and the head's differ by the excitation's own scale, which the
    reconstruction losses set. The harmonic envelope counts on the frames voiced in the labels, the noise one on
    every frame. Each envelope is floored 80 dB below its own frame's peak: what is inaudible need not match."""
    def floored(envelope: torch.Tensor) -> torch.Tensor:
        return envelope.clamp(min=envelope.amax(-1, keepdim=True).detach() - 80 / 20 * np.log(10))

    def shape_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        difference = floored(predicted) - floored(target)
        return (difference - difference.mean(-1, keepdim=True)).abs().mean(-1)  # (B, F)
    weights = voiced.float()
    harmonic_error = (shape_error(prediction.log_harmonic, harmonic) * weights).sum() / weights.sum().clamp(min=1)
    return harmonic_error + shape_error(prediction.log_noise, noise).mean()



@torch.no_grad()
def teacher_audio(head, f0: torch.Tensor, log_harmonic: torch.Tensor, log_noise: torch.Tensor) -> torch.Tensor:
    """(B, 1, frames * hop): the harmonic head driven by WORLD's analysis (`world_labels`) instead of its own
    predictions: f0 where voiced, the envelopes at the head's level, the harmonic one ungated. The same
    oscillator and noise as the model's own output, so the two differ only where their envelopes do."""
    forced, prediction = head.given_f0, head.prediction  # the model's own, which the pitch losses read
    head.given_f0 = f0
    head.given_envelopes = (log_harmonic + WORLD_TO_HEAD[0], log_noise + WORLD_TO_HEAD[1])
    try:
        return head(torch.zeros(f0.shape[0], head.pitch.in_features, f0.shape[1], device=f0.device))
    finally:
        head.given_f0, head.given_envelopes, head.prediction = forced, None, prediction
