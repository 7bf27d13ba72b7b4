"""What a training run shows: TensorBoard scalars (losses, gradient norms, learning rate, skipped steps,
per-codebook utilization and perplexity), at validation held-out scores, audio and mel spectrograms, and the
learning curve (out_dir/curve.jsonl): PESQ, STOI, DistillMOS and mel distance of the validation files against minutes of
training and hours of audio seen."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..audio import load_audio
from ..errors import AudioError, MetricUnavailable
from .config import TrainConfig
from .data import read_file_list
from .losses import MultiScaleMelLoss


def codebook_usage(codes: torch.Tensor, sizes: list[int]) -> list[tuple[float, float]]:
    """Per codebook of codes (B, Q, F): (share of its K codes used, perplexity = exp(entropy of code counts))."""
    usage = []
    for q, size in enumerate(sizes[:codes.shape[1]]):
        counts = torch.bincount(codes[:, q].flatten(), minlength=size).double()
        p = counts[counts > 0] / counts.sum()
        usage.append(((counts > 0).double().mean().item(), torch.exp(-(p * p.log()).sum()).item()))
    return usage


class Monitor:
    def __init__(self, folder: Path, config: TrainConfig, active: bool) -> None:
        self.config, self.active, self.writer, self.logged_originals = config, active, None, False
        self.folder = folder
        self.valid: list[torch.Tensor] = []
        self.mos = None  # the curve's DistillMOS predictor, where its package is installed
        if not active:
            return
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(folder))
        if config.data.valid:
            limit = int(config.data.valid_seconds * config.model.sample_rate)
            for file in read_file_list(config.data.valid, config.data.valid_split)[:config.data.valid_files]:
                try:
                    self.valid.append(load_audio(file, config.model.sample_rate)[0][:limit])
                except AudioError as error:
                    print(f"warning: skipping validation file {error}", file=sys.stderr)
        if self.valid and config.curve_every_minutes:
            from ..metrics.mos import distillmos
            try:
                self.mos = distillmos("cpu")
            except MetricUnavailable:
                pass

    def log_step(self, step: int, stats: dict, codes: torch.Tensor, learning_rates: dict[str, float],
                 skipped: int) -> None:
        if not self.active:
            return
        for name, value in {**stats, **learning_rates}.items():
            self.writer.add_scalar(f"train/{name}", float(value), step)
        self.writer.add_scalar("train/skipped_steps", skipped, step)
        sizes = [self.config.model.quantizer.codebook_size] * codes.shape[1]
        for q, (used, perplexity) in enumerate(codebook_usage(codes.cpu(), sizes)):
            self.writer.add_scalar(f"codebook_{q}/batch_utilization", used, step)
            self.writer.add_scalar(f"codebook_{q}/batch_perplexity", perplexity, step)

    @torch.no_grad()
    def validate(self, step: int, model) -> None:
        if not self.active or not self.valid:
            return
        was_training = model.training
        model.eval()
        rate = self.config.model.sample_rate
        mel = MultiScaleMelLoss(rate)
        device = next(model.parameters()).device
        distances, all_codes = [], []
        for i, audio in enumerate(self.valid):
            codes = model.encode(audio.to(device))
            decoded = model.decode(codes, length=len(audio))[0].cpu()
            distances.append(mel(decoded[None], audio[None]).item())
            all_codes.append(codes.cpu().flatten(start_dim=2))
            if i < 2:
                self.writer.add_audio(f"valid/{i}/decoded", decoded.clamp(-1, 1), step, rate)
                self.writer.add_figure(f"valid/{i}/mel", _mel_figure(audio, decoded, rate), step)
                if not self.logged_originals:
                    self.writer.add_audio(f"valid/{i}/original", audio, step, rate)
        self.logged_originals = True  # once per process: they never change
        self.writer.add_scalar("valid/mel_distance", sum(distances) / len(distances), step)
        codes = torch.cat(all_codes, dim=-1)
        for q, (used, perplexity) in enumerate(codebook_usage(codes, model.codebook_sizes)):
            self.writer.add_scalar(f"codebook_{q}/valid_utilization", used, step)
            self.writer.add_scalar(f"codebook_{q}/valid_perplexity", perplexity, step)
        model.train(was_training)

    @torch.no_grad()
    def score_curve(self, step: int, minutes: float, audio_hours: float, model) -> dict | None:
        """One point of the learning curve, appended to curve.jsonl: mean scores over the validation files at
        each codebook count of `curve_codebooks` (all of the model's when empty). PESQ, STOI and DistillMOS are
        left out when their packages are missing (pip install pesq pystoi; pip install --no-deps
        distillmos==0.9.1)."""
        if not self.active or not self.valid:
            return None
        from ..metrics.quality import align, mel_distance, pesq_wideband, stoi
        metrics = {"mel_distance": mel_distance}
        for name, metric, package in (("pesq", pesq_wideband, "pesq"), ("stoi", stoi, "pystoi")):
            try:
                __import__(package)
                metrics[name] = metric
            except ImportError:
                pass
        if self.mos:
            metrics["distillmos"] = self.mos
        was_training = model.training
        model.eval()
        rate = self.config.model.sample_rate
        device = next(model.parameters()).device
        point = {"step": step, "minutes": round(minutes, 3), "audio_hours": round(audio_hours, 4)}
        for count in self.config.curve_codebooks or [model.num_codebooks]:
            totals = dict.fromkeys(metrics, 0.0)
            for audio in self.valid:
                decoded = model.decode(model.encode(audio.to(device), num_codebooks=count), length=len(audio))
                pair = align(audio.numpy(), rate, decoded[0].cpu().numpy(), rate)
                for name, metric in metrics.items():
                    totals[name] += metric(pair) / len(self.valid)
            kbps = model.bitrate_for(count) / 1000
            for name, total in totals.items():
                point[f"{name}@{kbps:g}kbps"] = round(total, 4)
                self.writer.add_scalar(f"curve/{name}@{kbps:g}kbps", total, step)
        with open(self.folder.parent / "curve.jsonl", "a") as file:
            file.write(json.dumps(point) + "\n")
        model.train(was_training)
        return point

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def _mel_figure(original: torch.Tensor, decoded: torch.Tensor, rate: int):
    import librosa
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for axis, audio, title in zip(axes, (original, decoded), ("original", "decoded")):
        spectrum = librosa.feature.melspectrogram(y=audio.numpy(), sr=rate, n_fft=1024, hop_length=256, n_mels=80)
        axis.imshow(librosa.power_to_db(spectrum, ref=1.0), origin="lower", aspect="auto", cmap="magma")
        axis.set_title(title)
    figure.tight_layout()
    return figure
