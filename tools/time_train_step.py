"""Training throughput of a config, by part: audio-seconds trained per wall-second, and where a step's time goes.

    python tools/time_train_step.py recipes/low-latency/stage4.yaml [key=value ...] [--steps 5] [--precision fp32 bf16]

One training step as the trainer takes it (discriminator update, then generator update), on random audio of the
config's crop and batch size, timed part by part: the encoder, quantizer and decoder forward passes, each
reconstruction loss, the discriminators (their own update, and the generator's adversarial and feature-matching
terms), the generator's backward pass and the optimizer steps. The first step is a warm-up and not counted.
`--precision bf16` runs the networks under bfloat16 autocast (this CPU has AVX-512 BF16) and keeps the STFTs and
losses in fp32, as the trainer's `mixed_precision: bf16` does. Nothing else should run while it measures.
"""
import argparse
import contextlib
import time

import torch

from codec.config import load_yaml
from codec.model import Codec
from codec.train.config import TrainConfig
from codec.train.discriminators import Discriminators
from codec.train.losses import (ADVERSARIAL_LOSSES, CompressedSTFTLoss, MultiResolutionSTFTLoss, MultiScaleMelLoss,
                                feature_matching_loss)


class Stopwatch:
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.totals[part] = self.totals.get(part, 0.0) + now - self.last
        self.last = now


def measure(config: TrainConfig, steps: int, precision: str) -> dict[str, float]:
    torch.manual_seed(0)
    model = Codec.from_config(config.model).train()
    d = config.discriminator
    discriminators = Discriminators(periods=d.periods, scales=d.scales, stft_windows=d.stft_windows, width=d.width,
                                    stft_spectrum=d.stft_spectrum) if d else None
    losses = {"mel": MultiScaleMelLoss(config.model.sample_rate), "stft": MultiResolutionSTFTLoss()}
    if config.loss.complex_stft:
        losses["complex_stft"] = CompressedSTFTLoss()
    audio = torch.randn(config.data.batch_size, 1, int(config.data.crop_seconds * config.model.sample_rate)) * 0.1
    optimizer = torch.optim.Adam(model.parameters(), 1e-5)
    d_optimizer = torch.optim.Adam(discriminators.parameters(), 1e-5) if discriminators else None
    def networks():
        return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    watch = Stopwatch()
    for step in range(steps + 1):
        if step == 1:
            watch = Stopwatch()
        with networks():
            latents = model.encoder(model.pad_to_frames(audio))
            watch.lap("encoder")
            quantized = model.quantizer(latents)
            watch.lap("quantizer")
            decoded = model.decoder(quantized.quantized)[..., :audio.shape[-1]].float()
            watch.lap("decoder")
        total = config.loss.quantizer * quantized.loss.float()
        for name, loss in losses.items():
            total = total + getattr(config.loss, name) * loss(decoded, audio)
            watch.lap(f"loss {name}")
        if discriminators:
            with networks():
                d_loss = ADVERSARIAL_LOSSES[d.loss].discriminator_loss(discriminators(audio),
                                                                       discriminators(decoded.detach()))
            d_optimizer.zero_grad()
            d_loss.float().backward()
            d_optimizer.step()
            watch.lap("discriminators: own update")
            discriminators.requires_grad_(False)
            with networks():
                with torch.no_grad():
                    real = discriminators(audio)
                fake = discriminators(decoded)
                total = total + config.loss.adversarial * ADVERSARIAL_LOSSES[d.loss].generator_loss(fake).float() + \
                    config.loss.feature_matching * feature_matching_loss(real, fake).float()
            discriminators.requires_grad_(True)
            watch.lap("discriminators: generator terms")
        optimizer.zero_grad()
        total.backward()
        watch.lap("generator backward")
        optimizer.step()
        watch.lap("optimizer step")
    return {part: seconds / steps for part, seconds in watch.totals.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    args = parser.parse_args()
    config = load_yaml(TrainConfig, args.config, args.overrides)
    torch.set_num_threads(config.threads)
    audio_seconds = config.data.batch_size * config.data.crop_seconds
    print(f"{args.config}: batch {config.data.batch_size} x {config.data.crop_seconds:g} s, decoder "
          f"{config.model.decoder}, discriminators {'on' if config.discriminator else 'off'}, "
          f"{config.threads} threads, {args.steps} steps")
    for precision in args.precision:
        parts = measure(config, args.steps, precision)
        step = sum(parts.values())
        print(f"{precision}: {step:.2f} s per step, {audio_seconds / step:.2f} audio-seconds per second")
        for part, seconds in parts.items():
            print(f"  {part:34s} {seconds:7.3f} s  {100 * seconds / step:5.1f} %")
