"""Training data: a folder of audio (recursive, any format and rate) or a manifest, served as random crops."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from ..audio import load
from ..corpus import read_utterances
from ..errors import AudioError, ConfigError


def read_file_list(source: str, split: str | None = None) -> list[Path]:
    """The audio files of a folder (recursive) or a manifest (JSONL, CSV, TSV or a list of paths); `split` keeps
    the rows whose `split` column has that value. The formats are those of `codec.corpus`."""
    return [utterance.path for utterance in read_utterances(source, split)]


class AudioCrops:
    """All files held in memory at the model's rate; item i is a random crop of `crop_samples` seeded by i.

    Clips shorter than a crop are repeated to fill it, so no batch is mostly silence. Unreadable files are
    skipped with a warning rather than ending a run.
    """

    def __init__(self, files: list[Path], sample_rate: int, crop_samples: int, seed: int = 0) -> None:
        self.clips: list[torch.Tensor] = []
        for file in tqdm(files, desc="loading audio", leave=False):
            try:
                self.clips.append(load(file, sample_rate)[0])
            except AudioError as error:
                print(f"warning: skipping {error}")
        if not self.clips:
            raise ConfigError("no readable audio in the training data")
        lengths = torch.tensor([len(c) for c in self.clips], dtype=torch.float64)
        self.weights = lengths / lengths.sum()  # sample files by duration: every second equally likely
        self.crop, self.seed = crop_samples, seed

    def __getitem__(self, item: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + item)
        clip = self.clips[torch.multinomial(self.weights, 1, generator=generator).item()]
        if len(clip) < self.crop:
            clip = clip.repeat(self.crop // len(clip) + 1)
        start = torch.randint(0, len(clip) - self.crop + 1, (1,), generator=generator).item()
        crop = clip[start:start + self.crop]
        gain = 10 ** (torch.empty(1).uniform_(-6, 3, generator=generator) / 20)
        peak = crop.abs().max().clamp(min=1e-5)
        return (crop * torch.minimum(gain, 0.99 / peak))[None]
