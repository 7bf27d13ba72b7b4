import pytest
import torch

from codec.model import Codec
from codec.nn import StreamingConv1d, StreamingConvTranspose1d

from conftest import tiny_config


def stream(module, x, chunk):
    module.apply(lambda m: m.start_stream() if hasattr(m, "start_stream") else None)
    out = torch.cat([module(x[..., s:s + chunk]) for s in range(0, x.shape[-1], chunk)], -1)
    module.apply(lambda m: m.stop_stream() if hasattr(m, "stop_stream") else None)
    return out


@pytest.mark.parametrize("kernel,stride,dilation", [(7, 1, 1), (3, 1, 4), (4, 2, 1), (16, 8, 1)])
@pytest.mark.parametrize("chunk", [1, 3, 8, 50])
def test_conv_stream_equals_offline(kernel, stride, dilation, chunk):
    torch.manual_seed(0)
    conv = StreamingConv1d(3, 5, kernel, stride=stride, dilation=dilation)
    x = torch.randn(2, 3, 96)
    offline = conv(x)
    assert offline.shape[-1] == 96 // stride
    assert torch.allclose(stream(conv, x, chunk), offline, atol=1e-6)


def test_conv_is_causal():
    torch.manual_seed(0)
    conv = StreamingConv1d(1, 1, 7, stride=2)
    x = torch.randn(1, 1, 40)
    y = x.clone()
    y[..., 20:] += 1
    assert torch.allclose(conv(x)[..., :10], conv(y)[..., :10])


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_transposed_conv_stream_equals_offline(chunk):
    torch.manual_seed(0)
    conv = StreamingConvTranspose1d(4, 3, 8, stride=4)
    x = torch.randn(2, 4, 13)
    offline = conv(x)
    assert offline.shape[-1] == 13 * 4
    assert torch.allclose(stream(conv, x, chunk), offline, atol=1e-6)


@pytest.fixture
def codec():
    torch.manual_seed(0)
    return Codec(tiny_config()).eval()


@pytest.mark.parametrize("chunk", [1, 3, 7, 8, 9, 100, 1001])
def test_codec_stream_encode_equals_offline(codec, chunk):
    audio = torch.randn(2, 1, 803) * 0.3  # not a whole number of frames (hop 8)
    offline = codec.encode(audio)
    encoder = codec.stream_encoder()
    parts = [encoder.push(audio[..., s:s + chunk]) for s in range(0, audio.shape[-1], chunk)]
    tail = encoder.flush()
    streamed = torch.cat(parts + ([tail] if tail is not None else []), -1)
    assert offline.shape == (2, 3, 101)
    assert torch.equal(streamed, offline)


@pytest.mark.parametrize("chunk", [1, 2, 7, 50])
def test_codec_stream_decode_equals_offline(codec, chunk):
    codes = codec.encode(torch.randn(1, 1, 800) * 0.3)
    offline = codec.decode(codes)
    decoder = codec.stream_decoder()
    streamed = torch.cat([decoder.push(codes[..., s:s + chunk]) for s in range(0, codes.shape[-1], chunk)], -1)
    decoder.close()
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-5


def test_forward_keeps_length_and_encode_decode_is_batched(codec):
    audio = torch.randn(3, 1, 805) * 0.3
    assert codec(audio).audio.shape == audio.shape
    codes = codec.encode(audio)
    assert torch.equal(codes[1:2], codec.encode(audio[1:2]))
    assert codec.decode(codes, length=805).shape == (3, 805)


def test_folding_weight_norm_keeps_outputs(codec):
    audio = torch.randn(1, 1, 400) * 0.3
    codes, decoded = codec.encode(audio), codec.decode(codec.encode(audio))
    codec.fuse_weight_norm()
    assert torch.equal(codec.encode(audio), codes)
    assert (codec.decode(codes) - decoded).abs().max() < 1e-5
