"""The world model on the learning curve's files, at each number of codebooks, search width and postfilter:

    python tools/world_curve.py [--model world] [--files 20] [--postfilter 1.0 1.1 1.3] [--codebooks 8 4 2]
                                [--beams 1 8 32] [--unrefined]

Analyses the first FILES `eval` files (6 s each) once, quantizes them at each number of codebooks with each
search width (`quantizer.search_beams`; default: the model's own), decodes with each postfilter (a decoding-time
setting: the codes do not change), and prints the mean PESQ-WB, STOI, mel distance and DistillMOS of each, with
the search's seconds per second of audio (one file at a time, on the threads given) (docs/world-codec.md).
`--unrefined` also decodes each without the model's refiner (the rows marked "unrefined").
"""
import argparse
import itertools
import time

import numpy as np
import torch
from oracle_envelopes import MANIFEST, scores

from codec.audio import load_audio
from codec.metrics.distillmos import DistillMOS
from codec.train.data import read_file_list
from codec.weights import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="world")
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--postfilter", type=float, nargs="+", default=[1.0, 1.1, 1.3])
    parser.add_argument("--codebooks", type=int, nargs="+", default=[8, 4, 2])
    parser.add_argument("--beams", type=int, nargs="+", help="search widths (default: the model's own)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--unrefined", action="store_true", help="also score decoding without the refiner")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, mos, results, seconds = load(args.model), DistillMOS(), {}, {}
    own = {count: model.quantizer.search_width(count) for count in args.codebooks}  # before any is overridden
    rate = model.sample_rate
    refiners = [model.refiner] + [None] * (args.unrefined and model.refiner is not None)
    for file in read_file_list(str(MANIFEST), "eval")[:args.files]:
        x = load_audio(file, rate)[0][:6 * rate]
        with torch.no_grad():  # WORLD's analysis once; the quantizer per count (a predictive model's prefix
            latents = model.encoder(model.pad_to_frames(x[None, None]))  # is not the same codes)
        for count in args.codebooks:
            for width in args.beams or [own[count]]:
                model.quantizer.search_beams = (width,)
                start = time.perf_counter()
                codes = model.quantizer.encode(latents, count)
                seconds.setdefault((count, width), []).append((time.perf_counter() - start) / len(x) * rate)
                for strength, refiner in itertools.product(args.postfilter, refiners):
                    model.decoder.head.config.postfilter, model.refiner = strength, refiner
                    y = model.decode(codes, length=len(x))[0]
                    results.setdefault((count, width, strength, refiner is None), []).append(
                        list(scores(x.numpy(), y.numpy(), rate, mos).values()))
    for (count, width, strength, unrefined), rows in results.items():
        print(f"{count} codebooks, {width} paths, postfilter {strength}{', unrefined' * unrefined}: PESQ %.3f "
              "STOI %.4f mel %.3f DistillMOS %.3f" % tuple(np.mean(rows, 0)) + f" ({len(rows)} files; search "
              f"{np.mean(seconds[count, width]):.4f} s per s)")


if __name__ == "__main__":
    main()
