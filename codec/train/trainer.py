"""The training loop, the same on one CPU, one GPU, or many processes under `accelerate launch`.

Each step: a discriminator update (when a run has discriminators), then a generator update on multi-scale mel,
multi-resolution STFT, quantizer, adversarial and feature-matching losses. Around it: learning-rate warm-up and
cosine decay, gradient clipping, a guard that skips (and counts) steps with a non-finite loss or gradient,
quantizer dropout, an EMA of the generator, TensorBoard logs, validation with audio samples, and resumable
checkpoints.

Data position is the step: batch `s` of process `r` is a fixed function of (seed, s, r), so a resumed run sees
exactly the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from ..model import Codec
from ..weights import load_weights, save_weights
from .checkpoint import checkpoint_state, latest_checkpoint, restore_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import AudioCrops, StepBatches, read_file_list
from .discriminators import Discriminators
from .ema import EMA
from .losses import (ADVERSARIAL_LOSSES, CompressedSTFTLoss, MultiResolutionSTFTLoss, MultiScaleMelLoss,
                     feature_matching_loss)
from .monitor import Monitor
from .pitch import envelope_losses, pitch_labels, pitch_losses, teacher_audio, world_labels
from .runs import checkpoint_codec, find_run_checkpoint


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def codebooks_for_step(step: int, config: TrainConfig, num_codebooks: int) -> int:
    # Seeded by the step alone, so every process (and a resumed run) makes the same choice.
    chooser = random.Random(config.seed * 7919 + step)
    if chooser.random() < config.quantizer_dropout:
        return chooser.randint(1, num_codebooks)
    return num_codebooks


class Trainer:
    def __init__(self, config: TrainConfig, init_weights: str | None = None) -> None:
        from accelerate import Accelerator, DistributedDataParallelKwargs
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.config, self.out = config, Path(config.out_dir)
        # Later residual stages sit idle on steps that drop them; the frozen SimVQ bases never need a broadcast.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
        # Started as several processes without GPUs (torchrun, accelerate launch --multi_gpu), accelerate runs
        # each alone unless told it is on CPUs, then joins them with gloo: else each would train its own copy,
        # all into one out_dir. Here rather than in the command line, so that `train()` under torchrun joins too.
        several_cpus = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision, kwargs_handlers=[ddp],
                                       cpu=several_cpus)
        self.log(f"{self.accelerator.num_processes} process(es) on {self.accelerator.device.type}")
        codec = Codec.from_config(config.model)
        d = config.discriminator
        discriminators = Discriminators(periods=d.periods, scales=d.scales, stft_windows=d.stft_windows,
                                        width=d.width, stft_spectrum=d.stft_spectrum) if d else None
        if init_weights:
            self.warm_start(codec, discriminators, init_weights)
        for part in config.freeze:  # no gradient, so the optimizer leaves them as they are
            getattr(codec, part).requires_grad_(False)
        self.ema = EMA(codec, config.ema_decay) if config.ema_decay else None
        optimizer = torch.optim.Adam(codec.parameters(), lr=config.learning_rate, betas=tuple(config.betas))
        self.modules, self.optimizers = {"codec": codec}, {"codec": optimizer}
        if discriminators is not None:
            self.modules["discriminators"] = discriminators
            self.optimizers["discriminators"] = torch.optim.Adam(discriminators.parameters(), lr=d.learning_rate,
                                                                 betas=tuple(d.betas))
        if self.ema:
            self.modules["ema"] = self.ema
        self.step, self.skipped = 0, 0  # skipped: steps not taken for a non-finite loss or gradient
        checkpoint = latest_checkpoint(self.out / "checkpoints")
        if checkpoint:
            self.step, loaded = restore_checkpoint(checkpoint, self.modules, self.optimizers)
            self.skipped = checkpoint_state(checkpoint).get("skipped_steps", 0)
            if self.ema and "ema" not in loaded:  # a checkpoint from a run without EMA: start it here
                self.ema.model.load_state_dict(codec.state_dict())
            self.log(f"resumed from {checkpoint} at step {self.step} (restored: {', '.join(loaded)})")
        self.codec, self.codec_optimizer = self.accelerator.prepare(codec, optimizer)
        if self.ema:  # prepare() moved the generator to the device; the average must follow it
            self.ema.to(self.accelerator.device)
        if config.discriminator:
            self.discriminators, self.discriminator_optimizer = self.accelerator.prepare(
                self.modules["discriminators"], self.optimizers["discriminators"])
        self.mel_loss = MultiScaleMelLoss(config.model.sample_rate)
        self.stft_loss = MultiResolutionSTFTLoss()
        self.complex_stft_loss = CompressedSTFTLoss() if config.loss.complex_stft else None
        if self.accelerator.device.type == "cuda":  # TF32 matrix products: ~fp32 accuracy at several times the speed
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.total_steps = config.steps  # lowered to what fits in `minutes`, once the steps are timed

    def warm_start(self, codec: Codec, discriminators: Discriminators | None, source: str) -> None:
        """Copy the generator of a weights file, or of another run's checkpoint (its EMA) together with that
        run's discriminators when both runs have the same ones. Decoder tensors of another shape (a new head on a
        trained decoder) or kind (a new decoder on a trained encoder and quantizer) keep their fresh values."""
        if Path(source).is_dir():
            checkpoint = find_run_checkpoint(source)
            previous, _ = checkpoint_codec(checkpoint, raw=not (checkpoint / "ema.safetensors").is_file())
            file = checkpoint / "discriminators.safetensors"
            if discriminators is not None and file.is_file():
                try:
                    discriminators.load_state_dict(load_file(str(file)))
                    self.log(f"warm start: discriminators from {checkpoint}")
                except RuntimeError:
                    self.log(f"warm start: the discriminators of {checkpoint} differ from this run's; "
                             f"they start fresh")
        else:
            previous = load_weights(source, for_training=True)
        for part in ("encoder", "quantizer"):  # prepare() made sure these have the same shapes
            getattr(codec, part).load_state_dict(getattr(previous, part).state_dict())
        theirs = previous.decoder.state_dict()
        mine = codec.decoder.state_dict()
        kept = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
        codec.decoder.load_state_dict(kept, strict=False)
        fresh = sorted(mine.keys() - kept.keys())
        decoder = ("the decoder starts fresh" if not kept else
                   f"the decoder, except {', '.join(fresh)} (another shape: fresh)" if fresh else "the decoder")
        self.log(f"warm start: encoder, quantizer, {decoder} from {source}")

    def log(self, message: str) -> None:
        if self.accelerator.is_main_process:
            tqdm.write(message)

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        objective = ADVERSARIAL_LOSSES[self.config.discriminator.loss]
        loss = objective.discriminator_loss(self.discriminators(real), self.discriminators(fake.detach()))
        norm = self.update(loss, self.discriminators, self.discriminator_optimizer)
        return {"discriminator": loss.detach(), **({} if norm is None else {"grad_norm/discriminators": norm})}

    def update(self, loss: torch.Tensor, module: torch.nn.Module, optimizer) -> torch.Tensor | None:
        """Backward, clip and step; or skip the step and count it when the loss on any process, or the gradient,
        is not finite. Returns the gradient norm of a step taken.

        Every process takes the same decision: a process that skipped backward alone would leave the others
        waiting in DDP's gradient all-reduce. The gradients are all-reduced, so their norm is the same everywhere."""
        optimizer.zero_grad(set_to_none=True)
        nonfinite = (~torch.isfinite(loss.detach())).float().reshape(1)
        if self.accelerator.reduce(nonfinite, reduction="sum").item() == 0:
            self.accelerator.backward(loss)
            norm = self.accelerator.clip_grad_norm_(module.parameters(), self.config.grad_clip)
            if torch.isfinite(norm):
                optimizer.step()
                return norm
            if self.accelerator.scaler is not None:
                optimizer.step()  # fp16: the grad scaler skips this step itself, and must see it to lower its scale
            optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        return None

    def generator_step(self, real: torch.Tensor, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        config = self.config
        decoder = self.accelerator.unwrap_model(self.codec).decoder
        labels = envelopes = None
        if hasattr(decoder, "pitch_prediction"):  # decoders that predict f0 (harmonic) learn it from labels
            frames = -(-real.shape[-1] // decoder.hop_length)
            if config.loss.envelope > 0 or config.loss.teacher > 0:  # envelopes from the same pitch track
                labels, *envelopes = world_labels(real, config.model.sample_rate, decoder.hop_length, frames,
                                                  decoder.head.n_fft // 2 + 1)
            else:
                labels = pitch_labels(real, config.model.sample_rate, decoder.hop_length, frames)
            decoder.head.given_f0 = labels if config.teacher_forced_f0 else None
        output = self.codec(real, codebooks_for_step(step, config, config.model.quantizer.num_codebooks))
        losses = {"mel": 0.0, "stft": 0.0, "quantizer": output.loss}
        targets = [(real, 1.0 - config.loss.teacher)]
        if config.loss.teacher > 0:
            targets.append((teacher_audio(decoder.head, labels, *envelopes)[..., :real.shape[-1]],
                            config.loss.teacher))
        for target, share in targets:
            if share > 0:  # a share of 0 costs nothing: the crop's losses when the teacher takes all of them
                losses["mel"] = losses["mel"] + share * self.mel_loss(output.audio, target)
                losses["stft"] = losses["stft"] + share * self.stft_loss(output.audio, target)
        if self.complex_stft_loss is not None:
            losses["complex_stft"] = self.complex_stft_loss(output.audio, real)
        if labels is not None:
            decoder.head.given_f0 = None  # validation and export see the f0 head
            losses.update(pitch_losses(decoder.pitch_prediction, labels))
        if config.loss.envelope > 0:
            losses["envelope"] = envelope_losses(decoder.pitch_prediction, *envelopes, labels > 0)
        adversarial = config.discriminator is not None and step >= config.discriminator.start_step
        if adversarial:
            parts = self.discriminator_step(real, output.audio)
            # The generator's backward needs gradients through the discriminators, not for their weights, and
            # none at all through the real branch (its features are only targets): skip both.
            self.discriminators.requires_grad_(False)
            with torch.no_grad():
                real_out = self.discriminators(real)
            fake_out = self.discriminators(output.audio)
            self.discriminators.requires_grad_(True)  # the graph above is already built without them
            losses["adversarial"] = ADVERSARIAL_LOSSES[config.discriminator.loss].generator_loss(fake_out)
            losses["feature_matching"] = feature_matching_loss(real_out, fake_out)
        total = sum(getattr(config.loss, name) * value for name, value in losses.items())
        stats = {name: value.detach() for name, value in losses.items()}
        if adversarial:
            stats.update(parts)
        stats["total"] = total.detach()
        norm = self.update(total, self.codec, self.codec_optimizer)
        if norm is not None:
            stats["grad_norm/codec"] = norm
            if self.ema:
                self.ema.update(self.accelerator.unwrap_model(self.codec))
        return stats, output.codes

    def set_learning_rates(self, step: int) -> None:
        factor = learning_rate_factor(step, self.config.warmup_steps, self.total_steps)
        for group in self.codec_optimizer.param_groups:
            group["lr"] = self.config.learning_rate * factor
        if self.config.discriminator:
            for group in self.discriminator_optimizer.param_groups:
                group["lr"] = self.config.discriminator.learning_rate * factor

    def learning_rates(self) -> dict[str, float]:
        rates = {"learning_rate": self.codec_optimizer.param_groups[0]["lr"]}
        if self.config.discriminator:
            rates["learning_rate/discriminators"] = self.discriminator_optimizer.param_groups[0]["lr"]
        return rates

    def inference_model(self) -> Codec:
        return self.ema.model if self.ema else self.accelerator.unwrap_model(self.codec)

    def save(self, step: int) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            modules = {"codec": self.accelerator.unwrap_model(self.codec), **{
                k: v for k, v in self.modules.items() if k != "codec"}}
            save_checkpoint(self.out / "checkpoints", step, modules, self.optimizers, {"skipped_steps": self.skipped})
            save_weights(self.inference_model(), self.out / "weights.safetensors")
        self.accelerator.wait_for_everyone()

    def fit(self) -> Path:
        config = self.config
        data = config.data
        crop = int(data.crop_seconds * config.model.sample_rate)
        dataset = AudioCrops(read_file_list(data.train, data.split), config.model.sample_rate, crop, config.seed,
                             data.in_memory, data.high_rate_weight)
        batches = StepBatches(self.step, config.steps, data.batch_size, self.accelerator.process_index,
                              self.accelerator.num_processes)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=data.workers,
                                             pin_memory=self.accelerator.device.type == "cuda")
        monitor = Monitor(self.out / "logs", config, self.accelerator.is_main_process)
        clock = TrainingClock(self, monitor, data.crop_seconds * data.batch_size * self.accelerator.num_processes)
        self.codec.train()
        for part in config.freeze:  # a frozen quantizer must not fit itself to a batch either
            getattr(self.accelerator.unwrap_model(self.codec), part).eval()
        progress = tqdm(initial=self.step, total=self.total_steps, desc="training",
                        disable=not self.accelerator.is_main_process)
        for step, batch in zip(range(self.step, config.steps), loader):
            if step >= self.total_steps:
                break
            self.set_learning_rates(step)
            if "quantizer" not in config.freeze and 0 < step < config.codebook_refit_until and \
                    step % config.codebook_refit_every == 0:
                for stage in self.accelerator.unwrap_model(self.codec).quantizer.stages:
                    stage.initialized.fill_(False)
                if self.ema:
                    self.ema.restart()
            stats, codes = self.generator_step(batch.to(self.accelerator.device, non_blocking=True), step)
            if step % config.log_every == 0:
                monitor.log_step(step, stats, codes, self.learning_rates(), self.skipped)
                progress.set_postfix(mel=f"{stats['mel'].item():.3f}", skipped=self.skipped)
            done = step + 1
            clock.tick(done)
            progress.total = self.total_steps
            progress.update()
            if done % config.valid_every == 0 or done == self.total_steps:
                monitor.validate(done, self.inference_model())
            if done % config.checkpoint_every == 0 or done == self.total_steps:
                self.save(done)
        progress.close()
        clock.finish(self.total_steps)
        monitor.close()
        return self.out / "weights.safetensors"


class TrainingClock:
    """Minutes of training (the time spent scoring curve points left out) and hours of audio seen, for the
    `minutes` budget and the learning curve. With a budget, the step count is planned from the average speed so
    far, after every step, so that the cosine schedule ends with the budget."""

    TIMED = 2  # steps before the first plan; planned again after every step as the average speed settles

    def __init__(self, trainer: Trainer, monitor: Monitor, audio_seconds_per_step: float) -> None:
        self.trainer, self.monitor, self.per_step = trainer, monitor, audio_seconds_per_step
        self.config = trainer.config
        self.start, self.first_step = time.monotonic(), trainer.step
        # seconds spent on curve points, and on the latest one: the first also loads the scorers' models, so the
        # latest, not the mean, forecasts the points to come
        self.scoring, self.last_point = 0.0, 0.0
        self.next_point = self.config.curve_every_minutes
        if self.first_step == 0 and self.config.curve_every_minutes:
            self.point(0)

    def training_minutes(self) -> float:
        return (time.monotonic() - self.start - self.scoring) / 60

    def point(self, done: int) -> None:
        began = time.monotonic()
        self.monitor.score_curve(done, self.training_minutes(), done * self.per_step / 3600,
                                 self.trainer.inference_model())
        self.last_point = time.monotonic() - began
        self.scoring += self.last_point

    def plan(self, done: int) -> None:
        """Set the step count that ends the run at its budget, curve points to come included."""
        elapsed = time.monotonic() - self.start
        per_step = (elapsed - self.scoring) / (done - self.first_step)
        left = self.config.minutes * 60 - elapsed
        if self.config.curve_every_minutes:
            left -= left / 60 / self.config.curve_every_minutes * self.last_point
        self.trainer.total_steps = min(self.config.steps, done + max(0, int(left / per_step)))

    def tick(self, done: int) -> None:
        if self.config.minutes and done - self.first_step >= self.TIMED:
            self.plan(done)
        minutes = self.training_minutes()
        if self.next_point and minutes >= self.next_point and done < self.trainer.total_steps:
            self.point(done)
            every = self.config.curve_every_minutes
            self.next_point = (minutes // every + 1) * every  # a step longer than `every` skips points

    def finish(self, done: int) -> None:
        """The curve's last point: the final weights."""
        if self.config.curve_every_minutes:
            self.point(done)


def train(config: TrainConfig, init_weights: str | None = None) -> Path:
    return Trainer(config, init_weights).fit()
