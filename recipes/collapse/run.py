"""The collapse experiment: plain VQ against SimVQ at several codebook sizes, same model, data and steps.

    python recipes/collapse/run.py --data MANIFEST.tsv [--steps N] [--sizes 1024 4096 ...] [--eval-files N]

Trains one small codec per (kind, K) under runs/collapse/ (a finished run is reused, so the script resumes),
then counts the codes each model uses over the held-out `eval` split (the manifest's `train` and `eval` rows) and writes recipes/collapse/results.json
and utilization.png (utilization and perplexity against K, one line per quantizer).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import codec
from codec.audio import load_audio
from codec.config import load_yaml
from codec.corpus import read_utterances
from codec.metrics.codebook import CodeCounter
from codec.train.config import TrainConfig
from codec.train.trainer import train

HERE = Path(__file__).parent
# Each variant: its label and the quantizer settings it changes. The low-rank SimVQ is the bundled model's
# choice (a frozen 8-dimensional basis mapped into the latent space).
VARIANTS = {"vq": ("plain VQ", {"kind": "vq"}), "simvq": ("SimVQ", {"kind": "simvq"}),
            "simvq-basis8": ("SimVQ, 8-dim basis", {"kind": "simvq", "basis_dim": 8})}


def run(base: TrainConfig, kind: str, size: int) -> Path:
    quantizer = replace(base.model.quantizer, codebook_size=size, **VARIANTS[kind][1])
    model = replace(base.model, name=f"collapse-{kind}-{size}", quantizer=quantizer)
    config = replace(base, model=model, out_dir=f"{base.out_dir}/{kind}-{size}-{base.steps}steps")
    weights = Path(config.out_dir) / "weights.safetensors"
    return weights if weights.exists() else train(config)


def usage(weights: Path, files: list[Path]) -> dict:
    model = codec.load(weights)
    counter = CodeCounter(model.codebook_sizes)
    for file in files:
        counter.add(model.encode(load_audio(file, model.sample_rate)[0])[0])
    (stats,) = counter.stats()
    return {"frames": int(counter.counts[0].sum()), "used": stats.used, "utilization": stats.utilization,
            "perplexity": stats.perplexity, "entropy_bits": stats.entropy_bits}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    for kind, (label, _) in VARIANTS.items():
        rows = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["codebook_size"])
        if not rows:
            continue
        sizes = [r["codebook_size"] for r in rows]
        left.plot(sizes, [100 * r["utilization"] for r in rows], marker="o", label=label)
        right.plot(sizes, [r["perplexity"] for r in rows], marker="o", label=label)
    # What a perfectly uniform quantizer could show on this many frames: N draws from K equally likely codes
    # hit K (1 - (1 - 1/K)^N) distinct ones, so at large K even the ideal falls short of 100 %.
    frames = results[0]["frames"]
    grid = np.geomspace(min(sizes), max(sizes), 50)
    left.plot(grid, 100 * (1 - (1 - 1 / grid) ** frames), color="gray", linestyle="--",
              label=f"uniform use of K codes over {frames:,} frames")
    right.plot(sizes, sizes, color="gray", linestyle="--", label="K (every code equally used)")
    for axes, title in ((left, "codes used on the eval split (%)"), (right, "perplexity")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("codebook size K")
        axes.set_title(title)
        axes.grid(alpha=0.3, which="both")
    right.set_yscale("log", base=2)
    left.set_ylim(0, 105)
    # One legend under both plots, where it hides no line.
    labelled = dict(zip(*reversed(left.get_legend_handles_labels())))
    labelled.update(zip(*reversed(right.get_legend_handles_labels())))
    figure.legend(labelled.values(), labelled.keys(), loc="lower center", ncol=3, fontsize=8)
    figure.tight_layout(rect=(0, 0.13, 1, 1))
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="manifest with `train` and `eval` rows (a `split` column)")
    parser.add_argument("--steps", type=int, help="training steps per run (default: the config's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--eval-files", type=int, help="measure on the first N eval files (default: all)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="which quantizers to run; the others keep their rows in results.json")
    parser.add_argument("--out", type=Path, default=HERE, help="where results.json and utilization.png go")
    args = parser.parse_args()
    base = load_yaml(TrainConfig, HERE / "config.yaml", [f"data.train={args.data}"])
    if args.steps:
        base = replace(base, steps=args.steps, checkpoint_every=args.steps)
    files = [u.path for u in read_utterances(base.data.train, "eval")][:args.eval_files]
    torch.set_num_threads(base.threads)
    previous = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").is_file() else {}
    results = [r for r in previous.get("runs", []) if r["kind"] not in args.variants]
    for kind in args.variants:
        for size in tqdm(args.sizes, desc=kind):
            measured = usage(run(base, kind, size), files)
            results.append({"kind": kind, "codebook_size": size, "steps": base.steps, **measured})
            tqdm.write(f"{kind:6s} K={size:6d}: {measured['used']} codes used "
                       f"({100 * measured['utilization']:.1f} %), perplexity {measured['perplexity']:.0f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"eval_files": len(files), "steps": base.steps, "runs": results}, indent=1))
    plot(results, args.out / "utilization.png")


if __name__ == "__main__":
    main()
