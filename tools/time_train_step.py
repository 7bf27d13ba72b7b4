"""Time one training step (forward, reconstruction losses, backward, optimizer) of a training config, by part.

    python tools/time_train_step.py recipes/bundled/stage3.yaml [key=value ...] [--steps 5]

Random audio of the config's crop and batch size; the first step is a warm-up and not counted. Used to compare
decoders: `model.decoder=seanet` against `model.decoder=istft` on the same config.
"""
import argparse
import time

import torch

from codec.config import load_yaml
from codec.model import Codec
from codec.train.config import TrainConfig
from codec.train.losses import MultiResolutionSTFTLoss, MultiScaleMelLoss

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    config = load_yaml(TrainConfig, args.config, args.overrides)
    torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    model = Codec(config.model).train()
    mel, stft = MultiScaleMelLoss(config.model.sample_rate), MultiResolutionSTFTLoss()
    audio = torch.randn(config.data.batch_size, 1, int(config.data.crop_seconds * config.model.sample_rate)) * 0.1
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    parts = ["encoder", "quantizer", "decoder", "losses", "backward", "step"]
    totals = dict.fromkeys(parts, 0.0)
    for step in range(args.steps + 1):
        marks = [time.perf_counter()]
        latents = model.encoder(model._pad(audio)); marks.append(time.perf_counter())
        quantized = model.quantizer(latents); marks.append(time.perf_counter())
        decoded = model.decoder(quantized.quantized)[..., :audio.shape[-1]]; marks.append(time.perf_counter())
        loss = mel(decoded, audio) + stft(decoded, audio) + quantized.loss; marks.append(time.perf_counter())
        optimizer.zero_grad(); loss.backward(); marks.append(time.perf_counter())
        optimizer.step(); marks.append(time.perf_counter())
        if step:
            for part, start, end in zip(parts, marks, marks[1:]):
                totals[part] += (end - start) / args.steps
    decoder = sum(p.numel() for p in model.decoder.parameters()) / 1e6
    print(f"decoder {config.model.decoder} ({decoder:.1f} M parameters), batch {tuple(audio.shape)}, "
          f"{config.threads} threads: {sum(totals.values()):.2f} s per step")
    print("  " + ", ".join(f"{part} {seconds:.2f} s" for part, seconds in totals.items()))
