"""Does the harmonic head's synthesis cap the low-latency model, or do the envelopes it predicts from the codes, and
which of them?

    python tools/oracle_envelopes.py [FILES]     # the first FILES (default 20) `eval` files, 6 s each

Drives the shipped model's harmonic head with WORLD's analysis of the original instead of the decoder's
predictions, at the decoder's frame rate: the training labels of `codec.train.pitch.world_labels` (pyworld's
f0, and CheapTrick's envelope split by D4C's aperiodicity into a harmonic and a noise envelope), each part's
level set so that its energy is its share of the original's. Then swaps one part at a time between WORLD's
analysis and the decoder's own predictions from the 6 kbps codes (the harmonic envelope, which the voicing
probability gates, the noise envelope, f0 and voicing). Scores each, and WORLD's own synthesis of the same
parameters, with PESQ-WB, STOI, mel distance and DistillMOS.
"""
import sys
from pathlib import Path

import numpy as np
import pyworld
import soxr
import torch

from codec.audio import load_audio
from codec.metrics.distillmos import DistillMOS
from codec.metrics.quality import align, mel_distance, pesq_wideband, stoi
from codec.nn.harmonic import PitchPrediction
from codec.train.data import read_file_list
from codec.train.pitch import world_labels
from codec.weights import load_weights, weights_path

MANIFEST = Path(__file__).parents[1].parent / "shared" / "data" / "MANIFEST.tsv"
SILENT = -30.0  # a log-envelope that mutes its part


class Given(torch.nn.Module):
    """Stands in for the head's envelope projection: returns the given log-envelopes (1, F, 2 bins)."""

    def __init__(self, logs: torch.Tensor) -> None:
        super().__init__()
        self.logs = logs

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logs


def synthesise(head, f0: np.ndarray, log_harmonic: np.ndarray, log_noise: np.ndarray) -> np.ndarray:
    """The head's output for per-frame f0 (Hz, 0 where unvoiced) and natural-log envelopes (F, bins)."""
    count = len(f0)
    head.linear = Given(torch.from_numpy(np.concatenate([log_harmonic, log_noise], -1)).float()[None])
    voicing = torch.from_numpy(np.where(f0 > 0, 30.0, -30.0)).float()[None]  # the gate fully open or shut
    bins = torch.zeros(1, count, len(head.bin_log_f0))
    head.predict_pitch = lambda features: PitchPrediction(
        torch.full((1, count), float(head.bin_log_f0[0]), dtype=torch.float64), voicing, bins, head.bin_log_f0)
    head.given_f0 = torch.from_numpy(f0)[None]
    with torch.no_grad():
        return head(torch.zeros(1, 1, count))[0, 0].numpy()


def world_resynthesis(x: np.ndarray, rate: int, period: float) -> np.ndarray:
    """WORLD's analysis (DIO + StoneMask, CheapTrick, D4C) and synthesis of x, at the decoder's frame period."""
    f0, times = pyworld.dio(x, rate, f0_floor=50.0, f0_ceil=500.0, frame_period=period)
    f0 = pyworld.stonemask(x, f0, times, rate)
    return pyworld.synthesize(f0, pyworld.cheaptrick(x, f0, times, rate), pyworld.d4c(x, f0, times, rate), rate,
                              frame_period=period)


def scores(reference: np.ndarray, decoded: np.ndarray, rate: int, mos: DistillMOS) -> dict[str, float]:
    pair = align(reference.astype(np.float32), rate, decoded.astype(np.float32), rate)
    return {"pesq": pesq_wideband(pair), "stoi": stoi(pair), "mel": mel_distance(pair),
            "distillmos": mos(soxr.resample(decoded.astype(np.float32), rate, 16000))}


def predictions(model, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """The decoder's own parts for x at 6 kbps: its output, f0 (Hz), the log voicing probability (the harmonic
    part's gate), the harmonic log-envelope with that gate folded in and the noise log-envelope."""
    with torch.no_grad():
        decoded = model(torch.from_numpy(x).float()[None, None]).audio[0, 0].double().numpy()
    pitch = model.decoder.pitch_prediction
    gate = torch.nn.functional.logsigmoid(pitch.voicing[0])[:, None]
    return (decoded, pitch.log_f0[0].exp().numpy(), gate.double().numpy(),
            (pitch.log_harmonic[0] + gate).double().numpy(), pitch.log_noise[0].double().numpy())


def main(count: int) -> None:
    torch.set_num_threads(1)
    model = load_weights(weights_path("low-latency")).eval()
    head = model.decoder.head
    own_linear, own_pitch = head.linear, head.predict_pitch
    rate, hop, bins = head.sample_rate, head.hop, head.n_fft // 2 + 1
    period = 1000.0 * hop / rate
    mos = DistillMOS()
    results: dict[str, list] = {}
    for file in read_file_list(str(MANIFEST), "eval")[:count]:
        x = load_audio(file, rate)[0][:6 * rate].double().numpy()
        frames = len(x) // hop
        x = x[:frames * hop]
        head.linear, head.predict_pitch, head.given_f0 = own_linear, own_pitch, None
        decoded, own_f0, own_gate, own_harmonic, own_noise = predictions(model, x)
        f0, log_harmonic, log_noise = (labels[0].double().numpy() for labels in
                                       world_labels(torch.from_numpy(x)[None, None], rate, hop, frames, bins))
        harmonic, noise = np.exp(2 * log_harmonic), np.exp(2 * log_noise)  # powers
        # each part alone, to set its level: the output is linear in each envelope's amplitude
        alone_h = synthesise(head, f0, log_harmonic, np.full_like(log_noise, SILENT))
        alone_n = synthesise(head, f0, np.full_like(log_harmonic, SILENT), log_noise)
        energy, share = (x ** 2).sum(), harmonic.sum() / (harmonic.sum() + noise.sum())
        log_harmonic = log_harmonic + 0.5 * np.log(energy * share / max((alone_h ** 2).sum(), 1e-12))
        log_noise = log_noise + 0.5 * np.log(energy * (1 - share) / max((alone_n ** 2).sum(), 1e-12))
        # synthesise opens the voicing gate wherever f0 > 0: the decoder's harmonic envelope carries its own gate
        voiced = (f0 > 0)[:, None]
        rows = {
            "the decoder (its f0, voicing and envelopes)": decoded,
            "WORLD's harmonic envelope, the decoder's voicing gate, f0 and noise envelope":
                synthesise(head, own_f0, log_harmonic + own_gate, own_noise),
            "WORLD's harmonic envelope, f0 and voicing, the decoder's noise envelope":
                synthesise(head, f0, log_harmonic, own_noise),
            "the decoder's harmonic envelope, WORLD's noise envelope, f0 and voicing":
                synthesise(head, f0, np.where(voiced, own_harmonic, SILENT), log_noise),
            "WORLD's envelopes, the decoder's f0 (WORLD's voicing)":
                synthesise(head, np.where(f0 > 0, own_f0, 0.0), log_harmonic, log_noise),
            "head driven by WORLD's parameters": synthesise(head, f0, log_harmonic, log_noise),
            "WORLD's own synthesis": world_resynthesis(x, rate, period)[:frames * hop],
        }
        for name, output in rows.items():
            results.setdefault(name, []).append(scores(x, output[:frames * hop], rate, mos))
    for name, rows in results.items():
        means = {key: np.mean([row[key] for row in rows]) for key in rows[0]}
        print(f"{name}: " + ", ".join(f"{key} {value:.3f}" for key, value in means.items()) + f" ({len(rows)} files)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
