"""The metric table: every metric `codec eval` computes, declared once.

An entry names the metric (its column in results.json, per_file.csv and summary.csv), says how to show it
(title, unit, which direction is better), what it needs (the reference audio, the text, or nothing; the rate it
scores at; the packages `codec` does not install, and the line that installs them) and how to build its scoring
function. `codec eval`'s options, the results files, the report's tables and plots, and the docs' table
(`python -m codec.metrics.table`) all read it: adding a metric is one entry here. A metric whose package is
missing is reported as unavailable with its install line, never replaced by another.

Metrics of one family share their work (one transcript serves WER and CER, one F0 contour the three pitch
metrics) and are timed together in the report.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import CodecError, MetricUnavailable
from . import asr, mos, pitch, quality, speaker
from .quality import Pair

Scorer = Callable[[Pair], float]


@dataclass(frozen=True)
class Settings:
    """What loading a metric may need beyond its package."""
    device: str = "cpu"
    utmos_checkpoint: str | Path | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    unit: str                 # "" for a score without one
    better: str               # "higher" or "lower"
    compares: str             # "audio": with the reference audio; "text": with the text where the data has it,
                              # else with the reference audio's transcript; "nothing": the decoded audio alone
    rate: int | None          # the sample rate it scores at; None: the evaluation's reference rate
    family: str               # metrics that share work and timing
    build: Callable[[Settings], Scorer]   # loads what it needs once (a model); may raise MetricUnavailable
    packages: tuple[str, ...] = ()   # modules it needs that `pip install codec` does not bring
    install: str = ""                # the line that brings them


def _fixed(function: Scorer) -> Callable[[Settings], Scorer]:
    """A metric with nothing to load."""
    return lambda settings: function


def _speaker(settings: Settings) -> Scorer:
    encoder = speaker.load_encoder(settings.device)
    return lambda pair: speaker.similarity(pair, encoder)


METRICS: tuple[Metric, ...] = (
    Metric("pesq", "PESQ wide-band", "", "higher", "audio", quality.PESQ_RATE, "signal",
           _fixed(quality.pesq_wideband), ("pesq",), "pip install pesq"),
    Metric("stoi", "STOI", "", "higher", "audio", None, "signal", _fixed(quality.stoi), ("pystoi",),
           "pip install pystoi"),
    Metric("mel_distance", "mel distance", "", "lower", "audio", None, "signal", _fixed(quality.mel_distance)),
    Metric("si_sdr", "SI-SDR", "dB", "higher", "audio", None, "signal", _fixed(quality.si_sdr)),
    Metric("wer", "WER", "%", "lower", "text", asr.ASR_RATE, "asr", _fixed(asr.wer), ("pocketsphinx", "jiwer"),
           asr.INSTALL),
    Metric("cer", "CER", "%", "lower", "text", asr.ASR_RATE, "asr", _fixed(asr.cer), ("pocketsphinx", "jiwer"),
           asr.INSTALL),
    Metric("speaker_similarity", "speaker similarity", "", "higher", "audio", speaker.SPEAKER_RATE, "speaker",
           _speaker, ("resemblyzer",), speaker.INSTALL),
    Metric("f0_rmse", "F0 RMSE", "cents", "lower", "audio", pitch.PITCH_RATE, "pitch",
           _fixed(pitch.f0_rmse_cents), ("pyworld",), pitch.INSTALL),
    Metric("voicing_error", "voicing error", "%", "lower", "audio", pitch.PITCH_RATE, "pitch",
           _fixed(pitch.voicing_error), ("pyworld",), pitch.INSTALL),
    Metric("octave_errors", "octave errors", "%", "lower", "audio", pitch.PITCH_RATE, "pitch",
           _fixed(pitch.octave_error_share), ("pyworld",), pitch.INSTALL),
    Metric("utmos", "UTMOS22 strong", "", "higher", "nothing", mos.MOS_RATE, "mos",
           lambda s: mos.utmos(s.device, s.utmos_checkpoint), (),
           "a checkpoint you supply: --utmos-checkpoint (docs/evaluation.md)"),
    Metric("distillmos", "DistillMOS", "", "higher", "nothing", mos.MOS_RATE, "mos",
           lambda s: mos.distillmos(s.device), ("distillmos",), "pip install --no-deps distillmos==0.9.1"),
)
BY_NAME = {m.name: m for m in METRICS}
FAMILIES = {"signal": "PESQ, STOI, mel, SI-SDR", "asr": "WER, CER", "speaker": "speaker", "pitch": "pitch",
            "mos": "MOS"}


def select(choices: list[str]) -> list[Metric]:
    """Metrics by name or family ("asr", "pitch", ...), in table order."""
    unknown = [c for c in choices if c not in BY_NAME and c not in FAMILIES]
    if unknown:
        raise CodecError(f"unknown metric {unknown[0]}: choose from {', '.join([*BY_NAME, *FAMILIES])}")
    return [m for m in METRICS if m.name in choices or m.family in choices]


def choose(metrics: list[str] | None, mos: list[str] | None, no_mos: bool) -> list[Metric]:
    """What `codec eval --metrics ... --mos ... [--no-mos]` asks for: the metrics (default all), of which the MOS
    predictors named by `mos` (default every one), or none with `no_mos`."""
    predictors = select(mos or ["mos"])
    if any(m.family != "mos" for m in predictors):
        raise CodecError(f"--mos takes MOS predictors: {', '.join(m.name for m in select(['mos']))}")
    return [m for m in select(metrics or [m.name for m in METRICS])
            if m.family != "mos" or (not no_mos and m in predictors)]


def load_scorers(metrics: list[Metric], settings: Settings) -> tuple[list[tuple[Metric, Scorer]], dict[str, str]]:
    """The scorers of the metrics that can run, and for each that cannot, the one line saying what to install.
    A metric that is installed but broken (a UTMOS checkpoint that does not load) is an error."""
    loaded, unavailable = [], {}
    for metric in metrics:
        missing = [p for p in metric.packages if importlib.util.find_spec(p) is None]
        try:
            if missing:
                raise MetricUnavailable(f"{metric.title} needs {' and '.join(missing)}: {metric.install}")
            loaded.append((metric, metric.build(settings)))
        except MetricUnavailable as error:
            unavailable[metric.name] = str(error)
    return loaded, unavailable


def describe(name: str, results: list[dict]) -> dict:
    """Title, unit, better direction and what it was compared with, of a metric in a set of results: as the
    first results.json that records it says (results outlive changes to this table), else as declared here."""
    for result in results:
        if name in result.get("metric_info", {}):
            return result["metric_info"][name]
    metric = BY_NAME.get(name)
    if metric is None:
        return {"title": name, "unit": "", "better": "higher", "compared_with": "reference audio"}
    return {"title": metric.title, "unit": metric.unit, "better": metric.better,
            "compared_with": "nothing" if metric.compares == "nothing" else "reference audio"}


def label(description: dict) -> str:
    """Title with unit and direction, for table headers and plot titles."""
    unit = f" ({description['unit']})" if description.get("unit") else ""
    return f"{description['title']}{unit} {'↓' if description.get('better') == 'lower' else '↑'}"


def markdown_table() -> str:
    """The table as docs/evaluation.md shows it."""
    rows = ["| metric | column | unit | better | compares with | rate (Hz) | needs |", "|---|---|---|---|---|---|---|"]
    compares = {"audio": "reference audio", "text": "text, else the original's transcript", "nothing": "nothing"}
    for m in METRICS:
        needs = f"`{m.install}`" if m.install.startswith("pip") else m.install or "–"
        rows.append(f"| {m.title} | `{m.name}` | {m.unit or '–'} | {m.better} | {compares[m.compares]} | "
                    f"{m.rate or 'reference'} | {needs} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
