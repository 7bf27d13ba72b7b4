"""The command line: round trips, several inputs, and every bad input giving one line and exit code 1."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from codec.cli import main
from codec.weights import load

from conftest import EXAMPLE, write


def run(*args):
    return main([str(a) for a in args])


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_bundled_round_trip_on_the_shipped_example(tmp_path):
    assert run("encode", EXAMPLE, tmp_path / "a.codes") == 0
    assert run("decode", tmp_path / "a.codes", tmp_path / "a.wav") == 0
    decoded, rate = soundfile.read(tmp_path / "a.wav")
    original, original_rate = soundfile.read(EXAMPLE)
    codec = load("bundled")
    assert rate == codec.sample_rate
    assert abs(len(decoded) / rate - len(original) / original_rate) < 1e-3
    reference = codec.decode(codec.encode(torch.from_numpy(original).float(), original_rate),
                             length=len(decoded))[0].numpy()
    assert np.abs(np.clip(reference, -1, 1) - decoded).max() < 2e-4  # file path == API path (16-bit output)


def test_info_describes_the_file(tmp_path, tiny_weights, speech, capsys):
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes") == 0
    assert run("info", tmp_path / "a.codes") == 0
    text = capsys.readouterr().out
    for expected in ("model: tiny", "8000 Hz", "frame rate: 1000 Hz", "frames: 1000", "codebooks: 3 x 16",
                     "duration: 1.000 s", "nominal bitrate: 12 kbps"):
        assert expected in text


def test_num_codebooks_and_bandwidth_choose_the_bitrate(tmp_path, tiny_weights, speech, capsys):
    assert run("encode", "--model", tiny_weights, "--num-codebooks", "1", speech, tmp_path / "a.codes") == 0
    assert run("encode", "--model", tiny_weights, "--bandwidth", "9", speech, tmp_path / "b.codes") == 0
    assert run("info", tmp_path / "a.codes", tmp_path / "b.codes") == 0
    text = capsys.readouterr().out
    assert "codebooks: 1 x 16" in text and "codebooks: 2 x 16" in text
    assert run("decode", "--model", tiny_weights, tmp_path / "a.codes", tmp_path / "a.wav") == 0
    assert run("encode", "--model", tiny_weights, "--num-codebooks", "4", speech, tmp_path / "c.codes") == 1
    assert run("encode", "--model", tiny_weights, "--bandwidth", "1", speech, tmp_path / "c.codes") == 1
    capsys.readouterr()
    for value, message in (("nan", "positive"), ("inf", "positive"), ("0", "positive"), ("100", "above")):
        assert run("encode", "--model", tiny_weights, "--bandwidth", value, speech, tmp_path / "c.codes") == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c.codes").exists()


def test_folder_of_inputs(tmp_path, tiny_weights, speech):
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    audio, rate = soundfile.read(speech)
    soundfile.write(source / "a.flac", audio, rate)
    soundfile.write(source / "sub" / "b.ogg", audio, rate)
    (source / "notes.txt").write_text("not audio")
    assert run("encode", "--model", tiny_weights, source, tmp_path / "codes") == 0
    assert sorted(str(p.relative_to(tmp_path / "codes")) for p in (tmp_path / "codes").rglob("*.codes")) == \
        ["a.codes", "sub/b.codes"]
    assert run("decode", "--model", tiny_weights, tmp_path / "codes", tmp_path / "wav") == 0
    assert (tmp_path / "wav" / "sub" / "b.wav").is_file()


def test_one_bad_file_in_a_folder_fails_alone(tmp_path, tiny_weights, speech, capsys):
    source = tmp_path / "in"
    source.mkdir()
    (source / "good.wav").write_bytes(speech.read_bytes())
    (source / "bad.wav").write_bytes(b"RIFF garbage")
    assert run("encode", "--model", tiny_weights, source, tmp_path / "out") == 1
    assert listing(tmp_path / "out") == ["good.codes"]
    assert "bad.wav" in capsys.readouterr().err


def test_stereo_is_downmixed(tmp_path, tiny_weights):
    torch.manual_seed(0)
    left, right = np.random.randn(2, 4000).astype(np.float32) * 0.1
    write(tmp_path / "stereo.wav", np.stack([left, right], 1), 8000)
    write(tmp_path / "mono.wav", (left + right) / 2, 8000, subtype="FLOAT")
    assert run("encode", "--model", tiny_weights, tmp_path / "stereo.wav", tmp_path / "s.codes") == 0
    assert run("encode", "--model", tiny_weights, tmp_path / "mono.wav", tmp_path / "m.codes") == 0
    from codec.codes_file import load_codes
    stereo, mono = load_codes(tmp_path / "s.codes"), load_codes(tmp_path / "m.codes")
    assert stereo.channels == 2 and mono.channels == 1
    assert (stereo.codes == mono.codes).float().mean() > 0.95  # equal up to 16-bit rounding of the input


def test_shorter_than_one_frame_is_padded_and_trimmed_back(tmp_path, tiny_weights):
    write(tmp_path / "short.wav", np.full(5, 0.1), 8000)  # hop is 8 samples
    assert run("encode", "--model", tiny_weights, tmp_path / "short.wav", tmp_path / "a.codes") == 0
    assert run("decode", "--model", tiny_weights, tmp_path / "a.codes", tmp_path / "a.wav") == 0
    assert soundfile.info(tmp_path / "a.wav").frames == 5


def test_resampling_any_rate(tmp_path, tiny_weights):
    write(tmp_path / "a.wav", np.random.randn(44100) * 0.1, 44100)
    assert run("encode", "--model", tiny_weights, tmp_path / "a.wav", tmp_path / "a.codes") == 0
    assert run("decode", "--model", tiny_weights, tmp_path / "a.codes", tmp_path / "b.wav") == 0
    assert soundfile.info(tmp_path / "b.wav").frames == 8000


@pytest.mark.parametrize("case", ["missing", "directory", "not_audio", "empty", "nan", "inf"])
def test_bad_audio_input(tmp_path, tiny_weights, case, capsys):
    source = {"missing": tmp_path / "missing.wav", "directory": tmp_path}.get(case, tmp_path / "in.wav")
    if case == "not_audio":
        source.write_text("hello")
    elif case == "empty":
        write(source, np.zeros(0), 8000)
    elif case in ("nan", "inf"):
        audio = np.full(800, 0.1)
        audio[100] = np.nan if case == "nan" else np.inf
        write(source, audio, 8000, subtype="FLOAT")
    out = tmp_path / "out"
    out.mkdir()
    assert run("encode", "--model", tiny_weights, source, out / "a.codes") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert listing(out) == []


def test_existing_output_needs_force(tmp_path, tiny_weights, speech, capsys):
    (tmp_path / "a.codes").write_text("precious")
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes") == 1
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "a.codes").read_text() == "precious"
    assert run("encode", "--model", tiny_weights, "--force", speech, tmp_path / "a.codes") == 0


def test_unwritable_output(tmp_path, tiny_weights, speech, capsys):
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "no" / "such" / "a.codes") == 1
    assert "does not exist" in capsys.readouterr().err
    assert run("encode", "--model", tiny_weights, speech, speech / "a.codes") == 1  # parent is a file
    assert "not a folder" in capsys.readouterr().err
    assert run("encode", "--model", tiny_weights, speech, "/proc/a.codes") == 1  # unwritable even for root
    assert "cannot write" in capsys.readouterr().err


def test_wrong_model_for_token_file(tmp_path, tiny_weights, speech, capsys):
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes") == 0
    assert run("decode", tmp_path / "a.codes", tmp_path / "a.wav") == 1  # the bundled model
    assert "--model" in capsys.readouterr().err
    assert not (tmp_path / "a.wav").exists()


def test_tokens_decode_with_another_decoder_of_the_same_tokenizer(tmp_path, tiny_weights, speech, capsys):
    """A model whose decoder alone changed reads the tokens of the one before (same encoder and quantizer);
    a changed quantizer does not."""
    from codec.weights import load_weights, save_weights
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes") == 0
    for part, path in (("decoder", tmp_path / "new-decoder.safetensors"),
                       ("quantizer", tmp_path / "new-quantizer.safetensors")):
        model = load_weights(tiny_weights, for_training=True)
        with torch.no_grad():
            for parameter in getattr(model, part).parameters():
                parameter.add_(0.01)
        save_weights(model, path)
    assert run("decode", "--model", tmp_path / "new-decoder.safetensors", tmp_path / "a.codes",
               tmp_path / "a.wav") == 0
    assert run("decode", "--model", tmp_path / "new-quantizer.safetensors", tmp_path / "a.codes",
               tmp_path / "b.wav") == 1
    assert "--model" in capsys.readouterr().err and not (tmp_path / "b.wav").exists()


def test_bad_token_file_and_bad_model(tmp_path, tiny_weights, speech, capsys):
    (tmp_path / "a.codes").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"x\":")
    assert run("decode", "--model", tiny_weights, tmp_path / "a.codes", tmp_path / "a.wav") == 1
    assert run("encode", "--model", speech, speech, tmp_path / "b.codes") == 1
    assert run("encode", "--model", tmp_path / "none.safetensors", speech, tmp_path / "b.codes") == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert listing(tmp_path) == ["a.codes", "speech.wav", "tiny.safetensors"]


def test_command_line_prints_no_traceback(tmp_path, tiny_weights):
    result = subprocess.run([sys.executable, "-m", "codec.cli", "encode", "--model", str(tiny_weights),
                             str(tmp_path / "none.wav"),
                             str(tmp_path / "a.codes")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'none.wav'}: no such file"


def test_output_format_follows_the_extension(tmp_path, tiny_weights, speech, capsys):
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes") == 0
    for suffix, kind in ((".wav", "WAV"), (".flac", "FLAC"), (".ogg", "OGG")):
        assert run("decode", "--model", tiny_weights, tmp_path / "a.codes", tmp_path / f"a{suffix}") == 0
        assert soundfile.info(tmp_path / f"a{suffix}").format == kind
    assert run("decode", "--model", tiny_weights, tmp_path / "a.codes", tmp_path / "a.mp3") == 1
    assert "cannot write '.mp3'" in capsys.readouterr().err and not (tmp_path / "a.mp3").exists()


def test_inputs_that_would_write_the_same_output_are_refused(tmp_path, tiny_weights, speech, capsys):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.wav").write_bytes(speech.read_bytes())
    assert run("encode", "--model", tiny_weights, tmp_path / "x" / "a.wav", tmp_path / "y" / "a.wav",
               tmp_path / "out") == 1
    assert "would both write" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_token_file_that_does_not_fit_the_model(tmp_path, tiny_weights, speech, capsys):
    """Consistent metadata from the same model's hash, but more codebooks than the model has."""
    from codec.codes_file import load_codes, save_codes
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes") == 0
    tokens = load_codes(tmp_path / "a.codes")
    tokens.codes, tokens.codebook_sizes = torch.cat([tokens.codes, tokens.codes[:1]]), tokens.codebook_sizes + [16]
    save_codes(tmp_path / "more.codes", tokens)
    assert run("decode", "--model", tiny_weights, tmp_path / "more.codes", tmp_path / "a.wav") == 1
    assert "do not fit the model" in capsys.readouterr().err
    assert run("info", speech) == 1
    assert "not a .codes file" in capsys.readouterr().err


