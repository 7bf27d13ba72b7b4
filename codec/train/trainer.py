"""The training loop: reconstruction losses, warm-up, gradient clipping, a guard against non-finite losses,
quantizer dropout, TensorBoard logs and resumable checkpoints."""
from __future__ import annotations

import math
import random
from pathlib import Path

import torch
from tqdm import tqdm

from ..model import Codec
from ..weights import save_weights
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import AudioCrops, read_file_list
from .losses import MultiResolutionSTFTLoss, MultiScaleMelLoss


def _learning_rate_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _codebooks_for_step(step: int, config: TrainConfig, num_codebooks: int) -> int:
    # Seeded by the step alone, so every process (and a resumed run) makes the same choice.
    chooser = random.Random(config.seed * 7919 + step)
    if chooser.random() < config.quantizer_dropout:
        return chooser.randint(1, num_codebooks)
    return num_codebooks


def train(config: TrainConfig, resume: bool = True, init_weights: str | None = None) -> Path:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    out = Path(config.out_dir)
    codec = Codec(config.model)
    if init_weights:
        from ..weights import load_weights
        codec.load_state_dict(load_weights(init_weights, for_training=True).state_dict())
    optimizer = torch.optim.Adam(codec.parameters(), lr=config.learning_rate, betas=tuple(config.betas))
    step = 0
    checkpoint = latest_checkpoint(out / "checkpoints") if resume else None
    if checkpoint:
        step = load_checkpoint(checkpoint, {"codec": codec}, {"codec": optimizer})
        print(f"resumed from {checkpoint} at step {step}")
    files = read_file_list(config.data.train, config.data.split)
    crop = int(config.data.crop_seconds * config.model.sample_rate)
    dataset = AudioCrops(files, config.model.sample_rate, crop, config.steps * config.data.batch_size, config.seed)
    mel_loss, stft_loss = MultiScaleMelLoss(config.model.sample_rate), MultiResolutionSTFTLoss()
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(out / "logs"))
    skipped = 0
    codec.train()
    progress = tqdm(range(step, config.steps), initial=step, total=config.steps, desc="training")
    for step in progress:
        batch = torch.stack([dataset[step * config.data.batch_size + j] for j in range(config.data.batch_size)])
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * _learning_rate_factor(step, config)
        output = codec(batch, _codebooks_for_step(step, config, codec.num_codebooks))
        losses = {"mel": mel_loss(output.audio, batch), "stft": stft_loss(output.audio, batch),
                  "quantizer": output.loss}
        total = sum(getattr(config.loss, name) * value for name, value in losses.items())
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(total):
            skipped += 1
            writer.add_scalar("train/skipped_steps", skipped, step)
            continue
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(codec.parameters(), config.grad_clip)
        optimizer.step()
        if step % config.log_every == 0:
            for name, value in losses.items():
                writer.add_scalar(f"train/{name}", value.item(), step)
            writer.add_scalar("train/total", total.item(), step)
            writer.add_scalar("train/grad_norm", grad_norm.item(), step)
            writer.add_scalar("train/learning_rate", optimizer.param_groups[0]["lr"], step)
            used = [len(torch.unique(output.codes[:, i])) for i in range(output.codes.shape[1])]
            writer.add_scalar("train/codes_used_first_codebook", used[0], step)
            progress.set_postfix(mel=f"{losses['mel'].item():.3f}", vq=f"{losses['quantizer'].item():.4f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            save_checkpoint(out / "checkpoints", step + 1, {"codec": codec}, {"codec": optimizer})
            save_weights(codec, out / "weights.safetensors")
    writer.close()
    return out / "weights.safetensors"
