"""Training data: a folder of audio (recursive, any format and rate) or a manifest, served as random crops."""
from __future__ import annotations

import functools
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile
import torch
from tqdm import tqdm

from ..audio import info, load_audio, resample
from ..corpus import read_utterances
from ..errors import AudioError, ConfigError


def read_file_list(source: str, split: str | None = None) -> list[Path]:
    """The audio files of a folder (recursive) or a manifest (JSONL, CSV, TSV or a list of paths); `split` keeps
    the rows whose `split` column has that value. The formats are those of `codec.corpus`."""
    return [utterance.path for utterance in read_utterances(source, split)]


class AudioCrops:
    """Random crops of `crop_samples` at the model's rate; item i is seeded by i alone, so any process (or a
    resumed run, or a data-loader worker) draws the same crop for the same item.

    `in_memory` holds every file decoded at the model's rate (fast; ~350 MB per hour of audio); otherwise only
    the files' lengths are read up front and each crop is read from its file (a corpus of hundreds of hours).
    Files are drawn by duration, so every second is equally likely, except that a second of a file recorded above
    16 kHz is `high_rate_weight` times as likely: in a corpus of mostly 16 kHz speech only those files teach a
    24 kHz model the band above 8 kHz. Clips shorter than a crop are repeated to fill it, so no batch is mostly
    silence. Unreadable files are skipped with a warning rather than ending a run.
    """

    def __init__(self, files: list[Path], sample_rate: int, crop_samples: int, seed: int = 0,
                 in_memory: bool = True, high_rate_weight: float = 1.0) -> None:
        self.rate, self.crop, self.seed = sample_rate, crop_samples, seed
        self.files: list[Path] = []
        self.clips: list[torch.Tensor] = []  # in memory only
        self.source_rates: list[int] = []
        lengths = []
        # Decoding and resampling release the GIL: threads load a corpus several times faster on several cores.
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            results = pool.map(functools.partial(self._read, in_memory=in_memory), files)
            for file, result in zip(files, tqdm(results, total=len(files), leave=False,
                                                desc="loading audio" if in_memory else "reading audio lengths")):
                if isinstance(result, AudioError):
                    print(f"warning: skipping {result}", file=sys.stderr)
                    continue
                meta, clip = result
                if in_memory:
                    self.clips.append(clip)
                    lengths.append(len(clip))
                else:
                    lengths.append(meta.frames * sample_rate // meta.samplerate)
                self.source_rates.append(meta.samplerate)
                self.files.append(file)
        if not self.files or not sum(lengths):
            raise ConfigError("no readable audio in the training data")
        self.lengths = torch.tensor(lengths, dtype=torch.float64)
        high_rate = torch.tensor([rate > 16000 for rate in self.source_rates])
        weights = self.lengths * torch.where(high_rate, high_rate_weight, 1.0)
        self.weights = weights / weights.sum()

    def _read(self, file: Path, in_memory: bool):
        try:
            return info(file), load_audio(file, self.rate)[0] if in_memory else None
        except AudioError as error:
            return error

    def __getitem__(self, item: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + item)
        index = torch.multinomial(self.weights, 1, generator=generator).item()
        length = int(self.lengths[index])
        repeated = length < self.crop
        start = torch.randint(0, (length * (self.crop // length + 1) if repeated else length) - self.crop + 1,
                              (1,), generator=generator).item()
        if repeated or self.clips:
            clip = self.clips[index] if self.clips else load_audio(self.files[index], self.rate)[0]
            if repeated:
                clip = clip.repeat(self.crop // len(clip) + 1)
            crop = clip[start:start + self.crop]
        else:
            crop = read_span(self.files[index], self.source_rates[index], self.rate, start, self.crop)
        gain = 10 ** (torch.empty(1).uniform_(-6, 3, generator=generator) / 20)
        peak = crop.abs().max().clamp(min=1e-5)
        return (crop * torch.minimum(gain, 0.99 / peak))[None]


def read_span(path: Path, source_rate: int, rate: int, start: int, length: int) -> torch.Tensor:
    """Samples [start, start + length) at `rate` (mono) of a file at `source_rate`, reading only that span and a
    margin around it for the resampler's filter, so that it equals that cut of the whole file resampled (to
    ~1e-4)."""
    unit = rate // math.gcd(rate, source_rate)  # target samples that span a whole number of source ones
    margin = rate // 100 if source_rate != rate else 0
    begin = max(0, (start - margin) // unit * unit)
    end = start + length + margin
    try:
        data, _ = soundfile.read(str(path), start=begin * source_rate // rate,
                                 frames=-(-(end - begin) * source_rate // rate), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: cannot decode audio ({str(error).splitlines()[0]})") from None
    span = resample(data.mean(axis=1), source_rate, rate)[start - begin:start - begin + length]
    return torch.nn.functional.pad(span, (0, length - len(span)))


class StepBatches(torch.utils.data.Sampler):
    """The item indices of each step's batch, from `first_step` on: batch `s` of process `r` is a fixed function
    of (s, r), which is what makes a resumed run see the batches the uninterrupted run would have seen."""

    def __init__(self, first_step: int, steps: int, batch_size: int, rank: int, processes: int) -> None:
        self.first, self.steps, self.size, self.rank, self.processes = first_step, steps, batch_size, rank, processes

    def __len__(self) -> int:
        return self.steps - self.first

    def __iter__(self):
        for step in range(self.first, self.steps):
            first = (step * self.processes + self.rank) * self.size
            yield list(range(first, first + self.size))
