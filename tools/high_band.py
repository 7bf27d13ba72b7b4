"""What a model does to the 8-12 kHz band, which PESQ, STOI and the MOS predictors (all at 16 kHz) never hear:

    python tools/high_band.py --model bundled --data ../shared/data/MANIFEST.tsv --split eval [--subset 20]

Only files recorded at 24 kHz or more are used (a 16 kHz recording has nothing there to keep). Per file, on
1024-point STFT frames (hop 256) at 24 kHz whose 8-12 kHz band holds energy in the original:
  - log-spectral distance (dB): the root mean square over the band's bins of the difference of the two power
    spectra in dB, averaged over frames;
  - energy ratio (dB): decoded over original energy in the band, summed over the file (0 dB: as much as the
    original; -20 dB: a hundredth of it).
Prints the mean and the median over files.
"""
import argparse

import numpy as np
import soundfile
import torch

from codec.audio import load_audio
from codec.corpus import read_utterances
from codec.weights import load

RATE, N_FFT, HOP, BAND = 24000, 1024, 256, (8000, 12000)


def band_power(audio: np.ndarray) -> np.ndarray:
    """(frames, bins) power of the band."""
    spectrum = torch.stft(torch.from_numpy(audio), N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    frequencies = np.fft.rfftfreq(N_FFT, 1 / RATE)
    keep = (frequencies >= BAND[0]) & (frequencies < BAND[1])
    return spectrum.abs().square().numpy()[keep].T


def measure(original: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    reference, output = band_power(original), band_power(decoded)
    active = reference.sum(1) > 1e-4 * reference.sum(1).max()  # frames with energy in the band
    difference = 10 * np.log10(reference[active] + 1e-10) - 10 * np.log10(output[active] + 1e-10)
    distance = float(np.sqrt((difference ** 2).mean(1)).mean())
    ratio = float(10 * np.log10((output[active].sum() + 1e-10) / (reference[active].sum() + 1e-10)))
    return distance, ratio


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split")
    parser.add_argument("--subset", type=int, help="only N files, spread evenly")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load(args.model)
    files = [u.path for u in read_utterances(args.data, args.split) if soundfile.info(str(u.path)).samplerate >= RATE]
    if args.subset:
        files = [files[i * len(files) // args.subset] for i in range(min(args.subset, len(files)))]
    results = []
    for file in files:
        audio = load_audio(file, model.sample_rate)[0]
        decoded = model.decode(model.encode(audio), length=len(audio))[0]
        results.append(measure(audio.numpy(), decoded.numpy()))
    distances, ratios = np.array(results).T
    print(f"{args.model}: {len(files)} files at >= 24 kHz; 8-12 kHz log-spectral distance {distances.mean():.1f} dB "
          f"(median {np.median(distances):.1f}), energy ratio {ratios.mean():.1f} dB (median {np.median(ratios):.1f})")
