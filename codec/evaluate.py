"""Run a system (a model at one bitrate, or a baseline codec) over a set of files, score every file, and write
per-file and aggregate results into one folder per system.

A folder holds results.json (aggregates: mean and 95 % CI per metric, codebook statistics, bitrates, wall
time and CPU time per stage, the files skipped and why), per_file.csv and per_file.json (one row per scored
file), summary.csv (one row per metric, with the system's bitrates), codebook_counts.npz (models), examples/ (a
few original/decoded pairs for the report) and, with `save_audio`, audio/: every decoded file as it was scored,
i.e. aligned to the reference (delay removed, resampled to the reference rate, cut or padded to its length), not
the system's raw output. Rates and lengths: see metrics/quality.py.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from . import audio as audio_io
from .errors import AudioError, CodecError, OutputError
from .metrics import asr, codebook, quality
from .metrics.table import BY_NAME, Metric, Scorer
from .model import Codec

DEFAULT_REFERENCE_RATE = 24000


@dataclass
class RoundTrip:
    audio: torch.Tensor            # decoded (T,) at the system's rate
    codes: torch.Tensor | None     # (Q, F) for neural codecs
    bits: float | None             # size of the encoded stream


class System(Protocol):
    label: str                     # names the results folder and the report's rows
    kbps: float | None             # nominal bitrate
    sample_rate: int               # the rate the system encodes at
    delay: int                     # samples its output lags its input at that rate

    def round_trip(self, audio: torch.Tensor) -> RoundTrip: ...


@dataclass
class ModelSystem:
    """A Codec at a given number of codebooks, named by `name` (default: the model's own name)."""
    codec: Codec
    num_codebooks: int
    name: str | None = None
    delay: int = 0  # causal and trimmed by decode

    @property
    def label(self) -> str:
        name, rate = self.name or self.codec.name, f"-{self.kbps:g}kbps"
        return name if name.endswith(rate) else name + rate  # not bundled-simvq-24khz-6kbps-6kbps

    @property
    def kbps(self) -> float:
        return round(self.codec.bitrate_for(self.num_codebooks) / 1000, 3)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def round_trip(self, audio: torch.Tensor) -> RoundTrip:
        codes = self.codec.encode(audio, num_codebooks=self.num_codebooks)
        decoded = self.codec.decode(codes, length=len(audio))[0].cpu()
        return RoundTrip(decoded, codes[0].cpu(), self.codec.bitrate_for(self.num_codebooks) * len(audio)
                         / self.sample_rate)


@dataclass
class Options:
    reference_rate: int = DEFAULT_REFERENCE_RATE
    metrics: list[tuple[Metric, Scorer]] = field(default_factory=list)   # from metrics.table.load_scorers
    unavailable: dict[str, str] = field(default_factory=dict)   # metric -> how to get it
    texts: dict[Path, str] = field(default_factory=dict)   # what each file says, when the data has it
    text_source: str = ""   # where the texts come from (a manifest column), recorded with the results
    examples: int = 3
    save_audio: bool = False
    force: bool = False
    data: str = ""   # where the files came from, recorded with the results
    # Reference-side work (transcripts, F0, speaker embeddings) per file, kept across the systems of a run
    shared: dict[Path, dict] = field(default_factory=dict, repr=False)


def summarize(values: list[float]) -> dict[str, float]:
    """Mean and half-width of its 95 % confidence interval (Student's t: a few files give a wide one), NaNs left
    out."""
    from scipy.stats import t
    finite = np.array([v for v in values if not math.isnan(v)])
    if len(finite) == 0:
        return {"mean": float("nan"), "ci95": float("nan"), "count": 0}
    n = len(finite)
    half = t.ppf(0.975, n - 1) * finite.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": float(finite.mean()), "ci95": float(half), "count": int(len(finite))}


def cpu_seconds() -> float:
    """CPU time of this process and of the tools it ran (opusenc, c2enc...). Stages are timed in CPU time: on a
    shared machine wall time measures the neighbours, CPU time measures the work."""
    return sum(os.times()[:4])


def check_output(folder: str | Path, force: bool) -> None:
    """Refuse a results folder that holds results, unless `force`: called for every system before any runs."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    if (folder / "results.json").exists() and not force:
        raise OutputError(f"{folder / 'results.json'}: already exists (use --force to overwrite)")


def evaluate(system: System, files: list[Path], folder: str | Path, options: Options) -> dict:
    """Round-trip and score every file, write the folder, and return what results.json holds. A file that cannot
    be read or coded is skipped and listed; if none is scored, nothing is written and the error says why."""
    folder = Path(folder)
    check_output(folder, options.force)
    root = Path(os.path.commonpath([f.parent.resolve() for f in files])) if files else Path()
    codec = system.codec if isinstance(system, ModelSystem) else None
    counter = codebook.CodeCounter(codec.codebook_sizes[:system.num_codebooks]) if codec else None
    timing: dict[str, float] = defaultdict(float)
    rows, bits, examples, skipped, ceilings = [], 0.0, [], [], []
    started, cpu_started = time.perf_counter(), cpu_seconds()
    for file in tqdm(files, desc=system.label, unit="file"):
        clock = cpu_seconds()
        try:
            reference = audio_io.load_audio(file, options.reference_rate)[0]
            source = reference if system.sample_rate == options.reference_rate else \
                audio_io.load_audio(file, system.sample_rate)[0]
            timing["load"] += cpu_seconds() - clock
            clock = cpu_seconds()
            result = system.round_trip(source)
        except AudioError as error:
            tqdm.write(f"warning: skipping {error}", file=sys.stderr)
            skipped.append({"file": str(file), "reason": str(error).removeprefix(f"{file}: ")})
            continue
        timing["codec"] += cpu_seconds() - clock
        pair = quality.align(reference, options.reference_rate, result.audio, system.sample_rate, system.delay,
                             options.texts.get(file), options.shared.setdefault(file, {}))
        row = {"file": str(file), "seconds": len(reference) / options.reference_rate}
        for metric, scorer in options.metrics:
            clock = cpu_seconds()
            row[metric.name] = scorer(pair)
            timing[metric.name] += cpu_seconds() - clock
        if pair.text is not None and any(m.family == "asr" for m, _ in options.metrics):
            ceilings.append(asr.original_error_rates(pair))
        rows.append(row)
        bits += result.bits or 0.0
        if counter is not None and result.codes is not None:
            counter.add(result.codes)
        if len(examples) < options.examples:
            examples.append(_save_example(folder, len(examples), file, pair, options.force))
        if options.save_audio:
            target = folder / "audio" / file.resolve().relative_to(root).with_suffix(".wav")
            target.parent.mkdir(parents=True, exist_ok=True)
            audio_io.save(target, pair.decoded, pair.rate, force=True)
    if not rows:
        first = f" (first: {skipped[0]['file']}: {skipped[0]['reason']})" if skipped else ""
        raise AudioError(f"{system.label}: none of the {len(files)} files could be scored{first}; no results written")
    seconds = sum(r["seconds"] for r in rows)
    metrics = [k for k in rows[0] if k not in ("file", "seconds")]
    results = {
        "label": system.label, "system": _describe(system), "kbps": system.kbps,
        "measured_kbps": bits / seconds / 1000 if seconds and bits else None,
        "data": options.data, "reference_rate": options.reference_rate, "files": len(rows), "audio_seconds": seconds,
        "skipped": skipped,
        "metrics": {m: summarize([r[m] for r in rows]) for m in metrics},
        "metric_info": {m: _info(m, bool(ceilings)) for m in metrics},
        "unavailable": options.unavailable, "examples": examples,
        "timing": {"wall_seconds": time.perf_counter() - started, "cpu_seconds": cpu_seconds() - cpu_started,
                   **timing},
    }
    if any(m.family == "asr" for m, _ in options.metrics):
        results["asr_reference"] = _asr_reference(options, ceilings)
    if counter is not None:
        results["codebooks"] = _codebook_summary(counter, codec.frame_rate)
    _write(folder, results, rows, counter)
    return results


def _info(name: str, with_text: bool) -> dict:
    """How the report shows a metric, from the table, and what it was compared with in this run."""
    metric = BY_NAME[name]
    compared = {"audio": "reference audio", "nothing": "nothing"}.get(metric.compares) or \
        ("text" if with_text else "transcript of the reference audio")
    return {"title": metric.title, "unit": metric.unit, "better": metric.better, "compared_with": compared}


def _asr_reference(options: Options, ceilings: list[dict]) -> dict:
    """What WER and CER were measured against; with a text, the original audio's own rates: the ceiling."""
    if not ceilings:
        return {"kind": "transcript", "description": "PocketSphinx's transcript of the original audio (no text "
                                                     "given): the original's WER is 0 by construction"}
    return {"kind": "text", "description": f"the text ({options.text_source})",
            "ceiling": {m: summarize([c[m] for c in ceilings]) for m in ("wer", "cer")}}


def _describe(system: System) -> dict:
    if isinstance(system, ModelSystem):
        return {"kind": "model", "name": system.name or system.codec.name,
                "weights_sha256": system.codec.weights_sha256,
                "num_codebooks": system.num_codebooks, "sample_rate": system.sample_rate}
    return {"kind": "baseline", "name": system.label.split("-")[0], "sample_rate": system.sample_rate}


def _codebook_summary(counter: codebook.CodeCounter, frame_rate: float) -> dict:
    stats = counter.stats()
    return {"frame_rate": frame_rate, "nominal_kbps": codebook.nominal_bitrate(frame_rate, stats) / 1000,
            "effective_kbps": codebook.effective_bitrate(frame_rate, stats) / 1000,
            "per_codebook": [asdict(s) for s in stats]}


def _save_example(folder: Path, index: int, file: Path, pair: quality.Pair, force: bool) -> dict:
    (folder / "examples").mkdir(parents=True, exist_ok=True)
    names = {}
    for kind, audio in (("original", pair.reference), ("decoded", pair.decoded)):
        names[kind] = f"examples/{index:02d}-{file.stem}.{kind}.flac"
        audio_io.save(folder / names[kind], audio, pair.rate, force=True)
    return {"file": str(file), **names}


def summary_rows(results: dict) -> list[dict]:
    """One row per metric, each carrying the system's bitrates, so that the summary.csv of several systems
    concatenate into one table."""
    books = results.get("codebooks", {})
    system = {"system": results["label"], "kbps": results["kbps"], "measured_kbps": results["measured_kbps"],
              "nominal_kbps": books.get("nominal_kbps"), "effective_kbps": books.get("effective_kbps")}
    info = results.get("metric_info", {})
    return [{**system, "metric": m, "unit": info.get(m, {}).get("unit", ""),
             "better": info.get(m, {}).get("better", ""), **v} for m, v in results["metrics"].items()]


def _write(folder: Path, results: dict, rows: list[dict], counter: codebook.CodeCounter | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("results.json", results), ("per_file.json", rows)):
        with audio_io.AtomicOutput(folder / name, force=True) as temporary:
            temporary.write_text(json.dumps(content, indent=2) + "\n")
    for name, table in (("per_file.csv", rows), ("summary.csv", summary_rows(results))):
        with audio_io.AtomicOutput(folder / name, force=True) as temporary, \
                open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    if counter is not None:
        with audio_io.AtomicOutput(folder / "codebook_counts.npz", force=True) as temporary:
            with open(temporary, "wb") as handle:
                np.savez_compressed(handle, *[c for c in counter.counts if c.sum()])


def evaluation_files(data: str, split: str | None, subset: int | None, reference_rate: int,
                     text_column: str | None = None) -> tuple[list[Path], dict[Path, str], str]:
    """The files of an evaluation, its options checked first: those of `data` (rows of `split`), or `subset` of
    them spread evenly over the list; what each says where the data has a text (`text_column`, by default a
    'text' column or LibriTTS's .normalized.txt when every file has one); and where that text comes from ("" for
    none)."""
    from .corpus import read_utterances
    if subset is not None and subset < 1:
        raise CodecError(f"--subset {subset}: give a number of files, 1 or more")
    if reference_rate < quality.PESQ_RATE:
        raise CodecError(f"--reference-rate {reference_rate}: must be at least {quality.PESQ_RATE} Hz (PESQ "
                         f"wide-band, the recogniser and the MOS predictors score at 16 kHz)")
    utterances = read_utterances(data, split)
    if subset:
        utterances = [utterances[i * len(utterances) // subset] for i in range(min(subset, len(utterances)))]
    if not utterances:
        raise CodecError(f"no audio files in {data}" + (f" (split {split})" if split else ""))
    column = text_column or "text"
    having = [u for u in utterances if str(u.fields.get(column) or "").strip()]
    if not having and not text_column:
        return [u.path for u in utterances], {}, ""
    if len(having) < len(utterances):
        lacking = next(u for u in utterances if u not in having)
        raise CodecError(f"{lacking.path}: no text in column '{column}' ({len(utterances) - len(having)} of "
                         f"{len(utterances)} files have none); WER needs one reference for every file")
    return ([u.path for u in utterances], {u.path: str(u.fields[column]).strip() for u in utterances},
            f"text column '{column}' of {data}")


def check_systems(systems: list[System], out: Path, force: bool) -> None:
    """Refuse two systems that would write one folder, or any folder holding results, before any work: a clash
    must not surface after an hour of earlier systems."""
    labels = [system.label for system in systems]
    if len(set(labels)) < len(labels):
        twice = next(label for label in labels if labels.count(label) > 1)
        raise CodecError(f"two of the systems asked for would both write {out / twice}: give each once")
    for system in systems:
        check_output(out / system.label, force)
