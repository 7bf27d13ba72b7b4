"""Each failure that once passed silently (exit code 0, a broken output) or as a traceback, now one line."""
import math

import numpy as np
import soundfile
import pytest
import torch
from safetensors.torch import load_file, save_file

from codec.cli import main
from codec.errors import AudioError, ModelError
from codec.model import Codec
from codec.codes_file import CodesFile, load_codes, save_codes
from codec.weights import load, save_weights

from conftest import tiny_config


def run(*args):
    return main([str(a) for a in args])


def one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("override", ["grad_clip=nan", "learning_rate=.inf", "ema_decay=nan", "learning_rate=nan",
                                      "data.crop_seconds=nan", "loss.mel=-.inf", "betas=[0.8, .nan]",
                                      "model.istft.n_fft=641", "steps=[", "model.decoder=istft"])
def test_bad_setting_is_one_line_before_any_work(tmp_path, override, capsys):
    (tmp_path / "data").mkdir()
    config = tmp_path / "config.yaml"
    bad_n_fft = f"data: {{train: {tmp_path / 'data'}}}\nmodel: {{istft: {{n_fft: 641}}}}\n"
    config.write_text({"model.decoder=istft": bad_n_fft,
                       "model.istft.n_fft=641": "model: {decoder: istft}\n"}.get(override, "steps: 2\n"))
    assert run("train", "--config", config, override, f"out_dir={tmp_path / 'run'}") == 1
    one_line_error(capsys, "n_fft" if "decoder" in override or "n_fft" in override else override.split("=")[0])
    assert not (tmp_path / "run").exists()


