"""Where a model loses quality: the quantizer or the autoencoder, and whether its output buzzes at the frame rate.

    python tools/diagnose_model.py [--model bundled] [--split train] [--files 12]

1. PESQ and STOI of the decoder fed the encoder's latents unquantized, then quantized with 8, 4, 2 and 1
   codebooks (as many as the model has). If the unquantized row is barely better than the full-bitrate one,
   the quantizer is not what limits quality: the encoder and decoder are.
2. Frame-rate periodicity: a component that repeats every hop (13.3 ms at 75 frames/s) makes the long-term
   spectrum ripple every 75 Hz, which shows as a peak at one hop in the cepstrum of that spectrum. Printed per
   file as the peak over the median of quefrencies 5-20 ms, for the original and the decoded signal (speech's
   own harmonics rarely land exactly there: the originals score about 1-3).
3. Magnitude or phase: the full-bitrate output's STFT magnitudes with the original's phases, and the original's
   magnitudes with the output's phases, resynthesised and scored. Whichever swap gains more is what the
   decoder gets more wrong.
Files are every n-th of the split, the same for every model.
"""
import argparse
from pathlib import Path

import numpy as np
import torch

import codec
from codec.audio import load_audio
from codec.corpus import read_utterances
from codec.metrics.quality import align, pesq_wideband, stoi

DATA = Path(__file__).parents[1].parent / "shared" / "data"


def periodicity_at(audio: torch.Tensor, rate: int, period: int) -> float:
    """Cepstral peak at quefrency `period` samples of the 1.5-10 kHz long-term spectrum, over the median."""
    n_fft = 8192
    power = torch.stft(audio, n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs() ** 2
    bins = slice(int(1500 * n_fft / rate), int(10000 * n_fft / rate))
    spectrum = np.log(power.mean(1).numpy() + 1e-10)[bins]
    spectrum = spectrum - np.convolve(spectrum, np.ones(101) / 101, mode="same")  # keep the fine structure only
    cepstrum = np.abs(np.fft.rfft(spectrum * np.hanning(len(spectrum))))
    quefrency = np.fft.rfftfreq(len(spectrum), rate / n_fft)  # seconds
    at = int(np.argmin(np.abs(quefrency - period / rate)))
    return float(cepstrum[at - 1:at + 2].max() / np.median(cepstrum[(quefrency > 0.005) & (quefrency < 0.02)]))


def swap_phases(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first's STFT magnitudes with second's phases, second's magnitudes with first's phases), 1024-point, hop
    256; the two signals have the same length."""
    window = torch.hann_window(1024)
    a, b = (torch.stft(x, 1024, 256, window=window, return_complex=True) for x in (first, second))
    return tuple(torch.istft(torch.polar(m.abs(), p.angle()), 1024, 256, window=window, length=len(first))
                 for m, p in ((a, b), (b, a)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--data", default=str(DATA / "MANIFEST.tsv"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--files", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = codec.load(args.model)
    utterances = read_utterances(args.data, args.split)
    utterances = utterances[::max(1, len(utterances) // args.files)][:args.files]
    counts = [q for q in (8, 4, 2, 1) if q <= model.num_codebooks]
    names = {q: f"{q} codebook" + "s" * (q > 1) for q in counts}
    swaps = ["decoded magnitudes, original phases", "original magnitudes, decoded phases"]
    scores = {name: [] for name in ["unquantized", *names.values(), *swaps]}
    print(f"frame-rate periodicity (peak at {model.hop_length} samples / median):")
    for utterance in utterances:
        reference, _, _ = load_audio(utterance.path, model.sample_rate)
        with torch.no_grad():
            outputs = {"unquantized": model.decoder(model.encoder(model.pad_to_frames(reference[None, None])))[0, 0]}
            for q in counts:
                outputs[names[q]] = model.decode(model.encode(reference, num_codebooks=q))[0]
        full = outputs[names[counts[0]]][:len(reference)]
        outputs[swaps[0]], outputs[swaps[1]] = swap_phases(full, reference)
        for name, decoded in outputs.items():
            pair = align(reference.numpy(), model.sample_rate, decoded.numpy(), model.sample_rate)
            scores[name].append((pesq_wideband(pair), stoi(pair)))
        name = str(utterance.path.relative_to(Path(args.data).parent))
        print(f"  {name[:60]:60s} original {periodicity_at(reference, model.sample_rate, model.hop_length):4.1f}"
              f"  decoded {periodicity_at(full, model.sample_rate, model.hop_length):4.1f}")
    print(f"quality on {len(utterances)} {args.split} files:")
    for name, values in scores.items():
        values = np.array(values)
        print(f"  {name:36s} PESQ {values[:, 0].mean():.3f}  STOI {values[:, 1].mean():.3f}")


if __name__ == "__main__":
    main()
