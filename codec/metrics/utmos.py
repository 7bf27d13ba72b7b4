"""UTMOS22 "strong" (Saeki et al., 2022), the no-reference MOS that codec papers report as UTMOS.

The strong learner without phoneme encoder, checkpoint `epoch=3-step=7459`: wav2vec 2.0 Base features, with the
main-track domain embedding (row 0) and the judge embedding of listener 288 appended to every frame, a BLSTM, a
two-layer projection to one score per frame, and the frame mean mapped from [-1, 1] to the MOS scale (x 2 + 3,
not clipped). Input is 16 kHz mono with no normalisation, scored one file at a time (padding in a batch changes
the scores). Parameter names follow SpeechMOS (`utmos22_strong_step7459_v1.pt`); the official Lightning `.ckpt`
(and utmos-pytorch's state dict, in the same layout) is converted on load.

Nothing is downloaded: the checkpoint comes from the user (see `find_checkpoint`). Not finding one makes UTMOS
unavailable (reported as such); a checkpoint that is named or found but cannot be loaded is an error.
"""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MetricUnavailable, ModelError
from ..weights import sha256
from . import checkpoint_pickle
from .wav2vec2 import DIM, MIN_SAMPLES, Wav2Vec2, fold_weight_norm

CHECKPOINT_NAME = "utmos22_strong_step7459_v1.pt"
CHECKPOINT_URL = f"https://github.com/tarepan/SpeechMOS/releases/download/v1.0.0/{CHECKPOINT_NAME}"
CHECKPOINT_SHA256 = "38aa51ab79e2a4e09a1449758a4b37e9cbb2e8235a49662a732d33a9ba1e9bff"
CHECKPOINT_MB = 411
ENVIRONMENT_VARIABLE = "CODEC_UTMOS_CHECKPOINT"
DOMAIN, JUDGE = 0, 288  # main track; the listener every published UTMOS score is computed for
EMBEDDING = 128


class UTMOS22Strong(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.domain_emb = nn.Parameter(torch.zeros(1, EMBEDDING))
        self.judge_emb = nn.Parameter(torch.zeros(1, EMBEDDING))
        self.wav2vec2 = Wav2Vec2()
        features = DIM + 2 * EMBEDDING
        self.blstm = nn.LSTM(features, 512, batch_first=True, bidirectional=True)
        self.projection = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 1))

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (B, T) at 16 kHz, all of one length, T >= 400 -> MOS (B,)."""
        if audio.shape[-1] < MIN_SAMPLES:
            raise ValueError(f"UTMOS needs at least {MIN_SAMPLES} samples at 16 kHz, got {audio.shape[-1]}")
        x = self.wav2vec2(audio)
        batch, frames, _ = x.shape
        x = torch.cat([x, self.domain_emb.expand(batch, frames, -1), self.judge_emb.expand(batch, frames, -1)], -1)
        return self.projection(self.blstm(x)[0]).mean(dim=(1, 2)) * 2 + 3


LIGHTNING_PREFIXES = {"feature_extractors.0.ssl_model.": "wav2vec2.", "output_layers.0.decoder_rnn.": "blstm.",
                      "output_layers.1.net.0.": "projection.0.", "output_layers.1.net.3.": "projection.2."}


def lightning_to_speechmos(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official Lightning layout -> SpeechMOS layout: rename, and keep only the domain and judge rows used."""
    converted = {"domain_emb": state["feature_extractors.1.embedding.weight"][DOMAIN:DOMAIN + 1],
                 "judge_emb": state["output_layers.0.judge_embedding.weight"][JUDGE:JUDGE + 1]}
    for key, value in state.items():
        for old, new in LIGHTNING_PREFIXES.items():
            if key.startswith(old):
                converted[new + key[len(old):]] = value
    converted.setdefault("wav2vec2.mask_emb", torch.zeros(DIM))  # utmos-pytorch drops this unused vector
    return converted


