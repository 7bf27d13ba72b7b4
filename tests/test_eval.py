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
               "original", "--metrics", "signal", "--save-audio", "--examples", "1", "--device", "cpu",
               "--out", out) == 0
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
    assert [Path(r["file"]).name for r in rows] == ["a.wav", "b.flac"] and full["skipped"] == []
    as_json = json.loads((evaluated / "tiny-12kbps" / "per_file.json").read_text())
    assert [r["file"] for r in as_json] == [r["file"] for r in rows]
    assert as_json[1]["pesq"] == pytest.approx(float(rows[1]["pesq"])) and as_json[1]["seconds"] == 1.0
    with open(evaluated / "tiny-12kbps" / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert list(summary[0]) == ["system", "kbps", "measured_kbps", "nominal_kbps", "effective_kbps", "metric",
                                "unit", "better", "mean", "ci95", "count"]
    assert (summary[3]["unit"], summary[3]["better"], summary[2]["better"]) == ("dB", "higher", "lower")
    assert [r["metric"] for r in summary] == ["pesq", "stoi", "mel_distance", "si_sdr"]
    assert {(r["system"], float(r["kbps"]), float(r["measured_kbps"]), float(r["nominal_kbps"]),
             round(float(r["effective_kbps"]), 6)) for r in summary} == \
        {("tiny-12kbps", 12.0, 12.0, 12.0, round(books["effective_kbps"], 6))}
    assert (evaluated / "tiny-12kbps" / "audio" / "sub" / "b.wav").is_file()
    assert len(full["examples"]) == 1 and (evaluated / "tiny-12kbps" / full["examples"][0]["decoded"]).is_file()
    original = json.loads((evaluated / "original" / "results.json").read_text())
    assert original["kbps"] is None and original["metrics"]["pesq"]["mean"] > 4.5 and "codebooks" not in original


def test_eval_refuses_existing_results_and_bad_input(evaluated, tiny_weights, corpus, tmp_path, capsys):
    assert run("eval", "--model", tiny_weights, "--data", corpus, "--metrics", "signal", "--out", evaluated) == 1
    assert "already exists (use --force" in capsys.readouterr().err
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for bad in (["--bandwidth", "1"], ["--baseline", "opus:2"], ["--baseline", "mp3:128"], ["--num-codebooks", "9"],
                ["--reference-rate", "0"], ["--reference-rate", "-8000"], ["--subset", "-1"], ["--subset", "0"],
                ["--device", "nonsense"], ["--mos", "utmos", "--utmos-checkpoint", tmp_path / "nowhere.pt"],
                ["--out", a_file]):
        out = [] if "--out" in bad else ["--out", evaluated / "x"]
        metrics = ["--metrics", "signal"] if "--mos" not in bad else []
        assert run("eval", "--model", tiny_weights, "--data", corpus, *metrics, *out, *bad) == 1, bad
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1, (bad, error)
    assert not (evaluated / "x").exists()


def test_existing_results_are_refused_before_any_system_runs(evaluated, tiny_weights, corpus, capsys):
    """tiny-8kbps would be new and runs first; tiny-12kbps exists: nothing may run (or be written) at all."""
    assert run("eval", "--model", tiny_weights, "--data", corpus, "--num-codebooks", "2", "3", "--metrics", "signal",
               "--out", evaluated) == 1
    captured = capsys.readouterr()
    assert "tiny-12kbps/results.json: already exists" in captured.err and "over 2 files" not in captured.out
    assert not (evaluated / "tiny-8kbps").exists()


def test_several_baselines_after_one_flag_or_the_flag_repeated():
    from codec.cli import build_parser
    args = build_parser().parse_args(["eval", "--data", "d", "--out", "o", "--baseline", "opus:6", "opus:12",
                                      "codec2:3200", "--no-mos", "--baseline", "original"])
    assert args.baseline == ["opus:6", "opus:12", "codec2:3200", "original"] and args.no_mos


def test_skipped_files_are_listed_and_fail_the_command(tiny_weights, corpus, tmp_path, capsys):
    (corpus / "broken.wav").write_bytes(b"RIFF not really a wave file")
    out = tmp_path / "results"
    assert run("eval", "--model", tiny_weights, "--data", corpus, "--num-codebooks", "3", "--metrics", "signal",
               "--out", out) == 1  # as `codec encode` with several inputs: the others are done, the exit code says
    captured = capsys.readouterr()
    results = json.loads((out / "tiny-12kbps" / "results.json").read_text())
    assert results["files"] == 2 and [Path(s["file"]).name for s in results["skipped"]] == ["broken.wav"]
    assert results["skipped"][0]["reason"].startswith("not a readable audio file")
    assert "skipped 1 of 3 files" in captured.out and captured.err.endswith(
        "error: files were skipped (1 in all; listed under 'skipped' in each system's results.json)\n")
    (tmp_path / "only-broken").mkdir()
    shutil.copy(corpus / "broken.wav", tmp_path / "only-broken")
    assert run("eval", "--model", tiny_weights, "--data", tmp_path / "only-broken", "--metrics", "signal", "--out",
               tmp_path / "none") == 1
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("error: tiny-12kbps: none of the 1 files could be scored (first: ") and \
        error.endswith("); no results written")
    assert not list((tmp_path / "none").rglob("*.json"))


def test_missing_baseline_tool_names_the_package(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert run("eval", "--baseline", "codec2:1200", "--data", corpus, "--out", tmp_path / "r") == 1
    assert capsys.readouterr().err == \
        "error: baseline codec2:1200 needs c2enc and c2dec: install the Debian package codec2 " \
        "(apt-get install codec2)\n"


@needs_opus
@needs_codec2
def test_classic_baselines_run_through_the_same_pipeline(tmp_path, corpus):
    out = tmp_path / "results"
    assert run("eval", "--baseline", "opus:12", "codec2:3200", "--data", corpus, "--metrics", "signal",
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
    # the overview, 4 metrics, utilization, code-usage histogram and ranks
    assert page.count("data:image/png;base64,") == 8 and (out / "overview.png").is_file()
    assert "<th>SI-SDR (dB) ↑</th>" in page and "| mel distance ↓ |" in markdown
    assert (out / "tiny-code-histogram.png").is_file() and (out / "tiny-code-rank.png").is_file()
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
               "--num-codebooks", "3", "--metrics", "signal", "--out", tmp_path / "named") == 0
    assert (tmp_path / "named" / "tiny-b-12kbps" / "results.json").is_file()
    assert run("eval", "--model", tmp_path / "other.safetensors", "--data", corpus, "--num-codebooks", "3",
               "--metrics", "signal", "--out", tmp_path / "second") == 0
    out = tmp_path / "report"
    assert run("report", evaluated / "tiny-12kbps", tmp_path / "second", "--out", out) == 0
    markdown = (out / "report.md").read_text()
    assert "| tiny (results) @ 12 kbps |" in markdown and "| tiny (second) @ 12 kbps |" in markdown
    assert (out / "tiny_results-utilization.png").is_file() and (out / "tiny_second-utilization.png").is_file()


def test_same_named_baselines_from_two_results_sets_stay_apart(evaluated, tmp_path):
    """Opus at 12 kbps evaluated into two results sets (made here from the original's folder, so that no
    opusenc is needed): two rows, two plot lines, two colours; the original of each set too."""
    from codec import plots
    from codec.report import collect
    for parent, measured in (("first", 11.5), ("second", 11.9)):
        shutil.copytree(evaluated / "original", tmp_path / parent / "original")
        opus = tmp_path / parent / "opus-12kbps"
        shutil.copytree(evaluated / "original", opus)
        results = json.loads((opus / "results.json").read_text())
        results.update(label="opus-12kbps", kbps=12.0, measured_kbps=measured,
                       system={**results["system"], "name": "opus"})
        (opus / "results.json").write_text(json.dumps(results))
    out = tmp_path / "report"
    assert run("report", tmp_path / "first", tmp_path / "second", "--out", out) == 0
    markdown = (out / "report.md").read_text()
    for row in ("opus (first) @ 12 kbps", "opus (second) @ 12 kbps", "original (first)", "original (second)"):
        assert f"| {row} |" in markdown
    results = collect([tmp_path / "first", tmp_path / "second"])
    lines, _ = plots.series(results, "pesq")
    assert sorted(lines) == ["opus (first)", "opus (second)"] and [p[0][0] for _, p in sorted(lines.items())] == \
        [11.5, 11.9]
    colours = plots.colours(results)
    assert colours["opus (first)"] != colours["opus (second)"]


def test_report_refuses_bad_results_in_one_line(evaluated, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for content, reason in (("{not json", "not a results file of `codec eval` (Expecting property name"),
                            ('{"label": "x"}', "not a results file of `codec eval` (no system)"),
                            ("[1, 2]", "(not a JSON object)")):
        (bad / "results.json").write_text(content)
        assert run("report", bad, "--out", tmp_path / "r") == 1
        error = capsys.readouterr().err
        assert error.startswith(f"error: {(bad / 'results.json').resolve()}: ") and reason in error \
            and error.count("\n") == 1, error
    assert run("report", evaluated, "--out", a_file) == 1
    assert capsys.readouterr().err == f"error: {a_file}: --out must be a folder, and this is a file\n"


def test_report_shows_what_a_damaged_or_empty_folder_has(evaluated, tmp_path):
    """A folder that lost codebook_counts.npz and its examples, and a results.json of zero files (as an older
    `codec eval` wrote), are reported with what they have, and the page says what is missing."""
    damaged = tmp_path / "damaged"
    shutil.copytree(evaluated, damaged)
    (damaged / "tiny-12kbps" / "codebook_counts.npz").unlink()
    shutil.rmtree(damaged / "tiny-12kbps" / "examples")
    empty = json.loads((damaged / "tiny-4kbps" / "results.json").read_text())
    empty.update(files=0, audio_seconds=0.0, metrics={}, examples=[], measured_kbps=None,
                 codebooks={**empty["codebooks"], "nominal_kbps": 0.0, "effective_kbps": 0.0, "per_codebook": []})
    (damaged / "tiny-4kbps" / "results.json").write_text(json.dumps(empty))
    out = tmp_path / "report"
    assert run("report", damaged, "--out", out, "--examples", "1", "--clip-seconds", "0.5") == 0
    page = (out / "index.html").read_text()
    assert "tiny-12kbps lacks codebook_counts.npz (no code-usage plots) and example audio" in page
    assert not list(out.glob("*code-rank.png")) and (out / "tiny-utilization.png").is_file()
    assert "<td>tiny @ 4 kbps</td><td>4</td><td>–</td><td>0</td>" in page
    assert page.count("<audio") == 1  # the original's clip: the other two folders have no examples left


def test_report_of_the_original_alone_draws_no_empty_plots_and_warns_nothing(evaluated, tmp_path):
    import warnings
    from codec.report import write_report
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report([evaluated / "original"], tmp_path / "report")
    assert not list((tmp_path / "report").glob("*.png"))  # every metric is full-reference: nothing to plot


def test_confidence_interval_is_students_t():
    from codec.evaluate import summarize
    assert summarize([1.0, 2.0, 3.0])["ci95"] == pytest.approx(4.303 * 1 / 3 ** 0.5, rel=1e-3)  # t(0.975, 2)
    assert np.isnan(summarize([1.0])["ci95"]) and summarize([float("nan"), 2.0])["count"] == 1


@pytest.mark.skipif(shutil.which("chromium") is None, reason="apt-get install chromium")
def test_report_renders_in_chromium_and_a_corrupt_image_or_clip_is_caught(evaluated, tmp_path):
    import base64
    import re
    from screenshot_report import broken, drawn_fraction, media_status, screenshot
    assert run("report", evaluated, "--out", tmp_path / "report", "--examples", "1", "--clip-seconds", "0.5") == 0
    page = tmp_path / "report" / "index.html"
    status = media_status(page)
    assert (len(status["images"]), len(status["audio"]), broken(status)) == (8, 3, [])
    screenshot(page, tmp_path / "page.png", height=1200)
    assert drawn_fraction(tmp_path / "page.png") > 0.02
    # The first plot keeps its PNG signature and loses the rest; the first clip is noise: both still "draw".
    text = page.read_text()
    image = re.search("data:image/png;base64,([^']+)", text).group(1)
    garbage = base64.b64decode(image)[:64] + np.random.default_rng(0).bytes(2000)
    text = text.replace(image, base64.b64encode(garbage).decode(), 1)
    clip = re.search("data:audio/flac;base64,([^']+)", text).group(1)
    text = text.replace(clip, base64.b64encode(np.random.default_rng(1).bytes(3000)).decode(), 1)
    corrupt = tmp_path / "corrupt.html"
    corrupt.write_text(text)
    first_plot = re.search("<img alt='([^']+)'", text).group(1)
    assert broken(media_status(corrupt)) == [first_plot, "audio player 1"]


EXAMPLE_TEXT = "Produced the block books, which were the immediate predecessors of the true printed book,"


def test_eval_scores_words_voice_and_pitch_against_the_text(tiny_weights, tmp_path, capsys):
    """The manifest's text is WER's reference, so the original's row is the ceiling, not 0; an untrained model
    loses the words, the voice and the pitch; the report shows it all, the original as WER's level line."""
    from codec import plots
    from codec.report import collect
    manifest = tmp_path / "data.tsv"
    manifest.write_text(f"file\ttext\n{EXAMPLE}\t{EXAMPLE_TEXT}\n")
    out = tmp_path / "results"
    assert run("eval", "--model", tiny_weights, "--data", manifest, "--num-codebooks", "3", "--baseline",
               "original", "--metrics", "asr", "speaker", "pitch", "--out", out) == 0
    assert f"WER and CER against text column 'text' of {manifest}" in capsys.readouterr().err
    original = json.loads((out / "original" / "results.json").read_text())
    model = json.loads((out / "tiny-12kbps" / "results.json").read_text())
    assert list(original["metrics"]) == ["wer", "cer", "speaker_similarity", "f0_rmse", "voicing_error",
                                         "octave_errors"]
    value = {name: result["metrics"][name]["mean"] for name in original["metrics"]
             for result in (original,)}
    ceiling = original["asr_reference"]["ceiling"]["wer"]["mean"]
    assert original["asr_reference"]["kind"] == "text" and value["wer"] == ceiling < 30
    assert value["speaker_similarity"] == pytest.approx(1, abs=1e-5) and value["f0_rmse"] == 0
    assert model["metrics"]["wer"]["mean"] > ceiling + 30 and model["metrics"]["speaker_similarity"]["mean"] < 0.9
    assert model["metric_info"]["wer"] == {"title": "WER", "unit": "%", "better": "lower", "compared_with": "text"}
    assert model["metric_info"]["f0_rmse"]["compared_with"] == "reference audio"
    assert {"wer", "speaker_similarity", "f0_rmse"} <= set(model["timing"])
    report = tmp_path / "report"
    assert run("report", out, "--out", report) == 0
    page = (report / "index.html").read_text()
    assert "<th>WER (%) ↓</th>" in page and "<th>F0 RMSE (cents) ↓</th>" in page and "ceiling" in page
    assert "PocketSphinx (a weak recogniser" in page and "WER, CER CPU s / min" in page
    assert (report / "overview.png").is_file() and (report / "wer.png").is_file()
    results = collect([out])
    assert [r["label"] for r in plots.series(results, "wer")[1]] == ["original"]  # the ceiling, as a level
    assert plots.series(results, "f0_rmse")[1] == []  # 0 by construction: no level


def test_without_a_text_wer_is_against_the_originals_transcript(tmp_path, corpus, capsys):
    assert run("eval", "--baseline", "original", "--data", corpus, "--metrics", "wer", "--subset", "1",
               "--out", tmp_path / "r") == 0
    assert "WER and CER against the original audio’s PocketSphinx transcript" in capsys.readouterr().err
    original = json.loads((tmp_path / "r" / "original" / "results.json").read_text())
    assert original["asr_reference"]["kind"] == "transcript" and "0 by construction" in \
        original["asr_reference"]["description"]
    assert original["metric_info"]["wer"]["compared_with"] == "transcript of the reference audio"
    assert run("eval", "--baseline", "original", "--data", corpus, "--text-column", "words", "--out",
               tmp_path / "s") == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "no text in column 'words' (2 of 2 files have none)" in error \
        and error.count("\n") == 1


def test_a_metric_whose_package_is_missing_is_reported_not_replaced(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    out = tmp_path / "r"
    assert run("eval", "--baseline", "original", "--data", corpus, "--metrics", "si_sdr", "wer",
               "--out", out) == 0
    assert "note: WER needs pocketsphinx: pip install pocketsphinx jiwer\n" in \
        capsys.readouterr().err
    results = json.loads((out / "original" / "results.json").read_text())
    assert list(results["metrics"]) == ["si_sdr"] and "asr_reference" not in results
    assert results["unavailable"] == {"wer": "WER needs pocketsphinx: pip install pocketsphinx jiwer"}
    assert run("report", out, "--out", tmp_path / "report") == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| n/a |" in markdown and "- wer: WER needs pocketsphinx: pip install pocketsphinx jiwer" in markdown


def test_report_without_matplotlib_says_what_to_install(evaluated, tmp_path, monkeypatch, capsys):
    import codec
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "codec.plots", raising=False)  # imported by an earlier test: forget it
    monkeypatch.delattr(codec, "plots", raising=False)
    assert run("report", evaluated, "--out", tmp_path / "report") == 1
    assert capsys.readouterr().err == "error: codec report draws its plots with matplotlib: pip install " \
                                      "matplotlib (or pip install 'codec[eval]')\n"
    assert not (tmp_path / "report").exists()


def test_a_bandwidth_beside_baselines_runs_the_bundled_model_too(tmp_path, corpus):
    out = tmp_path / "r"
    assert run("eval", "--data", corpus, "--subset", "1", "--bandwidth", "6", "--baseline", "original",
               "--metrics", "si_sdr", "--out", out) == 0
    folders = {p.name for p in out.iterdir()}
    assert "original" in folders and len(folders) == 2
    model = (folders - {"original"}).pop()  # the model's name is the bundled model's own
    assert model.endswith("-6kbps") and (out / model / "codebook_counts.npz").is_file()
