"""Training configuration: what to train (model), on what (data), how (losses, discriminators, optimisation)."""
from __future__ import annotations

import typing
from dataclasses import dataclass, field

from ..config import ModelConfig


@dataclass
class DataConfig:
    limits: typing.ClassVar = {"valid_files": (1, None), "valid_seconds": (0.01, None),
                               "crop_seconds": (0.01, None), "batch_size": (1, None),
                               "workers": (0, None), "high_rate_weight": (0.01, None)}
    train: str = ""                 # folder (recursive), list of paths, or TSV/CSV manifest
    split: str | None = None        # keep only manifest rows whose `split` column equals this
    valid: str | None = None        # held-out validation audio (same forms); none: no validation pass
    valid_split: str | None = None
    valid_files: int = 8            # validation uses the first N files, at most `valid_seconds` each
    valid_seconds: float = 5.0
    crop_seconds: float = 1.0
    batch_size: int = 8             # per process
    # Decode the whole corpus into memory (~350 MB per hour at 24 kHz, per process), or read each crop from its
    # file: for a corpus of hundreds of hours, with `workers` data-loader processes reading ahead.
    in_memory: bool = True
    workers: int = 0                # data-loader processes per training process; 0 reads in the training loop
    # A second of a file recorded above 16 kHz is drawn this many times as often as one of a 16 kHz file: a 24 kHz
    # model learns the band above 8 kHz from those files alone.
    high_rate_weight: float = 1.0


@dataclass
class DiscriminatorConfig:
    limits: typing.ClassVar = {"periods": (1, None), "scales": (1, None), "stft_windows": (16, None),
                               "width": (0.01, None), "learning_rate": (0, None), "betas": (0, 1),
                               "start_step": (0, None)}
    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])   # multi-period (HiFi-GAN)
    scales: list[int] = field(default_factory=lambda: [1, 2, 4])           # multi-scale waveform (MelGAN)
    stft_windows: list[int] = field(default_factory=lambda: [2048, 1024, 512])  # multi-resolution STFT (DAC)
    stft_spectrum: typing.Literal["complex", "magnitude"] = "complex"  # what the STFT discriminators see
    width: float = 1.0              # scales every channel count
    loss: typing.Literal["hinge", "least_squares"] = "hinge"
    learning_rate: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    start_step: int = 0             # train the generator on reconstruction alone before this step

    def problem(self) -> str | None:
        if not (self.periods or self.scales or self.stft_windows):
            return "periods, scales and stft_windows are all empty; for no discriminators, set discriminator: null"
        return None


@dataclass
class LossConfig:
    limits: typing.ClassVar = {**{name: (0, None) for name in ("mel", "stft", "complex_stft", "quantizer",
                                                               "adversarial", "feature_matching", "f0", "voicing",
                                                               "envelope")}, "teacher": (0, 1)}
    mel: float = 1.0
    stft: float = 1.0
    complex_stft: float = 0.0       # compressed complex STFT (losses.CompressedSTFTLoss): asks for the phase too
    quantizer: float = 20.0         # the paper weighs it 1000 against mel 45; this keeps that ratio
    adversarial: float = 1.0
    feature_matching: float = 2.0
    # The harmonic decoder's pitch supervision (train/pitch.py); only that decoder computes these losses.
    f0: float = 1.0                 # L1 on log-f0 over voiced frames
    voicing: float = 1.0            # BCE on the voicing decision
    # L1 between the shapes of the predicted log-envelopes and WORLD's analysis of the crop (train/pitch.py)
    envelope: float = 0.0
    # the reconstruction losses compare with the harmonic head driven by WORLD's analysis of the crop (its f0,
    # harmonic and noise envelopes) instead of the crop itself, mixed in this share (0: the crop alone)
    teacher: float = 0.0


@dataclass
class TrainConfig:
    limits: typing.ClassVar = {"steps": (1, None), "learning_rate": (0, None), "betas": (0, 1),
                               "warmup_steps": (0, None), "grad_clip": (0, None), "quantizer_dropout": (0, 1),
                               "codebook_refit_every": (1, None), "codebook_refit_until": (0, None),
                               "ema_decay": (0, 0.99999), "checkpoint_every": (1, None), "valid_every": (1, None),
                               "log_every": (1, None), "threads": (1, None),
                               "minutes": (0.01, None), "curve_every_minutes": (0.01, None),
                               "curve_codebooks": (1, None)}
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    discriminator: DiscriminatorConfig | None = None  # none: reconstruction losses only
    steps: int = 10000
    learning_rate: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    warmup_steps: int = 200
    grad_clip: float = 1.0
    quantizer_dropout: float = 0.5  # share of steps that use a random number of codebooks instead of all
    # The encoder moves fast early on and can leave the codebook behind (then one code wins everything); until
    # `codebook_refit_until`, every `codebook_refit_every` steps each stage is refitted to the current batch.
    codebook_refit_every: int = 25
    codebook_refit_until: int = 500
    ema_decay: float = 0.999        # 0 turns the EMA off; exported weights are the EMA's when on
    # Parts of the generator left as they are. Freezing the encoder and the quantizer trains the decoder alone,
    # and every code keeps its meaning: codes made before still decode, with the new decoder.
    freeze: list[typing.Literal["encoder", "quantizer"]] = field(default_factory=list)
    # The harmonic decoder's oscillator follows the pitch labels on voiced frames instead of its own f0 head
    # (which still learns from them), as DDSP and NSF train: the envelopes learn against harmonics in the right
    # place from the first step. At inference the f0 head drives the oscillator.
    teacher_forced_f0: bool = False
    mixed_precision: typing.Literal["no", "bf16", "fp16"] = "no"  # the quantizer's search stays fp32
    # A wall-clock budget for this run (per start: a resumed run gets it anew). The trainer times its steps and
    # sets the number of steps (at most `steps`) that fits, so the learning-rate schedule ends with the budget.
    minutes: float | None = None
    # Score the validation files (PESQ, STOI, mel distance; at every codebook count in `curve_codebooks`) every
    # this many minutes of training, into out_dir/curve.jsonl: the learning curve against hours of training and
    # hours of audio seen (`codec`'s reference curves are made this way).
    curve_every_minutes: float | None = None
    curve_codebooks: list[int] = field(default_factory=list)  # none: all of the model's
    checkpoint_every: int = 200
    valid_every: int = 500
    log_every: int = 20
    seed: int = 0
    threads: int = 2                # torch threads per process
    out_dir: str = "runs/train"
