"""ONNX export (issue 20): the low-latency model's graphs (the bundled model until 2026-12-06) run in onnxruntime
with PyTorch's codes and audio."""
import shutil

import numpy as np
import pytest
import soundfile
import torch

import codec
from codec.cli import main
from codec.errors import ModelError

from conftest import EXAMPLE

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from codec.onnx_runtime import OnnxCodec  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "low-latency"
    assert main(["onnx", "low-latency", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def low_latency():
    return codec.load("low-latency")


def speech(model, seconds=1.3):
    from codec.audio import resample
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    return resample(audio, rate, model.sample_rate)[:int(seconds * model.sample_rate) + 7].numpy()


def test_offline_graphs_equal_pytorch(exported, low_latency):
    runtime = OnnxCodec(exported)
    runtime.check_model(low_latency)
    audio = np.stack([speech(low_latency), speech(low_latency)[::-1].copy()])  # not a whole number of frames
    codes = runtime.encode(audio)
    expected = low_latency.encode(torch.from_numpy(audio))
    assert codes.shape == tuple(expected.shape)
    assert np.array_equal(codes, expected.numpy())
    decoded = runtime.decode(codes)
    assert np.abs(decoded - low_latency.decode(expected).numpy()).max() < 1e-4
    dropped = codes.copy()
    dropped[:, 4:] = -1  # fewer codebooks: the stages left out are -1
    assert np.abs(runtime.decode(dropped) - low_latency.decode(expected[:, :4]).numpy()).max() < 1e-4


def test_streaming_graphs_equal_pytorch(exported, low_latency):
    runtime = OnnxCodec(exported)
    hop = runtime.hop_length
    audio = speech(low_latency, 0.6)[None]
    audio = np.pad(audio, ((0, 0), (0, -audio.shape[-1] % hop)))
    state, parts, start = runtime.stream_state("encoder_streaming", 1), [], 0
    for frames in [1, 3, 2, 1, 5, 100]:
        piece, state = runtime.step("encoder_streaming", audio[:, start:start + frames * hop], state)
        parts.append(piece)
        start += frames * hop
    codes = np.concatenate(parts, -1)
    expected = low_latency.encode(torch.from_numpy(audio))
    assert np.array_equal(codes, expected.numpy())
    state, pieces = runtime.stream_state("decoder_streaming", 1), []
    for start in range(0, codes.shape[-1], 4):
        piece, state = runtime.step("decoder_streaming", codes[..., start:start + 4], state)
        pieces.append(piece)
    assert np.abs(np.concatenate(pieces, -1) - low_latency.decode(expected).numpy()).max() < 1e-4
    with pytest.raises(ValueError, match="whole frames"):
        runtime.step("encoder_streaming", audio[:, :hop + 1], runtime.stream_state("encoder_streaming", 1))


def test_graphs_from_another_model_or_version_are_refused(exported, tmp_path, tiny_weights, capsys):
    mixed = tmp_path / "mixed"
    assert main(["onnx", str(tiny_weights), str(mixed)]) == 0
    with pytest.raises(ModelError, match="from model 'tiny'"):
        OnnxCodec(mixed).check_model(codec.load("low-latency"))
    shutil.copy(exported / "decoder.onnx", mixed / "decoder.onnx")
    with pytest.raises(ModelError, match="export them together"):
        OnnxCodec(mixed)
    graph = onnx.load(str(mixed / "encoder.onnx"))
    next(p for p in graph.metadata_props if p.key == "format_version").value = "99"
    onnx.save(graph, str(mixed / "encoder.onnx"))
    with pytest.raises(ModelError, match="format version 99"):
        OnnxCodec(mixed)
    assert main(["onnx", str(tiny_weights), str(mixed)]) == 1  # graphs there, no --force
    assert "use --force" in capsys.readouterr().err


def test_a_harmonic_decoder_exports_offline_and_streaming(tmp_path):
    from codec.config import HarmonicDecoderConfig
    from codec.model import Codec
    from codec.weights import save_weights
    from conftest import tiny_config
    config = tiny_config(decoder="harmonic")
    config.harmonic = HarmonicDecoderConfig(dim=16, hidden_dim=32, num_layers=2, n_fft=64, f0_bins=40)
    torch.manual_seed(0)
    harmonic = Codec.from_config(config)
    with torch.no_grad():  # an untrained f0 head's logits nearly tie; a trained one's stand apart (see HarmonicHead)
        harmonic.decoder.head.pitch.weight *= 100
    weights = tmp_path / "harmonic.safetensors"
    save_weights(harmonic, weights)
    model = codec.load(str(weights))
    assert main(["onnx", str(weights), str(tmp_path / "onnx")]) == 0
    runtime = OnnxCodec(tmp_path / "onnx")
    audio = speech(model, 0.5)[None]
    codes = runtime.encode(audio)
    expected = model.decode(torch.from_numpy(codes)).numpy()
    assert np.abs(runtime.decode(codes) - expected).max() < 1e-4 and np.abs(expected).max() > 1e-3
    state, pieces = runtime.stream_state("decoder_streaming", 1), []
    for start in range(0, codes.shape[-1], 3):  # the oscillator's phase and last f0 go through the state
        piece, state = runtime.step("decoder_streaming", codes[..., start:start + 3], state)
        pieces.append(piece)
    assert np.abs(np.concatenate(pieces, -1) - expected).max() < 1e-4
