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

EPOCHS = 8          # passes over the training frames per network
MIN_STEPS = 400     # and at least this many batches: a small corpus still fits
BATCH_FRAMES = 256
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4
HELD_OUT = 5000     # frames kept out of fitting (a tenth, at most) to report what a network gains on frames it did
# not see


def windows(refiner: LatentRefiner, decoded: list[torch.Tensor]) -> torch.Tensor:
    """Each frame's standardised window, its context before it, the frame and its look-ahead after it:
    (N, D, context + 1 + lookahead), as the refiner's first convolution reads it offline (zeros around a file)."""
    size = refiner.context_frames + 1 + refiner.lookahead_frames
    with torch.no_grad():
        return torch.cat([refiner.windows(x.T[None])[0].unfold(1, size, 1).transpose(0, 1) for x in decoded])


def fit_network(network: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                generator: torch.Generator, label: str) -> None:
    """Fit one network to targets (N, D) from inputs (N, D, window) by AdamW on the squared error."""
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


def fit_refiner(files: list[torch.Tensor], decoded: dict[int, list[torch.Tensor]], refiner: LatentRefiner,
                generator: torch.Generator) -> None:
    """Set the refiner's standardisation from the latents (F_i, D) and fit each of its networks to what the
    decoded copies at its number of codebooks (`decoded[count]`, the same shapes) miss of them."""
    every = torch.cat(files)
    with torch.no_grad():
        refiner.shift.copy_(every.mean(0))
        refiner.scale.copy_(every.std(0).clamp(min=1e-3))
    for count, network in zip(refiner.codebooks, refiner.networks):
        targets = torch.cat([x - y for x, y in zip(files, decoded[count])])
        fit_network(network, windows(refiner, decoded[count]), targets, generator, f"{count} codebooks")