def _never(*args, **kwargs):
    raise AssertionError("the work started before the output was checked")


@pytest.mark.parametrize("case", ["exists", "missing_folder", "proc"])
@pytest.mark.parametrize("direction", ["encode", "decode"])
def test_outputs_are_checked_before_any_work(tmp_path, tiny_weights, speech, monkeypatch, capsys, case, direction):
    """Encoding an hour and then finding the output unwritable wastes the hour: one file or a folder of them."""
    import codec.files
    codes = tmp_path / "a.codes"
    assert run("encode", "--model", tiny_weights, speech, codes) == 0
    monkeypatch.setattr(codec.files.audio_io, "blocks", _never)
    monkeypatch.setattr(codec.model.StreamingDecoder, "push", _never)
    source, suffix = (speech, ".codes") if direction == "encode" else (codes, ".wav")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / source.name).write_bytes(source.read_bytes())
    target = {"exists": tmp_path / f"b{suffix}", "missing_folder": tmp_path / "no" / f"b{suffix}",
              "proc": Path(f"/proc/b{suffix}")}[case]
    if case == "exists":
        target.write_text("precious")
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / source.with_suffix(suffix).name).write_text("precious")
    assert run(direction, "--model", tiny_weights, source, target) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    if case == "exists":  # the folder path checks each file's output before its work, and goes on
        assert run(direction, "--model", tiny_weights, folder, tmp_path / "out") == 1
        assert "already exists" in capsys.readouterr().err
        assert target.read_text() == "precious"


