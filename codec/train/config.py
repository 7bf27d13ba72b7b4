"""Training configuration."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ModelConfig


@dataclass
class DataConfig:
    train: str = ""                 # folder, list of paths, or TSV/CSV manifest
    split: str | None = None        # keep only manifest rows whose `split` column equals this
    crop_seconds: float = 1.0
    batch_size: int = 8


@dataclass
class LossConfig:
    mel: float = 1.0
    stft: float = 1.0
    quantizer: float = 20.0         # the paper weighs it 1000 against mel 45; this keeps that ratio


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int = 10000
    learning_rate: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    warmup_steps: int = 200
    grad_clip: float = 1.0
    quantizer_dropout: float = 0.5  # share of steps that use a random number of codebooks instead of all
    checkpoint_every: int = 200
    log_every: int = 20
    seed: int = 0
    threads: int = 2
    out_dir: str = "runs/train"