def load_state(state: dict[str, torch.Tensor], source: str = "state dict") -> UTMOS22Strong:
    """A model from a SpeechMOS- or Lightning-layout state dict (weight norm not yet folded), in eval mode."""
    if "state_dict" in state:
        state = state["state_dict"]
    if "feature_extractors.1.embedding.weight" in state:
        state = lightning_to_speechmos(state)
    with torch.device("meta"):  # no random initialisation of 100 M parameters about to be overwritten
        model = UTMOS22Strong()
    prefix = "wav2vec2.encoder.pos_conv.0."
    if isinstance(state.get(prefix + "weight_g"), torch.Tensor) and isinstance(state.get(prefix + "weight_v"),
                                                                                torch.Tensor):
        state = fold_weight_norm(state, prefix)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if not isinstance(state.get(k), torch.Tensor)]
    wrong = [k for k in expected if k not in missing and tuple(state[k].shape) != expected[k]]
    if missing or wrong:
        what = f"{len(missing)} of its {len(expected)} tensors missing, e.g. {missing[0]}" if missing else \
            f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, not {expected[wrong[0]]}"
        raise ModelError(f"{source}: not a UTMOS22 strong checkpoint ({what})")
    model.load_state_dict({k: state[k] for k in expected}, assign=True)
    return model.eval()


def candidate_paths() -> list[Path]:
    """Where a checkpoint is looked for when none is named: our cache, then torch hub's (SpeechMOS users)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [cache / "codec" / CHECKPOINT_NAME, Path(torch.hub.get_dir()) / "checkpoints" / CHECKPOINT_NAME]


def find_checkpoint(explicit: str | Path | None = None) -> Path:
    """The checkpoint named by the argument or the environment variable (an error if it is not there: a path
    the user gave is never silently ignored), else the first in `candidate_paths`."""
    for named, origin in ((explicit, "--utmos-checkpoint"),
                          (os.environ.get(ENVIRONMENT_VARIABLE), ENVIRONMENT_VARIABLE)):
        if named:
            if not Path(named).is_file():
                raise ModelError(f"UTMOS checkpoint {named} (from {origin}): no such file")
            return Path(named)
    for path in candidate_paths():
        if path.is_file():
            return path
    raise MetricUnavailable(
        f"UTMOS unavailable: no checkpoint found (looked in {', '.join(map(str, candidate_paths()))}). Download "
        f"{CHECKPOINT_NAME} ({CHECKPOINT_MB} MB, sha256 {CHECKPOINT_SHA256[:12]}...) from {CHECKPOINT_URL}, put it "
        f"at {candidate_paths()[0]}, or pass --utmos-checkpoint PATH or set {ENVIRONMENT_VARIABLE}")


def read_checkpoint(path: str | Path) -> dict:
    """The file's contents with every tensor and nothing executable. A plain state dict (SpeechMOS's file) loads
    with torch's own safe unpickler; a Lightning .ckpt, whose pickled hyper-parameters that one refuses, is read
    again with `checkpoint_pickle`, which rebuilds the tensors and stubs everything else."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    except (RuntimeError, OSError, EOFError) as error:
        raise ModelError(f"{path}: not a PyTorch checkpoint ({_first_line(error)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=checkpoint_pickle)
    except Exception as error:  # a damaged pickle can fail in any way; none of them runs its code
        raise ModelError(f"{path}: not a PyTorch checkpoint ({_first_line(error)})") from None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".:")


def load_checkpoint(path: str | Path) -> UTMOS22Strong:
    state = read_checkpoint(path)
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a UTMOS22 strong checkpoint (it holds no state dict)")
    if Path(path).name == CHECKPOINT_NAME and sha256(path) != CHECKPOINT_SHA256:
        print(f"warning: {path} differs from the published {CHECKPOINT_NAME} (sha256); scores may not compare",
              file=sys.stderr)
    return load_state(state, str(path))


class UTMOS:
    """The predictor: mono 16 kHz audio (numpy) -> MOS; NaN for clips shorter than the model can score."""
    name = "utmos"

    def __init__(self, checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = load_checkpoint(find_checkpoint(checkpoint)).to(self.device)

    def __call__(self, audio: np.ndarray) -> float:
        if len(audio) < MIN_SAMPLES:
            return float("nan")
        return float(self.model(torch.as_tensor(audio, dtype=torch.float32, device=self.device)[None])[0])
