"""Run a codec over a set of files, score every pair, and write per-file and aggregate results."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .audio import AtomicOutput, load
from .errors import AudioError
from .metrics.quality import score
from .model import Codec


def summarize(values: list[float]) -> dict[str, float]:
    """Mean and half-width of a 95 % confidence interval (normal approximation), NaNs left out."""
    finite = np.array([v for v in values if not math.isnan(v)])
    if len(finite) == 0:
        return {"mean": float("nan"), "ci95": float("nan"), "count": 0}
    half = 1.96 * finite.std(ddof=1) / math.sqrt(len(finite)) if len(finite) > 1 else float("nan")
    return {"mean": float(finite.mean()), "ci95": float(half), "count": int(len(finite))}


def evaluate(codec: Codec, files: list[Path], num_codebooks: int | None = None) -> dict:
    rows = []
    for file in tqdm(files, desc="evaluating", unit="file"):
        try:
            reference = load(file, codec.sample_rate)[0]
        except AudioError as error:
            print(f"warning: skipping {error}")
            continue
        decoded = codec.decode(codec.encode(reference, num_codebooks=num_codebooks), length=len(reference))[0]
        rows.append({"file": str(file), "seconds": len(reference) / codec.sample_rate,
                     **score(reference, decoded, codec.sample_rate)})
    metrics = [k for k in rows[0] if k not in ("file", "seconds")] if rows else []
    n = num_codebooks or codec.num_codebooks
    return {"model": codec.name, "weights_sha256": codec.weights_sha256, "num_codebooks": n,
            "kbps": codec.bitrate_for(n) / 1000, "files": len(rows),
            "metrics": {m: summarize([r[m] for r in rows]) for m in metrics}, "per_file": rows}


def write_results(results: dict, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with AtomicOutput(folder / "results.json", force=True) as temporary:
        temporary.write_text(json.dumps({k: v for k, v in results.items() if k != "per_file"}, indent=2))
    if results["per_file"]:
        with AtomicOutput(folder / "per_file.csv", force=True) as temporary, open(temporary, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(results["per_file"][0]))
            writer.writeheader()
            writer.writerows(results["per_file"])
