"""`codec eval` and `codec report`: a tiny model and the classic baselines through one pipeline, the files each
writes, the one-line errors, and the page rendered in a real browser when Chromium is installed."""
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from codec.cli import main

from conftest import EXAMPLE

sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
needs_opus = pytest.mark.skipif(shutil.which("opusenc") is None, reason="apt-get install opus-tools")
needs_codec2 = pytest.mark.skipif(shutil.which("c2enc") is None, reason="apt-get install codec2")


def run(*args):
    return main([str(a) for a in args])


@pytest.fixture
def corpus(tmp_path):
    """Two short speech clips at different rates, one in a subfolder."""
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    (tmp_path / "data" / "sub").mkdir(parents=True)
    soundfile.write(tmp_path / "data" / "a.wav", audio[:rate], rate)
    soundfile.write(tmp_path / "data" / "sub" / "b.flac", audio[rate:2 * rate], rate)
    return tmp_path / "data"


@pytest.fixture
def evaluated(tmp_path, tiny_weights, corpus):
    """The tiny model at 1 and 3 codebooks and the original, evaluated without MOS predictors."""
    out = tmp_path / "results"
    assert run("eval", "--model", tiny_weights, "--data", corpus, "--num-codebooks", "1", "3", "--baseline",
               "original", "--no-mos", "--save-audio", "--examples", "1", "--out", out) == 0
    return out


