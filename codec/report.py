"""Results folders (from `codec eval`) -> one self-contained HTML page and a Markdown twin.

The HTML page carries everything inside it (plots as base64 PNG, audio clips as base64 FLAC), so it can be
mailed or attached to an issue; the Markdown page links the same plots, written beside it as PNG files.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile

from .audio import AtomicOutput
from .errors import CodecError, OutputError
from .metrics.table import BY_NAME, FAMILIES, describe, label


# What `codec report` reads from a results.json; anything else in it is optional.
REQUIRED = ("label", "system", "kbps", "measured_kbps", "files", "audio_seconds", "metrics", "timing")


def collect(paths: list[str | Path]) -> list[dict]:
    """Every results.json in or below the given folders (each once), with its folder recorded under "folder"
    and the parts of the folder that are missing under "absent"."""
    files: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise CodecError(f"{path}: no such results folder")
        for file in ([path / "results.json"] if (path / "results.json").is_file() else
                     sorted(path.rglob("results.json"))):
            files[file.resolve()] = None
    if not files:
        raise CodecError(f"no results.json in {', '.join(map(str, paths))}: run `codec eval` first")
    found = [_read(file) for file in files]
    _tell_apart(found)
    order = {"baseline": 1, "model": 0}
    return sorted(found, key=lambda r: (order.get(r["system"]["kind"], 2), r["system"]["name"], r["kbps"] or 1e9))


def _read(file: Path) -> dict:
    """One results.json, checked: a file `codec eval` did not write is refused in one line. A folder that lost
    codebook_counts.npz or example audio is reported without them, and the page says what is missing."""
    try:
        result = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CodecError(f"{file}: not a results file of `codec eval` ({error})") from None
    problem = _problem(result)
    if problem:
        raise CodecError(f"{file}: not a results file of `codec eval` ({problem})")
    folder = file.parent
    absent = [] if "codebooks" not in result or (folder / "codebook_counts.npz").is_file() else \
        ["codebook_counts.npz (no code-usage plots)"]
    examples = [e for e in result.get("examples", []) if isinstance(e, dict) and "file" in e
                and all(isinstance(e.get(k), str) and (folder / e[k]).is_file() for k in ("original", "decoded"))]
    if len(examples) < len(result.get("examples", [])):
        absent.append("example audio in examples/ (no players)")
    return {**result, "examples": examples, "folder": str(folder), "absent": absent}


def _problem(result) -> str | None:
    """What keeps `result` from being what `codec eval` writes, if anything."""
    if not isinstance(result, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        return f"no {missing[0]}"
    if not isinstance(result["system"], dict) or not {"kind", "name"} <= result["system"].keys():
        return "no system kind and name"
    if not isinstance(result["metrics"], dict) or not all(isinstance(v, dict) and {"mean", "ci95"} <= v.keys()
                                                          for v in result["metrics"].values()):
        return "a metric without mean and ci95"
    if not isinstance(result["timing"], dict) or "wall_seconds" not in result["timing"]:
        return "no timing.wall_seconds"
    return None


def _tell_apart(results: list[dict]) -> None:
    """Systems of one name from different sources get their source after the name, so that rows, plot lines,
    colours and figure files stay separate: models of one name with other weights (two runs of one recipe), and
    any system, model or baseline, evaluated into two results sets (their rows would clash). The tag is the
    results' parent folder, else the weights' hash, else the parent's whole path: the first that tells them apart."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[r["system"]["kind"], r["system"]["name"]].append(r)
    tags = (lambda r: Path(r["folder"]).parent.name, lambda r: (r["system"].get("weights_sha256") or "")[:8],
            lambda r: str(Path(r["folder"]).parent))
    for group in groups.values():
        clashes = [(a, b) for i, a in enumerate(group) for b in group[i + 1:] if a["label"] == b["label"]
                   or a["system"].get("weights_sha256") != b["system"].get("weights_sha256")]
        if not clashes:
            continue
        tag = next((t for t in tags if all(t(a) != t(b) for a, b in clashes)), tags[-1])
        for r in group:
            r["system"] = {**r["system"], "name": f"{r['system']['name']} ({tag(r)})"}


def title(result: dict) -> str:
    """How a row is named: the model or codec, and the bitrate it ran at."""
    name, kbps = result["system"]["name"], result["kbps"]
    return name if kbps is None else f"{name} @ {kbps:g} kbps"


def metric_names(results: list[dict]) -> list[str]:
    """Every metric any result has or lists as unavailable: in the metric table's order, then any others."""
    names: list[str] = []
    for result in results:
        names += [m for m in [*result["metrics"], *result.get("unavailable", {})] if m not in names]
    order = list(BY_NAME)
    return sorted(names, key=lambda m: (order.index(m) if m in order else len(order), names.index(m)))


def _cell(result: dict, metric: str) -> str:
    if metric in result.get("unavailable", {}):
        return "n/a"
    value = result["metrics"].get(metric)
    if value is None or math.isnan(value["mean"]):
        return "–"
    return f"{value['mean']:.3f} ± {value['ci95']:.3f}" if not math.isnan(value["ci95"]) else f"{value['mean']:.3f}"