def test_yaml_syntax_error_is_one_line(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("steps: 2\nmodel: {name: [x\n  b: 2\n")
    assert run("train", "--config", config) == 1
    one_line_error(capsys, "not valid YAML", "line 3")


@pytest.fixture
def nan_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_weights(Codec.from_config(tiny_config()), path)
    state = load_file(str(path))
    key = next(k for k in state if k.startswith("decoder.") and state[k].is_floating_point())
    state[key][0] = math.nan
    from safetensors import safe_open
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    save_file(state, str(path), metadata=metadata)
    return path, key


def test_weights_with_non_finite_tensors_are_refused(nan_weights, tmp_path, speech, capsys):
    path, key = nan_weights
    with pytest.raises(ModelError, match=f"tensor '{key}' holds 1 NaN"):
        load(path)
    assert run("encode", "--model", path, speech, tmp_path / "a.codes") == 1
    one_line_error(capsys, key)
    assert not (tmp_path / "a.codes").exists()
    codec = Codec.from_config(tiny_config())
    with torch.no_grad():
        next(codec.decoder.parameters())[:] = math.inf
    with pytest.raises(ModelError, match="NaN or infinite"):
        save_weights(codec, tmp_path / "b.safetensors")
    assert not (tmp_path / "b.safetensors").exists()


def test_non_finite_audio_is_never_written(tmp_path, tiny_weights, speech):
    from codec.files import decode_file, encode_file
    codec = load(tiny_weights)
    encode_file(codec, speech, tmp_path / "a.codes")
    with torch.no_grad():
        for parameter in codec.decoder.parameters():
            parameter.fill_(math.nan)
    with pytest.raises(ModelError, match="NaN or infinite samples"):
        decode_file(codec, tmp_path / "a.codes", tmp_path / "a.wav")
    from codec.audio import save
    with pytest.raises(AudioError, match="NaN or infinite"):
        save(tmp_path / "b.wav", np.array([0.0, math.nan]), 8000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.codes", "speech.wav", "tiny.safetensors"]


def forged(tmp_path, tiny_weights, speech, **changes):
    """A token file of the tiny model, changed and written with a checksum that fits: only the checks of the
    fields themselves can refuse it."""
    if not (tmp_path / "a.codes").exists():
        assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes") == 0
    tokens = load_codes(tmp_path / "a.codes")
    for name, value in changes.items():
        setattr(tokens, name, value)
    save_codes(tmp_path / "forged.codes", tokens, force=True)
    return tmp_path / "forged.codes"


def test_frame_rate_must_be_the_models(tmp_path, tiny_weights, speech, capsys):
    """150 Hz of metadata on 75 Hz codes decoded with exit code 0 to half the audio (here 2000 on 1000)."""
    tokens = load_codes(forged(tmp_path, tiny_weights, speech))  # 1000 Hz: the tiny model's hop is 8
    frames = math.ceil(tokens.num_samples / tokens.sample_rate * 2000)
    path = forged(tmp_path, tiny_weights, speech, frame_rate=2000.0, codes=tokens.codes.repeat(1, 2)[:, :frames])
    (tmp_path / "out").mkdir()
    assert run("decode", "--model", tiny_weights, path, tmp_path / "out" / "a.wav") == 1
    one_line_error(capsys, "frame rate 2000 Hz", "1000 Hz")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("change", ["float", "bool", "int64", "channels0", "channels-2", "fraction", "empty",
                                    "infinity", "2**63", "sample_rate0", "frame_nan", "frame_inf", "frame_1e308"])
def test_only_what_encode_writes_is_read(tmp_path, tiny_weights, speech, change, capsys):
    path = forged(tmp_path, tiny_weights, speech)
    from safetensors import safe_open
    with safe_open(str(path), "pt") as handle:
        metadata, codes = dict(handle.metadata()), handle.get_tensor("codes")
    del metadata["checksum"]  # as in a file of before the checksum: the fields alone must tell
    key, value = {"channels0": ("channels", "0"), "channels-2": ("channels", "-2"),
                  "fraction": ("codebook_sizes", "[16.5, 16, 16]"), "empty": ("codebook_sizes", "[]"),
                  "infinity": ("codebook_sizes", "[Infinity, 16, 16]"),
                  "2**63": ("codebook_sizes", f"[{2**63}, 16, 16]"),
                  "sample_rate0": ("sample_rate", "0"), "frame_nan": ("frame_rate", "nan"),
                  "frame_inf": ("frame_rate", "inf"), "frame_1e308": ("frame_rate", "1e308")}.get(change, (None, None))
    if key:
        metadata[key] = value
    else:
        codes = codes.to({"float": torch.float32, "bool": torch.bool, "int64": torch.int64}[change])
    if change == "empty":
        codes = codes[:0, :0].contiguous()
    save_file({"codes": codes}, str(path), metadata=metadata)
    assert run("info", path) == 1
    one_line_error(capsys, str(path), key or "codes stored as")
    assert run("decode", "--model", tiny_weights, path, tmp_path / "a.wav") == 1
    one_line_error(capsys, str(path))
    assert not (tmp_path / "a.wav").exists()


def test_checksum_catches_a_flipped_bit_and_old_files_still_load(tmp_path, tiny_weights, speech, capsys):
    path = forged(tmp_path, tiny_weights, speech)
    data = bytearray(path.read_bytes())
    data[-3] ^= 1  # a low bit of a code: still in range
    path.write_bytes(bytes(data))
    assert run("decode", "--model", tiny_weights, path, tmp_path / "a.wav") == 1
    one_line_error(capsys, "checksum mismatch")
    from safetensors import safe_open
    with safe_open(str(tmp_path / "a.codes"), "pt") as handle:
        metadata, codes = dict(handle.metadata()), handle.get_tensor("codes")
    del metadata["checksum"]
    save_file({"codes": codes}, str(tmp_path / "old.codes"), metadata=metadata)
    assert run("decode", "--model", tiny_weights, tmp_path / "old.codes", tmp_path / "a.wav") == 0


def test_control_characters_in_a_model_name_are_escaped(tmp_path, tiny_weights, speech, capsys):
    path = forged(tmp_path, tiny_weights, speech, model_name="evil\x1b[2J\nname", tokenizer_sha256="")
    capsys.readouterr()
    assert run("info", path) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "evil\\x1b[2J\\nname" in out
    assert run("decode", "--model", tiny_weights, path, tmp_path / "a.wav") == 1  # another model's name
    assert "\x1b" not in one_line_error(capsys, "evil\\x1b")


@pytest.mark.parametrize("command", ["eval", "report", "train"])
@pytest.mark.parametrize("out", ["/proc/codec-test/out", "file/out"])
def test_unwritable_output_folder_is_refused_before_the_work(tmp_path, command, out, speech, capsys, monkeypatch):
    """/proc refuses every write, root's too (CI may run as root, which passes permission bits)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "data").mkdir()
    (tmp_path / "config.yaml").write_text(f"data: {{train: {tmp_path / 'data'}}}\n")
    args = {"eval": ["eval", "--data", speech, "--out", out, "--no-mos"], "report": ["report", "data", "--out", out],
            "train": ["train", "--config", "config.yaml", f"out_dir={out}"]}[command]
    assert run(*args) == 1
    one_line_error(capsys, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "data", "file", "speech.wav"]


def test_temporary_of_a_killed_decode_is_removed_by_the_next_run(tmp_path, tiny_weights):
    """SIGKILL cannot be caught: its hidden temporary (53 MB for a long file) stayed for good."""
    import signal
    import subprocess
    import sys
    import time
    model = load(tiny_weights)
    seconds = 600  # far longer to decode than the moment it takes to see the temporary file
    codes = torch.randint(0, 16, (3, int(seconds * model.frame_rate)))
    save_codes(tmp_path / "long.codes", CodesFile(codes, model.name, model.weights_sha256, model.sample_rate,
                                                   model.frame_rate, seconds * model.sample_rate, 1, [16] * 3))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".notes.1234.abcdefgh.tmp.txt").write_text("the user's, not ours")
    process = subprocess.Popen([sys.executable, "-m", "codec", "decode", "--model", str(tiny_weights),
                                str(tmp_path / "long.codes"), str(out / "long.wav")])
    deadline = time.monotonic() + 60
    while len(list(out.iterdir())) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    stale = [p.name for p in out.iterdir() if p.name.startswith(".long.wav.")]
    assert len(stale) == 1 and f"-{process.pid}." in stale[0]
    save_codes(tmp_path / "short.codes", CodesFile(codes[:, :100], model.name, model.weights_sha256,
                                                    model.sample_rate, model.frame_rate, 800, 1, [16] * 3))
    assert run("decode", "--model", tiny_weights, tmp_path / "short.codes", out / "short.wav") == 0
    assert sorted(p.name for p in out.iterdir()) == [".notes.1234.abcdefgh.tmp.txt", "short.wav"]


def test_failed_strict_export_does_not_block_the_next(tmp_path, tiny_weights, capsys):
    """A --strict export that stopped before its first shard left progress/plan.json, and the next export with
    the bad file removed was refused as 'an export with other settings'."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        soundfile.write(corpus / f"clip{i}.wav", np.random.default_rng(i).standard_normal(800) * 0.1, 8000)
    (corpus / "broken.wav").write_text("not audio")
    out = tmp_path / "out"
    assert run("export", "--model", tiny_weights, "--data", corpus, "--out", out, "--strict") == 1
    assert "broken.wav" in capsys.readouterr().err
    (corpus / "broken.wav").unlink()
    assert run("export", "--model", tiny_weights, "--data", corpus, "--out", out, "--strict") == 0
    assert sorted(p.name for p in (out / "progress").iterdir()) == ["plan.json", "shard-00000.json"]


def test_one_long_file_shows_progress_in_seconds_of_audio(tmp_path, tiny_weights, speech, capsys, monkeypatch):
    """A 3-hour file encoded for 16 minutes without a sign of life."""
    import sys
    import codec.files
    monkeypatch.setattr(codec.files, "PROGRESS_DELAY", 0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # shown on a terminal only
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes") == 0
    assert "encoding speech.wav:   0%|          | 0/1 s of audio" in capsys.readouterr().err
    assert run("decode", "--model", tiny_weights, tmp_path / "a.codes", tmp_path / "a.wav") == 0
    assert "decoding a.codes:   0%|          | 0/1 s of audio" in capsys.readouterr().err


def test_threads_option_and_default(tmp_path, tiny_weights, speech, capsys, monkeypatch):
    import os
    import subprocess
    import sys
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # where set, it is followed (a launcher's 1 per process)
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes", "--threads", "0") == 1
    one_line_error(capsys, "--threads must be at least 1")
    before = torch.get_num_threads()
    try:
        assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes", "--threads", "1") == 0
        assert torch.get_num_threads() == 1
        assert run("decode", "--model", tiny_weights, tmp_path / "a.codes", tmp_path / "a.wav") == 0
        assert torch.get_num_threads() == min(2, len(os.sched_getaffinity(0)))
    finally:
        torch.set_num_threads(before)
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    policy = subprocess.run([sys.executable, "-c", "import codec, os; print(os.environ['OMP_WAIT_POLICY'])"],
                            env=environment, capture_output=True, text=True, check=True).stdout.strip()
    assert policy == "PASSIVE"  # set before torch loads OpenMP: spinning threads slowed a busy machine 6-15 times


def test_every_option_has_help():
    import argparse
    from codec.cli import build_parser
    commands = build_parser()._subparsers._group_actions[0].choices
    missing = [f"{name} {action.option_strings or action.dest}" for name, parser in commands.items()
               for action in parser._actions if not action.help and not isinstance(action, argparse._HelpAction)]
    assert missing == []


def test_results_folder_names_the_bitrate_once(tiny_codec):
    from codec.evaluate import ModelSystem
    system = ModelSystem(tiny_codec, 3)
    assert system.label == f"tiny-{system.kbps:g}kbps"
    assert ModelSystem(tiny_codec, 3, name=system.label).label == system.label  # not tiny-9kbps-9kbps


def test_warnings_go_to_stderr(tmp_path, speech, capsys):
    """Output a script may parse stays on stdout; a skipped file is said on stderr."""
    from codec.train.data import AudioCrops
    (tmp_path / "broken.wav").write_text("not audio")
    AudioCrops([speech, tmp_path / "broken.wav"], 8000, 800)
    captured = capsys.readouterr()
    assert "warning: skipping" in captured.err and "warning" not in captured.out


def test_readme_example_outputs_are_ignored_by_git():
    import subprocess
    from pathlib import Path
    root = Path(__file__).parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    names = ["example.codes", "example.wav", "results/x", "report/index.html", "tokens/manifest.json"]
    ignored = subprocess.run(["git", "check-ignore", *names], cwd=root, capture_output=True, text=True).stdout
    assert ignored.split() == names
