"""The 16 kHz configuration (issue 20): its shape, and the whole path at 16 kHz on a tiny copy of it: train a
few steps, encode (a file at another rate too), decode, stream, batch, export tokens and ONNX graphs."""
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import codec
from codec.config import ModelConfig, load_yaml
from codec.export import encode_batch
from codec.train.config import DataConfig, TrainConfig
from codec.train.trainer import train

from conftest import EXAMPLE

CONFIG = Path(__file__).parents[1] / "configs" / "codec-16khz.yaml"


def test_the_16khz_configuration():
    config = load_yaml(ModelConfig, CONFIG)
    model = codec.Codec.from_config(config)
    assert model.sample_rate == 16000 and model.hop_length == 320 and model.frame_rate == 50
    assert model.bitrate == 4000 and config.istft.n_fft % model.hop_length == 0


def test_the_whole_path_at_16khz(tmp_path):
    from codec.audio import resample
    config = load_yaml(ModelConfig, CONFIG)
    # Tiny widths, the configuration's rate and hop: what depends on the rate is what is tested.
    config.name, config.seanet.n_filters, config.seanet.dimension, config.seanet.lstm_layers = "tiny-16k", 4, 8, 1
    config.quantizer.codebook_size, config.quantizer.num_codebooks = 16, 2
    config.istft.dim, config.istft.hidden_dim, config.istft.num_layers = 16, 32, 1
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):  # real speech at 22.05 kHz: training reads it at 16 kHz
        soundfile.write(data / f"{i}.wav", audio[i * rate:(i + 1) * rate], rate)
    weights = train(TrainConfig(model=config, data=DataConfig(train=str(data), crop_seconds=0.4, batch_size=2),
                                steps=2, checkpoint_every=2, warmup_steps=1, threads=1, out_dir=str(tmp_path / "run")))
    model = codec.load(weights)
    speech = resample(audio[:rate], rate, 16000)[:9_999]
    codes = model.encode(speech, 16000)
    assert codes.shape == (1, 2, 32)
    assert torch.equal(codes, model.encode(torch.from_numpy(audio[:rate]), rate)[:, :, :32])
    decoded = model.decode(codes, length=len(speech))
    assert decoded.shape == (1, 9_999) and torch.isfinite(decoded).all()
    with model.stream_encoder() as encoder:
        streamed = torch.cat([encoder.push(speech[s:s + 1234]) for s in range(0, len(speech), 1234)]
                             + [encoder.flush()], -1)
    assert torch.equal(streamed, codes)
    with model.stream_decoder() as decoder:
        pieces = torch.cat([decoder.push(codes[..., s:s + 3]) for s in range(0, 32, 3)], -1)
    assert (pieces[:, :len(speech)] - decoded).abs().max() < 1e-5
    clips = [speech[:5000], speech[:777]]
    batched = model.encode(clips)
    assert all(torch.equal(b, model.encode(c)[0]) for b, c in zip(batched, clips))
    assert all(torch.equal(b, e) for b, e in zip(batched, encode_batch(model, clips)))  # codec export's encoder
    pytest.importorskip("onnxruntime")
    from codec.onnx import export_onnx
    from codec.onnx_runtime import OnnxCodec
    export_onnx(model, tmp_path / "onnx", graphs=("encoder", "decoder"))
    runtime = OnnxCodec(tmp_path / "onnx")
    assert runtime.sample_rate == 16000
    assert np.array_equal(runtime.encode(speech[None].numpy()), codes.numpy())
    assert np.abs(runtime.decode(codes.numpy()) - model.decode(codes).numpy()).max() < 1e-4