def _kbps(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def results_table(results: list[dict]) -> list[list[str]]:
    metrics = metric_names(results)
    header = ["system", "kbps", "measured kbps", "files", *[label(describe(m, results)) for m in metrics]]
    return [header] + [[title(r), _kbps(r["kbps"]), _kbps(r["measured_kbps"]), str(r["files"]),
                        *[_cell(r, m) for m in metrics]] for r in results]


def widest_runs(results: list[dict]) -> dict[str, dict]:
    """Each model's run with the most codebooks: its runs with fewer hold the same codes in their first
    codebooks (residual stages are encoded in order), so it alone describes the codebooks."""
    widest: dict[str, dict] = {}
    for r in results:
        if "codebooks" in r and len(r["codebooks"]["per_codebook"]) >= len(
                widest.get(r["system"]["name"], {}).get("codebooks", {}).get("per_codebook", [])):
            widest[r["system"]["name"]] = r
    return widest


def codebook_table(results: list[dict]) -> list[list[str]]:
    rows = [["system", "codebook", "K", "used", "utilization", "perplexity", "entropy (bits)"]]
    for result in widest_runs(results).values():
        for s in result["codebooks"]["per_codebook"]:
            rows.append([title(result), str(s["index"] + 1), str(s["size"]), str(s["used"]),
                         f"{100 * s['utilization']:.1f} %", f"{s['perplexity']:.1f}", f"{s['entropy_bits']:.2f}"])
    return rows


def bitrate_table(results: list[dict]) -> list[list[str]]:
    rows = [["system", "nominal kbps", "effective kbps (entropy)", "share used"]]
    for result in results:
        if "codebooks" in result:
            c = result["codebooks"]
            share = f"{100 * c['effective_kbps'] / c['nominal_kbps']:.0f} %" if c["nominal_kbps"] else "–"
            rows.append([title(result), f"{c['nominal_kbps']:.3g}", f"{c['effective_kbps']:.3g}", share])
    return rows


def timing_table(results: list[dict]) -> list[list[str]]:
    """Per minute of audio: wall seconds (which a busy machine inflates), and CPU seconds in all, in the codec,
    and in each family of metrics (what leaving it out with --metrics or --no-mos saves)."""
    def family(key: str) -> str | None:
        return "signal" if key == "quality" else BY_NAME[key].family if key in BY_NAME else None
    present = [f for f in FAMILIES if any(family(k) == f for r in results for k in r["timing"])]
    rows = [["system", "audio (min)", "wall s / min", "CPU s / min", "codec CPU s / min",
             *[f"{FAMILIES[f]} CPU s / min" for f in present]]]
    for r in results:
        minutes, timing = r["audio_seconds"] / 60, r["timing"]
        per = (lambda s: "–" if s is None else f"{s / minutes:.1f}") if minutes else (lambda s: "–")
        families = [sum(v for k, v in timing.items() if family(k) == f) for f in present]
        rows.append([title(r), f"{minutes:.2f}", per(timing["wall_seconds"]), per(timing.get("cpu_seconds")),
                     per(timing.get("codec", 0.0)), *map(per, families)])
    return rows


def _markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plots():
    """The plotting module, or one line saying what to install: matplotlib is in the eval extra only."""
    try:
        from . import plots
    except ImportError as error:
        if (error.name or "").split(".")[0] != "matplotlib":
            raise
        raise CodecError("codec report draws its plots with matplotlib: pip install matplotlib "
                         "(or pip install 'codec[eval]')") from None
    return plots


def figures(results: list[dict]) -> dict[str, bytes]:
    """File name -> PNG: all metrics against bitrate in one overview, then one plot per metric that has
    something to draw, and for each model its utilization, the histogram of its code-usage counts and its
    codes' rank-frequency curve."""
    plots = _plots()
    drawn = [m for m in metric_names(results) if plots.has_points(results, m)]
    out = {"overview.png": plots.overview(results, drawn)} if len(drawn) > 1 else {}
    out.update({f"{m}.png": plots.metric_against_bitrate(results, m) for m in drawn})
    for name, r in widest_runs(results).items():
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")  # a file name a Markdown link can hold
        out[f"{stem}-utilization.png"] = plots.codebook_utilization(name, r["codebooks"]["per_codebook"])
        if (Path(r["folder"]) / "codebook_counts.npz").is_file():
            with np.load(Path(r["folder"]) / "codebook_counts.npz") as counts:
                arrays = [counts[k] for k in counts.files]
            out[f"{stem}-code-histogram.png"] = plots.code_histogram(name, arrays)
            out[f"{stem}-code-rank.png"] = plots.code_rank_frequency(name, arrays)
    return out


def _clip(path: Path, seconds: float) -> str:
    audio, rate = soundfile.read(path, dtype="float32")
    buffer = io.BytesIO()
    soundfile.write(buffer, audio[:int(seconds * rate)], rate, format="FLAC", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode()


def audio_section(results: list[dict], count: int, seconds: float) -> str:
    """For the first `count` examples every system kept: the original, then each system's decoding."""
    blocks = []
    for index in range(count):
        having = [r for r in results if len(r.get("examples", [])) > index]
        if not having:
            break
        first = having[0]["examples"][index]
        players = [("original", Path(having[0]["folder"]) / first["original"])]
        players += [(title(r), Path(r["folder"]) / r["examples"][index]["decoded"]) for r in having
                    if r["examples"][index]["file"] == first["file"] and r["label"] != "original"]
        cells = "".join(f"<div class=player><div>{html.escape(label)}</div><audio controls preload=metadata "
                        f"src='data:audio/flac;base64,{_clip(path, seconds)}'></audio></div>"
                        for label, path in players)
        blocks.append(f"<h3>{html.escape(Path(first['file']).name)}</h3><div class=players>{cells}</div>")
    return "".join(blocks)


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;white-space:normal}thead{background:#f3f3f3}
.plots{display:flex;flex-wrap:wrap;gap:8px}.plots img{max-width:100%}
.players{display:flex;flex-wrap:wrap;gap:12px}.player{font-size:13px}
.notes{color:#555;font-size:14px}"""


def _notes(results: list[dict]) -> list[str]:
    sources = sorted({r["data"] for r in results if r.get("data")})
    notes = [f"Data: {'; '.join(sources)}."] if sources else []
    notes += [f"Reference rate: {', '.join(sorted({str(r['reference_rate']) for r in results}))} Hz. "
             "Mean ± half-width of the 95 % confidence interval over files. Bitrate axis: measured where the "
             "system writes a stream (Opus packets without their Ogg container), nominal otherwise."]
    asr = [r["asr_reference"] for r in results if "asr_reference" in r]
    for description in dict.fromkeys(a["description"] for a in asr):
        notes.append(f"WER and CER: PocketSphinx (a weak recogniser: compare systems with each other, not with "
                     f"Whisper-based papers) against {description}.")
    for ceiling in [a["ceiling"] for a in asr if "ceiling" in a][:1]:
        notes.append(f"The original audio's own WER against the text, the ceiling: {ceiling['wer']['mean']:.1f} % "
                     f"(CER {ceiling['cer']['mean']:.1f} %).")
    for result in results:
        for name, message in result.get("unavailable", {}).items():
            if f"{name}: {message}" not in notes:
                notes.append(f"{name}: {message}")
        if result["absent"]:
            notes.append(f"{result['folder']} lacks {' and '.join(result['absent'])}.")
        if result.get("skipped"):
            notes.append(f"{title(result)}: {len(result['skipped'])} files skipped (listed in "
                         f"{Path(result['folder']) / 'results.json'}).")
    return notes


def write_report(paths: list[str | Path], out: str | Path, examples: int = 2, clip_seconds: float = 6.0,
                 force: bool = False) -> Path:
    results = collect(paths)
    _plots()  # before anything is written
    out = Path(out)
    if (out / "index.html").exists() and not force:
        raise OutputError(f"{out / 'index.html'}: already exists (use --force to overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    images = figures(results)
    for name, png in images.items():
        with AtomicOutput(out / name, force=True) as temporary:
            temporary.write_bytes(png)
    tables = [("Results", results_table(results)), ("Bitrates", bitrate_table(results)),
              ("Codebooks", codebook_table(results)), ("Evaluation time", timing_table(results))]
    tables = [(title, rows) for title, rows in tables if len(rows) > 1]
    notes = _notes(results)
    markdown = ["# Codec evaluation", ""] + [f"- {n}" for n in notes] + [""]
    page = [f"<!doctype html><html><head><meta charset=utf-8><title>Codec evaluation</title><style>{STYLE}</style>"
            f"</head><body><h1>Codec evaluation</h1>"] + [f"<p class=notes>{html.escape(n)}</p>" for n in notes]
    for title, rows in tables[:1]:
        markdown += [f"## {title}", "", _markdown_table(rows), ""]
        page.append(f"<h2>{title}</h2>{_html_table(rows)}")
    markdown += ["## Plots", ""] + [f"![{name}]({name})" for name in images] + [""]
    page.append("<h2>Plots</h2><div class=plots>" + "".join(
        f"<img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        for name, png in images.items()) + "</div>")
    for title, rows in tables[1:]:
        markdown += [f"## {title}", "", _markdown_table(rows), ""]
        page.append(f"<h2>{title}</h2>{_html_table(rows)}")
    players = audio_section(results, examples, clip_seconds)
    if players:
        markdown += ["Audio examples (original and decoded) are embedded in index.html.", ""]
        page.append(f"<h2>Audio examples (first {clip_seconds:g} s)</h2>{players}")
    page.append("</body></html>")
    with AtomicOutput(out / "index.html", force=True) as temporary:
        temporary.write_text("".join(page))
    with AtomicOutput(out / "report.md", force=True) as temporary:
        temporary.write_text("\n".join(markdown))
    return out / "index.html"
