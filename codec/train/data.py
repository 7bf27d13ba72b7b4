"""Training data: a folder of audio (recursive, any format and rate) or a manifest, served as random crops."""
from __future__ import annotations

import csv
from pathlib import Path

import torch
from tqdm import tqdm

from ..audio import list_audio, load
from ..errors import AudioError, ConfigError


def read_file_list(source: str, split: str | None = None) -> list[Path]:
    """A folder (recursive), a text file of paths, or a TSV/CSV manifest with a `file`/`path` column.

    Relative paths in a manifest are taken relative to the manifest's folder; `split` filters a `split` column.
    """
    path = Path(source)
    if path.is_dir():
        return list_audio([path])
    if not path.is_file():
        raise ConfigError(f"data source {source} does not exist")
    if path.suffix in {".tsv", ".csv"}:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))
        column = next((c for c in ("file", "path", "audio") if rows and c in rows[0]), None)
        if column is None:
            raise ConfigError(f"{source}: manifest needs a 'file' or 'path' column")
        if split:
            rows = [r for r in rows if r.get("split") == split]
        return [path.parent / r[column] for r in rows]
    return [path.parent / line.strip() for line in path.read_text().splitlines() if line.strip()]


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
