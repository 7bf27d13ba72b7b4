"""Train the variants of stage 6 side by side on one GPU, each for the same wall-clock budget, and compare their
learning curves (PESQ, STOI and mel distance on the validation files at 1.5, 3 and 6 kbps):

    python recipes/low-latency/variants.py --data ../shared/data/MANIFEST.tsv --minutes 7 --out runs/stage6 \
        [--only base complex] [-- key=value ...]

Small models leave a large GPU mostly idle (each step is a few hundred short kernels), so several runs in
parallel each go nearly as fast as one alone: the comparison costs the time of one run. Each variant is
`codec train --config recipes/low-latency/stage6.yaml` in its own folder, warm-started from the shipped model;
`out/summary.json` holds every variant's curve and `out/curves.png` plots them. Extra `key=value` overrides
(after `--`) apply to every variant. `--data` is the manifest whose `train` split trains and whose `eval` split
scores the curves.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[1]

# Each variant is the stage-6 config with these overrides (README.md, "Stage 6", says what each tests).
VARIANTS = {
    "base": [],
    "complex": ["loss.complex_stft=15.0"],
    "nfft1280": ["model.istft.n_fft=1280"],
    "complex-nfft1280": ["loss.complex_stft=15.0", "model.istft.n_fft=1280"],
}
RANK_BY = "pesq@6kbps"


def read_curve(file: Path) -> list[dict]:
    """A run's curve.jsonl: its points, in order; none when the run has not written one."""
    return [json.loads(line) for line in file.read_text().splitlines()] if file.is_file() else []


def run(names: list[str], minutes: float, out: Path, init_weights: str, data: str,
        overrides: list[str]) -> dict[str, int]:
    """Start every variant, wait for all; returns each one's exit code."""
    processes = {}
    threads = max(1, (os.cpu_count() or 2) // (2 * len(names)))
    for name in names:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "codec", "train", "--config", str(HERE / "stage6.yaml"),
                   f"out_dir={folder}", f"minutes={minutes}", f"threads={threads}", f"data.train={data}",
                   f"data.valid={data}", *VARIANTS[name], *overrides,
                   "--init-weights", init_weights, "--force"]
        log = open(folder / "train.log", "w")
        processes[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log)
        print(f"started {name}: {' '.join(command[2:])}", flush=True)
    codes = {}
    for name, (process, log) in processes.items():
        codes[name] = process.wait()
        log.close()
        print(f"{name}: exit code {codes[name]}", flush=True)
    return codes


def summarize(names: list[str], out: Path) -> list[str]:
    """Print the last point of each curve; write summary.json and curves.png; return the names, best first."""
    curves = {name: read_curve(out / name / "curve.jsonl") for name in names}
    finished = [name for name in names if curves[name]]
    ranked = sorted(finished, key=lambda name: -curves[name][-1].get(RANK_BY, float("-inf")))
    for name in ranked:
        last = curves[name][-1]
        scores = "  ".join(f"{k} {v:.3f}" for k, v in last.items() if "@" in k)
        print(f"{name:18s} step {last['step']:6d}  {last['minutes']:5.1f} min  {last['audio_hours']:6.1f} h  {scores}")
    (out / "summary.json").write_text(json.dumps({"ranked_by": RANK_BY, "ranked": ranked, "curves": curves},
                                                 indent=1))
    plot(curves, out / "curves.png")
    return ranked


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("no plot: pip install matplotlib")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = sorted({k for curve in curves.values() for point in curve for k in point if "@" in k})
    metrics = sorted({k.split("@")[0] for k in keys})
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    rates = sorted({k.split("@")[1] for k in keys}, key=lambda r: -float(r.removesuffix("kbps")))
    for axis, metric in zip(axes[0], metrics):
        for colour, (name, curve) in enumerate(curves.items()):  # a colour per variant, a line style per bitrate
            for rate, style in zip(rates, ("-", "--", ":", "-.")):
                axis.plot([p["audio_hours"] for p in curve], [p.get(f"{metric}@{rate}") for p in curve], style,
                          color=f"C{colour}", marker="o", markersize=3, label=f"{name} {rate}")
        axis.set_xlabel("hours of audio seen")  # carries over between machines, unlike minutes
        axis.set_title(metric)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/MANIFEST.tsv", help="manifest with a split column")
    parser.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget of each variant")
    parser.add_argument("--out", type=Path, default=Path("runs/bundled-stage6"))
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--init-weights", default="codec/pretrained/low-latency.safetensors")
    parser.add_argument("--summary-only", action="store_true", help="compare the runs already in --out")
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    if not args.summary_only:
        run(args.only, args.minutes, args.out, args.init_weights, args.data, overrides)
    ranked = summarize(args.only, args.out)
    print(f"best by {RANK_BY}: {ranked[0] if ranked else 'none (no curve written)'}")