def test_eval_writes_one_folder_per_system(evaluated):
    assert sorted(p.name for p in evaluated.iterdir()) == ["original", "tiny-12kbps", "tiny-4kbps"]
    full = json.loads((evaluated / "tiny-12kbps" / "results.json").read_text())
    assert (full["files"], full["kbps"], full["measured_kbps"], full["audio_seconds"]) == (2, 12.0, 12.0, 2.0)
    assert set(full["metrics"]) == {"pesq", "stoi", "mel_distance", "si_sdr"}
    assert all(m["count"] == 2 and np.isfinite(m["ci95"]) for m in full["metrics"].values())
    books = full["codebooks"]
    assert books["nominal_kbps"] == 12.0 and len(books["per_codebook"]) == 3
    assert books["effective_kbps"] == pytest.approx(sum(s["entropy_bits"] for s in books["per_codebook"]))
    counts = np.load(evaluated / "tiny-12kbps" / "codebook_counts.npz")
    assert [counts[k].sum() for k in counts.files] == [2000] * 3  # 2 s at 1000 frames/s, each codebook
    with open(evaluated / "tiny-12kbps" / "per_file.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(r["file"]).name for r in rows] == ["a.wav", "b.flac"]
    summary = (evaluated / "tiny-12kbps" / "summary.csv").read_text().splitlines()
    assert summary[0] == "metric,mean,ci95,count" and len(summary) == 5
    assert (evaluated / "tiny-12kbps" / "audio" / "sub" / "b.wav").is_file()
    assert len(full["examples"]) == 1 and (evaluated / "tiny-12kbps" / full["examples"][0]["decoded"]).is_file()
    original = json.loads((evaluated / "original" / "results.json").read_text())
    assert original["kbps"] is None and original["metrics"]["pesq"]["mean"] > 4.5 and "codebooks" not in original


def test_eval_refuses_existing_results_and_bad_input(evaluated, tiny_weights, corpus, capsys):
    assert run("eval", "--model", tiny_weights, "--data", corpus, "--no-mos", "--out", evaluated) == 1
    assert "already exists (use --force" in capsys.readouterr().err
    for bad in (["--bandwidth", "1"], ["--baseline", "opus:2"], ["--baseline", "mp3:128"], ["--num-codebooks", "9"]):
        assert run("eval", "--model", tiny_weights, "--data", corpus, "--no-mos", "--out", evaluated / "x", *bad) == 1
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1


def test_missing_baseline_tool_names_the_package(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert run("eval", "--baseline", "codec2:1200", "--data", corpus, "--out", tmp_path / "r") == 1
    assert capsys.readouterr().err == \
        "error: baseline codec2:1200 needs c2enc and c2dec: install the Debian package codec2 (apt-get install codec2)\n"


@needs_opus
@needs_codec2
def test_classic_baselines_run_through_the_same_pipeline(tmp_path, corpus):
    out = tmp_path / "results"
    assert run("eval", "--baseline", "opus:12", "--baseline", "codec2:3200", "--data", corpus, "--no-mos",
               "--out", out) == 0  # no --model: only the baselines run
    assert sorted(p.name for p in out.iterdir()) == ["codec2-3.2kbps", "opus-12kbps"]
    opus = json.loads((out / "opus-12kbps" / "results.json").read_text())
    codec2 = json.loads((out / "codec2-3.2kbps" / "results.json").read_text())
    assert opus["measured_kbps"] == pytest.approx(12, rel=0.15) and codec2["measured_kbps"] == pytest.approx(3.2)
    assert opus["metrics"]["pesq"]["mean"] > 2.5 and opus["metrics"]["stoi"]["mean"] > 0.9
    assert codec2["metrics"]["stoi"]["mean"] > 0.7


def test_report_tables_plots_and_audio(evaluated, tmp_path):
    out = tmp_path / "report"
    assert run("report", *evaluated.iterdir(), "--out", out, "--examples", "1", "--clip-seconds", "0.5") == 0
    page = (out / "index.html").read_text()
    markdown = (out / "report.md").read_text()
    for name in ("tiny @ 4 kbps", "tiny @ 12 kbps", "original"):
        assert f"<td>{name}</td>" in page and f"| {name} |" in markdown
    assert page.count("data:image/png;base64,") == 6  # 4 metrics, utilization, code usage
    assert page.count("<audio") == 3 and page.count("data:audio/flac;base64,") == 3  # original + 2 decodings
    assert "![pesq.png](pesq.png)" in markdown and (out / "pesq.png").is_file()
    assert run("report", evaluated, "--out", out) == 1  # exists without --force


def test_two_runs_of_one_recipe_stay_apart(evaluated, tmp_path, corpus):
    """Models of the same name (two runs of one recipe): `--name` names one; the report tells them apart anyway."""
    import torch
    from codec.weights import load_weights, save_weights
    other = load_weights(next(tmp_path.glob("tiny.safetensors")), for_training=True)
    with torch.no_grad():
        other.decoder.requires_grad_(False)
        for parameter in other.decoder.parameters():
            parameter.mul_(0.5)
    save_weights(other, tmp_path / "other.safetensors")
    assert run("eval", "--model", tmp_path / "other.safetensors", "--name", "tiny-b", "--data", corpus,
               "--num-codebooks", "3", "--no-mos", "--out", tmp_path / "named") == 0
    assert (tmp_path / "named" / "tiny-b-12kbps" / "results.json").is_file()
    assert run("eval", "--model", tmp_path / "other.safetensors", "--data", corpus, "--num-codebooks", "3",
               "--no-mos", "--out", tmp_path / "second") == 0
    out = tmp_path / "report"
    assert run("report", evaluated / "tiny-12kbps", tmp_path / "second", "--out", out) == 0
    markdown = (out / "report.md").read_text()
    assert "| tiny (results) @ 12 kbps |" in markdown and "| tiny (second) @ 12 kbps |" in markdown
    assert (out / "tiny_results-utilization.png").is_file() and (out / "tiny_second-utilization.png").is_file()


def test_confidence_interval_is_students_t():
    from codec.evaluate import summarize
    assert summarize([1.0, 2.0, 3.0])["ci95"] == pytest.approx(4.303 * 1 / 3 ** 0.5, rel=1e-3)  # t(0.975, 2)
    assert np.isnan(summarize([1.0])["ci95"]) and summarize([float("nan"), 2.0])["count"] == 1


@pytest.mark.skipif(shutil.which("chromium") is None, reason="apt-get install chromium")
def test_report_renders_in_chromium(evaluated, tmp_path):
    from screenshot_report import drawn_fraction, screenshot
    assert run("report", evaluated, "--out", tmp_path / "report", "--examples", "0") == 0
    screenshot(tmp_path / "report" / "index.html", tmp_path / "page.png", height=1200)
    assert drawn_fraction(tmp_path / "page.png") > 0.02
