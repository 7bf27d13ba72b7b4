"""Speaker similarity: the cosine between speaker embeddings of the reference and the decoded audio, from
Resemblyzer's voice encoder (a GE2E d-vector model, Apache-2.0, whose weights ship in the `resemblyzer` wheel).

The encoder is rebuilt here with the checkpoint's parameter names and its weights read with torch's safe
(`weights_only`) loader: importing the package would need webrtcvad, and its declared dependencies pull an old
`typing` backport (install it with `pip install --no-deps resemblyzer==0.1.4`). Resemblyzer's protocol: 16 kHz
audio raised (never lowered) to -30 dBFS, a 40-band mel power spectrogram (25 ms window, 10 ms hop), 1.6 s
partial utterances 1.3 per second, each embedded, averaged and normalised. One step of its preprocessing is left
out: it cuts long silences with webrtcvad, which would cut the reference and the decoded audio differently; both
are scored whole. Embeddings are non-negative, so the cosine lies in [0, 1]; 1 is the same voice.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MetricUnavailable
from ..spectral import magnitude, mel_filters
from .quality import Pair

SPEAKER_RATE = 16000
N_FFT, HOP, MELS = 400, 160, 40          # 25 ms window, 10 ms hop
PARTIAL_FRAMES = 160                     # 1.6 s
PARTIALS_PER_SECOND, MIN_COVERAGE = 1.3, 0.75
TARGET_DBFS = -30.0
HIDDEN, LAYERS = 256, 3
INSTALL = "pip install --no-deps resemblyzer==0.1.4"
WEIGHTS_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"


class VoiceEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, HIDDEN)

    @torch.no_grad()
    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """(B, frames, 40) mel power -> (B, 256) L2-normalised embeddings."""
        _, (hidden, _) = self.lstm(mels)
        embedding = torch.relu(self.linear(hidden[-1]))
        return embedding / embedding.norm(dim=1, keepdim=True).clamp(min=1e-12)


def resemblyzer_weights() -> Path:
    """pretrained.pt inside the installed package, found without importing it (its __init__ needs webrtcvad)."""
    spec = importlib.util.find_spec("resemblyzer")
    path = Path(spec.submodule_search_locations[0]) / "pretrained.pt" if spec and spec.submodule_search_locations \
        else None
    if path is None or not path.is_file():
        raise MetricUnavailable(f"speaker similarity needs Resemblyzer's weights: {INSTALL}")
    return path


@functools.lru_cache(maxsize=None)
def load_encoder(device: str = "cpu") -> VoiceEncoder:
    path = resemblyzer_weights()
    from ..weights import sha256
    if sha256(path) != WEIGHTS_SHA256:
        raise MetricUnavailable(f"{path}: not the Resemblyzer 0.1.4 weights this code was checked against (sha256); "
                                f"{INSTALL.replace('install', 'install --force-reinstall')}")
    encoder = VoiceEncoder()
    # The file also holds the optimizer state and GE2E's similarity scale: only the encoder's tensors are used.
    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    encoder.load_state_dict({k: v for k, v in state.items() if k.split(".")[0] in ("lstm", "linear")})
    return encoder.eval().to(device)


def partial_starts(samples: int) -> list[int]:
    """First frame of each 1.6 s partial: 1.3 a second over the whole clip; the last one is dropped when less
    than 75 % of it is audio, unless it is the only one."""
    frames = int(np.ceil((samples + 1) / HOP))
    step = int(round(SPEAKER_RATE / PARTIALS_PER_SECOND / HOP))
    starts = list(range(0, max(1, frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    return starts[:-1] if coverage < MIN_COVERAGE and len(starts) > 1 else starts


def embed(audio: np.ndarray, encoder: VoiceEncoder) -> np.ndarray:
    """Mono 16 kHz audio -> its speaker embedding (256,), unit length (zeros for silence)."""
    audio = np.asarray(audio, dtype=np.float32)
    rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2)) if audio.size else 0.0
    if 0 < rms < 10 ** (TARGET_DBFS / 20):
        audio = audio * np.float32(10 ** (TARGET_DBFS / 20) / rms)
    starts = partial_starts(len(audio))
    audio = np.pad(audio, (0, max(0, (starts[-1] + PARTIAL_FRAMES) * HOP - len(audio))))
    device = next(encoder.parameters()).device
    power = magnitude(torch.from_numpy(audio)[None].to(device), N_FFT, HOP) ** 2
    mels = (mel_filters(SPEAKER_RATE, N_FFT, MELS).to(device) @ power)[0].T    # (frames, 40)
    with _one_thread():
        partials = encoder(torch.stack([mels[s:s + PARTIAL_FRAMES] for s in starts])).mean(0)
    return (partials / partials.norm().clamp(min=1e-12)).cpu().numpy()


@contextlib.contextmanager
def _one_thread():
    """A 256-unit LSTM over a few partials is too small to share among threads; on a busy machine the threads'
    waiting for each other cost seconds a call (2 threads on 2 loaded cores: 3 s against 0.01 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def similarity(pair: Pair, encoder: VoiceEncoder) -> float:
    def compute(audio):
        return embed(audio, encoder)
    reference = pair.cached("speaker", "reference", SPEAKER_RATE, compute)
    decoded = pair.cached("speaker", "decoded", SPEAKER_RATE, compute)
    return float(np.dot(reference, decoded))
