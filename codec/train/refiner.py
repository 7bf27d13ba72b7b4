"""The latent refiner's networks (`codec.nn.refiner`), fitted after the codebooks: each learns, at its number of
codebooks, what the decoded latents of the training audio miss of the encoder's (squared error), from the codes
the encoder chooses (its search included), so that it corrects what decoding will actually see.

Why squared error on the latents, not a loss on the audio: the latents are WORLD's parameters, whose squared error
the codebooks were fitted to and the search minimises, and a frame's target is then one subtraction, so a network
fits on all the training frames in minutes on this CPU (a prototype with a fifth of them: docs/world-codec.md).
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from ..nn.refiner import LatentRefiner
from ..quantize import ResidualQuantizer

EPOCHS = 8          # passes over the training frames per network
MIN_STEPS = 400     # and at least this many batches: a small corpus still fits
BATCH_FRAMES = 256
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4
HELD_OUT = 5000     # frames kept out of fitting (a tenth, at most) to report what a network gains on frames it did
# not see
ENCODE_BATCH = 64   # files encoded together, sorted by length so that little padding enters the last search


def decoded_latents(files: list[torch.Tensor], quantizer: ResidualQuantizer, count: int) -> list[torch.Tensor]:
    """Each file's latents (F_i, D) -> its latents coded at `count` codebooks and decoded (F_i, D)."""
    decoded: list[torch.Tensor | None] = [None] * len(files)
    order = sorted(range(len(files)), key=lambda i: len(files[i]))
    for start in tqdm(range(0, len(order), ENCODE_BATCH), desc=f"coding at {count} codebooks", unit="batch"):
        group = order[start:start + ENCODE_BATCH]
        batch = torch.nn.utils.rnn.pad_sequence([files[i] for i in group], batch_first=True).transpose(1, 2)
        with torch.no_grad():
            latents = quantizer.dequantize(quantizer.encode(batch, count)).float().transpose(1, 2)
        for i, row in zip(group, latents):
            decoded[i] = row[:len(files[i])]
    return decoded


def windows(refiner: LatentRefiner, decoded: list[torch.Tensor]) -> torch.Tensor:
    """Each frame's standardised window, the frame and its context before it: (N, D, context + 1), as the
    refiner's first convolution reads it offline (zeros before a file's first frame)."""
    with torch.no_grad():
        return torch.cat([refiner.windows(x.T[None])[0].unfold(1, refiner.context_frames + 1, 1).transpose(0, 1)
                          for x in decoded])


def fit_network(network: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                generator: torch.Generator, label: str) -> None:
    """Fit one network to targets (N, D) from inputs (N, D, context + 1) by AdamW on the squared error."""
    order = torch.randperm(len(inputs), generator=generator)
    held, used = order[:min(HELD_OUT, len(order) // 10)], order[min(HELD_OUT, len(order) // 10):]
    optimizer = torch.optim.AdamW(network.parameters(), LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    epochs = max(EPOCHS, -(-MIN_STEPS // -(-len(used) // BATCH_FRAMES)))
    for _ in tqdm(range(epochs), desc=f"fitting the refiner at {label}", unit="epoch"):
        for batch in used[torch.randperm(len(used), generator=generator)].split(BATCH_FRAMES):
            loss = (network(inputs[batch])[..., 0] - targets[batch]).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        error = (network(inputs[held])[..., 0] - targets[held]).square().mean()
    print(f"refiner at {label}: squared error on {len(held)} held-out frames {targets[held].square().mean():.4f} "
          f"decoded, {error:.4f} refined")


def fit_refiner(files: list[torch.Tensor], refiner: LatentRefiner, quantizer: ResidualQuantizer,
                generator: torch.Generator) -> None:
    """Set the refiner's standardisation from the latents (F_i, D) and fit each of its networks."""
    every = torch.cat(files)
    with torch.no_grad():
        refiner.shift.copy_(every.mean(0))
        refiner.scale.copy_(every.std(0).clamp(min=1e-3))
    for count, network in zip(refiner.codebooks, refiner.networks):
        decoded = decoded_latents(files, quantizer, count)
        targets = torch.cat([x - y for x, y in zip(files, decoded)])
        fit_network(network, windows(refiner, decoded), targets, generator, f"{count} codebooks")