def test_output_that_is_the_input_or_not_a_token_file_is_refused(tmp_path, tiny_weights, speech, capsys):
    original = speech.read_bytes()
    assert run("encode", "--model", tiny_weights, "--force", speech, speech) == 1
    assert "is the input file" in capsys.readouterr().err
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "speech.flac") == 1
    assert "must end in .codes" in capsys.readouterr().err
    disguised = tmp_path / "audio.codes"  # audio by content: libsndfile does not go by the name
    disguised.write_bytes(original)
    (tmp_path / "link.codes").symlink_to(disguised)
    assert run("encode", "--model", tiny_weights, "--force", disguised, tmp_path / "link.codes") == 1
    assert "is the input file" in capsys.readouterr().err
    assert speech.read_bytes() == original and disguised.read_bytes() == original
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes") == 0
    (tmp_path / "a.codes").rename(tmp_path / "tokens.wav")
    assert run("decode", "--model", tiny_weights, "--force", tmp_path / "tokens.wav", tmp_path / "tokens.wav") == 1
    assert "is the input file" in capsys.readouterr().err


def test_a_folder_input_needs_a_folder_output(tmp_path, tiny_weights, speech, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.wav").write_bytes(speech.read_bytes())
    (tmp_path / "file").write_text("not a folder")
    for output in (tmp_path / "out" / "x.codes", tmp_path / "x.wav", tmp_path / "file"):
        assert run("encode", "--model", tiny_weights, folder, output) == 1
        assert "need an output folder" in capsys.readouterr().err
    assert listing(tmp_path) == ["file", "in", "speech.wav", "tiny.safetensors"]
    for output in (tmp_path / "file" / "sub", Path("/proc/out")):  # a folder that cannot be made
        assert run("encode", "--model", tiny_weights, folder, output) == 1
        err = capsys.readouterr().err.strip()
        assert "cannot create the output folder" in err and len(err.splitlines()) == 1
    (tmp_path / "x.codes").mkdir()  # an existing folder may have any name
    assert run("encode", "--model", tiny_weights, folder, tmp_path / "x.codes") == 0
    assert listing(tmp_path / "x.codes") == ["a.codes"]


def test_sigterm_leaves_no_temporary_file(tmp_path, tiny_weights):
    """A killed decode removes its temporary file and says so in one line (Python's default dies silently)."""
    import signal
    import time

    from codec.codes_file import CodesFile, save_codes
    model = load(tiny_weights)
    seconds = 600  # ~20 s of decoding for the tiny model, far longer than it takes to notice the file: killed
    # after a fraction of a second, the test stays short, and a loaded machine cannot finish before the signal
    codes = torch.randint(0, 16, (3, int(seconds * model.frame_rate)))
    save_codes(tmp_path / "long.codes", CodesFile(codes, model.name, model.weights_sha256, model.sample_rate,
                                                   model.frame_rate, seconds * model.sample_rate, 1, [16] * 3))
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "codec.cli", "decode", "--model", str(tiny_weights),
                                str(tmp_path / "long.codes"), str(out / "long.wav")], stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    while not list(out.iterdir()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [p.name.startswith(".long.wav.") for p in out.iterdir()] == [True]  # the temporary file, mid-decode
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert err.strip() == "error: interrupted (SIGTERM)"
    assert listing(out) == []


def test_long_input_crosses_blocks_and_equals_the_offline_api(tmp_path, tiny_weights):
    """Blocks of BLOCK_SECONDS read, resampled (a stream of soxr) and encoded: a stereo 44.1 kHz input several
    blocks long gives the offline API's codes on its downmix, and decodes to its audio."""
    from codec.files import BLOCK_SECONDS
    from codec.codes_file import load_codes
    model = load(tiny_weights)
    rate, seconds = 44100, 3.5 * BLOCK_SECONDS
    stereo = np.random.default_rng(0).standard_normal((int(seconds * rate), 2)).astype(np.float32) * 0.1
    write(tmp_path / "long.wav", stereo, rate, subtype="FLOAT")
    assert run("encode", "--model", tiny_weights, tmp_path / "long.wav", tmp_path / "a.codes") == 0
    assert run("decode", "--model", tiny_weights, tmp_path / "a.codes", tmp_path / "a.wav") == 0
    offline = model.encode(torch.from_numpy(stereo.mean(1)), rate)
    tokens = load_codes(tmp_path / "a.codes")
    assert tokens.channels == 2 and tokens.num_samples == int(seconds * model.sample_rate)
    assert torch.equal(tokens.codes, offline[0])
    decoded, _ = soundfile.read(tmp_path / "a.wav", dtype="float32")
    reference = model.decode(offline, length=tokens.num_samples)[0].clamp(-1, 1).numpy()
    assert np.abs(decoded - reference).max() < 2e-4  # 16-bit output


def test_bench_refuses_bad_options_before_measuring_and_keeps_its_row_without_encodec(tmp_path, tiny_weights,
                                                                                       monkeypatch, capsys):
    import codec.bench
    monkeypatch.setattr(codec.bench, "simvq_step", _never)
    for options in (["--threads", "0"], ["--sizes", "0"], ["--model", tmp_path / "none.safetensors"]):
        assert run("bench", *options) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1
    monkeypatch.setattr(codec.bench, "simvq_step", lambda *args, **kwargs: {"seconds": 1.0, "memory_growth_mib": 1})

    def missing(bandwidth):
        raise ImportError("No module named 'encodec'")
    monkeypatch.setattr(codec.bench, "load_encodec", missing)
    assert run("bench", "--model", tiny_weights, "--sizes", "16", "--threads", "1", "--out", tmp_path / "b.md") == 0
    report = (tmp_path / "b.md").read_text()
    assert "| tiny | 12.0 |" in report and "pip install --no-deps encodec" in report



@pytest.mark.parametrize("damage", ["concealed", "fatal"])
def test_damaged_mp3_is_one_line_not_the_decoders_noise(tmp_path, tiny_weights, speech, damage):
    """libmpg123 writes a line per damaged frame to the C stderr; the command captures them and says so once:
    a note when the decoder concealed the damage, an error when it gave up."""
    if "MP3" not in soundfile.available_formats():
        pytest.skip("this libsndfile has no mp3 support")
    audio, rate = soundfile.read(speech)
    soundfile.write(tmp_path / "clip.mp3", audio, rate, format="MP3")
    data = bytearray((tmp_path / "clip.mp3").read_bytes())
    if damage == "concealed":
        for i in range(len(data) // 8, len(data), 97):
            data[i] ^= 0x55
    else:
        data[len(data) // 3:len(data) // 3 + 2000] = np.random.default_rng(0).bytes(2000)
    (tmp_path / "clip.mp3").write_bytes(bytes(data))
    result = subprocess.run([sys.executable, "-m", "codec.cli", "encode", "--model", str(tiny_weights),
                             str(tmp_path / "clip.mp3"), str(tmp_path / "a.codes")], capture_output=True, text=True)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    if damage == "concealed":
        assert result.returncode == 0 and (tmp_path / "a.codes").is_file()
        assert result.stderr.startswith(f"note: {tmp_path / 'clip.mp3'}: the decoder concealed damaged data (")
    else:
        assert result.returncode == 1 and not (tmp_path / "a.codes").exists()
        assert result.stderr.startswith(f"error: {tmp_path / 'clip.mp3'}: cannot decode audio")
