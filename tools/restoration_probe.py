"""Could a learned decoder restore what 1.5 kbps loses? A probe, not a model part:

    python tools/restoration_probe.py [--codebooks 2] [--back 3] [--ahead 3] [--postfilter 1.0 1.1 1.2] [--every 5]

Encodes every EVERY-th `train` file (its first 12 s) with the bundled model at CODEBOOKS codebooks, as it encodes
(searched), and trains a small MLP to predict, from the decoded latents of frames t-BACK .. t+AHEAD, what frame
t's decoded latents miss of the unquantized ones (squared error). Then decodes the first 20 `eval` files (6 s,
the learning curve's files) with and without that correction and prints PESQ-WB, STOI, mel distance and
DistillMOS for each postfilter (docs/world-codec.md, *What still holds 1.5 kbps back*).
"""
import argparse

import numpy as np
import torch
from oracle_envelopes import MANIFEST, scores
from tqdm import tqdm

from codec.audio import load_audio
from codec.metrics.distillmos import DistillMOS
from codec.train.data import read_file_list
from codec.weights import load

RATE = 24000


def windows(frames: torch.Tensor, back: int, ahead: int) -> torch.Tensor:
    """(F, D) -> (F, (back + 1 + ahead) D): each frame with its neighbours, the edge frames repeated."""
    padded = torch.cat([frames[:1].expand(back, -1), frames, frames[-1:].expand(ahead, -1)])
    return torch.cat([padded[i:i + len(frames)] for i in range(back + ahead + 1)], 1)


def decoded_pairs(model, files: list[str], seconds: float, count: int) -> list[tuple[torch.Tensor, ...]]:
    """Each file's unquantized and decoded latents (F, D), and its audio."""
    pairs = []
    for file in tqdm(files, desc="encoding", unit="file"):
        audio = load_audio(file, RATE)[0][:int(seconds * RATE)]
        with torch.no_grad():
            latents = model.encoder(model.pad_to_frames(audio[None, None]))
            decoded = model.quantizer.dequantize(model.quantizer.encode(latents, count)).float()
        pairs.append((latents[0].T, decoded[0].T, audio))
    return pairs


def train(pairs, back: int, ahead: int, epochs: int) -> torch.nn.Module:
    inputs = torch.cat([windows(decoded, back, ahead) for _, decoded, _ in pairs])
    targets = torch.cat([latents - decoded for latents, decoded, _ in pairs])
    mean, scale = inputs.mean(0), inputs.std(0) + 1e-3
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(inputs.shape[1], 512), torch.nn.GELU(), torch.nn.Linear(512, 512),
                              torch.nn.GELU(), torch.nn.Linear(512, targets.shape[1]))
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    order = torch.randperm(len(inputs))
    held, used = order[:5000], order[5000:]
    for _ in tqdm(range(epochs), desc="training", unit="epoch"):
        for batch in used[torch.randperm(len(used))].split(256):
            loss = (net((inputs[batch] - mean) / scale) - targets[batch]).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        error = (net((inputs[held] - mean) / scale) - targets[held]).square().mean()
    print(f"held-out frames: squared error {targets[held].square().mean():.4f} decoded, {error:.4f} corrected")
    return lambda decoded: decoded + net((windows(decoded, back, ahead) - mean) / scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codebooks", type=int, default=2)
    parser.add_argument("--back", type=int, default=3)
    parser.add_argument("--ahead", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--every", type=int, default=5, help="train on every EVERY-th `train` file")
    parser.add_argument("--postfilter", type=float, nargs="+", default=[1.0, 1.1, 1.2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, mos = load("bundled"), DistillMOS()
    correct = train(decoded_pairs(model, read_file_list(str(MANIFEST), "train")[::args.every], 12, args.codebooks),
                    args.back, args.ahead, args.epochs)
    scored = decoded_pairs(model, read_file_list(str(MANIFEST), "eval")[:20], 6, args.codebooks)
    for name, latents in (("decoded", lambda d: d), ("corrected", correct)):
        rows = {}
        for _, decoded, audio in scored:
            with torch.no_grad():
                restored = latents(decoded).T[None]
            for strength in args.postfilter:
                model.decoder.head.config.postfilter = strength
                with torch.no_grad():
                    out = model.decoder(restored)[0, 0][:len(audio)]
                rows.setdefault(strength, []).append(list(scores(audio.numpy(), out.numpy(), RATE, mos).values()))
        for strength, values in rows.items():
            print(f"{name}, postfilter {strength}: PESQ %.3f STOI %.4f mel %.3f DistillMOS %.3f"
                  % tuple(np.mean(values, 0)))


if __name__ == "__main__":
    main()
