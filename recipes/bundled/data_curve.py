"""The bundled model's learning curve: its codebooks fitted to a share of the `train` split, scored on the
learning curve's 20 `eval` files (6 s each) at 6, 3 and 1.5 kbps, against minutes of speech and minutes of
fitting on 2 cores. Fitting is one pass, not a schedule, so the amount of speech is what a curve can show.

    python recipes/bundled/data_curve.py --data ../shared/data/MANIFEST.tsv --shares 0.1 0.25 0.5 1
    python recipes/bundled/data_curve.py --data ../shared/data/MANIFEST.tsv --shares 1 --shipped  # the shipped
    python recipes/bundled/data_curve.py --plot     # redraw curve.png from curve.jsonl

Each share is every n-th `train` file (its speech in minutes recorded), fitted by `codec train` with the
recipe, timed, and scored as `tools/world_curve.py` scores (postfilter as shipped): one line per share in
recipes/bundled/curve.jsonl, and the plot in recipes/bundled/curve.png. `--shipped` scores the shipped weights
file as the whole split's point instead of fitting it again (its fit time then reads null).
"""
import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
CURVE, PLOT = HERE / "curve.jsonl", HERE / "curve.png"
BITRATES = {6: 8, 3: 4, 1.5: 2}  # kbps: codebooks


def subset_manifest(manifest: Path, share: float, out: Path) -> float:
    """Every n-th `train` row of the manifest (paths made absolute), written to `out`; its minutes of speech."""
    with open(manifest, newline="") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t") if row["split"] == "train"]
    step = max(1, round(1 / share))
    kept = rows[::step]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(kept[0]), delimiter="\t")
        writer.writeheader()
        for row in kept:
            writer.writerow({**row, "file": str((manifest.parent / row["file"]).resolve())})
    return sum(float(row["seconds"]) for row in kept) / 60


def score(weights: Path, manifest: Path) -> dict:
    """PESQ, STOI and DistillMOS on the first 20 `eval` files, 6 s each, each bitrate encoded on its own."""
    sys.path.insert(0, str(ROOT / "tools"))
    from oracle_envelopes import scores

    from codec.audio import load_audio
    from codec.metrics.distillmos import DistillMOS
    from codec.train.data import read_file_list
    from codec.weights import load
    model, mos, results = load(weights), DistillMOS(), {}
    rate = model.sample_rate
    for file in read_file_list(str(manifest), "eval")[:20]:
        x = load_audio(file, rate)[0][:6 * rate]
        with torch.no_grad():
            latents = model.encoder(model.pad_to_frames(x[None, None]))
        for kbps, count in BITRATES.items():
            y = model.decode(model.quantizer.encode(latents, count), length=len(x))[0]
            values = scores(x.numpy(), y.numpy(), rate, mos)
            results.setdefault(kbps, []).append([values["pesq"], values["stoi"], values["distillmos"]])
    return {str(kbps): dict(zip(("pesq", "stoi", "distillmos"), np.mean(rows, 0).round(4).tolist()))
            for kbps, rows in results.items()}


def fit(manifest: Path, share: float, shipped: bool) -> dict:
    run = ROOT / "runs" / f"bundled-share-{share:g}"
    minutes = subset_manifest(manifest, share, run / "train.tsv")
    if shipped:
        from codec.weights import BUNDLED
        return {"share": share, "speech_minutes": round(minutes, 1), "fit_minutes": None, **score(BUNDLED, manifest)}
    start = time.time()
    subprocess.run(["codec", "train", "--force", "--config", str(HERE / "config.yaml"),
                    f"data.train={run / 'train.tsv'}", "data.split=train", f"out_dir={run}"], check=True)
    seconds = time.time() - start
    return {"share": share, "speech_minutes": round(minutes, 1), "fit_minutes": round(seconds / 60, 1),
            **score(run / "weights.safetensors", manifest)}


def plot() -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    points = sorted((json.loads(line) for line in CURVE.read_text().splitlines()), key=lambda p: p["share"])
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for axis, metric, bar in zip(axes, ("pesq", "stoi", "distillmos"), (2.05, 0.909, 2.80)):
        for kbps in BITRATES:
            axis.plot([p["speech_minutes"] for p in points], [p[str(kbps)][metric] for p in points], "o-",
                      label=f"{kbps:g} kbps")
        axis.axhline(bar, color="grey", linestyle=":", label="Opus 6 kbps (whole eval split)")
        axis.set_xscale("log")
        fits = ", ".join("shipped" if p["fit_minutes"] is None else f"{p['fit_minutes']:g}" for p in points)
        axis.set_xlabel(f"minutes of training speech (fitting: {fits} min on 2 cores)", fontsize=8)
        axis.set_title({"pesq": "PESQ-WB", "stoi": "STOI", "distillmos": "DistillMOS"}[metric])
    axes[0].legend(fontsize=8)
    figure.suptitle("bundled model: codebooks fitted to part of the train split, 20 eval files")
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="the corpus manifest (MANIFEST.tsv)")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--shipped", action="store_true", help="score the shipped file (--shares 1) instead of fitting")
    parser.add_argument("--plot", action="store_true", help="only redraw the plot")
    args = parser.parse_args()
    if not args.plot:
        if args.data is None:
            parser.error("--data is needed to fit")
        torch.set_num_threads(2)
        for share in args.shares:
            point = fit(args.data, share, args.shipped)
            with open(CURVE, "a") as handle:
                handle.write(json.dumps(point) + "\n")
    plot()


if __name__ == "__main__":
    main()
