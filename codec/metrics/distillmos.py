"""DistillMOS (Stahl and Gamper, 2025): a 4 M-parameter no-reference speech quality predictor, MIT licensed.

Always available because its weights ship inside the `distillmos` wheel (install it with `pip install --no-deps
distillmos==0.9.1`: its declared dependencies pull torchaudio and transformers, which none of this needs). The
architecture is rebuilt here, with the checkpoint's parameter names, because the package imports torchaudio at
module top for its command line. It predicts quality (it was distilled from an XLS-R SQA teacher), not TTS
naturalness, and its values do not compare with UTMOS numbers: it is reported as `distillmos`, never as UTMOS.

Protocol, as the package does it: 16 kHz input cut into 7.68 s windows (shorter clips are zero-padded to one
window, longer ones get windows spread evenly with at most a 1 s hop), each window peak-normalised, scores
averaged over windows.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MetricUnavailable

WINDOW = 122880           # 7.68 s at 16 kHz
MAX_HOP = 16000           # 1 s
HOP, FFT = 160, 320       # 10 ms hop, 20 ms window
FRAMES = 384              # transformer positions: WINDOW / HOP / 2 (the last convolution strides time by 2)
CNN_CHANNELS = [64, 64, 128, 256, 256, 256]
DIM, HEADS, LAYERS = 200, 8, 7
WEIGHTS = ("weights", "distill_mos_v7.pt")
WEIGHTS_SHA256 = "b18b3ac60227267cfb91e5d00ce22cc7b73716fd92f269484da1446e27031a40"


def compressed_spectrogram(audio: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, 2, 161, frames): real and imaginary STFT parts with the magnitude compressed to |X| ** 0.3."""
    audio = F.pad(audio, ((FFT - HOP) // 2, (FFT - HOP) // 2), mode="reflect")
    spectrum = torch.view_as_real(torch.stft(audio, FFT, HOP, FFT, torch.hann_window(FFT, device=audio.device),
                                             center=False, return_complex=True))
    magnitude = spectrum.pow(2).sum(-1, keepdim=True).sqrt().clamp(min=1e-12)
    return (magnitude ** 0.3 * spectrum / magnitude).permute(0, 3, 1, 2)


class SpectrogramCNN(nn.Module):
    """Six 3x3 convolutions: frequency strided by 2 from the second on, time by 2 on the last (161 bins -> 4)."""

    def __init__(self) -> None:
        super().__init__()
        layers, channels = [], 2
        for i, out in enumerate(CNN_CHANNELS):
            stride = (2 if i >= 1 else 1, 2 if i == len(CNN_CHANNELS) - 1 else 1)
            layers += [nn.Conv2d(channels, out, 3, stride=stride, padding=(0, 1)), nn.LeakyReLU(0.1)]
            channels = out
        self.cnn = nn.Sequential(*layers)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        return self.cnn(spectrogram).flatten(1, 2)  # (B, channels x bins, frames)


class TransformerHead(nn.Module):
    """BatchNorm, projection to 200, fixed sinusoidal positions, 7 post-norm transformer layers, BatchNorm."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(features)
        self.position_encoding = nn.Module()
        self.position_encoding.register_buffer("pe", torch.zeros(1, FRAMES, DIM))  # stored in the checkpoint
        self.linear_proj = nn.Linear(features, DIM)
        layer = nn.TransformerEncoderLayer(DIM, HEADS, 2 * DIM, dropout=0.0, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear_proj(self.norm(x.transpose(1, 2)).transpose(1, 2))
        return self.transformer_encoder(x + self.position_encoding.pe)


class AttentionPool(nn.Module):
    """Softmax attention over time, then a linear read-out (NISQA's PoolAttFF)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear1, self.linear2, self.linear3 = nn.Linear(DIM, 2 * DIM), nn.Linear(2 * DIM, 1), nn.Linear(DIM, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.linear2(F.relu(self.linear1(x))).softmax(dim=1)   # (B, L, 1)
        return self.linear3((weights * x).sum(dim=1))[:, 0]


class QualityHead(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.norm_input = nn.BatchNorm1d(features)
        self.transformer = TransformerHead(features)
        self.norm_trans = nn.BatchNorm1d(DIM)
        self.pool = AttentionPool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transformer(self.norm_input(x.transpose(1, 2)).transpose(1, 2))
        return torch.sigmoid(self.pool(self.norm_trans(x.transpose(1, 2)).transpose(1, 2)))


class DistillMOSModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cnn = SpectrogramCNN()
        self.transformer_pool_attn = QualityHead(CNN_CHANNELS[-1] * 4)

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """One clip (T,) at 16 kHz -> MOS, a scalar in [1, 5]."""
        windows = split_windows(audio)
        windows = windows / (windows.abs().amax(dim=1, keepdim=True) + 1e-8)
        features = self.cnn(compressed_spectrogram(windows)).transpose(1, 2)
        return 1 + 4 * self.transformer_pool_attn(features).mean()


def split_windows(audio: torch.Tensor) -> torch.Tensor:
    """(T,) -> (windows, WINDOW), evenly spread from the start to the end of the clip."""
    excess = audio.shape[-1] - WINDOW
    if excess <= 0:
        return F.pad(audio, (0, -excess))[None]
    count = math.ceil(excess / MAX_HOP) + 1
    return torch.stack([audio[int(c * excess):int(c * excess) + WINDOW] for c in np.linspace(0, 1, count)])


def distillmos_weights_path() -> Path:
    # find_spec locates the package without importing it (its __init__ imports torchaudio).
    spec = importlib.util.find_spec("distillmos")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable("DistillMOS unavailable: pip install --no-deps distillmos==0.9.1 (its weights "
                                "ship in that wheel; --no-deps keeps torchaudio out)")
    path = Path(spec.submodule_search_locations[0]).joinpath(*WEIGHTS)
    if not path.is_file():
        raise MetricUnavailable(f"DistillMOS weights missing at {path}: pip install --force-reinstall --no-deps "
                                f"distillmos==0.9.1")
    return path


class DistillMOS:
    """The predictor: mono 16 kHz audio (numpy) -> MOS in [1, 5]."""
    name = "distillmos"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        path = distillmos_weights_path()
        from ..weights import sha256
        if sha256(path) != WEIGHTS_SHA256:
            raise MetricUnavailable(f"{path}: not the DistillMOS v7 weights this code was checked against (sha256)")
        self.model = DistillMOSModel()
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        self.model.eval().to(self.device)

    def __call__(self, audio: np.ndarray) -> float:
        return float(self.model(torch.as_tensor(audio, dtype=torch.float32, device=self.device)))
