"""Plot the low-latency model's learning curves, stage after stage, against hours of training on the 2-core CPU and
against hours of audio seen (which carries over to other machines):

    python recipes/low-latency/curves.py                      # recipes/low-latency/curves/*.jsonl -> curves.png
    python recipes/low-latency/curves.py --add 8 runs/bundled-stage8/curve.jsonl   # copy a finished stage's curve in

Each stage's `curve.jsonl` (written by `codec train` every `curve_every_minutes`: the same 20 `eval` files,
6 s each, at 6 kbps) is kept under `curves/` as `stageN.jsonl`, so the plot survives the run folders. Stages
start where the previous one ended; a stage's step 0 is its starting weights, scored again.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from variants import read_curve

HERE = Path(__file__).parent
METRICS = {"pesq": "PESQ-WB", "stoi": "STOI", "distillmos": "DistillMOS", "mel_distance": "mel distance"}


def stage_curves(folder: Path) -> dict[int, list[dict]]:
    """stage number -> its points, from folder/stageN.jsonl, in stage order."""
    files = sorted(folder.glob("stage*.jsonl"), key=lambda f: int(f.stem.removeprefix("stage")))
    return {int(f.stem.removeprefix("stage")): read_curve(f) for f in files}


def plot(curves: dict[int, list[dict]], path: Path, rate: str = "6kbps") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(2, len(METRICS), figsize=(4.2 * len(METRICS), 7), squeeze=False)
    offset_hours = offset_audio = 0.0
    for colour, (stage, curve) in enumerate(curves.items()):
        hours = [offset_hours + p["minutes"] / 60 for p in curve]
        audio = [offset_audio + p["audio_hours"] for p in curve]
        for column, metric in enumerate(METRICS):
            values = [p.get(f"{metric}@{rate}") for p in curve]
            if all(v is None for v in values):
                continue
            for row, x in enumerate((hours, audio)):
                axes[row][column].plot(x, values, "-o", color=f"C{colour}", markersize=3, label=f"stage {stage}")
        offset_hours, offset_audio = hours[-1], audio[-1]
    for column, title in enumerate(METRICS.values()):
        for row, label in enumerate(("hours of training on 2 CPU cores", "hours of audio seen")):
            axis = axes[row][column]
            axis.set_title(f"{title} at {rate.removesuffix('kbps')} kbps", fontsize=10)
            axis.set_xlabel(label)
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--add", nargs=2, metavar=("STAGE", "CURVE"), help="copy a run's curve.jsonl in first")
    parser.add_argument("--out", type=Path, default=HERE / "curves.png")
    args = parser.parse_args()
    if args.add:
        shutil.copy(args.add[1], HERE / "curves" / f"stage{int(args.add[0])}.jsonl")
    plot(stage_curves(HERE / "curves"), args.out)
    print(f"wrote {args.out}")
